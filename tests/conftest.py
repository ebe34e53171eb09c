"""Shared fixtures: the generated sample, a tiny CLIP with a checkpoint saved by the test, media paths."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Real media (public sample videos, speech, OCR images): VMM_MEDIA, else the folder CI lays beside the clone.
MEDIA = os.path.abspath(os.environ.get("VMM_MEDIA") or os.path.join(REPO, "..", "shared", "media"))
TINY_MODEL = "vmm-tiny-vit"

# The hub is unreachable here and in CI; say so up front so nothing waits on network retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def in_ci() -> bool:
    """CI runs with env CI set (`.ci/run`: CI=true), as most CI services do."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing_prerequisite(reason: str):
    """What a test needs is not here: a skip on a developer's machine, a failure in CI, which must
    cover every tier (a missing prerequisite there is a broken CI set-up, not a reason to pass)."""
    if in_ci():
        pytest.fail(f"{reason} (env CI is set: CI must provide it)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def import_or_missing(module: str, reason: str | None = None):
    """`pytest.importorskip`, except that in CI a missing module fails the test."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        missing_prerequisite(reason or f"{module} is not installed ({e})")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: whole-pipeline or real-media tests (run in CI too)")
    config.addinivalue_line("markers", "readers: the index read by Spark, ClickHouse, DuckDB, Polars, pandas (run in CI too)")
    config.addinivalue_line("markers", "flink: vmm on a Flink session cluster of its own processes (run in CI too)")
    config.addinivalue_line("markers", "spark: vmm on a Spark standalone cluster of its own processes (run in CI too)")


def media_videos() -> list:
    """The real videos, for parametrize (the test takes the `media_dir` fixture too). Without the
    folder: one parameter, so that `media_dir` reports the missing media -- an empty list would make
    pytest skip the test quietly, even in CI."""
    folder = os.path.join(MEDIA, "video")
    if not os.path.isdir(folder):
        return [pytest.param(folder, id="media-absent")]
    return sorted(os.path.join(folder, f) for f in os.listdir(folder))


@pytest.fixture()
def no_network(monkeypatch):
    """Records every attempt to resolve a host name or open a connection (and fails it as an
    unreachable network would). A test asserts the list is empty: "fails fast offline" then means
    "does not try the network", which a timer on this machine could not tell."""
    import socket

    attempts: list[str] = []

    def refuse(what):
        def _refuse(*args, **kwargs):
            attempts.append(f"{what}{args[1:] if what == 'connect' else args}")
            raise OSError(101, "network is unreachable (tests/conftest.py no_network)")
        return _refuse

    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("connect_ex"))
    return attempts


@pytest.fixture(scope="session")
def media_dir():
    if not os.path.isdir(MEDIA):
        missing_prerequisite(f"real media folder {MEDIA} is absent")
    return MEDIA


@pytest.fixture(scope="session")
def sample(tmp_path_factory):
    """The project's own sample (3 videos), generated once per test session."""
    from pipelines.make_sample import make_sample

    out = tmp_path_factory.mktemp("sample")
    manifest = make_sample(str(out), num_videos=3, seed=0)
    with open(os.path.join(out, "expected.json")) as f:
        expected = json.load(f)
    return {"dir": str(out), "manifest": manifest, "expected": expected}


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A random tiny open_clip model saved as a state dict, as a user's local checkpoint would be."""
    import open_clip
    import torch

    import models.clip  # noqa: F401  (registers vmm-tiny-vit with open_clip)

    models.clip._open_clip()
    torch.manual_seed(1234)
    model = open_clip.create_model(TINY_MODEL, pretrained=None)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save(model.state_dict(), path)
    return str(path)


@pytest.fixture()
def copy_media(tmp_path):
    def _copy(name: str, new_name: str | None = None) -> str:
        dst = tmp_path / (new_name or name)
        shutil.copy(os.path.join(MEDIA, "video", name), dst)
        return str(dst)

    return _copy


@contextlib.contextmanager
def local_job_service():
    """Beam's local job service (the portable runners' protocol) in a child process on a free port;
    yields its endpoint, `localhost:PORT`, once it accepts connections; killed on exit."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    service = subprocess.Popen(
        [sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main", "--port", str(port)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("localhost", port)) == 0:
                    break
            time.sleep(0.5)
        yield f"localhost:{port}"
    finally:
        service.kill()
        service.wait()


def watch_timer_flushes(monkeypatch, period_ms: int) -> list:
    """Beam's multi_threading workers flush each output stream from a timer thread (data_plane.
    TimeBasedBufferingClosableOutputStream: the buffer is handed on, then cleared, unlocked against
    the bundle's thread writing into it), losing what a bundle writes in between. From here on a
    worker's timer, where it has one, fires every `period_ms` and, instead of flushing, watches its
    stream for `period_ms` (as when it loses the CPU between taking and clearing the buffer); the
    returned list gets the bytes a bundle wrote in each such window. Nothing is lost meanwhile (the
    stream flushes at close); forcing the loss itself corrupts Beam's streams into runaway memory."""
    import threading

    from apache_beam.runners.worker import data_plane, sdk_worker

    timed = data_plane.TimeBasedBufferingClosableOutputStream
    flush, harness = timed.flush, sdk_worker.SdkHarness.__init__
    raced: list = []

    def watched(self):
        if threading.current_thread() is self._periodic_flusher:
            before = self.size()
            time.sleep(period_ms / 1000)
            if self.size() != before:
                raced.append(self.size() - before)
            return
        flush(self)

    def often(self, *args, data_buffer_time_limit_ms=0, **kwargs):
        limit = period_ms if data_buffer_time_limit_ms > 0 else data_buffer_time_limit_ms
        harness(self, *args, data_buffer_time_limit_ms=limit, **kwargs)

    monkeypatch.setattr(timed, "flush", watched)
    monkeypatch.setattr(sdk_worker.SdkHarness, "__init__", often)
    return raced

"""The same pipeline on other runners and storage: PortableRunner (Flink/Spark's protocol), a Dataflow
job built offline, and inputs/outputs/models on an object store through Beam's FileSystems."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from apache_beam.io.filesystems import FileSystems

from tests.conftest import REPO, TINY_MODEL, import_or_missing, local_job_service
from tests.test_pipeline import read, run_extract

TABLES = ("videos", "frames", "asr_segments", "errors")
KEYS = {"videos": ("video_id",), "frames": ("video_id", "frame_index"),
        "asr_segments": ("video_id", "segment_index"), "errors": ("video_id", "error_type")}


def _rows(output: str, table: str, drop=()) -> list[dict]:
    """A table's rows (read through FileSystems, so any scheme), sorted by its key."""
    from pipelines.output import table_files

    rows = []
    for path in table_files(output, table):
        with FileSystems.open(path) as f:
            rows += pq.read_table(f).to_pylist()
    for r in rows:
        for column in drop:
            r.pop(column, None)
    return sorted(rows, key=lambda r: tuple(r[k] for k in KEYS[table]))


@pytest.fixture(scope="module")
def small_manifest(sample, tmp_path_factory):
    videos = sample["expected"]["videos"][:2]
    path = tmp_path_factory.mktemp("cluster") / "m.jsonl"
    lines = [json.dumps({"uri": v["uri"], "video_id": v["video_id"], "title": v["title"]}) for v in videos]
    lines.append(json.dumps({"uri": "/nonexistent/video.mp4", "video_id": "missing"}))
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def direct_run(small_manifest, tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("direct")
    rc, summary = run_extract(out, small_manifest, tiny_checkpoint)
    assert rc == 0 and summary["accounting_ok"]
    return str(out)


@pytest.mark.slow
def test_portable_runner_against_a_job_service_gives_the_same_rows(small_manifest, tiny_checkpoint, direct_run, tmp_path):
    with local_job_service() as endpoint:
        out = tmp_path / "portable"
        cmd = [sys.executable, "-m", "pipelines.extract", "--input", small_manifest, "--output", str(out),
               "--clip-model", TINY_MODEL, "--clip-pretrained", tiny_checkpoint, "--no-progress",
               "--runner", "PortableRunner", "--job_endpoint", endpoint, "--environment_type", "LOOPBACK"]
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "accounting OK" in proc.stdout
    for table in TABLES:
        assert _rows(str(out), table) == _rows(direct_run, table), table
    assert len(_rows(str(out), "videos")) == 2 and _rows(str(out), "asr_segments")


@pytest.mark.slow
def test_dataflow_job_graph_builds_offline(small_manifest, tmp_path):
    import_or_missing("apache_beam.runners.dataflow.internal.apiclient", "needs apache-beam[gcp] (the test extra)")
    job_file = tmp_path / "job.json"
    image = "us-docker.pkg.dev/my-project/vmm/worker:0.1.0"
    cmd = [sys.executable, "-m", "pipelines.extract", "--input", small_manifest, "--output", "gs://my-bucket/index",
           "--clip-model", TINY_MODEL, "--clip-pretrained", "none", "--no-progress",
           "--runner", "DataflowRunner", "--project", "my-project", "--region", "us-central1",
           "--temp_location", "gs://my-bucket/tmp", "--setup_file", os.path.join(REPO, "setup.py"),
           "--sdk_container_image", image, "--machine_type", "n2-standard-8", "--max_num_workers", "50",
           "--dry_run", "True", "--no_auth", "--dataflow_job_file", str(job_file)]
    proc = subprocess.run(cmd, cwd=str(tmp_path), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "dry run: Dataflow job" in proc.stdout and "not submitted" in proc.stdout
    # Beam packs --setup_file with `python -m build` (the gcp/test extras install it): no stray
    # "No module named build" before its fallback.
    assert "No module named build" not in proc.stderr
    job = json.loads(job_file.read_text())
    assert job["type"] == "JOB_TYPE_BATCH"
    graph = (tmp_path / "job.json.pipeline.txt").read_text()
    for step in ("ReadManifest", "DecodeVideos", "EmbedFrames", "ReadText", "Transcribe", "AssembleRows",
                 "WriteForwardIndex"):
        assert f'unique_name: "{step}"' in graph, step
    assert image in graph  # workers run the project's container
    assert "vmm-0.1.0.tar.gz" in graph  # and get the project itself from --setup_file
    assert not os.path.exists(tmp_path / "gs:")  # nothing written to a local path named like the bucket


@pytest.fixture()
def fakestore(tmp_path, monkeypatch):
    import tests.fakestore  # noqa: F401  (registers the fakestore:// filesystem in this process)

    root = tmp_path / "store"
    root.mkdir()
    monkeypatch.setenv("VMM_FAKESTORE_ROOT", str(root))
    monkeypatch.setenv("VMM_CACHE", str(tmp_path / "cache"))
    return root


@pytest.mark.slow
def test_inputs_outputs_and_models_on_an_object_store(fakestore, sample, tiny_checkpoint, direct_run, tmp_path):
    from models.codebook import Codebook
    from pipelines import train_codebook

    videos = sample["expected"]["videos"][:2]
    bucket = fakestore / "bucket"
    (bucket / "videos").mkdir(parents=True)
    (bucket / "models").mkdir()
    lines = []
    for v in videos:
        name = os.path.basename(v["uri"])
        shutil.copy(v["uri"], bucket / "videos" / name)
        lines.append(json.dumps({"uri": f"fakestore://bucket/videos/{name}", "video_id": v["video_id"],
                                 "title": v["title"]}))
    lines.append(json.dumps({"uri": "fakestore://bucket/videos/missing.mp4", "video_id": "missing"}))
    (bucket / "m.jsonl").write_text("\n".join(lines) + "\n")
    shutil.copy(tiny_checkpoint, bucket / "models" / "tiny.pt")
    # A frame dictionary trained locally, uploaded as a folder.
    assert train_codebook.run(["--input", sample["manifest"], "--output", str(tmp_path / "dict"), "--k", "4",
                               "--min-points-per-centroid", "2", "--clip-model", TINY_MODEL,
                               "--clip-pretrained", tiny_checkpoint, "--no-progress"]) == 0
    shutil.copytree(tmp_path / "dict", bucket / "models" / "dict")

    out = "fakestore://bucket/index"
    argv = ["--input", "fakestore://bucket/m.jsonl", "--output", out, "--clip-model", TINY_MODEL,
            "--clip-pretrained", "fakestore://bucket/models/tiny.pt", "--codebook", "fakestore://bucket/models/dict",
            "--no-progress", "--beam_plugins", "tests.fakestore"]
    from pipelines import extract

    assert extract.run(argv) == 0
    summary = json.loads((fakestore / "bucket" / "index" / "run_summary.json").read_text())
    assert summary["accounting_ok"] and summary["counts"]["videos"] == 2 and summary["counts"]["errors"] == 1
    # Same rows as the local run (the uris differ, and only this run has tokens).
    for table in TABLES:
        drop = {"videos": ("uri",), "errors": ("uri", "message"), "frames": ("token",)}.get(table, ())
        assert _rows(out, table, drop) == _rows(direct_run, table, drop), table
    tokens = [f["token"] for f in _rows(out, "frames") if f["reason"] != "text"]
    book = Codebook.load(str(tmp_path / "dict"))
    assert tokens and all(0 <= t < book.k for t in tokens)
    meta = pq.read_schema(FileSystems.open(_first(out, "videos"))).metadata
    assert meta[b"vmm.clip_weights"].startswith(b"file:tiny.pt:sha256:")
    assert meta[b"vmm.codebook_id"].decode() == book.id
    # Nothing was written to a local path named after the URIs.
    assert not os.path.exists(os.path.join(REPO, "fakestore:")) and not os.path.exists("fakestore:")


def _first(output: str, table: str) -> str:
    from pipelines.output import table_files

    return table_files(output, table)[0]


def test_worker_container_matches_the_launcher():
    """Dataflow needs the worker's Beam and Python versions to equal the launcher's."""
    import apache_beam

    dockerfile = open(os.path.join(REPO, "Dockerfile"), encoding="utf-8").read()
    base = next(line.split()[1] for line in dockerfile.splitlines() if line.startswith("FROM "))
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert base == f"apache/beam_python{py}_sdk:{apache_beam.__version__}", base
    # Every package setup.py installs is copied into the image (a COPY instruction's source, not a
    # mention in a comment), and the image installs the project from that copy.
    import ast

    setup_call = next(node for node in ast.walk(ast.parse(open(os.path.join(REPO, "setup.py")).read()))
                      if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setup")
    packages = ast.literal_eval(next(k.value for k in setup_call.keywords if k.arg == "packages"))
    steps = [line.split() for line in dockerfile.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    copies = [i for i, words in enumerate(steps) if words[0] == "COPY"]
    copied = {src.rstrip("/") for i in copies for src in steps[i][1:-1] if not src.startswith("--")}
    missing = [p for p in [*packages, "setup.py"] if p not in copied]
    assert packages and not missing, f"not copied into the image: {missing}"
    installs = [i for i, words in enumerate(steps) if words[0] == "RUN" and "install" in words
                and any(w.strip('"\'').startswith(".") for w in words)]
    assert installs and installs[-1] > max(copies), "the image does not pip install the copied project"


def test_extract_refuses_dask_runner_with_the_reason(sample, tmp_path, capsys):
    """DaskRunner loses this pipeline's data (finish_bundle outputs, tagged outputs, sinks): refused
    before any work, whether named by class, short name or full path."""
    from pipelines import extract

    for name in ("DaskRunner", "dask", "apache_beam.runners.dask.dask_runner.DaskRunner"):
        out = tmp_path / name
        assert extract.run(["--input", sample["manifest"], "--output", str(out), "--clip-model", TINY_MODEL,
                            "--clip-pretrained", "none", "--runner", name]) == 2
        err = capsys.readouterr().err
        assert err.startswith("vmm extract: --runner") and "finish_bundle" in err and "tagged outputs" in err, err
        assert len(err.strip().splitlines()) == 1
        assert not out.exists()


def _fake_prism(home) -> str:
    """An executable where Beam's DirectRunner looks for a cached Prism binary; it records that it
    was started (in the returned file) and fails, so that Beam falls back."""
    import platform

    from apache_beam.runners.portability.prism_runner import PrismJobServer
    from apache_beam.version import __version__

    url = PrismJobServer._construct_download_url(f"v{__version__}", f"v{__version__}", platform.system(),
                                                 platform.machine())
    cache = home / ".apache_beam" / "cache" / "prism" / "bin"
    cache.mkdir(parents=True)
    marker = home / "prism-started"
    binary = cache / url.rsplit("/", 1)[-1]
    binary.write_text(f"#!/bin/sh\necho \"$@\" >> {marker}\nexit 3\n")
    binary.chmod(0o755)
    return str(marker)


@pytest.mark.slow
def test_direct_runner_runs_in_process_never_on_prism(sample, tiny_checkpoint, tmp_path):
    """Beam 2.77's DirectRunner runs a pipeline on Prism when it finds a Prism binary in its cache
    (or can download one). vmm's DirectRunner runs are Beam's in-process runner whatever the cache
    holds: the same rows, its worker modes, no download attempt."""
    home = tmp_path / "home"
    marker = _fake_prism(home)
    env = {**os.environ, "HOME": str(home)}
    # The premise: Beam's own DirectRunner starts the cached binary.
    probe = ("import apache_beam as beam\np = beam.Pipeline()\n_ = p | beam.Create([1]) | beam.Map(print)\n"
             "p.run().wait_until_finish()\n")
    subprocess.run([sys.executable, "-c", probe], env=env, cwd=REPO, capture_output=True, timeout=300, check=True)
    assert os.path.exists(marker), "Beam's DirectRunner did not look for Prism where this test put it"
    os.remove(marker)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pipelines.cli", "extract", "--input", sample["manifest"], "--output", str(out),
           "--clip-model", TINY_MODEL, "--clip-pretrained", tiny_checkpoint, "--no-ocr", "--no-asr", "--no-progress",
           "--direct_num_workers", "2", "--direct_running_mode", "multi_threading"]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not os.path.exists(marker), "vmm extract started Prism"
    assert "prism" not in proc.stderr.lower()
    assert len(_rows(str(out), "videos")) == len(sample["expected"]["videos"])

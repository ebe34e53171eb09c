"""What every model wrapper asks of the machine it runs on: can the model hub be reached, which
device to run on, and a file's content hash for the model ids written into the outputs. No Beam.

Used by `models.clip`, `models.asr` and any later model (e.g. a query tower), so that each answers
these questions the same way.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import threading
import urllib.parse
from typing import Callable

from models.errors import DeviceUnavailable

DEVICES = ("cpu", "cuda", "auto")  # what --device takes; a model may also be given cuda:N
_CUDA = re.compile(r"cuda(:\d+)?")
_OFFLINE = ("1", "on", "yes", "true")


def hub_offline() -> bool:
    """HF_HUB_OFFLINE is set: never try the Hugging Face hub."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _OFFLINE


def hub_reachable(timeout_s: float = 2.0) -> bool:
    """Whether the Hugging Face hub (HF_ENDPOINT) accepts a TCP connection within `timeout_s`.

    A blocked network would otherwise cost about a minute of download retries before failing."""
    if hub_offline():
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urllib.parse.urlparse(endpoint)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    reached: list[bool] = []

    def probe():
        try:
            with socket.create_connection((parsed.hostname, port), timeout=timeout_s):
                reached.append(True)
        except OSError:
            pass

    # Name resolution ignores the socket timeout; a daemon thread bounds the whole probe.
    thread = threading.Thread(target=probe, daemon=True, name="hub-probe")
    thread.start()
    thread.join(timeout_s)
    return bool(reached)


def torch_gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def ctranslate2_gpu_count() -> int:
    import ctranslate2

    return ctranslate2.get_cuda_device_count()


def resolve_device(device: str, gpu_count: Callable[[], int] = torch_gpu_count) -> str:
    """`cpu`, `cuda`, `cuda:N` or `auto` -> the device a model runs on, as `gpu_count` (the model
    runtime's own view: torch, CTranslate2) sees this machine. `auto` is CUDA when there is a GPU.

    Raises DeviceUnavailable (one line, says what to pass instead) for CUDA on a machine without it,
    ValueError for anything else."""
    if device == "cpu":
        return device
    if device == "auto":
        return "cuda" if gpu_count() > 0 else "cpu"
    if not _CUDA.fullmatch(device or ""):
        raise ValueError(f"device must be cpu, cuda[:N] or auto, got {device!r}")
    count = gpu_count()
    if count == 0:
        raise DeviceUnavailable(f"--device {device}: CUDA is not available on this machine; "
                                "pass --device cpu (or auto: CUDA when there is one)")
    if ":" in device and int(device.split(":")[1]) >= count:
        raise DeviceUnavailable(f"--device {device}: this machine has {count} CUDA device(s)")
    return device


def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    """sha256 of a whole file, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def file_fingerprint(path: str, edge: int = 1 << 20) -> str:
    """sha256 over the size and the first and last `edge` bytes, hex: cheap on a 3 GB model file,
    and it changes with the weights (a fine-tune rewrites every tensor)."""
    size = os.path.getsize(path)
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(edge))
        if size > 2 * edge:
            f.seek(size - edge)
        h.update(f.read())
    return h.hexdigest()

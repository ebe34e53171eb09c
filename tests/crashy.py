"""Test-only decode functions for DecodeVideos(decode_fn=...): a native crash, a hang. Not a test file.

They run in the isolated decode child (imported there by name), so they must be top-level here.
"""

from __future__ import annotations

import ctypes
import time

from transforms.decode_uri import decode_uri


def crash_or_decode(uri, config):
    """Segfaults (a real SIGSEGV, as a broken decoder would) on URIs containing "crash"."""
    if "crash" in uri:
        ctypes.string_at(0)  # reads address 0: the process dies of SIGSEGV
    return decode_uri(uri, config)


def hang_or_decode(uri, config):
    """Never returns on URIs containing "hang" (a decoder stuck inside one native call)."""
    if "hang" in uri:
        while True:
            time.sleep(3600)
    return decode_uri(uri, config)


def segfault():
    ctypes.string_at(0)


def fail_with_decode_error():
    from models.decode import DecodeError

    raise DecodeError("NoFrames", "nothing in there")


_KEPT: list = []  # survivors of fragment_heap, pinning the heap as a long-lived object would


def fragment_heap(mib: int) -> float:
    """Allocates `mib` MiB in 64 KiB blocks (heap, not mmap), frees all but every 64th block, and
    returns the resident KiB at the peak: what a decode leaves a process holding without a trim."""
    from bench._common import current_rss_kb

    blocks = [bytearray(b"x" * 65536) for _ in range(mib * 16)]
    peak = current_rss_kb()
    _KEPT.extend(blocks[::64])
    del blocks
    return peak


class TouchFile:
    """A picklable warm-up for DecodeVideos: writes this process's pid to `path`."""

    def __init__(self, path: str):
        self.path = path

    def __call__(self) -> None:
        import os

        with open(self.path, "w") as f:
            f.write(str(os.getpid()))

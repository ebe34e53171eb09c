"""Test-only functions for DecodeVideos(decode_fn=...) and Isolated: a native crash, a hang, streams. Not a test file.

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


_TRIMS: list = []  # one entry per trim the child made since count_trims()


def count_trims() -> None:
    """Makes the child count its trims from now on (it runs `release_freed_memory` after each call)."""
    import models.isolated

    real = models.isolated.release_freed_memory
    if getattr(real, "counting", False):
        return

    def counting():
        _TRIMS.append(1)
        return real()

    counting.counting = True
    models.isolated.release_freed_memory = counting


def trims() -> int:
    return len(_TRIMS)


def fragment_then_trim(mib: int) -> tuple[int, int, int]:
    """fragment_heap(mib), then the resident KiB at the peak, once the blocks are freed, and after
    `release_freed_memory`, all in one call."""
    from bench._common import current_rss_kb
    from models.memory import release_freed_memory

    peak = fragment_heap(mib)
    freed = current_rss_kb()
    release_freed_memory()
    return peak, freed, current_rss_kb()


class TouchFile:
    """A picklable warm-up for DecodeVideos: writes this process's pid to `path`."""

    def __init__(self, path: str):
        self.path = path

    def __call__(self) -> None:
        import os

        with open(self.path, "w") as f:
            f.write(str(os.getpid()))


def audio_then_wait(uri, config):
    """Decodes `uri` in parts, but after handing over the audio waits (at most 60 s) for the file
    named after "?wait=" before decoding the frames: they come only if the audio's consumer ran
    while this child was still at work."""
    import os

    from transforms.decode_uri import decode_uri_parts

    path, marker = uri.split("?wait=")
    parts = decode_uri_parts(path, config)
    yield next(parts)
    deadline = time.monotonic() + 60
    while not os.path.exists(marker):
        if time.monotonic() > deadline:
            raise TimeoutError("the audio's consumer never ran while the frames were pending")
        time.sleep(0.05)
    yield from parts


def audio_then_fail(uri, config):
    """Hands over the audio of `uri`, then fails as a corrupt video stream would."""
    from models.decode import DecodeError
    from transforms.decode_uri import decode_uri_parts

    yield next(decode_uri_parts(uri, config))
    raise DecodeError("DecodeError", "decoding failed: the frames are corrupt")


def count_then_hang(n):
    """Yields 0 .. n-1 at once, then hangs."""
    yield from range(n)
    while True:
        time.sleep(3600)


def yield_then_fail(n):
    yield from range(n)
    fail_with_decode_error()


def yield_then_crash(n):
    yield from range(n)
    segfault()


def wait_for_file(path, timeout_s=60.0):
    """Yields 1, waits for `path` to exist (the caller makes it after receiving 1), yields 2."""
    import os

    yield 1
    deadline = time.monotonic() + timeout_s
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError("the caller never got the first item while the call ran")
        time.sleep(0.05)
    yield 2


def count(n):
    yield from range(n)

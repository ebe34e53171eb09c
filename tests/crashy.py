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

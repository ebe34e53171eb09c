"""A Beam filesystem for tests whose files keep the decoder waiting: `heldstore://<local path>?hold_s=S`.

Opening such a URI opens the local file, and its first read blocks until S seconds have passed since
the open: a stalled source (a network read that hangs), so that a decode is slow by a known amount
whatever the speed of this machine's CPU. Every process of a run sees the scheme once this module is
imported there (`--beam_plugins tests.heldstore`: the launcher, Beam workers, decode children).
Not a test file.
"""

from __future__ import annotations

import time
from urllib.parse import parse_qs

from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.localfilesystem import LocalFileSystem

SCHEME = "heldstore"
_PREFIX = SCHEME + "://"


def held_uri(local_path: str, hold_s: float) -> str:
    """The URI of `local_path` whose first read waits `hold_s` seconds after the open."""
    return f"{_PREFIX}{local_path}?hold_s={hold_s:g}"


def _parse(url: str) -> tuple[str, float]:
    if not url.startswith(_PREFIX):
        raise ValueError(f"not a {SCHEME} URI: {url}")
    path, _, query = url[len(_PREFIX):].partition("?")
    return path, float(parse_qs(query).get("hold_s", ["0"])[0])


class _HeldFile:
    """A file object whose first read waits until `until` (time.monotonic)."""

    def __init__(self, f, until: float):
        self._f = f
        self._until = until

    def read(self, *args):
        wait = self._until - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        return self._f.read(*args)

    def __getattr__(self, name):
        return getattr(self._f, name)


class HeldStoreFileSystem(LocalFileSystem):
    """Local files behind `heldstore://` URIs; only what reading a video needs."""

    @classmethod
    def scheme(cls):
        return SCHEME

    def open(self, path, mime_type="application/octet-stream", compression_type="auto"):
        local, hold_s = _parse(path)
        f = super().open(local, mime_type, compression_type)
        return _HeldFile(f, time.monotonic() + hold_s)

    def exists(self, path):
        return super().exists(_parse(path)[0])

    def size(self, path):
        return super().size(_parse(path)[0])

    def metadata(self, path):
        meta = super().metadata(_parse(path)[0])
        return FileMetadata(path, meta.size_in_bytes, meta.last_updated_in_seconds)

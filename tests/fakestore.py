"""A fake object store for tests: Beam filesystem `fakestore://bucket/key`, backed by a local folder.

Object-store semantics like GCS or S3: no directories (listing is by key prefix), `mkdirs` does
nothing, every path is a URI. The backing folder is `$VMM_FAKESTORE_ROOT`, so every process of a
run (Beam workers, decode children) sees the same objects once this module is imported there
(`--beam_plugins tests.fakestore`). Not a test file.

Kill points, for kill-and-resume tests: with `$VMM_FAKESTORE_KILL_AT` set to a phase, the process
that reaches it records it (`<root>/killed-at-<phase>`) and SIGKILLs its process group -- the whole
run, when the test started it in a session of its own. Phases, each met through this filesystem:
  open:<name>  an object whose name ends with <name> is opened (a video, by the decode child)
  staged       Beam has moved the run's first finished shard into its staging folder
  commit       the commit has moved its first shard into a table folder (the rest not yet)
  marker       the commit marker is written (the staging folder not yet cleaned)
"""

from __future__ import annotations

import os
import posixpath
import signal

from apache_beam.io.filesystem import BeamIOError, FileMetadata, FileSystem
from apache_beam.io.localfilesystem import LocalFileSystem

SCHEME = "fakestore"
_PREFIX = SCHEME + "://"
KILL_AT = "VMM_FAKESTORE_KILL_AT"


def root() -> str:
    path = os.environ.get("VMM_FAKESTORE_ROOT")
    if not path:
        raise BeamIOError("VMM_FAKESTORE_ROOT is not set: the fake object store has no backing folder")
    return path


def local_path(url: str) -> str:
    if not url.startswith(_PREFIX):
        raise ValueError(f"not a {SCHEME} URI: {url}")
    return os.path.join(root(), *url[len(_PREFIX):].split("/"))


def url_of(local: str) -> str:
    return _PREFIX + os.path.relpath(local, root()).replace(os.sep, "/")


def _kill_if_at(phase: str) -> None:
    """Dies with the whole process group when this run is to be killed at `phase` (see the module doc)."""
    if os.environ.get(KILL_AT) != phase:
        return
    with open(os.path.join(root(), f"killed-at-{phase.replace(':', '-')}"), "w") as f:
        f.write(str(os.getpid()))
    os.killpg(os.getpgrp(), signal.SIGKILL)


def _rename_phase(destinations: list[str]) -> str | None:
    """What a rename to `destinations` is in a run's life: staged, commit, marker, or None."""
    parts = [d.split("/") for d in destinations]
    if any("_staging" in p and p[-1].startswith("part-") for p in parts):
        return "staged"
    if any("_runs" in p and p[-1].endswith(".json") for p in parts):
        return "marker"
    if any(p[-1].startswith("part-") and "_staging" not in p for p in parts):
        return "commit"
    return None


class FakeStoreFileSystem(FileSystem):
    """Object-store paths in front of LocalFileSystem (composition: its methods call each other)."""

    def __init__(self, pipeline_options):
        super().__init__(pipeline_options)
        self._fs = LocalFileSystem(pipeline_options)

    @classmethod
    def scheme(cls):
        return SCHEME

    def join(self, basepath, *paths):
        return posixpath.join(basepath, *[p.lstrip("/") for p in paths])

    def split(self, path):
        return posixpath.split(path)

    def has_dirs(self):
        return False

    def mkdirs(self, path):
        pass  # object stores have no directories

    def _url_dirname(self, url_or_path):
        return posixpath.dirname(url_or_path)

    def _list(self, dir_or_prefix):
        for dirpath, _, files in os.walk(root()):
            for name in files:
                local = os.path.join(dirpath, name)
                url = url_of(local)
                if url.startswith(dir_or_prefix):
                    try:
                        yield FileMetadata(url, os.path.getsize(local), os.path.getmtime(local))
                    except OSError:
                        pass

    def create(self, path, mime_type="application/octet-stream", compression_type="auto"):
        local = local_path(path)
        os.makedirs(os.path.dirname(local), exist_ok=True)
        return self._fs.create(local, mime_type, compression_type)

    def open(self, path, mime_type="application/octet-stream", compression_type="auto"):
        kill_at = os.environ.get(KILL_AT, "")
        if kill_at.startswith("open:") and path.endswith(kill_at[len("open:"):]):
            _kill_if_at(kill_at)
        return self._fs.open(local_path(path), mime_type, compression_type)

    def copy(self, source_file_names, destination_file_names):
        for dst in destination_file_names:
            os.makedirs(os.path.dirname(local_path(dst)), exist_ok=True)
        self._fs.copy([local_path(p) for p in source_file_names], [local_path(p) for p in destination_file_names])

    def rename(self, source_file_names, destination_file_names):
        for dst in destination_file_names:
            os.makedirs(os.path.dirname(local_path(dst)), exist_ok=True)
        phase = _rename_phase(destination_file_names)
        if phase == "commit" and os.environ.get(KILL_AT) == phase:
            # Half a commit: one shard moved into its table, the others still staged, no marker.
            self._fs.rename([local_path(source_file_names[0])], [local_path(destination_file_names[0])])
            _kill_if_at(phase)
        self._fs.rename([local_path(p) for p in source_file_names], [local_path(p) for p in destination_file_names])
        if phase is not None:
            _kill_if_at(phase)

    def exists(self, path):
        local = local_path(path)
        if os.path.isfile(local):
            return True
        # A "folder" exists when some object has it as a prefix, as on GCS.
        return os.path.isdir(local) and any(files for _, _, files in os.walk(local))

    def size(self, path):
        return self._fs.size(local_path(path))

    def last_updated(self, path):
        return self._fs.last_updated(local_path(path))

    def checksum(self, path):
        return self._fs.checksum(local_path(path))

    def metadata(self, path):
        meta = self._fs.metadata(local_path(path))
        return FileMetadata(path, meta.size_in_bytes, meta.last_updated_in_seconds)

    def delete(self, paths):
        self._fs.delete([local_path(p) for p in paths])

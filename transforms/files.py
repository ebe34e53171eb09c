"""Model files on any Beam filesystem: copy a remote checkpoint, dictionary or model folder to local disk.

Consumes a path or URI (`gs://`, `s3://`, `hdfs://`, ... anything Beam's FileSystems open).
Produces a local path holding the same bytes: the input itself when it is already local, else a
copy in a per-machine cache (`$VMM_CACHE`, default `~/.cache/vmm/remote`), keyed by the URI and
made atomically, so the worker processes of one machine download a model once between them.

The model loaders in models/ read local files only (they know nothing of Beam); this is how
weights that live in a bucket reach them on Dataflow, Flink or Spark workers.
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import shutil
import tempfile

from apache_beam.io.filesystems import FileSystems

logger = logging.getLogger(__name__)


def is_remote(path: str | None) -> bool:
    if not path or "://" not in path:
        return False
    return FileSystems.get_scheme(path) not in (None, "file")


def cache_root() -> str:
    return os.environ.get("VMM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "vmm", "remote")


def _copy_to(uri: str, dst: str) -> None:
    with FileSystems.open(uri, mime_type="application/octet-stream", compression_type="uncompressed") as src, \
            open(dst, "wb") as out:
        shutil.copyfileobj(src, out, length=8 << 20)


def localize(uri: str | None) -> str | None:
    """A local path for `uri`: a file, or a folder (every object under the prefix `uri/`)."""
    if not is_remote(uri):
        return uri
    uri = uri.rstrip("/")
    key = hashlib.sha256(uri.encode("utf-8")).hexdigest()[:16]
    name = posixpath.basename(uri)
    home = os.path.join(cache_root(), key)  # the copy keeps its own name: ids derived from it match
    target = os.path.join(home, name)
    if os.path.exists(target):
        return target
    os.makedirs(cache_root(), exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".partial-", dir=cache_root())
    try:
        local = os.path.join(staging, name)
        if FileSystems.exists(uri) and not _is_folder(uri):
            _copy_to(uri, local)
        else:
            found = FileSystems.match([uri + "/**"])[0].metadata_list
            if not found:
                raise FileNotFoundError(f"no such file or folder: {uri}")
            for meta in found:
                rel = meta.path[len(uri) + 1:]
                dst = os.path.join(local, *rel.split("/"))
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                _copy_to(meta.path, dst)
        try:
            os.rename(staging, home)  # atomic: another process of this machine may have won the race
            staging = None
        except OSError:
            if not os.path.exists(target):
                raise
        logger.info("copied %s to %s", uri, target)
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _is_folder(uri: str) -> bool:
    return bool(FileSystems.match([uri + "/*"])[0].metadata_list)

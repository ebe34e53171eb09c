"""The output directory as a sequence of committed runs: staging, commit, resume. Any Beam filesystem.

The layout and the commit rules are `schemas.index`'s (one contract for the writer and every
reader); this module is the writer's side of them.

A run writes only under `_staging/<run_id>/` (a leading underscore: pyarrow, pandas, DuckDB and
Spark directory readers skip it, and `OUT/<table>/*.parquet` does not match it). Beam writes its
own temporary files under there too. When the pipeline has finished, `commit_run` renames each
shard into its table directory -- a single-file rename, so a reader never sees half a file -- and
then writes the marker. A run killed before its marker leaves shards that no marker names; the
next run that resumes (`--skip-existing`) or overwrites deletes them first, so the committed rows
are always made of whole runs, and resuming redoes exactly the entries whose rows were not
committed.
"""

from __future__ import annotations

import json
import logging
import posixpath
import time
import uuid

import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from schemas import forward_index as fi
from schemas.index import RUNS_DIR, STAGING_DIR, committed_runs, run_of, shard_name, table_files

__all__ = ["RUNS_DIR", "STAGING_DIR", "committed_runs", "run_of", "table_files", "new_run_id", "staging_dir",
           "orphan_files", "prepare_output", "num_rows", "commit_run"]

logger = logging.getLogger(__name__)


def new_run_id() -> str:
    """Sortable and unique: UTC time plus 8 random hex digits."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


def staging_dir(output: str, run_id: str) -> str:
    return FileSystems.join(output, STAGING_DIR, run_id)


def _match(pattern: str) -> list[str]:
    result = FileSystems.match([pattern])[0]
    return sorted(m.path for m in result.metadata_list)


def orphan_files(output: str) -> list[str]:
    """Shards no commit marker names (left by a killed run), and leftover staging files."""
    runs = committed_runs(output)
    orphans = []
    for table in fi.TABLES:
        orphans += [p for p in _match(FileSystems.join(output, table, "*")) if run_of(p) not in runs]
    orphans += _match(FileSystems.join(output, STAGING_DIR, "**"))
    return orphans


def prepare_output(output: str, *, overwrite: bool, skip_existing: bool) -> list[str]:
    """Readies `output` for a new run; returns the committed files to skip the entries of.

    Refuses (ValueError) to add to an existing index unless --skip-existing (resume: the new run
    adds the entries not yet in it) or --overwrite (start again).
    """
    if overwrite and skip_existing:
        raise ValueError("--overwrite and --skip-existing contradict each other: choose one")
    runs = committed_runs(output)
    committed = {t: table_files(output, t, runs) for t in fi.TABLES}
    orphans = orphan_files(output)
    if overwrite:
        doomed = [p for files in committed.values() for p in files] + orphans
        doomed += _match(FileSystems.join(output, RUNS_DIR, "*.json"))
        if doomed:
            logger.info("--overwrite: deleting %d files of earlier runs in %s", len(doomed), output)
            FileSystems.delete(doomed)
        return []
    if skip_existing:
        if orphans:
            logger.warning("deleting %d files of runs that did not commit (killed?) in %s", len(orphans), output)
            FileSystems.delete(orphans)
        return committed["videos"] + committed["errors"]
    if any(committed.values()) or orphans:
        what = ", ".join(f"{t}/ has {len(f)} files" for t, f in committed.items() if f) or "uncommitted run files"
        raise ValueError(
            f"{output} already holds a forward index ({what}): pass --skip-existing to add only the entries "
            "not in it yet, --overwrite to replace it, or choose another --output"
        )
    return []


def _ensure_dir(path: str) -> None:
    # Object stores have no directories; a local rename needs its target's.
    if not FileSystems.exists(path):
        try:
            FileSystems.mkdirs(path)
        except OSError:
            pass  # made meanwhile, or a store without directories


def num_rows(path: str) -> int:
    """Rows of a Parquet file, from its footer."""
    with FileSystems.open(path) as f:
        return pq.ParquetFile(f).metadata.num_rows


def commit_run(output: str, run_id: str) -> list[str]:
    """Moves a finished run's shards into place, then writes its marker. Returns the new paths.

    An empty shard is committed only where its table would otherwise have no file at all (every
    table stays readable, with its schema); a resumed run that found nothing new adds no files."""
    stage = staging_dir(output, run_id)
    runs = committed_runs(output)
    sources, targets = [], []
    for table in fi.TABLES:
        staged = _match(FileSystems.join(stage, table, "*.parquet"))
        keep = [path for path in staged if num_rows(path) > 0]
        if not keep and not table_files(output, table, runs):
            keep = staged[:1]
        for path in keep:
            sources.append(path)
            targets.append(FileSystems.join(output, table, shard_name(run_id, posixpath.basename(path))))
    for table in fi.TABLES:
        _ensure_dir(FileSystems.join(output, table))
    if sources:
        FileSystems.rename(sources, targets)
    marker = FileSystems.join(output, RUNS_DIR, f"{run_id}.json")
    tmp = FileSystems.join(output, RUNS_DIR, f".{run_id}.json.tmp")
    _ensure_dir(FileSystems.join(output, RUNS_DIR))
    with FileSystems.create(tmp) as f:
        f.write(json.dumps({"run_id": run_id, "files": targets}, indent=1).encode("utf-8"))
    FileSystems.rename([tmp], [marker])
    leftovers = _match(FileSystems.join(stage, "**"))  # empty shards not committed, Beam's temp files
    if leftovers:
        FileSystems.delete(leftovers)
    _delete_dirs([stage, FileSystems.join(output, STAGING_DIR)])
    return targets


def _delete_dirs(paths: list[str]) -> None:
    """Deletes each directory that exists and holds nothing (object stores have none to delete)."""
    for path in paths:
        if FileSystems.exists(path) and not _match(FileSystems.join(path, "**")):
            FileSystems.delete([path])

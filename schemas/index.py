"""The forward index on storage: its layout, the commit rules, and a reader of committed runs.

Every command that reads an index (the run summary, `vmm train-codebook --input INDEX`, search,
scoring, training, reports) reads it through `IndexReader`; `pipelines.output` writes it by the
rules below. Imports neither Beam nor torch: a non-local URI (`gs://`, `s3://`, any scheme a Beam
filesystem is registered for) is opened through Beam's FileSystems, imported only then.

Layout:
    ROOT/<table>/part-<run_id>-SSSSS-of-NNNNN.parquet   committed shards (tables: TABLES)
    ROOT/_runs/<run_id>.json                            a run's commit marker, written last
    ROOT/_staging/<run_id>/...                          a run's files while it runs
    ROOT/run_summary.json                               the last run's summary

Commit rules: a shard belongs to the index when a marker `_runs/<run_id>.json` exists for the run
id in its name. Shards of a run without a marker (killed while committing) are not part of it;
the next run that resumes or overwrites deletes them. Run ids sort by start time (UTC), so the
newest run is the last one.

Reading (columns are read only when asked for; everything is a pyarrow Table or RecordBatch):

    from schemas.index import IndexReader
    index = IndexReader("out/")                 # or "gs://bucket/index"
    index.runs                                  # committed run ids, oldest first
    index.metadata                              # the newest run's `vmm.*` file metadata (a dict)
    index.settings                              # its frame sampling, OCR and ASR settings
    index.table("videos", columns=["video_id", "title"])
    index.table("frames", filter=pyarrow.compute.field("video_id") == "v1")
    for batch in index.batches("frames", columns=["video_id", "token"], batch_size=8192):
        ...                                     # bounded memory: one batch of one file at a time
    ids, vectors = index.embeddings()           # ids: Table(video_id); vectors: float32 [N, D]

`embeddings()` (and `decode_embeddings()` on a table or batch you read yourself) decode whatever
encoding each file holds: `fixed_size_list<float16|float32>` (schema 2) or int8 codes with a
per-row scale, `embedding_scale` (schema 3: vector = codes x scale), so an index resumed across a
schema change reads as one. A column missing from some files (a passthrough field of one run's
manifest) reads as nulls for those files' rows.
"""

from __future__ import annotations

import functools
import glob
import json
import os
import posixpath
import re
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.forward_index import EMBEDDING_SCALE, TABLES

RUNS_DIR = "_runs"
STAGING_DIR = "_staging"
SUMMARY_FILE = "run_summary.json"
EMBEDDING_COLUMN = "embedding"
SCALE_SUFFIX = EMBEDDING_SCALE[len(EMBEDDING_COLUMN):]  # a column's scale is <column>_scale

_SHARD = re.compile(r"^part-(?P<run>\d{8}T\d{6}-[0-9a-f]{8})-(?P<rest>\d+-of-\d+)\.parquet$")


def run_of(path: str) -> str | None:
    """The run id in a committed shard's name (None for any other file)."""
    m = _SHARD.match(posixpath.basename(path))
    return m.group("run") if m else None


def shard_name(run_id: str, staged_name: str) -> str:
    """The committed name of a shard staged as part-SSSSS-of-NNNNN.parquet."""
    if not staged_name.startswith("part-"):
        raise ValueError(f"not a staged shard name: {staged_name}")
    return f"part-{run_id}-{staged_name[len('part-'):]}"


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def _local(path: str) -> str:
    return path[len("file://"):] if path.startswith("file://") else path


def join(root: str, *parts: str) -> str:
    if _is_local(root):
        return os.path.join(root, *parts)
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.join(root, *parts)


def match(pattern: str) -> list[str]:
    """Files matching a glob (local or any Beam filesystem), sorted."""
    if _is_local(pattern):
        return sorted(p for p in glob.glob(_local(pattern)) if os.path.isfile(p))
    from apache_beam.io.filesystems import FileSystems

    return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)


def open_file(path: str):
    """A readable binary file object (local or any Beam filesystem)."""
    if _is_local(path):
        return open(_local(path), "rb")
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.open(path)


def committed_runs(root: str) -> list[str]:
    """The ids of the runs whose marker exists, oldest first."""
    names = (posixpath.basename(p.replace(os.sep, "/")) for p in match(join(root, RUNS_DIR, "*.json")))
    return sorted(n[: -len(".json")] for n in names if not n.startswith("."))


def table_files(root: str, table: str, runs: Sequence[str] | None = None) -> list[str]:
    """A table's committed shards (those of runs with a marker), in run order."""
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}: the index has {', '.join(TABLES)}")
    runs = set(committed_runs(root) if runs is None else runs)
    files = [p for p in match(join(root, table, "*.parquet")) if run_of(p) in runs]
    return sorted(files, key=lambda p: (run_of(p), posixpath.basename(p.replace(os.sep, "/"))))


def vmm_metadata(schema: pa.Schema) -> dict[str, str]:
    """The `vmm.*` key-value metadata of a file's schema."""
    raw = schema.metadata or {}
    return {k.decode(): v.decode() for k, v in raw.items() if k.startswith(b"vmm.")}


def settings_of(metadata: dict[str, str]) -> dict:
    """The `vmm.settings.<group>` JSON values of a file's metadata, decoded."""
    prefix = "vmm.settings."
    return {k[len(prefix):]: json.loads(v) for k, v in metadata.items() if k.startswith(prefix)}


class IndexReader:
    """Reads the committed runs of a forward index. A snapshot: runs and files are listed once."""

    def __init__(self, root: str):
        self.root = root.rstrip("/") or "/"

    def __repr__(self) -> str:
        return f"IndexReader({self.root!r})"

    @functools.cached_property
    def runs(self) -> tuple[str, ...]:
        return tuple(committed_runs(self.root))

    def files(self, table: str) -> list[str]:
        return self._files[table]

    @functools.cached_property
    def _files(self) -> dict[str, list[str]]:
        return {t: table_files(self.root, t, self.runs) for t in TABLES}

    def _footer(self, path: str) -> tuple[pa.Schema, int]:
        cache = self.__dict__.setdefault("_footers", {})
        if path not in cache:
            with open_file(path) as f:
                pf = pq.ParquetFile(f)
                cache[path] = (pf.schema_arrow, pf.metadata.num_rows)
        return cache[path]

    def file_schema(self, path: str) -> pa.Schema:
        return self._footer(path)[0]

    def num_rows(self, table: str) -> int:
        """Rows in a table, from the files' footers (nothing else is read)."""
        return sum(self._footer(p)[1] for p in self.files(table))

    @property
    def metadata(self) -> dict[str, str]:
        """The newest run's `vmm.*` metadata (every file of one run carries the same); {} if no run."""
        return self.run_metadata(self.runs[-1]) if self.runs else {}

    @property
    def settings(self) -> dict:
        """The newest run's frame sampling, OCR and ASR settings (`vmm.settings.*`, schema 3 on;
        a group is None when its stage was off)."""
        return settings_of(self.metadata)

    def run_metadata(self, run_id: str) -> dict[str, str]:
        for table in TABLES:
            for path in self.files(table):
                if run_of(path) == run_id:
                    return vmm_metadata(self.file_schema(path))
        raise KeyError(f"run {run_id} has no committed files in {self.root}")

    def schema(self, table: str, columns: Sequence[str] | None = None, names_only: bool = False) -> pa.Schema:
        """The table's schema over all its files (columns some files lack included); no metadata.

        A column whose type differs between files (the embedding of runs with different encodings)
        raises ValueError, unless `names_only` and no columns are named: then it holds the first
        file's type (for listing the column names)."""
        schemas = [self.file_schema(p) for p in self.files(table)]
        conflicts: list[tuple[str, pa.DataType, pa.DataType]] = []
        if not schemas:
            raise FileNotFoundError(f"{self.root} has no committed {table} files (runs: {len(self.runs)})")
        fields: dict[str, pa.Field] = {}
        for schema in schemas:
            for field in schema:
                if columns is not None and field.name not in columns:
                    continue
                seen = fields.get(field.name)
                if seen is None:
                    fields[field.name] = field
                elif seen.type != field.type:
                    conflicts.append((field.name, seen.type, field.type))
                elif field.nullable and not seen.nullable:
                    fields[field.name] = seen.with_nullable(True)
        if conflicts and not (columns is None and names_only):
            name, first, other = conflicts[0]
            hint = " (IndexReader.embeddings() decodes every encoding)" if name.startswith(EMBEDDING_COLUMN) else ""
            raise ValueError(f"{table}.{name} is {first} in some files and {other} in others{hint}")
        if columns is not None:
            missing = [c for c in columns if c not in fields]
            if missing:
                raise KeyError(f"{table} has no column {', '.join(missing)}; it has "
                               f"{', '.join(n for s in schemas[:1] for n in s.names)}")
            return pa.schema([fields[c] for c in columns])
        return pa.schema(list(fields.values()))

    def _conform(self, data, target: pa.Schema):
        """Columns in `target`'s order; columns a file lacks become nulls."""
        arrays = []
        for field in target:
            if field.name in data.schema.names:
                arrays.append(data.column(field.name))
            else:
                arrays.append(pa.nulls(data.num_rows, field.type))
        fields = [f.with_nullable(True) if f.name not in data.schema.names else f for f in target]
        if isinstance(data, pa.RecordBatch):
            return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))
        return pa.Table.from_arrays(arrays, schema=pa.schema(fields))

    def table(self, name: str, columns: Sequence[str] | None = None, filter=None) -> pa.Table:
        """The committed rows of one table (only `columns`; `filter`: a pyarrow.compute Expression,
        pushed down to row groups)."""
        columns = list(columns) if columns is not None else None
        target = self.schema(name, columns)
        parts = []
        for path in self.files(name):
            have = [c for c in target.names if c in self.file_schema(path).names]
            with open_file(path) as f:
                part = pq.read_table(f, columns=have, filters=filter)
            parts.append(self._conform(part, target))
        return pa.concat_tables(parts) if parts else target.empty_table()

    def batches(self, name: str, columns: Sequence[str] | None = None, batch_size: int = 65536,
                filter=None) -> Iterator[pa.RecordBatch]:
        """The table's rows as RecordBatches of at most `batch_size` rows, one file at a time."""
        if not self.files(name):
            return
        columns = list(columns) if columns is not None else None
        target = self.schema(name, columns)
        for path in self.files(name):
            have = [c for c in target.names if c in self.file_schema(path).names]
            needed = have if filter is None else list(self.file_schema(path).names)
            with open_file(path) as f:
                for batch in pq.ParquetFile(f).iter_batches(batch_size=batch_size, columns=needed):
                    if filter is not None:
                        batch = batch.filter(filter).select(have)
                    if batch.num_rows:
                        yield self._conform(batch, target)

    def embeddings(self, table: str = "videos", columns: Sequence[str] = ("video_id",), filter=None,
                   column: str = EMBEDDING_COLUMN) -> tuple[pa.Table, np.ndarray]:
        """(the rows' `columns`, their vectors as float32 [N, D]) whatever encoding each file holds."""
        target = self.schema(table, list(columns))
        ids, vectors = [], []
        for path in self.files(table):
            part, vecs = file_embeddings(path, target.names, filter=filter, column=column)
            ids.append(self._conform(part, target))
            vectors.append(vecs)
        return pa.concat_tables(ids), np.concatenate(vectors)


def file_embeddings(path: str, columns: Sequence[str], filter=None,
                    column: str = EMBEDDING_COLUMN) -> tuple[pa.Table, np.ndarray]:
    """One shard's rows (the `columns` it has) and their decoded float32 vectors."""
    with open_file(path) as f:
        names = pq.ParquetFile(f).schema_arrow.names
        if column not in names:
            raise ValueError(f"{path} has no {column} column (frames have one only with --store-frame-embeddings)")
        scale = [column + SCALE_SUFFIX] if column + SCALE_SUFFIX in names else []
        have = [c for c in columns if c in names]
        f.seek(0)
        part = pq.read_table(f, columns=list(dict.fromkeys(have + [column] + scale)), filters=filter)
    return part.select(have), decode_embeddings(part, column)


def _fixed_width_values(array: pa.ChunkedArray | pa.Array, what: str) -> tuple[np.ndarray, int]:
    """A (fixed-size) list column as its flat item values and the list width."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
    if array.null_count:
        raise ValueError(f"{what} has {array.null_count} null rows")
    if pa.types.is_fixed_size_list(array.type):
        width = array.type.list_size
        values = array.flatten()
    elif pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        lengths = np.unique(array.value_lengths().to_numpy(zero_copy_only=False))
        if len(lengths) > 1:
            raise ValueError(f"{what} rows have different lengths {lengths.tolist()}")
        width = int(lengths[0]) if len(lengths) else 0
        values = array.flatten()
    else:
        raise TypeError(f"{what} is {array.type}, not a list")
    if values.null_count:
        raise ValueError(f"{what} has null items")
    return values.to_numpy(zero_copy_only=False), width


def decode_embeddings(data: pa.Table | pa.RecordBatch, column: str = EMBEDDING_COLUMN) -> np.ndarray:
    """float32 [N, D] vectors of an embedding column, in any encoding vmm has written:
    float16 / float32 items (schema 2 and later), or int8 codes times `<column>_scale` (schema 3)."""
    values, width = _fixed_width_values(data.column(column), column)
    n = data.num_rows
    vectors = values.astype(np.float32, copy=False).reshape(n, width)
    scale_column = column + SCALE_SUFFIX
    if np.issubdtype(values.dtype, np.integer):
        if scale_column not in data.schema.names:
            raise ValueError(f"{column} holds integer codes but {scale_column} was not read with it")
        scale = data.column(scale_column).to_numpy(zero_copy_only=False).astype(np.float32)
        if np.isnan(scale).any():
            raise ValueError(f"{scale_column} has null rows")
        vectors = vectors * scale[:, None]
    elif not np.issubdtype(values.dtype, np.floating):
        raise TypeError(f"{column} items are {values.dtype}: not an embedding encoding vmm writes")
    return vectors


def frame_tokens(data: pa.Table | pa.RecordBatch) -> tuple[np.ndarray, np.ndarray | None]:
    """`frames.token` as int32 [N] (-1 where null: a text frame, or no dictionary) and
    `frames.patch_tokens` as int16 [N, P] (None when the column was not read or is all null;
    rows without patch tokens are -1). Ids index the dictionaries named in `vmm.codebook_id` /
    `vmm.patch_codebook_id` (models.codebook.Codebook.lookup turns them back into vectors)."""
    token = data.column("token").cast(pa.int32()).fill_null(-1).to_numpy(zero_copy_only=False)
    if "patch_tokens" not in data.schema.names:
        return token, None
    patches = data.column("patch_tokens")
    if isinstance(patches, pa.ChunkedArray):
        patches = patches.combine_chunks() if patches.num_chunks != 1 else patches.chunk(0)
    present = patches.is_valid().to_numpy(zero_copy_only=False)
    if not present.any():
        return token, None
    width = int(patches.value_lengths().fill_null(0).to_numpy(zero_copy_only=False).max())
    grid = np.full((len(patches), width), -1, np.int16)
    flat = patches.flatten().to_numpy(zero_copy_only=False).astype(np.int16)
    grid[present] = flat.reshape(-1, width)
    return token, grid


def read_summary(root: str) -> dict | None:
    """The index's run_summary.json (None if it has none)."""
    path = join(root, SUMMARY_FILE)
    if not match(path):
        return None
    with open_file(path) as f:
        return json.loads(f.read().decode("utf-8"))

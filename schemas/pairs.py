"""The pair log `vmm score` reads and the ranking-feature table it writes (`FEATS/pairs/`).

Input: JSONL (`.jsonl`, `.ndjson`, `.json`), CSV (`.csv`) or Parquet (`.parquet`), a file or a
glob, local or any Beam filesystem. Columns `query` and `video_id` are required; every other
column (label, clicks, impressions, position, date, ...) is carried into the output unchanged:
Parquet keeps its types, CSV columns are strings, JSONL types are inferred from the first 1000
records (as `vmm extract` does for a manifest). A JSONL value that does not fit its column is
null in the output and counted (`passthrough_values_nulled`).

Output: one row per input pair, in this schema (feature meanings, ranges and null rules: README,
"Ranking features"): the input's columns first (a column named like an output column is renamed
`input_<name>`), then `pair_index` (the pair's position in the input, 0-based over the files in
name order), `missing` (why a pair has no features, or null), and the features of
`feature_fields()`. Every file carries `vmm.*` key-value metadata (`file_metadata`).

Pure functions, no Beam: files are opened through `schemas.index.open_file` (Beam's FileSystems
for a URI).
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from models.ranking import TEXT_FIELDS
from models.version import __version__
from schemas.index import match, open_file
from schemas.manifest import SCHEMA_SAMPLE_ROWS, convert_value, json_type, manifest_kind

SCHEMA_VERSION = "1"
REQUIRED = ("query", "video_id")
MISSING_VIDEO = "video_not_in_index"  # the index has no row for the pair's video_id
MISSING_QUERY = "empty_query"  # the query is null, empty or only whitespace
MISSING_REASONS = (MISSING_VIDEO, MISSING_QUERY)
FRAME_SOURCES = ("embedding", "token")
RENAMED_PREFIX = "input_"
_BATCH = 8192


class PairsError(ValueError):
    """The pair log as a whole cannot be read (no file, unknown format, a required column missing)."""


def feature_fields() -> list[pa.Field]:
    """The columns `vmm score` adds after the input's, in order."""
    fields = [
        pa.field("pair_index", pa.int64(), nullable=False),
        pa.field("missing", pa.string()),
        pa.field("qv_video", pa.float32()),
        pa.field("qv_frame_max", pa.float32()),
        pa.field("qv_frame_mean", pa.float32()),
        pa.field("qv_frame_top3", pa.float32()),
        pa.field("qv_frame_source", pa.string()),
        pa.field("qv_patch_max", pa.float32()),
    ]
    for f in TEXT_FIELDS:
        fields += [pa.field(f"bm25_{f}", pa.float32()), pa.field(f"coverage_{f}", pa.float32()),
                   pa.field(f"phrase_{f}", pa.bool_())]
    fields += [
        pa.field("title_visual_similarity", pa.float32()),
        pa.field("topic_coherence", pa.float32()),
        pa.field("duration_s", pa.float64()),
        pa.field("num_keyframes", pa.int32()),
        pa.field("speech_seconds", pa.float64()),
        pa.field("has_subtitles", pa.bool_()),
    ]
    return fields


FEATURES = tuple(f.name for f in feature_fields()[2:])  # every feature column (not pair_index, missing)


def output_name(column: str) -> str:
    """An input column's name in the output (renamed when it collides with one of ours)."""
    ours = {f.name for f in feature_fields()}
    return f"{RENAMED_PREFIX}{column}" if column in ours else column


def output_schema(input_schema: pa.Schema, metadata: dict[str, str]) -> pa.Schema:
    fields = [pa.field(output_name(f.name), f.type) for f in input_schema] + feature_fields()
    names = [f.name for f in fields]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise PairsError(f"input columns collide with output columns after renaming: {clashes}")
    return pa.schema(fields).with_metadata({k.encode(): v.encode() for k, v in metadata.items()})


def file_metadata(values: dict[str, str]) -> dict[str, str]:
    """`vmm.*` metadata of every output file: the schema, vmm's version, and `values` (the index,
    its runs, models, dictionaries, the query encoder, settings)."""
    meta = {"vmm.schema": "pairs", "vmm.schema_version": SCHEMA_VERSION, "vmm.version": __version__}
    meta.update({k: str(v) for k, v in values.items()})
    return meta


# ---- reading the pair log ----------------------------------------------------------------------


def pair_files(pattern: str) -> tuple[str, list[str]]:
    """(kind, files) of `--pairs`: a file or glob; refuses an unknown format or no file."""
    kind = manifest_kind(pattern)
    if kind is None:
        raise PairsError(f"--pairs {pattern}: expected .jsonl/.ndjson/.json, .csv or .parquet")
    files = match(pattern)
    if not files:
        raise PairsError(f"--pairs {pattern}: no such file")
    return kind, files


def _text_lines(path: str) -> Iterator[str]:
    with open_file(path) as f:
        yield from io.TextIOWrapper(f, encoding="utf-8", newline="")


def _jsonl_records(path: str) -> Iterator[dict]:
    for n, line in enumerate(_text_lines(path)):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise PairsError(f"{path} line {n + 1}: invalid JSON: {e}") from e
        if not isinstance(record, dict):
            raise PairsError(f"{path} line {n + 1}: expected a JSON object, got {type(record).__name__}")
        yield record


def input_schema(kind: str, files: list[str]) -> pa.Schema:
    """The input columns and their types, read from the first file (the first 1000 JSONL
    records); refuses a log without `query` or `video_id`."""
    first = files[0]
    if kind == "parquet":
        with open_file(first) as f:
            schema = pq.ParquetFile(f).schema_arrow
        fields = list(schema)
    elif kind == "csv":
        header = next(csv.reader(_text_lines(first)), [])
        fields = [pa.field(n, pa.string()) for n in header]
    else:
        rows = []
        for record in _jsonl_records(first):
            rows.append(record)
            if len(rows) >= SCHEMA_SAMPLE_ROWS:
                break
        names = list(dict.fromkeys(n for r in rows for n in r))
        fields = [pa.field(n, pa.string() if n in REQUIRED else json_type([r.get(n) for r in rows]))
                  for n in names]
    names = [f.name for f in fields]
    absent = [c for c in REQUIRED if c not in names]
    if absent:
        raise PairsError(f"{first} has no {' or '.join(absent)} column (columns: {', '.join(names) or 'none'})")
    return pa.schema(fields).remove_metadata()


def count_rows(kind: str, path: str) -> int:
    """Pairs in one file (Parquet: from its footer)."""
    if kind == "parquet":
        with open_file(path) as f:
            return pq.ParquetFile(f).metadata.num_rows
    if kind == "csv":
        return max(0, sum(1 for _ in csv.reader(_text_lines(path))) - 1)
    return sum(1 for _ in _jsonl_records(path))


def read_rows(kind: str, path: str, schema: pa.Schema) -> Iterator[tuple[int, dict[str, Any], int]]:
    """(row number in the file, {column: value} over `schema`'s columns, values nulled because
    they did not fit their column) for each pair of one file, in file order."""
    names = schema.names
    if kind == "parquet":
        with open_file(path) as f:
            pf = pq.ParquetFile(f)
            have = [n for n in names if n in pf.schema_arrow.names]
            row = 0
            for batch in pf.iter_batches(batch_size=_BATCH, columns=have):
                columns = {n: batch.column(n).to_pylist() for n in have}
                for i in range(batch.num_rows):
                    yield row, {n: (columns[n][i] if n in columns else None) for n in names}, 0
                    row += 1
        return
    if kind == "csv":
        reader = csv.reader(_text_lines(path))
        header = next(reader, [])
        for row, cells in enumerate(reader):
            values = dict(zip(header, cells))
            yield row, {n: (values.get(n) if values.get(n) != "" else None) for n in names}, 0
        return
    types = {f.name: f.type for f in schema}
    for row, record in enumerate(_jsonl_records(path)):
        values, nulled = {}, 0
        for n in names:
            try:
                values[n] = convert_value(record.get(n), types[n])
            except (TypeError, ValueError, pa.ArrowException):
                values[n], nulled = None, nulled + 1
        yield row, values, nulled

"""The input contract: what `--input` may be and how a manifest record becomes a VideoRequest.

Pure functions, no Beam. A manifest is JSONL (`.jsonl`, `.ndjson`, `.json`), CSV (`.csv`) or
Parquet (`.parquet`); anything else given to `--input` is a directory or a glob of video files.
Record fields: `uri` (required), `video_id` (default: a stable hash of the uri), `title`, `tags`,
and any other field, carried through as a nullable column of `videos` (renamed `manifest_<name>`
when it collides with a vmm column).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any, Iterable

import pyarrow as pa

from schemas.elements import ErrorRecord, StageError, VideoRequest
from schemas.forward_index import RESERVED_VIDEO_COLUMNS

MANIFEST_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}
VIDEO_SUFFIXES = (
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".flv", ".wmv", ".mpg", ".mpeg", ".ts", ".m2ts",
    ".3gp", ".ogv", ".mxf", ".vob",
)
_OWN_FIELDS = ("uri", "video_id", "title", "tags")
SCHEMA_SAMPLE_ROWS = 1000  # JSONL rows read at construction to infer passthrough column types


class ManifestError(ValueError):
    """The manifest as a whole is unusable (missing, unreadable header, no `uri` column)."""


def manifest_kind(path: str) -> str | None:
    """'jsonl' | 'csv' | 'parquet' for a manifest path (or glob of manifests); None otherwise."""
    lower = path.lower()
    for suffix, kind in MANIFEST_SUFFIXES.items():
        if lower.endswith(suffix):
            return kind
    return None


def default_video_id(uri: str) -> str:
    """Stable id from the uri: the first 16 hex digits of its SHA-1 (collisions ~1 in 10^19 pairs)."""
    return hashlib.sha1(uri.encode("utf-8")).hexdigest()[:16]


def passthrough_name(field: str) -> str:
    return f"manifest_{field}" if field in RESERVED_VIDEO_COLUMNS else field


def json_type(values: list[Any]) -> pa.DataType:
    present = [v for v in values if v is not None]
    if not present:
        return pa.string()
    if all(isinstance(v, bool) for v in present):
        return pa.bool_()
    if all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.int64()
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return pa.float64()
    if all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in present):
        return pa.list_(pa.string())
    # Nested objects and mixed types are kept as their JSON text rather than guessed at.
    return pa.string()


def infer_passthrough_schema(kind: str, header_or_rows: Any) -> pa.Schema:
    """Types of the passthrough fields.

    jsonl: a list of parsed records (the first SCHEMA_SAMPLE_ROWS); csv: the header's field
    names (all strings: CSV has no types); parquet: the file's pyarrow schema.
    """
    fields: list[pa.Field] = []
    if kind == "jsonl":
        names: list[str] = []
        for rec in header_or_rows:
            for name in rec:
                if name not in names:
                    names.append(name)
        for name in names:
            if name in _OWN_FIELDS:
                continue
            fields.append(pa.field(passthrough_name(name), json_type([r.get(name) for r in header_or_rows])))
    elif kind == "csv":
        fields = [pa.field(passthrough_name(n), pa.string()) for n in header_or_rows if n not in _OWN_FIELDS]
    elif kind == "parquet":
        schema: pa.Schema = header_or_rows
        if "uri" not in schema.names:
            raise ManifestError(f"the Parquet manifest has no 'uri' column (columns: {schema.names})")
        fields = [pa.field(passthrough_name(f.name), f.type) for f in schema if f.name not in _OWN_FIELDS]
    else:
        raise ValueError(f"unknown manifest kind {kind!r}")
    names = [f.name for f in fields]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise ManifestError(
            f"manifest fields collide after renaming fields that vmm owns to manifest_<name>: {clashes}; "
            "rename one of them in the manifest"
        )
    return pa.schema(sorted(fields, key=lambda f: f.name))


def _as_tags(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        # CSV cells hold tags as "a|b|c".
        return tuple(t.strip() for t in value.split("|") if t.strip())
    if isinstance(value, (list, tuple)):
        return tuple(str(t) for t in value if t is not None)
    if hasattr(value, "tolist"):
        return _as_tags(value.tolist())
    raise TypeError(f"tags must be a list of strings or a '|'-separated string, got {type(value).__name__}")


def convert_value(value: Any, type_: pa.DataType) -> Any:
    """A manifest value as the column's type; TypeError/ValueError when it does not fit.

    Strict on purpose: pyarrow would truncate 2.5 into an int64 and split "drama" into characters
    for a list<string>; a value that does not fit is reported, never silently changed.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if pa.types.is_string(type_) or pa.types.is_large_string(type_):
        # A mixed-type JSONL column is a string column: non-strings keep their JSON text.
        return value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)
    if pa.types.is_boolean(type_):
        if not isinstance(value, bool):
            raise TypeError(f"expected a boolean, got {type(value).__name__}")
        return value
    if pa.types.is_integer(type_):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"expected an integer, got {type(value).__name__}")
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"expected an integer, got {value}")
        value = int(value)
    elif pa.types.is_floating(type_):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"expected a number, got {type(value).__name__}")
        value = float(value)
    elif pa.types.is_list(type_) or pa.types.is_large_list(type_) or pa.types.is_fixed_size_list(type_):
        if not isinstance(value, (list, tuple)) and not hasattr(value, "tolist"):
            raise TypeError(f"expected a list, got {type(value).__name__}")
    return pa.scalar(value, type=type_).as_py()


def record_to_request(
    record: dict[str, Any], ordinal: int, passthrough: pa.Schema, where: str
) -> VideoRequest | ErrorRecord:
    """One manifest record → a VideoRequest, or an ErrorRecord saying why the entry is unusable.

    `where` names the entry for messages and for the id of an entry without uri or id
    (e.g. `manifest.jsonl:17`). A passthrough value that does not fit its column becomes null
    and a `manifest` note on the video row instead of costing the video.
    """
    uri = record.get("uri")
    raw_id = record.get("video_id")
    video_id = str(raw_id) if raw_id not in (None, "") else None
    if not isinstance(uri, str) or not uri.strip():
        return ErrorRecord(
            video_id=video_id or f"manifest-entry:{where}",
            uri=None if uri is None else str(uri),
            stage="manifest",
            error_type="BadManifestEntry",
            message=f"{where}: the entry has no usable 'uri' (got {uri!r})",
        )
    uri = uri.strip()
    video_id = video_id or default_video_id(uri)
    notes: list[StageError] = []
    title = record.get("title")
    if title is not None and not isinstance(title, str):
        title = str(title)
    try:
        tags = _as_tags(record.get("tags"))
    except TypeError as e:
        tags = None
        notes.append(StageError("manifest", "BadField", f"tags: {e}"))
    extra = []
    wanted = {f.name: f.type for f in passthrough}
    for name, value in record.items():
        if name in _OWN_FIELDS:
            continue
        column = passthrough_name(name)
        if column not in wanted:
            continue  # a field first seen after the schema sample: not in the table's schema
        try:
            extra.append((column, convert_value(value, wanted[column])))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as e:
            extra.append((column, None))
            notes.append(StageError("manifest", "BadField", f"{name}: {value!r} is not {wanted[column]}: {e}"))
    return VideoRequest(
        video_id=video_id,
        uri=uri,
        ordinal=ordinal,
        title=title,
        tags=tags,
        extra=tuple(sorted(extra)),
        notes=tuple(notes),
    )


def parse_jsonl_line(line: str, where: str) -> dict[str, Any] | ErrorRecord:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        return ErrorRecord(f"manifest-entry:{where}", None, "manifest", "BadManifestEntry", f"{where}: invalid JSON: {e}")
    if not isinstance(record, dict):
        return ErrorRecord(
            f"manifest-entry:{where}", None, "manifest", "BadManifestEntry",
            f"{where}: expected a JSON object, got {type(record).__name__}",
        )
    return record


@dataclasses.dataclass(frozen=True)
class ManifestSpec:
    """What `--input` resolved to at pipeline construction."""

    kind: str  # "jsonl" | "csv" | "parquet" | "files"
    pattern: str  # a manifest path/glob, or a glob of video files
    passthrough: pa.Schema


def is_video_path(path: str) -> bool:
    return path.lower().endswith(VIDEO_SUFFIXES)


def first_rows(lines: Iterable[str], limit: int = SCHEMA_SAMPLE_ROWS) -> list[dict[str, Any]]:
    rows = []
    for line in lines:
        if len(rows) >= limit:
            break
        if not line.strip():
            continue
        parsed = parse_jsonl_line(line, "schema-sample")
        if isinstance(parsed, dict):
            rows.append(parsed)
    return rows

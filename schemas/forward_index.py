"""The forward-index contract: one pyarrow schema per output table, and the Parquet metadata.

Produces: `videos_schema(...)`, `frames_schema(...)`, `ERRORS_SCHEMA`, `file_metadata(...)`.
These schemas are what the writer uses; readers (pyarrow, pandas, DuckDB, Polars, Spark) see real
Arrow types: fixed-size lists for embeddings, int16 tokens, structs for stage errors.

Schema history:
  1 -- videos, frames (with visual tokens), errors.
"""

from __future__ import annotations

import pyarrow as pa

from models.version import __version__

SCHEMA_VERSION = "1"

TABLES = ("videos", "frames", "errors")

EMBEDDING_DTYPES = {"float16": pa.float16(), "float32": pa.float32()}

STAGE_ERROR_TYPE = pa.struct(
    [
        pa.field("stage", pa.string(), nullable=False),
        pa.field("error_type", pa.string(), nullable=False),
        pa.field("message", pa.string(), nullable=False),
    ]
)

# Columns the pipeline owns in `videos`, in order. Manifest passthrough fields go after `tags`.
VIDEO_CORE_LEADING = ("video_id", "uri", "title", "tags")
VIDEO_CORE_TRAILING = (
    "duration_s",
    "fps",
    "width",
    "height",
    "video_codec",
    "has_audio",
    "num_keyframes",
    "embedding",
    "topic_coherence",
    "title_visual_similarity",
    "stage_errors",
)
RESERVED_VIDEO_COLUMNS = frozenset(VIDEO_CORE_LEADING + VIDEO_CORE_TRAILING)

KEYFRAME_REASONS = ("first", "scene", "clock")


def embedding_type(dim: int, dtype: str) -> pa.DataType:
    """fixed_size_list<float16|float32>[dim]: what every embedding column is."""
    if dtype not in EMBEDDING_DTYPES:
        raise ValueError(f"embedding dtype must be one of {sorted(EMBEDDING_DTYPES)}, got {dtype!r}")
    if dim <= 0:
        raise ValueError(f"embedding dim must be positive, got {dim}")
    # The item field stays nullable: Parquet does not keep non-null on fixed-size list items, and a
    # schema that survives a write/read round trip unchanged is worth more than the flag.
    return pa.list_(EMBEDDING_DTYPES[dtype], dim)


def videos_schema(dim: int, dtype: str = "float16", passthrough: pa.Schema | None = None) -> pa.Schema:
    """One row per video that produced output.

    `passthrough` holds the manifest's extra fields (all nullable); their names must not collide
    with the pipeline's own columns (the manifest reader renames collisions beforehand).
    """
    extra = list(passthrough) if passthrough is not None else []
    for field in extra:
        if field.name in RESERVED_VIDEO_COLUMNS:
            raise ValueError(f"passthrough field {field.name!r} collides with a vmm column")
    return pa.schema(
        [
            pa.field("video_id", pa.string(), nullable=False),
            pa.field("uri", pa.string(), nullable=False),
            pa.field("title", pa.string()),
            pa.field("tags", pa.list_(pa.string())),
            *[f.with_nullable(True) for f in extra],
            pa.field("duration_s", pa.float64()),
            pa.field("fps", pa.float64()),
            pa.field("width", pa.int32(), nullable=False),
            pa.field("height", pa.int32(), nullable=False),
            pa.field("video_codec", pa.string(), nullable=False),
            pa.field("has_audio", pa.bool_(), nullable=False),
            pa.field("num_keyframes", pa.int32(), nullable=False),
            pa.field("embedding", embedding_type(dim, dtype), nullable=False),
            pa.field("topic_coherence", pa.float32()),
            pa.field("title_visual_similarity", pa.float32()),
            pa.field("stage_errors", pa.list_(pa.field("item", STAGE_ERROR_TYPE, nullable=False))),
        ]
    )


def frames_schema(dim: int, dtype: str = "float16", store_embeddings: bool = False) -> pa.Schema:
    """One row per keyframe. `embedding` is present only with --store-frame-embeddings.

    `token` is the id of the frame's nearest entry in the frame dictionary; `patch_tokens` the
    H*W ids (row-major) of its patches in the patch dictionary.
    """
    fields = [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("frame_index", pa.int32(), nullable=False),
        pa.field("timestamp_s", pa.float64(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
    ]
    fields += [
        # Null only when the run had no frame / patch dictionary (--codebook / --patch-codebook).
        pa.field("token", pa.int16()),
        pa.field("patch_tokens", pa.list_(pa.int16())),
    ]
    if store_embeddings:
        fields.append(pa.field("embedding", embedding_type(dim, dtype), nullable=False))
    return pa.schema(fields)


ERRORS_SCHEMA = pa.schema(
    [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("uri", pa.string()),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("error_type", pa.string(), nullable=False),
        pa.field("message", pa.string(), nullable=False),
    ]
)


def file_metadata(*, clip_model: str, clip_weights: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Key-value metadata written into every Parquet file of a run."""
    meta = {
        "vmm.schema_version": SCHEMA_VERSION,
        "vmm.version": __version__,
        "vmm.clip_model": clip_model,
        "vmm.clip_weights": clip_weights,
    }
    for key, value in (extra or {}).items():
        meta[key] = str(value)
    return meta


def with_metadata(schema: pa.Schema, metadata: dict[str, str]) -> pa.Schema:
    """pyarrow writes schema metadata as the Parquet file's key-value metadata."""
    return schema.with_metadata({k.encode(): v.encode() for k, v in metadata.items()})

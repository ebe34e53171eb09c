"""The forward-index contract: one pyarrow schema per output table, and the Parquet metadata.

Produces: `videos_schema(...)`, `frames_schema(...)`, `ASR_SEGMENTS_SCHEMA`, `ERRORS_SCHEMA`,
`file_metadata(...)`.
These schemas are what the writer uses; readers (pyarrow, pandas, DuckDB, Polars, Spark) see real
Arrow types: fixed-size lists for embeddings, int16 tokens, structs for stage errors.

Schema history:
  1 -- videos, frames (with visual tokens), errors.
  2 -- OCR: frames.ocr (boxes with their domain), frames with reason "text", videos.ocr_*_text;
       ASR: table asr_segments, videos.asr_text / asr_language / asr_language_probability /
       speech_seconds.
  3 -- embeddings readable by every engine (Spark cannot read float16): int8 codes + a per-row
       `embedding_scale` by default (vector = embedding x embedding_scale; float16 and float32 on
       request, see README "The embedding encoding"); `vmm.embedding_decode` says how to
       decode a file's vectors; `vmm.settings.*` record the frame sampling, OCR domain rules and ASR
       decoding a run used. `schemas.index.IndexReader` reads every version.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from models.version import __version__

SCHEMA_VERSION = "3"

TABLES = ("videos", "frames", "asr_segments", "errors")

# int8: codes q with a per-row float32 `embedding_scale` s, the vector being q x s (s = max|v| / 127).
EMBEDDING_DTYPES = {"int8": pa.int8(), "float16": pa.float16(), "float32": pa.float32()}
DEFAULT_EMBEDDING_DTYPE = "int8"
EMBEDDING_SCALE = "embedding_scale"

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
    EMBEDDING_SCALE,
    "topic_coherence",
    "title_visual_similarity",
    "ocr_subtitle_text",
    "ocr_overlay_text",
    "ocr_scene_text",
    "asr_text",
    "asr_language",
    "asr_language_probability",
    "speech_seconds",
    "stage_errors",
)
RESERVED_VIDEO_COLUMNS = frozenset(VIDEO_CORE_LEADING + VIDEO_CORE_TRAILING)

# "text": a frame read only by OCR (a subtitle or other text appeared); it has no CLIP embedding,
# so its token columns are null.
KEYFRAME_REASONS = ("first", "scene", "clock", "text")

OCR_DOMAINS = ("subtitle", "overlay", "scene", "noise")

OCR_LINE_TYPE = pa.struct(
    [
        pa.field("text", pa.string(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
        # Four corners x1, y1, ..., x4, y4 in pixels of the original (displayed) frame.
        pa.field("box", pa.list_(pa.float32(), 8), nullable=False),
        pa.field("domain", pa.string(), nullable=False),
    ]
)


def embedding_type(dim: int, dtype: str) -> pa.DataType:
    """fixed_size_list<int8|float16|float32>[dim]: what every embedding column is."""
    if dtype not in EMBEDDING_DTYPES:
        raise ValueError(f"embedding dtype must be one of {sorted(EMBEDDING_DTYPES)}, got {dtype!r}")
    if dim <= 0:
        raise ValueError(f"embedding dim must be positive, got {dim}")
    # The item field stays nullable: Parquet does not keep non-null on fixed-size list items, and a
    # schema that survives a write/read round trip unchanged is worth more than the flag.
    return pa.list_(EMBEDDING_DTYPES[dtype], dim)


def embedding_fields(dim: int, dtype: str) -> list[pa.Field]:
    """`embedding`, and `embedding_scale` (float32) when the codes are int8."""
    fields = [pa.field("embedding", embedding_type(dim, dtype), nullable=False)]
    if dtype == "int8":
        fields.append(pa.field(EMBEDDING_SCALE, pa.float32(), nullable=False))
    return fields


def encode_embedding(vector: np.ndarray, dtype: str) -> dict:
    """The embedding column(s) of one row: {'embedding': ...} (+ 'embedding_scale' for int8).

    int8: symmetric per-row quantisation, s = max|v| / 127 and q = round(v / s), so that the
    largest component uses the whole range; cosine(q_a, q_b) needs no scale at all."""
    vector = np.asarray(vector, np.float32)
    if dtype != "int8":
        return {"embedding": vector.astype(dtype)}
    peak = float(np.max(np.abs(vector))) if vector.size else 0.0
    scale = peak / 127.0 if peak > 0 else 1.0
    codes = np.clip(np.rint(vector / scale), -127, 127).astype(np.int8)
    return {"embedding": codes, EMBEDDING_SCALE: np.float32(scale)}


def videos_schema(dim: int, dtype: str = DEFAULT_EMBEDDING_DTYPE, passthrough: pa.Schema | None = None) -> pa.Schema:
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
            *embedding_fields(dim, dtype),
            pa.field("topic_coherence", pa.float32()),
            pa.field("title_visual_similarity", pa.float32()),
            # OCR text by domain, one line per line ("\n"-joined); null when OCR was off or failed.
            pa.field("ocr_subtitle_text", pa.string()),
            pa.field("ocr_overlay_text", pa.string()),
            pa.field("ocr_scene_text", pa.string()),
            # ASR; null when ASR was off, the video has no audio, or ASR failed (see stage_errors).
            # Speech in a language the model cannot transcribe (an English-only model hearing
            # Mandarin): asr_text / asr_language null, speech_seconds filled, stage error
            # ("asr", "UnsupportedLanguage"). asr_language is null too when there is no speech.
            pa.field("asr_text", pa.string()),
            pa.field("asr_language", pa.string()),
            pa.field("asr_language_probability", pa.float32()),
            pa.field("speech_seconds", pa.float64()),
            pa.field("stage_errors", pa.list_(pa.field("item", STAGE_ERROR_TYPE, nullable=False))),
        ]
    )


def frames_schema(dim: int, dtype: str = DEFAULT_EMBEDDING_DTYPE, store_embeddings: bool = False) -> pa.Schema:
    """One row per keyframe and per text frame. `embedding` only with --store-frame-embeddings.

    `token` is the id of the frame's nearest entry in the frame dictionary; `patch_tokens` the
    H*W ids (row-major) of its patches in the patch dictionary. Text frames (read only by OCR) get
    no CLIP work, so null tokens -- except with --store-frame-embeddings, which embeds them too. `ocr` holds the frame's text lines
    with their domain (empty list: no text; null: OCR off or failed on this frame).
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
        pa.field("ocr", pa.list_(pa.field("item", OCR_LINE_TYPE, nullable=False))),
    ]
    if store_embeddings:
        # Text frames are embedded too in this mode, so the column is never null (readers of
        # nullable fixed-size lists with nulls trip over Parquet's encoding of them).
        fields += embedding_fields(dim, dtype)
    return pa.schema(fields)


ASR_SEGMENTS_SCHEMA = pa.schema(
    [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("segment_index", pa.int32(), nullable=False),
        pa.field("start_s", pa.float64(), nullable=False),
        pa.field("end_s", pa.float64(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        # Whisper's figures for the 30 s chunk the segment was decoded from, the same for every
        # segment of that chunk: the beam's log-probability of the chunk's tokens / (tokens + 1),
        # and the probability of the no-speech token at the chunk's start.
        pa.field("avg_logprob", pa.float32(), nullable=False),
        pa.field("no_speech_prob", pa.float32(), nullable=False),
    ]
)


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


def embedding_metadata(dtype: str, dim: int) -> dict[str, str]:
    """`vmm.embedding_*`: which encoding a file's embedding columns hold, and how to decode it."""
    if dtype not in EMBEDDING_DTYPES:
        raise ValueError(f"embedding dtype must be one of {sorted(EMBEDDING_DTYPES)}, got {dtype!r}")
    decode = f"embedding * {EMBEDDING_SCALE}" if dtype == "int8" else "embedding"
    return {"vmm.embedding_dtype": dtype, "vmm.embedding_dim": str(dim), "vmm.embedding_decode": decode}


def settings_metadata(settings: dict) -> dict[str, str]:
    """`vmm.settings.<group>`: one compact JSON object per group of run settings (null: stage off)."""
    return {f"vmm.settings.{group}": json.dumps(value, sort_keys=True, separators=(",", ":"))
            for group, value in settings.items()}


def with_metadata(schema: pa.Schema, metadata: dict[str, str]) -> pa.Schema:
    """pyarrow writes schema metadata as the Parquet file's key-value metadata."""
    return schema.with_metadata({k.encode(): v.encode() for k, v in metadata.items()})

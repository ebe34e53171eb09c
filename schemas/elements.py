"""Element types that travel between pipeline stages (plain dataclasses, picklable).

VideoRequest  -- one manifest entry (read_manifest -> decode)
VideoFrames   -- one video's keyframe pixels at the size their consumer needs (decode -> embed)
VideoInfo     -- what decoding learnt about a video plus its keyframe metadata (decode -> assemble)
FrameFeatures -- one keyframe's embedding and visual tokens (embed -> tokenize -> assemble)
OcrInput      -- the frames OCR reads (text resolution) and which ones reuse a result (decode -> ocr)
VideoOcr      -- a video's OCR lines per frame with their domains, and its text by domain (ocr -> assemble)
VideoAudio    -- a video's audio, 16 kHz mono float32 (decode -> asr)
VideoAsr      -- a video's transcript, or why there is none (asr -> assemble)
ErrorRecord   -- a manifest entry that produced no `videos` row (any stage -> `errors` table)
StageError    -- a partial failure recorded on a video row (`videos.stage_errors`)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class VideoRequest:
    video_id: str
    uri: str
    ordinal: int  # position in the manifest: decides which duplicate video_id wins
    title: str | None = None
    tags: tuple[str, ...] | None = None
    extra: tuple[tuple[str, Any], ...] = ()  # passthrough manifest fields, name-sorted
    notes: tuple["StageError", ...] = ()  # problems met while reading the entry (kept on the row)


@dataclasses.dataclass(frozen=True)
class StageError:
    stage: str
    error_type: str
    message: str


@dataclasses.dataclass(frozen=True)
class ErrorRecord:
    video_id: str
    uri: str | None
    stage: str
    error_type: str
    message: str


@dataclasses.dataclass(frozen=True)
class KeyframeMeta:
    frame_index: int  # 0-based index among the frames the decoder output for the chosen stream
    timestamp_s: float  # presentation time from the stream start
    reason: str  # "first" | "scene" | "clock" | "text" (read by OCR only)


@dataclasses.dataclass(frozen=True, eq=False)
class VideoFrames:
    """All keyframes of one video, embedded together: one model call per video keeps each
    embedding independent of which other videos happened to share a batch (deterministic rows)."""

    video_id: str
    frame_indices: tuple[int, ...]
    images: tuple[np.ndarray, ...]  # uint8 [H, W, 3] RGB, already small (shortest side = model input size)
    title: str | None = None  # the manifest's title (stripped), embedded in the same call when set


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    request: VideoRequest
    duration_s: float | None
    fps: float | None
    width: int
    height: int
    video_codec: str
    has_audio: bool
    keyframes: tuple[KeyframeMeta, ...]  # the CLIP keyframes
    frames_decoded: int
    text_frames: tuple[KeyframeMeta, ...] = ()  # frames read only by OCR
    notes: tuple[StageError, ...] = ()  # partial failures met while decoding (e.g. the audio track)


@dataclasses.dataclass(frozen=True, eq=False)
class FrameFeatures:
    """One keyframe's model outputs (embed -> tokenize -> assemble)."""

    frame_index: int
    embedding: np.ndarray  # float32 [D], L2-normalised
    patches: np.ndarray | None = None  # float32 [H*W, D], only while a patch dictionary needs them
    token: int | None = None  # frame-level visual token (int16 range)
    patch_tokens: np.ndarray | None = None  # int16 [H*W], row-major


@dataclasses.dataclass(frozen=True, eq=False)
class OcrInput:
    """One video's frames for OCR, in time order (models.decode.OcrFrame: an image only when read)."""

    video_id: str
    width: int  # display size of the original frames: boxes are mapped back to it
    height: int
    frames: tuple[Any, ...]


@dataclasses.dataclass(frozen=True, eq=False)
class OcrItem:
    text: str
    score: float
    box: np.ndarray  # float32 [8], pixels of the original frame
    domain: str  # "subtitle" | "overlay" | "scene" | "noise"


@dataclasses.dataclass(frozen=True, eq=False)
class VideoOcr:
    frames: tuple[tuple[int, tuple[OcrItem, ...] | None], ...]  # (frame_index, lines; None: failed)
    subtitle_lines: tuple[str, ...]
    overlay_texts: tuple[str, ...]
    scene_texts: tuple[str, ...]
    frames_read: int
    frames_reused: int
    errors: tuple[StageError, ...] = ()


@dataclasses.dataclass(frozen=True, eq=False)
class VideoAudio:
    video_id: str
    samples: np.ndarray  # float32 mono
    sample_rate: int


@dataclasses.dataclass(frozen=True, eq=False)
class VideoAsr:
    result: Any | None  # models.asr.AsrResult, None when ASR failed
    error: StageError | None = None

"""Decode one video with PyAV and keep only its keyframes, small. No Beam.

Consumes a local path or a binary file object (what Beam's FileSystems.open returns).
Produces a `DecodedVideo`: stream facts (duration, fps, display size, codec, audio) and the chosen
keyframes as uint8 RGB arrays whose shorter side is `short_side` (the CLIP input size).

Memory stays bounded whatever the video's length: frames are resized in the decoder (swscale) the
moment they are kept, thumbnails for cut detection are 64x36, and the candidate buffer is thinned
to `2 * max_frames` as it grows, so a video never holds more than that many small frames.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import BinaryIO

import av
import numpy as np

from models.keyframes import (
    Candidate,
    CandidateDetector,
    SamplingConfig,
    color_signature,
    select_keyframes,
    thumbnail_size,
)

logger = logging.getLogger(__name__)

_ANALYSIS_SIZE = (64, 36)


class DecodeError(Exception):
    """A video that cannot be decoded. `error_type` is a stable name for the `errors` table."""

    def __init__(self, error_type: str, message: str):
        super().__init__(message)
        self.error_type = error_type


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
    sampling: SamplingConfig = SamplingConfig()
    short_side: int = 224  # shorter side of kept frames: the embedder's input size
    max_duration_s: float | None = None  # stop reading after this much video (None: all of it)
    threads: int = 0  # decoder threads; 0 lets FFmpeg choose

    def __post_init__(self):
        if self.short_side < 1:
            raise ValueError(f"short_side must be >= 1, got {self.short_side}")
        if self.max_duration_s is not None and self.max_duration_s <= 0:
            raise ValueError(f"max_duration_s must be > 0, got {self.max_duration_s}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, got {self.threads}")


@dataclasses.dataclass(frozen=True, eq=False)
class DecodedVideo:
    duration_s: float | None
    fps: float | None
    width: int  # display width (after rotation metadata)
    height: int
    video_codec: str
    has_audio: bool
    frames_decoded: int
    keyframes: list[tuple[Candidate, np.ndarray]]  # time order; images uint8 [h, w, 3]
    decode_seconds: float


def _rotate(img: np.ndarray, rotation: float) -> np.ndarray:
    # PyAV reports the display matrix angle counter-clockwise; np.rot90 also turns counter-clockwise.
    quarter = int(round(rotation / 90.0)) % 4
    return np.ascontiguousarray(np.rot90(img, k=quarter)) if quarter else img


def _timestamp(frame: av.VideoFrame, stream: av.video.stream.VideoStream, index: int, fps: float | None) -> float:
    if frame.pts is not None and stream.time_base is not None:
        start = stream.start_time if stream.start_time is not None else 0
        return max(0.0, float((frame.pts - start) * stream.time_base))
    return index / fps if fps else float(index)


def _frame_rate(stream) -> float | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            value = float(rate)
            if math.isfinite(value) and 0 < value < 1000:
                return value
    return None


def _reported_duration(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000.0
    return None


def decode_keyframes(source: str | BinaryIO, config: DecodeConfig = DecodeConfig()) -> DecodedVideo:
    """Decodes the default video stream once and returns its keyframes. Raises DecodeError."""
    started = time.perf_counter()
    try:
        container = av.open(source, mode="r", metadata_errors="ignore")
    except FileNotFoundError as e:
        raise DecodeError("FileNotFound", f"no such file: {e.filename or source}") from e
    except IsADirectoryError as e:
        raise DecodeError("NotAFile", f"is a directory: {e.filename or source}") from e
    except av.error.FFmpegError as e:
        raise DecodeError("DecodeError", f"cannot open as a video container: {e}") from e
    with container:
        if not container.streams.video:
            raise DecodeError("NoVideoStream", "the file has no video stream")
        stream = container.streams.best("video") or container.streams.video[0]
        stream.thread_type = "AUTO"
        if config.threads:
            stream.codec_context.thread_count = config.threads
        fps = _frame_rate(stream)
        try:
            return _decode_stream(container, stream, fps, config, started)
        except av.error.FFmpegError as e:
            raise DecodeError("DecodeError", f"decoding failed: {e}") from e


def _decode_stream(container, stream, fps, config: DecodeConfig, started: float) -> DecodedVideo:
    sampling = config.sampling
    detector = CandidateDetector(sampling)
    buffer_cap = 2 * sampling.max_frames
    kept: list[tuple[Candidate, np.ndarray]] = []
    index = -1
    last_t = 0.0
    rotation = 0.0
    size: tuple[int, int] | None = None
    truncated = False
    for frame in container.decode(stream):
        index += 1
        t = _timestamp(frame, stream, index, fps)
        if config.max_duration_s is not None and t > config.max_duration_s:
            truncated = True
            break
        last_t = max(last_t, t)
        if index == 0:
            rotation = frame.rotation or 0.0
        if not detector.wants(t):
            continue
        thumb = frame.to_ndarray(format="rgb24", width=_ANALYSIS_SIZE[0], height=_ANALYSIS_SIZE[1])
        candidate = detector.observe(index, t, color_signature(thumb))
        if candidate is None:
            continue
        if size is None:
            size = thumbnail_size(frame.width, frame.height, config.short_side)
        img = frame.to_ndarray(format="rgb24", width=size[0], height=size[1], interpolation="AREA")
        kept.append((candidate, _rotate(img, rotation)))
        if len(kept) > buffer_cap:
            kept = _thin(kept, sampling.max_frames * 2 - sampling.max_frames // 2)
    if index < 0:
        raise DecodeError("NoFrames", "the video stream decoded to no frames")
    kept = _thin(kept, sampling.max_frames)
    frame_time = 1.0 / fps if fps else 0.0
    # A fully decoded stream is measured; a stream cut short by max_duration_s reports its length.
    duration = last_t + frame_time
    if truncated:
        duration = _reported_duration(container, stream) or duration
    width, height = stream.codec_context.width, stream.codec_context.height
    if int(round(rotation / 90.0)) % 2:
        width, height = height, width
    return DecodedVideo(
        duration_s=duration,
        fps=fps,
        width=int(width),
        height=int(height),
        video_codec=stream.codec_context.name,
        has_audio=bool(container.streams.audio),
        frames_decoded=index + 1,
        keyframes=kept,
        decode_seconds=time.perf_counter() - started,
    )


def _thin(kept: list[tuple[Candidate, np.ndarray]], limit: int) -> list[tuple[Candidate, np.ndarray]]:
    chosen = {id(c) for c in select_keyframes([c for c, _ in kept], limit)}
    return [(c, img) for c, img in kept if id(c) in chosen]

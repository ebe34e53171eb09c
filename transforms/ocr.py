"""ReadText: the frames decode chose for OCR → each frame's text lines with their domain, per video.

Consumes OcrInput (a video's keyframes and text frames at text resolution; frames whose text barely
changed carry no image and reuse the lines of the frame they point to).
Produces (video_id, VideoOcr): lines per frame (boxes in pixels of the original frame), the
video's subtitle lines / overlay strings / scene text (rules in models.ocr_domains), and how many
frames were read and reused. A frame the engine fails on is a stage error on its video; the other
frames are still read.

The engine is loaded once per worker process and shared by every DoFn instance in it
(transforms.process_cache).
"""

from __future__ import annotations

import logging
import time

import apache_beam as beam

from models.ocr import OcrConfig, OcrEngine, load_engine
from models.ocr_domains import DomainConfig, FrameText, classify_video
from schemas.elements import OcrInput, OcrItem, StageError, VideoOcr
from transforms.process_cache import process_model

logger = logging.getLogger(__name__)

_NAMESPACE = "vmm"


def engine_for(config: OcrConfig) -> OcrEngine:
    """The process's engine for `config` (loaded on first use)."""
    return process_model("OCR", config, lambda: load_engine(config))


def read_video(engine: OcrEngine, item: OcrInput, domains: DomainConfig = DomainConfig()) -> VideoOcr:
    """OCR of one video's frames (no Beam): reads the frames that carry an image, reuses the rest."""
    read: dict[int, list | None] = {}
    errors: list[StageError] = []
    previous = None  # the complete lines of the last frame OCR saw (read or reused)
    for frame in item.frames:
        if frame.image is None:
            previous = read.get(frame.source, previous)
            continue
        w, h = frame.text_size
        sx, sy = item.width / w, item.height / h
        try:
            lines = engine.read(frame.image)
        except Exception as e:  # an engine failure on one frame must not lose the video
            errors.append(StageError("ocr", type(e).__name__, f"frame {frame.frame_index}: {e}"))
            read[frame.frame_index] = previous = None
            continue
        top = frame.crop_top
        lines = [line.shifted(0, top).scaled(sx, sy) if top else line.scaled(sx, sy) for line in lines]
        if top:
            # Only the band was read: the lines above it are those of the frame before.
            cut = top * sy
            above = [line for line in previous or () if _center_y(line) < cut]
            lines = above + lines
        read[frame.frame_index] = previous = lines
    per_frame = [(f, read.get(f.source)) for f in item.frames]
    known = [(f, lines) for f, lines in per_frame if lines is not None]
    text = classify_video(
        [FrameText(f.frame_index, f.timestamp_s, lines) for f, lines in known], item.width, item.height, domains
    )
    labelled: dict[int, tuple[OcrItem, ...]] = {}
    for (f, lines), labels in zip(known, text.domains):
        labelled[f.frame_index] = tuple(
            OcrItem(line.text, float(line.score), line.box, label) for line, label in zip(lines, labels)
        )
    return VideoOcr(
        frames=tuple((f.frame_index, labelled.get(f.frame_index)) for f in item.frames),
        subtitle_lines=tuple(text.subtitle_lines),
        overlay_texts=tuple(text.overlay_texts),
        scene_texts=tuple(text.scene_texts),
        frames_read=len(read),
        frames_reused=len(item.frames) - len(read),
        errors=tuple(errors),
    )


def _center_y(line) -> float:
    return float(line.box[1::2].mean())


class _ReadTextFn(beam.DoFn):
    def __init__(self, config: OcrConfig, domains: DomainConfig):
        self._config = config
        self._domains = domains
        self._read = beam.metrics.Metrics.counter(_NAMESPACE, "ocr_frames_read")
        self._reused = beam.metrics.Metrics.counter(_NAMESPACE, "ocr_frames_reused")
        self._failed = beam.metrics.Metrics.counter(_NAMESPACE, "ocr_frames_failed")
        self._ms = beam.metrics.Metrics.distribution(_NAMESPACE, "ocr_ms")

    def setup(self):
        self._engine = engine_for(self._config)

    def process(self, item: OcrInput):
        started = time.perf_counter()
        result = read_video(self._engine, item, self._domains)
        self._read.inc(result.frames_read)
        self._reused.inc(result.frames_reused)
        self._failed.inc(len(result.errors))
        self._ms.update(int((time.perf_counter() - started) * 1000))
        yield item.video_id, result


class ReadText(beam.PTransform):
    """OcrInput → (video_id, VideoOcr)."""

    def __init__(self, config: OcrConfig, domains: DomainConfig = DomainConfig()):
        super().__init__()
        self._config = config
        self._domains = domains

    def expand(self, inputs):
        return inputs | "Ocr" >> beam.ParDo(_ReadTextFn(self._config, self._domains))

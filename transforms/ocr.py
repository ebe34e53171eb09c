"""ReadText: the frames decode chose for OCR → each frame's text lines with their domain, per video.

Consumes OcrInput (a video's keyframes and text frames at text resolution; frames whose text barely
changed carry no image and reuse the lines of the frame they point to).
Produces (video_id, VideoOcr): lines per frame (boxes in pixels of the original frame), the
video's subtitle lines / overlay strings / scene text (rules in models.ocr_domains), and how many
frames were read and reused. A frame the engine fails on is a stage error on its video; the other
frames are still read.

Engines are pooled per worker process (transforms.process_cache): a call takes a free copy, so
worker threads read in parallel and the process holds one copy per thread that ever read at once.

A video's reads are cut into parts that need nothing from each other (`split_reads`), so that one
long video is read on several cores at once, with exactly the lines one reader would get. By
default the parts are read where the video was decoded, `parallel` at a time on engines of their
own (RapidOCR on one ONNX Runtime thread each: a second thread in one engine gains nothing, a
second engine doubles the speed), and the step fuses with the decoder: the frames are never
shuffled, and on DirectRunner, which runs one stage at a time, reading overlaps the other videos'
decoding and Whisper. `spread=True` shuffles the parts over all workers instead, and joins them
by video: one shuffle of the images, for a cluster whose stragglers are single long videos.

Read where it was decoded, OCR is the stage's filler: its threads run at a lower CPU priority
(`OCR_NICE`, Linux) than decoding and Whisper, which are sequential per video. The work done is the
same; what changes is its order: a long video's transcript is no longer slowed by its own OCR
(and the next videos'), which then takes the cores that are left, and all of them at the end.
The stage's thread never waits on those threads while it has videos to decode: a video's lines go
out once read, from a later `process` call or `finish_bundle`.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
import sys
import threading
import time
from typing import Mapping, Sequence

import apache_beam as beam

from models.memory import release_freed_memory
from models.ocr import OcrConfig, OcrEngine, load_engine
from models.ocr_domains import DomainConfig, FrameText, classify_video
from schemas.elements import OcrInput, OcrItem, StageError, VideoOcr
from transforms.pending import PendingResults
from transforms.process_cache import pooled_model

logger = logging.getLogger(__name__)

_NAMESPACE = "vmm"


def engine_for(config: OcrConfig):
    """A context manager lending an engine for `config` that no other thread uses meanwhile (one copy
    per concurrent caller in the process; RapidOCR serves one call at a time)."""
    return pooled_model("OCR", config, lambda: load_engine(config))


def read_video(engine: OcrEngine, item: OcrInput, domains: DomainConfig = DomainConfig()) -> VideoOcr:
    """OCR of one video's frames (no Beam): reads the frames that carry an image, reuses the rest."""
    read, errors = read_frames(engine, item)
    return label_video(item, read, errors, domains)


def read_frames(engine: OcrEngine, item: OcrInput) -> tuple[dict[int, list | None], list[StageError]]:
    """Lines of each frame of `item` that carries an image (None: the engine failed on it), in pixels
    of the original frame, and the stage errors. Frames are read in order: a band-only frame takes
    its lines above the band from the frame before it."""
    read: dict[int, list | None] = {}
    errors: list[StageError] = []
    previous = None  # the complete lines of the last frame OCR saw (read or reused)
    for frame in item.frames:
        if frame.image is None:
            previous = read.get(frame.source, previous)
            continue
        w, h = frame.text_size
        sx, sy = item.width / w, item.height / h
        top = frame.crop_top
        try:
            # A band cut from a frame in display orientation: its lines stand upright.
            lines = engine.read(frame.image, upright=bool(top))
        except Exception as e:  # an engine failure on one frame must not lose the video
            errors.append(StageError("ocr", type(e).__name__, f"frame {frame.frame_index}: {e}"))
            read[frame.frame_index] = previous = None
            continue
        lines = [line.shifted(0, top).scaled(sx, sy) if top else line.scaled(sx, sy) for line in lines]
        if top:
            # Only the band was read: the lines above it are those of the frame before.
            cut = top * sy
            above = [line for line in previous or () if _center_y(line) < cut]
            lines = above + lines
        read[frame.frame_index] = previous = lines
    return read, errors


def label_video(item: OcrInput, read: dict[int, list | None], errors: Sequence[StageError],
                domains: DomainConfig = DomainConfig()) -> VideoOcr:
    """The video's OCR result from every frame's lines (`read_frames`): domains, subtitle lines, counts.
    Only the frames' metadata is used; their images may have been dropped."""
    known = [(f.frame_index, f.timestamp_s, read.get(f.source)) for f in item.frames]
    text, labelled = _classify([k for k in known if k[2] is not None], item.width, item.height, domains)
    return VideoOcr(
        frames=tuple((f.frame_index, labelled.get(f.frame_index)) for f in item.frames),
        subtitle_lines=tuple(text.subtitle_lines),
        overlay_texts=tuple(text.overlay_texts),
        scene_texts=tuple(text.scene_texts),
        frames_read=len(read),
        frames_reused=len(item.frames) - len(read),
        errors=tuple(errors),
    )


def _classify(frames: Sequence[tuple[int, float, Sequence]], width: int, height: int, domains: DomainConfig,
              speech: Sequence | None = None):
    """classify_video over (frame_index, timestamp_s, lines) in time order: the video's text and each
    frame's lines as OcrItems with their domain, by frame index."""
    text = classify_video([FrameText(i, t, lines) for i, t, lines in frames], width, height, domains, speech)
    labelled = {
        i: tuple(OcrItem(line.text, float(line.score), line.box, label) for line, label in zip(lines, labels))
        for (i, _, lines), labels in zip(frames, text.domains)
    }
    return text, labelled


def label_with_speech(ocr: VideoOcr, times: Mapping[int, float], width: int, height: int,
                      segments: Sequence, domains: DomainConfig = DomainConfig()) -> VideoOcr:
    """`ocr` labelled again with the video's ASR segments as evidence (models.ocr_domains, rules
    3e-3g): OCR is read before the speech is known, so the two meet when the video's row is made.
    `times`: the timestamp of every frame in `ocr.frames`, by frame index. Lines, frames and counts
    are unchanged; without segments, `ocr` itself."""
    if not segments:
        return ocr
    known = [(i, times[i], items) for i, items in ocr.frames if items is not None]
    text, labelled = _classify(known, width, height, domains, segments)
    return dataclasses.replace(
        ocr,
        frames=tuple((i, labelled.get(i)) for i, _ in ocr.frames),
        subtitle_lines=tuple(text.subtitle_lines),
        overlay_texts=tuple(text.overlay_texts),
        scene_texts=tuple(text.scene_texts),
    )


def split_reads(item: OcrInput, max_reads: int) -> list[OcrInput]:
    """`item` cut into consecutive parts of about `max_reads` frames to read, so that the frames of
    one long video are read by several workers at once, with exactly the lines one reader would get.

    A part may only start at a frame read whole (not a band, not reused), and only where no later
    frame reuses the lines of a frame before it: each part then holds everything its frames need.
    """
    if max_reads < 1:
        raise ValueError(f"max_reads must be >= 1, got {max_reads}")
    frames = item.frames
    # earliest[i]: the earliest frame index reused by any frame from i on.
    earliest = [0] * (len(frames) + 1)
    earliest[len(frames)] = float("inf")
    for i in range(len(frames) - 1, -1, -1):
        f = frames[i]
        earliest[i] = min(earliest[i + 1], f.source if f.image is None else float("inf"))
    parts, start, reads = [], 0, 0
    for i, f in enumerate(frames):
        whole = f.image is not None and not f.crop_top
        if reads >= max_reads and whole and earliest[i] >= f.frame_index:
            parts.append(dataclasses.replace(item, frames=frames[start:i]))
            start, reads = i, 0
        reads += f.image is not None
    parts.append(dataclasses.replace(item, frames=frames[start:]))
    return parts


def _center_y(line) -> float:
    return float(line.box[1::2].mean())


@dataclasses.dataclass(frozen=True)
class _PartRead:
    """What reading one part of a video gave: its frames (images dropped), lines and errors."""

    index: int
    width: int
    height: int
    frames: tuple
    read: dict
    errors: tuple
    seconds: float = 0.0  # CPU time its reading took (its thread's: a low-priority thread waits too)


def _without_images(frames) -> tuple:
    return tuple(dataclasses.replace(f, image=None) for f in frames)


class _ReadPartFn(beam.DoFn):
    def __init__(self, config: OcrConfig):
        self._config = config
        self._read = beam.metrics.Metrics.counter(_NAMESPACE, "ocr_frames_read")
        self._reused = beam.metrics.Metrics.counter(_NAMESPACE, "ocr_frames_reused")
        self._failed = beam.metrics.Metrics.counter(_NAMESPACE, "ocr_frames_failed")
        self._ms = beam.metrics.Metrics.distribution(_NAMESPACE, "ocr_ms")

    def process(self, keyed):
        video_id, (index, part) = keyed
        started = time.perf_counter()
        with engine_for(self._config) as engine:
            read, errors = read_frames(engine, part)
        self._read.inc(len(read))
        self._reused.inc(len(part.frames) - len(read))
        self._failed.inc(len(errors))
        self._ms.update(int((time.perf_counter() - started) * 1000))
        yield video_id, _PartRead(index, part.width, part.height, _without_images(part.frames), read, tuple(errors))

    def finish_bundle(self):
        release_freed_memory()  # the parts' images are garbage now


def _split(item: OcrInput, max_reads: int):
    for i, part in enumerate(split_reads(item, max_reads)):
        yield item.video_id, (i, part)


OCR_NICE = 10  # how much lower the reading threads' priority is (CFS weight ~1/10 of a nice-0 thread)


def lower_thread_priority(nice: int = OCR_NICE) -> bool:
    """Lowers the calling thread's CPU priority by `nice` (Linux, where priority is per thread);
    True when it did. Elsewhere a no-op: there setpriority would apply to the whole process."""
    if not sys.platform.startswith("linux"):
        return False
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError:
        return False
    return True


class _ReadVideoFn(beam.DoFn):
    """Reads whole videos here: a video's parts `parallel` at a time, each on an engine of its own,
    on threads of the DoFn's own. `process` hands a video over and returns, so the stage's thread
    goes on decoding the next videos (were it to wait, it would wait on threads that run below
    it); a video's result goes out from a later `process` call or from `finish_bundle`, with its
    own window and timestamp. At most `max_pending_reads` frames wait (a call then blocks)."""

    def __init__(self, config: OcrConfig, domains: DomainConfig, part_reads: int, parallel: int,
                 max_pending_reads: int = 512):
        self._config = config
        self._domains = domains
        self._part_reads = part_reads
        self._parallel = parallel
        self._max_pending_reads = max_pending_reads
        self._read = beam.metrics.Metrics.counter(_NAMESPACE, "ocr_frames_read")
        self._reused = beam.metrics.Metrics.counter(_NAMESPACE, "ocr_frames_reused")
        self._failed = beam.metrics.Metrics.counter(_NAMESPACE, "ocr_frames_failed")
        self._ms = beam.metrics.Metrics.distribution(_NAMESPACE, "ocr_ms")

    def setup(self):
        workers = self._parallel or os.cpu_count() or 1
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="vmm-ocr",
                                                           initializer=lower_thread_priority)
        self._pending = PendingResults(self._max_pending_reads)

    def start_bundle(self):
        self._pending.clear()  # what a failed bundle left is not handed on

    def _read_part(self, index: int, part: OcrInput) -> _PartRead:
        started = time.thread_time()
        with engine_for(self._config) as engine:
            read, errors = read_frames(engine, part)
        return _PartRead(index, part.width, part.height, _without_images(part.frames), read, tuple(errors),
                         time.thread_time() - started)

    def process(self, item: OcrInput, window=beam.DoFn.WindowParam, timestamp=beam.DoFn.TimestampParam):
        reads = sum(f.image is not None for f in item.frames)
        futures = [self._pool.submit(self._read_part, i, part)
                   for i, part in enumerate(split_reads(item, self._part_reads))]
        self._pending.add(item.video_id, futures, reads, window, timestamp)
        del item  # the parts hold the images until they are read
        for video_id, parts, wrap in self._pending.ready():
            yield wrap(self._hand_on(video_id, parts))

    def finish_bundle(self):
        for video_id, parts, wrap in self._pending.drain():
            yield wrap(self._hand_on(video_id, parts))
        release_freed_memory()  # the videos' images are garbage now

    def _hand_on(self, video_id: str, parts: list):
        for p in parts:
            self._read.inc(len(p.read))
            self._reused.inc(len(p.frames) - len(p.read))
            self._failed.inc(len(p.errors))
        self._ms.update(int(sum(p.seconds for p in parts) * 1000))
        return _join_parts((video_id, parts), self._domains)

    def teardown(self):
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


class ReadText(beam.PTransform):
    """OcrInput → (video_id, VideoOcr).

    A video's frames are read in parts of about `part_reads` frames (`split_reads`), so a long video
    is read on several cores at once; the parts are joined by video and labelled (domains, subtitle
    lines) as one. Where they are read: see the module doc (`parallel`: parts read at once in a
    worker, 0 for its machine's cores; `max_pending_reads`: frames waiting to be read there at most;
    `spread`: over all workers, through a shuffle).
    """

    def __init__(self, config: OcrConfig, domains: DomainConfig = DomainConfig(), part_reads: int = 16,
                 parallel: int = 0, spread: bool = False, max_pending_reads: int = 512):
        super().__init__()
        if parallel < 0:
            raise ValueError(f"parallel must be >= 0, got {parallel}")
        self._config = config
        self._domains = domains
        self._part_reads = part_reads
        self._parallel = parallel
        self._spread = spread
        self._max_pending_reads = max_pending_reads

    def expand(self, inputs):
        if not self._spread:
            return inputs | "Read" >> beam.ParDo(
                _ReadVideoFn(self._config, self._domains, self._part_reads, self._parallel,
                             self._max_pending_reads))
        return (
            inputs
            | "Split" >> beam.FlatMap(_split, self._part_reads)
            | "SpreadParts" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(_ReadPartFn(self._config))
            | "JoinParts" >> beam.GroupByKey()
            | "Label" >> beam.Map(_join_parts, self._domains)
        )


def _join_parts(keyed, domains: DomainConfig):
    video_id, parts = keyed
    parts = sorted(parts, key=lambda p: p.index)
    width, height = parts[0].width, parts[0].height
    read: dict[int, list | None] = {}
    errors: list[StageError] = []
    for p in parts:
        read.update(p.read)
        errors.extend(p.errors)
    item = OcrInput(video_id, width, height, tuple(f for p in parts for f in p.frames))
    return video_id, label_video(item, read, errors, domains)

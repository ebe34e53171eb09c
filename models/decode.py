"""Decode one video with PyAV, once, and keep only what the models need. No Beam.

Consumes a local path or a binary file object (what Beam's FileSystems.open returns).
Produces a `DecodedVideo`: stream facts (duration, fps, display size, codec, audio), the chosen
keyframes as uint8 RGB arrays whose shorter side is `short_side` (the CLIP input size), the frames
OCR reads at a bounded text resolution (`models.textframes` decides which), and the audio track as
16 kHz mono float32 for ASR.

Two passes over the file's packets, audio first (`decode_parts` yields them in that order): the
audio pass only demuxes and decodes the audio stream (a second or two for a 10 minute video), so a
caller can start transcribing while the video pass -- the long one -- is still running (see
transforms/decode.py). `decode_keyframes` runs both and returns one `DecodedVideo`.

Memory stays bounded whatever the video's length: frames are resized in the decoder (swscale) the
moment they are kept (one swscale context per kind of conversion and pass: a frame's own
`to_ndarray` would set one up for every frame, five times the cost of the conversion itself),
thumbnails for cut and text detection are 64x36 and 320x180, the candidate
buffers are thinned as they grow, and audio stops at `max_audio_s`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import BinaryIO, Iterator

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from models.audio import AudioError, collect_audio
from models.errors import InputError, open_container
from models.keyframes import (
    Candidate,
    CandidateDetector,
    SamplingConfig,
    color_signature,
    select_keyframes,
    thumbnail_size,
)
from models.ocr import text_frame_size
from models.textframes import (
    TEXT_MAP_H,
    TEXT_MAP_W,
    TextChangeDetector,
    TextSamplingConfig,
    band_crop_top,
    edge_map,
    plan_reads,
    same_band,
    thin_evenly,
)

logger = logging.getLogger(__name__)

_ANALYSIS_SIZE = (64, 36)


class DecodeError(InputError):
    """A video that cannot be decoded."""


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
    sampling: SamplingConfig = SamplingConfig()
    short_side: int = 224  # shorter side of kept frames: the embedder's input size
    max_duration_s: float | None = None  # stop reading after this much video (None: all of it)
    threads: int = 0  # decoder threads; 0 lets FFmpeg choose
    text: TextSamplingConfig | None = None  # frames for OCR (None: no OCR frames)
    text_max_side: int = 960  # OCR frames' longer side at most (see models.ocr.text_frame_size)
    audio: bool = False  # decode the default audio stream for ASR
    max_audio_s: float = 3600.0  # read at most this much audio
    embed_text_frames: bool = False  # also keep text frames at `short_side` (for their embeddings)
    max_pixels: int = 36_000_000  # frames larger than this (width x height) are refused: 8K UHD is 33.2 M
    timeout_s: float | None = None  # give up (error "Timeout") when decoding takes longer than this

    def __post_init__(self):
        if self.short_side < 1:
            raise ValueError(f"short_side must be >= 1, got {self.short_side}")
        if self.max_duration_s is not None and self.max_duration_s <= 0:
            raise ValueError(f"max_duration_s must be > 0, got {self.max_duration_s}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, got {self.threads}")
        if self.text_max_side < 32:
            raise ValueError(f"text_max_side must be >= 32, got {self.text_max_side}")
        if self.max_audio_s <= 0:
            raise ValueError(f"max_audio_s must be > 0, got {self.max_audio_s}")
        if self.max_pixels < 1:
            raise ValueError(f"max_pixels must be >= 1, got {self.max_pixels}")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")


@dataclasses.dataclass(frozen=True, eq=False)
class OcrFrame:
    """A frame OCR sees: a keyframe or a text frame. `image` is None when it reuses `source`'s lines."""

    frame_index: int
    timestamp_s: float
    reason: str  # a keyframe's reason, or "text"
    source: int  # frame_index of the frame whose OCR lines this frame takes (itself when read)
    image: np.ndarray | None  # uint8 RGB at text resolution, only for frames that are read
    # A "band" text frame is read from row `crop_top` of its text-resolution image down (`image`
    # holds only that part); its lines above that row are the previous OCR frame's.
    crop_top: int = 0
    text_size: tuple[int, int] = (0, 0)  # (w, h) of the whole frame at text resolution


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
    ocr_frames: list[OcrFrame] = dataclasses.field(default_factory=list)  # time order
    audio: np.ndarray | None = None  # float32 mono 16 kHz, when asked for and present
    audio_error: AudioError | None = None  # the audio track could not be decoded (video is fine)
    text_frame_images: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)  # embed_text_frames

    @property
    def text_frames(self) -> list[OcrFrame]:
        return [f for f in self.ocr_frames if f.reason == "text"]


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


@dataclasses.dataclass(frozen=True, eq=False)
class DecodedAudio:
    """The audio pass's result: the default audio stream as float32 mono 16 kHz (None when the file
    has none or it failed), and why it failed. Audio trouble never fails the video."""

    samples: np.ndarray | None
    error: AudioError | None = None


def decode_keyframes(source: str | BinaryIO, config: DecodeConfig = DecodeConfig()) -> DecodedVideo:
    """Decodes the default video stream (and audio, if asked) of `source`. Raises DecodeError."""
    parts = list(decode_parts(source, config))
    video = parts[-1]
    if len(parts) == 1:
        return video
    audio = parts[0]
    return dataclasses.replace(video, audio=audio.samples, audio_error=audio.error)


def decode_parts(source: str | BinaryIO, config: DecodeConfig = DecodeConfig()) -> Iterator["DecodedAudio | DecodedVideo"]:
    """Yields the audio pass's `DecodedAudio` (when `config.audio`), then the video pass's
    `DecodedVideo` (without audio). A file object is rewound between the passes. Raises DecodeError,
    possibly after the audio: a caller that used it must drop what it made of it."""
    started = time.perf_counter()
    if config.audio:
        yield decode_audio_pass(source, config, started)
        if not isinstance(source, str):
            source.seek(0)
    yield decode_video_pass(source, config, started)


def _open_video(source: str | BinaryIO, config: DecodeConfig):
    """The container and its default video stream, or DecodeError for what is no video at all."""
    container = open_container(source, DecodeError, "DecodeError", "a video container", not_media_type="NotAMediaFile")
    try:
        if not container.streams.video:
            raise DecodeError("NoVideoStream", "the file has no video stream")
        if _is_still_image(container.format.name):
            raise DecodeError("NotAVideo", f"the file is a still image ({container.format.name}), not a video")
        stream = container.streams.best("video") or container.streams.video[0]
        _check_size(stream.codec_context.width, stream.codec_context.height, config.max_pixels, "declared")
    except BaseException:
        container.close()
        raise
    return container, stream


def _deadline_check(config: DecodeConfig, started: float):
    def check():
        if config.timeout_s is not None and time.perf_counter() - started > config.timeout_s:
            raise DecodeError("Timeout", f"decoding took more than {config.timeout_s:g} s (in the audio pass)")
    return check


def decode_audio_pass(source: str | BinaryIO, config: DecodeConfig, started: float | None = None) -> DecodedAudio:
    """The default audio stream, up to `config.max_audio_s`. A file that the video pass would refuse
    (no video stream, a still image, too large) is refused here already, before any audio work;
    `started` (perf_counter) starts the `timeout_s` clock shared with the video pass."""
    started = time.perf_counter() if started is None else started
    container, _ = _open_video(source, config)
    with container:
        stream = container.streams.best("audio") if container.streams.audio else None
        if stream is None:
            return DecodedAudio(None)
        try:
            samples = collect_audio(container, stream, config.max_audio_s, name="audio",
                                    check=_deadline_check(config, started))
        except AudioError as e:
            return DecodedAudio(None, e)
        return DecodedAudio(samples)


def decode_video_pass(source: str | BinaryIO, config: DecodeConfig, started: float | None = None) -> DecodedVideo:
    """The video pass: keyframes, text frames and stream facts (`audio` left None). Raises DecodeError."""
    started = time.perf_counter() if started is None else started
    container, stream = _open_video(source, config)
    with container:
        stream.thread_type = "AUTO"
        if config.threads:
            stream.codec_context.thread_count = config.threads
        state = _Pass(container, stream, config, started)
        try:
            state.run()
        except av.error.FFmpegError as e:
            raise DecodeError("DecodeError", f"decoding failed: {e}") from e
        return state.result(started)


class _Pass:
    """One pass over a container's video frames: they feed the keyframe and text detectors."""

    def __init__(self, container, stream, config: DecodeConfig, started: float):
        self.container, self.stream, self.config = container, stream, config
        self.fps = _frame_rate(stream)
        self.detector = CandidateDetector(config.sampling)
        self.text = TextChangeDetector(config.text) if config.text is not None else None
        self.kept: list[tuple[Candidate, np.ndarray, np.ndarray | None, np.ndarray | None]] = []
        # (candidate, image at short_side or None, image at text size, edge map), as in `kept`
        self.text_kept: list[tuple[Candidate, np.ndarray | None, np.ndarray, np.ndarray]] = []
        self.index = -1
        self.started = started
        self.last_size = (0, 0)
        self.last_t = 0.0
        self.rotation = 0.0
        self.size: tuple[int, int] | None = None
        self.text_size: tuple[int, int] | None = None
        # The text-frame cap the container's stated length allows (capped by max_duration_s): frames
        # are not thinned below it while decoding. A file that states no length is thinned to the
        # cap of the time decoded so far. The final cap is that of the length actually decoded.
        stated = _reported_duration(container, stream) or 0.0
        if config.max_duration_s is not None:
            stated = min(stated, config.max_duration_s)
        self.text_cap_stated = config.text.text_frame_cap(stated) if config.text is not None else 0
        self.truncated = False
        # One reformatter per kind of conversion: each keeps its swscale context between frames.
        self._reformatters: dict[str, VideoReformatter] = {}

    def _array(self, frame, kind: str, **kwargs) -> np.ndarray:
        """`frame.to_ndarray(**kwargs)` (the same pixels) through the pass's reformatter for `kind`."""
        reformatter = self._reformatters.get(kind)
        if reformatter is None:
            reformatter = self._reformatters[kind] = VideoReformatter()
        return reformatter.reformat(frame, **kwargs).to_ndarray()

    def run(self) -> None:
        for frame in self.container.decode(self.stream):
            if not self._on_video(frame):
                break

    def _on_video(self, frame) -> bool:
        """Handles one decoded frame; False once the video part is done (max_duration_s)."""
        cfg = self.config
        self.index += 1
        index = self.index
        if cfg.timeout_s is not None and time.perf_counter() - self.started > cfg.timeout_s:
            raise DecodeError("Timeout", f"decoding took more than {cfg.timeout_s:g} s (at frame {index})")
        if index == 0 or frame.width != self.last_size[0] or frame.height != self.last_size[1]:
            _check_size(frame.width, frame.height, cfg.max_pixels, "decoded")
            self.last_size = (frame.width, frame.height)
        t = _timestamp(frame, self.stream, index, self.fps)
        if cfg.max_duration_s is not None and t > cfg.max_duration_s:
            self.truncated = True
            return False
        self.last_t = max(self.last_t, t)
        if index == 0:
            self.rotation = frame.rotation or 0.0
        candidate = None
        if self.detector.wants(t):
            thumb = self._array(frame, "cut", format="rgb24", width=_ANALYSIS_SIZE[0], height=_ANALYSIS_SIZE[1])
            candidate = self.detector.observe(index, t, color_signature(thumb))
        is_text = band_only = False
        gray = None
        if self.text is not None and self.text.wants(t):
            gray = self._gray(frame)
            is_text = self.text.observe(t, gray)
            band_only = is_text and self.text.last_trigger == "band"
        if candidate is None and not is_text:
            return True
        if self.size is None:
            self.size = thumbnail_size(frame.width, frame.height, cfg.short_side)
        text_img = edges = None
        if self.text is not None:
            if gray is None:
                edges = edge_map(self._gray(frame), cfg.text.edge_threshold)
            else:
                edges = self.text.last_edges  # observe() just made this frame's map
            text_img = self._text_image(frame)
        img = None
        if candidate is not None or cfg.embed_text_frames:
            img = self._array(frame, "clip", format="rgb24", width=self.size[0], height=self.size[1],
                              interpolation="AREA")
            img = _rotate(img, self.rotation)
        if candidate is not None:
            if self.text is not None and not is_text:
                self.text.read_elsewhere(edges)
            self.kept.append((candidate, img, text_img, edges))
            if len(self.kept) > 2 * cfg.sampling.max_frames:
                self.kept = self._thin_keyframes(cfg.sampling.max_frames * 2 - cfg.sampling.max_frames // 2)
        elif is_text:
            reason = "text-band" if band_only else "text"  # told apart until _ocr_frames
            self._add_text_frame((Candidate(index, t, reason), img, text_img, edges))
        return True

    def _add_text_frame(self, entry: tuple) -> None:
        self.text_kept.append(entry)
        # Past one and a half times the cap, the held frames are thinned evenly in time to the cap, so
        # memory stays in proportion to it.
        cap = max(self.text_cap_stated, self.config.text.text_frame_cap(self.last_t))
        if len(self.text_kept) > cap + cap // 2:
            keep = thin_evenly([e[0].timestamp_s for e in self.text_kept], cap)
            self.text_kept = [self.text_kept[i] for i in keep]

    def _thin_keyframes(self, limit: int) -> list[tuple]:
        kept = _thin(self.kept, limit)
        if self.text is not None and len(kept) < len(self.kept):
            # The text detector took each keyframe's text as read; a keyframe dropped here is still
            # read, as a text frame, or a line seen only on it would be lost.
            survivors = {id(entry[0]) for entry in kept}
            for c, img, text_img, edges in self.kept:
                if id(c) not in survivors:
                    self._add_text_frame((Candidate(c.frame_index, c.timestamp_s, "text"), img, text_img, edges))
            self.text_kept.sort(key=lambda e: (e[0].timestamp_s, e[0].frame_index))
        return kept

    def _gray(self, frame) -> np.ndarray:
        gray = self._array(frame, "text-map", format="gray", width=TEXT_MAP_W, height=TEXT_MAP_H)
        # Keep the map in display orientation so cells mean the same place as the boxes do.
        quarter = int(round(self.rotation / 90.0)) % 4
        if quarter % 2:
            # A portrait display: resample the rotated map back to the fixed analysis size.
            gray = np.rot90(gray, k=quarter)
            rows = np.linspace(0, gray.shape[0] - 1, TEXT_MAP_H).astype(int)
            cols = np.linspace(0, gray.shape[1] - 1, TEXT_MAP_W).astype(int)
            return np.ascontiguousarray(gray[rows][:, cols])
        return np.ascontiguousarray(np.rot90(gray, k=quarter)) if quarter else gray

    def _text_image(self, frame) -> np.ndarray:
        if self.text_size is None:
            self.text_size = text_frame_size(frame.width, frame.height, self.config.text_max_side)
        w, h = self.text_size
        img = self._array(frame, "text", format="rgb24", width=w, height=h, interpolation="AREA")
        return _rotate(img, self.rotation)

    def result(self, started: float) -> DecodedVideo:
        if self.index < 0:
            raise DecodeError("NoFrames", "the video stream decoded to no frames")
        cfg = self.config
        kept = self._thin_keyframes(cfg.sampling.max_frames)
        frame_time = 1.0 / self.fps if self.fps else 0.0
        # A fully decoded stream is measured; a stream cut short by max_duration_s reports its length.
        duration = self.last_t + frame_time
        if self.truncated:
            duration = _reported_duration(self.container, self.stream) or duration
        width, height = self.stream.codec_context.width, self.stream.codec_context.height
        if int(round(self.rotation / 90.0)) % 2:
            width, height = height, width
        ocr_frames = self._ocr_frames(kept) if cfg.text is not None else []
        return DecodedVideo(
            duration_s=duration,
            fps=self.fps,
            width=int(width),
            height=int(height),
            video_codec=self.stream.codec_context.name,
            has_audio=bool(self.container.streams.audio),
            frames_decoded=self.index + 1,
            keyframes=[(c, img) for c, img, _, _ in kept],
            decode_seconds=time.perf_counter() - started,
            ocr_frames=ocr_frames,
            text_frame_images={f.frame_index: self._clip_images[f.frame_index] for f in ocr_frames
                               if f.reason == "text" and cfg.embed_text_frames},
        )

    def _ocr_frames(self, kept) -> list[OcrFrame]:
        texts = self.text_kept
        keep = thin_evenly([e[0].timestamp_s for e in texts], self.config.text.text_frame_cap(self.last_t))
        key_indices = {e[0].frame_index for e in kept}
        seen = list(kept) + [texts[i] for i in keep if texts[i][0].frame_index not in key_indices]
        seen.sort(key=lambda e: (e[0].timestamp_s, e[0].frame_index))
        # A band read just before a keyframe that shows the same band adds nothing (the keyframe is
        # read whole): at a slide change or a cut the quick rule often fires a tick before the cut does.
        seen = [e for k, e in enumerate(seen)
                if not (e[0].reason == "text-band" and k + 1 < len(seen)
                        and seen[k + 1][0].reason not in ("text", "text-band")
                        and same_band(e[3], seen[k + 1][3], self.config.text))]
        self._clip_images = {e[0].frame_index: e[1] for e in seen}
        band = [e[0].reason == "text-band" and k > 0 and self.config.text.crop_band for k, e in enumerate(seen)]
        plan = plan_reads([e[3] for e in seen], self.config.text, band)
        frames = []
        for (c, _, img, _), src in zip(seen, plan):
            read = seen[src][0]
            h, w = img.shape[:2]
            crop = 0
            if c.reason == "text-band" and frames and self.config.text.crop_band:  # the first frame has nothing to take the rest from
                crop = int(band_crop_top(self.config.text) * h)
            keep = None
            if src == len(frames):
                keep = np.ascontiguousarray(img[crop:]) if crop else img
            frames.append(OcrFrame(c.frame_index, c.timestamp_s, "text" if c.reason == "text-band" else c.reason,
                                   read.frame_index, keep, crop_top=crop if src == len(frames) else 0,
                                   text_size=(w, h)))
        return frames


def _is_still_image(format_name: str) -> bool:
    # FFmpeg opens a PNG or JPEG (whatever its extension) through its image demuxers as a one-frame
    # "video"; a search index has no use for it as a video. Animated GIF/WebP are not refused.
    names = set(format_name.split(","))
    return bool(names & {"image2", "png_pipe", "jpeg_pipe", "bmp_pipe", "tiff_pipe", "jpegls_pipe",
                         "j2k_pipe", "qoi_pipe", "dpx_pipe", "exr_pipe", "pam_pipe", "pbm_pipe", "pgm_pipe",
                         "ppm_pipe", "psd_pipe", "sgi_pipe", "svg_pipe", "xpm_pipe", "xwd_pipe"})


def _check_size(width: int, height: int, max_pixels: int, what: str) -> None:
    if width and height and width * height > max_pixels:
        raise DecodeError("TooLarge", f"{what} frame size {width}x{height} is over the {max_pixels:,}-pixel limit")


def _thin(kept: list[tuple], limit: int) -> list[tuple]:
    chosen = {id(c) for c in select_keyframes([entry[0] for entry in kept], limit)}
    return [entry for entry in kept if id(entry[0]) in chosen]


def decode_frames_at(source: str | BinaryIO, frame_indices, max_side: int,
                     max_pixels: int = DecodeConfig.max_pixels) -> dict[int, np.ndarray]:
    """The frames numbered `frame_indices` (0-based among the frames the default video stream
    decodes to, as `frames.frame_index` counts them) as uint8 RGB, longer side `max_side` (never
    upscaled), in display orientation. One pass that stops after the last wanted frame; only the
    wanted frames are converted. An index past the stream's end is missing from the result.
    Raises DecodeError for a file that is not a readable video."""
    wanted = sorted({int(i) for i in frame_indices})
    if max_side < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    out: dict[int, np.ndarray] = {}
    if not wanted:
        return out
    container, stream = _open_video(source, DecodeConfig(max_pixels=max_pixels))
    with container:
        stream.thread_type = "AUTO"
        pending = set(wanted)
        rotation = None
        try:
            for index, frame in enumerate(container.decode(stream)):
                if rotation is None:
                    rotation = frame.rotation or 0.0
                if index not in pending:
                    continue
                _check_size(frame.width, frame.height, max_pixels, "decoded")
                quarter_turn = int(round(rotation / 90.0)) % 2
                w, h = (frame.height, frame.width) if quarter_turn else (frame.width, frame.height)
                scale = min(1.0, max_side / max(w, h))
                tw, th = max(1, round(w * scale)), max(1, round(h * scale))
                if quarter_turn:
                    tw, th = th, tw  # sizes before the rotation
                img = frame.to_ndarray(format="rgb24", width=tw, height=th, interpolation="AREA")
                out[index] = _rotate(img, rotation)
                pending.discard(index)
                if not pending:
                    break
        except av.error.FFmpegError as e:
            raise DecodeError("DecodeError", f"decoding failed: {e}") from e
    return out

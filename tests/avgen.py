"""Test fixtures: write small MP4s with an optional audio track, and read WAVs. Not a test file.

Consumes float32 samples (mono [n] or multichannel [channels, n], nominally in [-1, 1]).
Produces MP4 files (libx264 yuv420p video whose colour changes every second, or the pictures a
`frames` callable draws, plus an AAC track by default) and, for `load_wav`, (float32 samples, sample
rate) decoded with PyAV.

Captions and slides (`caption_video`, `footage`, `draw_caption`, `slide_image`): footage-like moving
backgrounds (a seeded random field panning, with hard-edged blobs moving over it), burned-in captions
(white, black outline, no box, centred in the lower band) shown over given intervals, and lecture
slides (title, left-aligned bullets, a footer). Chinese text needs a CJK font (`cjk_font`: WenQuanYi
Micro Hei or Noto CJK, Debian packages fonts-wqy-microhei / fonts-noto-cjk).

Everything is deterministic: fixed colours, seeded randomness, fixed encoder preset.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Sequence

from fractions import Fraction

import av
import numpy as np

# One colour per second of video, cycled: distinct enough for cut detection to see changes.
_COLOURS = np.array(
    [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40), (40, 200, 200), (200, 40, 200)],
    dtype=np.uint8,
)
_LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1"}


def _as_planar(audio: np.ndarray, channels: int) -> np.ndarray:
    samples = np.asarray(audio, dtype=np.float32)
    if samples.ndim == 1:
        samples = np.repeat(samples[None, :], channels, axis=0)
    if samples.ndim != 2 or samples.shape[0] != channels:
        raise ValueError(f"audio must be [n] or [{channels}, n], got shape {samples.shape}")
    return np.ascontiguousarray(samples)


def mux_av(
    path: str,
    audio: np.ndarray | None,
    sample_rate: int = 16000,
    channels: int = 1,
    duration_s: float | None = None,
    size: tuple[int, int] = (320, 240),
    fps: int = 10,
    audio_codec: str = "aac",
    frames: Callable[[int], np.ndarray] | None = None,
) -> str:
    """Writes an MP4 at `path` and returns the path.

    `audio`: mono [n] (copied to every channel when `channels` > 1) or [channels, n] float32, or
    None for a video-only file. `duration_s` is the video length; it defaults to the audio length
    (and must be given when there is no audio). `size` is (width, height). `frames(i)` draws frame
    i (uint8 RGB [height, width, 3]); by default a colour that changes every second.
    """
    planar = _as_planar(audio, channels) if audio is not None else None
    if duration_s is None:
        if planar is None:
            raise ValueError("duration_s is required when there is no audio")
        duration_s = planar.shape[1] / sample_rate
    if channels not in _LAYOUTS:
        raise ValueError(f"channels must be one of {sorted(_LAYOUTS)}, got {channels}")
    width, height = size
    num_frames = max(1, round(duration_s * fps))

    with av.open(path, "w") as container:
        # Fixed preset/CRF/threads keep the bitstream the same on every machine.
        options = {"preset": "ultrafast", "crf": "23", "threads": "1"}
        vstream = container.add_stream("libx264", rate=fps, options=options)
        vstream.width, vstream.height, vstream.pix_fmt = width, height, "yuv420p"
        astream = None
        if planar is not None:
            astream = container.add_stream(audio_codec, rate=sample_rate)
            astream.layout = _LAYOUTS[channels]
        chunk = 1024
        audio_pos = 0
        for i in range(num_frames):
            if frames is not None:
                rgb = np.ascontiguousarray(frames(i), dtype=np.uint8)
            else:
                colour = _COLOURS[int(i / fps) % len(_COLOURS)]
                rgb = np.broadcast_to(colour, (height, width, 3)).copy()
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            container.mux(vstream.encode(frame))
            # Interleave audio up to the end of this video frame (the last frame takes the rest).
            if astream is not None:
                until = planar.shape[1]
                if i < num_frames - 1:
                    until = min(until, round((i + 1) / fps * sample_rate))
                while audio_pos < until:
                    piece = planar[:, audio_pos : min(until, audio_pos + chunk)]
                    aframe = av.AudioFrame.from_ndarray(
                        np.ascontiguousarray(piece), format="fltp", layout=_LAYOUTS[channels]
                    )
                    aframe.sample_rate = sample_rate
                    aframe.pts = audio_pos
                    aframe.time_base = Fraction(1, sample_rate)
                    container.mux(astream.encode(aframe))
                    audio_pos += piece.shape[1]
        container.mux(vstream.encode(None))
        if astream is not None:
            container.mux(astream.encode(None))
    return path


def load_wav(path: str) -> tuple[np.ndarray, int]:
    """Decodes any PyAV-readable audio file without resampling.

    Returns (samples, sample_rate): float32 [n] for mono, [channels, n] otherwise.
    """
    with av.open(path) as container:
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        channels = stream.codec_context.channels
        # Same rate, float planar: only the sample format changes.
        resampler = av.AudioResampler(format="fltp", layout=stream.codec_context.layout, rate=rate)
        chunks = []
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray())
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray())
    samples = np.concatenate(chunks, axis=1) if chunks else np.zeros((channels, 0), np.float32)
    samples = samples.astype(np.float32, copy=False)
    return (samples[0] if channels == 1 else samples), rate


# ---------------------------------------------------------------------------------------------
# Captions and slides

_CJK_FONTS = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
)
_LATIN_FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"


def cjk_font() -> str | None:
    """Path of an installed font with Chinese glyphs, or None."""
    return next((p for p in _CJK_FONTS if os.path.exists(p)), None)


def _font(px: int, cjk: bool):
    from PIL import ImageFont

    path = cjk_font() if cjk else (_LATIN_FONT if os.path.exists(_LATIN_FONT) else cjk_font())
    if path is None:
        raise FileNotFoundError("no CJK font installed (apt-get install fonts-wqy-microhei)")
    return ImageFont.truetype(path, px)


def _is_cjk(text: str) -> bool:
    return any("\u4e00" <= c <= "\u9fff" for c in text)


@dataclasses.dataclass(frozen=True)
class Caption:
    """A burned-in line shown over [start_s, end_s)."""

    start_s: float
    end_s: float
    text: str

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


class Footage:
    """A footage-like moving background of `size` (w, h): a smooth random colour field panning
    diagonally, with hard-edged blobs drifting over it at their own speeds. Seeded."""

    def __init__(self, size: tuple[int, int], seed: int = 0, speed: float = 4.0):
        w, h = size
        rng = np.random.default_rng(seed)
        cell = max(8, w // 24)
        coarse = rng.uniform(20, 235, (2 * h // cell + 3, 2 * w // cell + 3, 3))
        # smooth shading: blocks blurred with a separable box filter
        field = np.kron(coarse, np.ones((cell, cell, 1)))
        k = np.ones(cell) / cell
        field = np.apply_along_axis(np.convolve, 0, field, k, mode="same")
        field = np.apply_along_axis(np.convolve, 1, field, k, mode="same")
        self._field = field.astype(np.uint8)
        self._size, self._speed = size, speed
        self._blobs = [(rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.03, 0.09) * h,
                        rng.uniform(-3, 3), rng.uniform(-2, 2), rng.integers(0, 256, 3)) for _ in range(7)]

    def __call__(self, i: int) -> np.ndarray:
        w, h = self._size
        fh, fw = self._field.shape[:2]
        x = int(i * self._speed) % (fw - w)
        y = int(i * self._speed * 0.5) % (fh - h)
        img = self._field[y : y + h, x : x + w].copy()
        yy, xx = np.ogrid[:h, :w]
        for bx, by, r, vx, vy, colour in self._blobs:
            cx, cy = (bx + vx * i) % w, (by + vy * i) % h
            img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = colour
        return img


def draw_caption(img: np.ndarray, text: str, px: int | None = None, y_frac: float = 0.86) -> np.ndarray:
    """`text` burned into a copy of `img` as a short-video caption: white with a black outline, no box,
    centred, its baseline-centre at `y_frac` of the height."""
    from PIL import Image, ImageDraw

    h, w = img.shape[:2]
    px = px or max(12, round(0.06 * h))
    pil = Image.fromarray(img)
    ImageDraw.Draw(pil).text((w // 2, round(y_frac * h)), text, font=_font(px, _is_cjk(text)),
                             fill=(255, 255, 255), stroke_width=max(2, px // 12), stroke_fill=(0, 0, 0),
                             anchor="ms")
    return np.asarray(pil)


def caption_video(path: str, captions: Sequence[Caption], duration_s: float, size: tuple[int, int] = (960, 540),
                  fps: int = 25, seed: int = 0, audio: np.ndarray | None = None, sample_rate: int = 16000,
                  background: Callable[[int], np.ndarray] | None = None) -> str:
    """An MP4 of `background` (default `Footage(size, seed)`) with each caption burned in over its
    interval (frames whose time t = i / fps is in [start_s, end_s)), optional audio track."""
    background = background or Footage(size, seed)

    def frame(i: int) -> np.ndarray:
        img = background(i)
        t = i / fps
        for c in captions:
            if c.start_s <= t < c.end_s:
                img = draw_caption(img, c.text)
        return img

    return mux_av(path, audio, sample_rate=sample_rate, duration_s=duration_s, size=size, fps=fps, frames=frame)


def slide_image(size: tuple[int, int], title: str, bullets: Sequence[str], footer: Sequence[str] = (),
                theme: tuple[int, int, int] = (245, 245, 240)) -> np.ndarray:
    """A lecture slide (uint8 RGB): the title at the top, left-aligned bullets below it, filling the
    slide down into its lower third, and footer lines (names, e-mail, page) centred at the bottom."""
    from PIL import Image, ImageDraw

    w, h = size
    pil = Image.new("RGB", size, theme)
    draw = ImageDraw.Draw(pil)
    draw.rectangle((0, 0, w, round(0.16 * h)), fill=(30, 60, 120))
    draw.text((round(0.06 * w), round(0.08 * h)), title, font=_font(round(0.065 * h), _is_cjk(title)),
              fill=(255, 255, 255), anchor="lm")
    body_px = round(0.042 * h)
    y = round(0.24 * h)
    step = round(body_px * 1.7)
    for text in bullets:
        draw.ellipse((round(0.06 * w), y - body_px // 5, round(0.06 * w) + body_px // 2.5, y + body_px // 5),
                     fill=(40, 40, 40))
        draw.text((round(0.09 * w), y), text, font=_font(body_px, _is_cjk(text)), fill=(20, 20, 20), anchor="lm")
        y += step
    foot_px = round(0.035 * h)
    fy = round(0.97 * h) - (len(footer) - 1) * round(foot_px * 1.5)
    for text in footer:
        draw.text((w // 2, fy), text, font=_font(foot_px, _is_cjk(text)), fill=(60, 60, 60), anchor="ms")
        fy += round(foot_px * 1.5)
    return np.asarray(pil)

"""Generate a small, deterministic sample video library for the vmm pipeline.

``make_sample(output_dir)`` writes ``num_videos`` short MP4 files
(``sample-000.mp4``, ...; 640x360, 25 fps, H.264 yuv420p, 8-12 s each) that
exercise every feature the pipeline extracts:

* 3-4 shots per video separated by hard cuts; every shot has its own strongly
  coloured background, layout and moving shape, so a colour-histogram
  scene-cut detector finds each cut;
* burned-in subtitles (white text on a dark box, centred in the bottom 15 % of
  the frame), one short English sentence every 2-3 s;
* a constant "VMM TV" logo box in the top-right corner of every frame;
* a mono AAC speech track (16 kHz) synthesised with ``espeak-ng`` that reads
  the subtitle sentences.  Without ``espeak-ng`` every video speaks the
  recorded clip shipped with the package instead (``sample_speech/``: a few
  seconds of espeak-ng speech in Ogg Opus, and ``speech.txt``, what it says),
  so the sample always has speech.

Next to the videos it writes

* ``manifest.jsonl``: one ``{"uri", "video_id", "title", "tags", "source"}``
  object per line, the pipeline's input format;
* ``expected.json``: per-video ground truth (shot boundaries, subtitle lines
  with times, logo text and box, speech text, whether audio was written) for
  tests and benchmarks.

Everything is a pure function of ``seed`` and the video index: no wall-clock
time, no global random state.

CLI: ``python -m pipelines.make_sample --output DIR [--num-videos N] [--seed S]``;
``python -m pipelines.make_sample --write-speech-clip`` makes the recorded clip again from
``sample_speech/speech.txt`` (needs espeak-ng).
"""

from __future__ import annotations

import functools
import io
import json
import logging
import math
import os
import random
import shutil
import subprocess
import wave
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

logger = logging.getLogger(__name__)

SOURCE = "vmm-sample"
LOGO_TEXT = "VMM TV"
FPS = 25
SIZE = (640, 360)
AUDIO_SAMPLE_RATE = 16000  # what speech models expect; no resampling needed downstream

# Fraction of the frame height reserved for subtitles (bottom band) and kept
# free of the moving shape, so subtitle changes are the only thing that
# changes pixels there within a shot.
SUBTITLE_BAND_FRACTION = 0.15
# Font sizes at the 360 px reference height; scaled for other sizes.
SUBTITLE_FONT_PX = 28
LOGO_FONT_PX = 22

LAYOUTS = ("solid", "gradient", "stripes", "checker")
SHAPES = ("circle", "square", "triangle", "diamond")
MOTIONS = ("horizontal", "vertical", "diagonal", "orbit")

# Background colours for shots.  Every pair differs by >= 80 in at least one
# channel, so any two shots land in different colour-histogram bins.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (205, 40, 40),
    "blue": (40, 80, 210),
    "green": (40, 165, 70),
    "yellow": (235, 205, 50),
    "purple": (125, 50, 170),
    "orange": (240, 135, 30),
    "teal": (30, 160, 165),
    "pink": (235, 120, 185),
}

# Per-video content.  Sentences are short (3-6 words, <= 32 characters) so a
# line fits the frame at the OCR-friendly font size and the spoken text fits
# the video duration at espeak-ng's 150 words per minute.
SCRIPTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Morning Market", (
        "The market opens at dawn.",
        "Farmers stack fresh apples.",
        "A baker sells warm bread.",
        "Children chase a red kite.",
        "By noon the stalls close.",
    )),
    ("Harbour Day", (
        "Boats leave the harbour early.",
        "Gulls circle above the nets.",
        "The captain checks the sky.",
        "Fresh fish reach the dock.",
        "Lights glow along the pier.",
    )),
    ("Mountain Trail", (
        "We start the climb slowly.",
        "The trail turns to gravel.",
        "A cold stream crosses the path.",
        "Clouds drift below the summit.",
        "We rest and share lunch.",
    )),
    ("City Library", (
        "The library doors swing open.",
        "Students find a quiet table.",
        "A librarian sorts new books.",
        "Rain taps on the tall windows.",
        "The reading room is silent.",
    )),
    ("Garden Workshop", (
        "Plant the seeds in warm soil.",
        "Water them every morning.",
        "Sunlight helps the leaves grow.",
        "Pull weeds before they spread.",
        "Tomatoes ripen in August.",
    )),
    ("Night Train", (
        "The night train leaves at ten.",
        "Passengers settle into seats.",
        "Town lights flash past us.",
        "A conductor checks each ticket.",
        "We arrive as the sun rises.",
    )),
)

# espeak-ng at 150 wpm speaks about 2.2 words per second including sentence
# pauses; stay under 2.0 so the speech never needs trimming.
_SPEECH_WORDS_PER_SECOND = 2.0

# The recorded speech used when espeak-ng is missing (package data; see --write-speech-clip).
SPEECH_CLIP_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sample_speech")
SPEECH_CLIP = os.path.join(SPEECH_CLIP_DIR, "speech.ogg")
SPEECH_CLIP_TEXT = os.path.join(SPEECH_CLIP_DIR, "speech.txt")
_CLIP_BITRATE = 12000  # Opus at 12 kbit/s: speech stays clear for Whisper in a few KB


@dataclass(frozen=True)
class ShotSpec:
    """One shot: a static background plus a single moving shape.

    ``speed`` is in traversals of the free area per second; ``phase`` in
    [0, 1) offsets where along its path the shape starts.
    """

    duration_s: float
    background: tuple[int, int, int]
    layout: str = "solid"
    shape: str = "circle"
    shape_color: tuple[int, int, int] = (255, 255, 255)
    shape_size: int = 80
    motion: str = "horizontal"
    speed: float = 0.4
    phase: float = 0.0

    def __post_init__(self) -> None:
        if not self.duration_s > 0:
            raise ValueError(f"duration_s must be > 0, got {self.duration_s!r}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.shape not in SHAPES:
            raise ValueError(f"shape must be one of {SHAPES}, got {self.shape!r}")
        if self.motion not in MOTIONS:
            raise ValueError(f"motion must be one of {MOTIONS}, got {self.motion!r}")
        if self.shape_size <= 0:
            raise ValueError(f"shape_size must be > 0, got {self.shape_size!r}")
        for name in ("background", "shape_color"):
            colour = getattr(self, name)
            if len(colour) != 3 or not all(isinstance(c, int) and 0 <= c <= 255 for c in colour):
                raise ValueError(f"{name} must be three ints in 0..255, got {colour!r}")


# --------------------------------------------------------------------------
# Geometry shared by the renderer and the ground truth in expected.json.


_MB = 16  # H.264 macroblock size


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


def _scaled(px: int, height: int) -> int:
    return max(8, round(px * height / 360))


def subtitle_band(size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the lower band where subtitles are drawn."""
    width, height = size
    return (0, height - round(height * SUBTITLE_BAND_FRACTION), width, height)


@functools.lru_cache(maxsize=None)
def logo_box(size: tuple[int, int], logo: str = LOGO_TEXT) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the opaque logo box in the top-right corner."""
    width, height = size
    font = ImageFont.load_default(size=_scaled(LOGO_FONT_PX, height))
    left, top, right, bottom = font.getbbox(logo)
    pad = _scaled(6, height)
    # The box is snapped to the 16 px macroblock grid: blocks that hold only
    # static logo pixels are coded as skips, so the decoded logo really is
    # constant instead of picking up noise from the moving scene next to it.
    box_w = _round_up((right - left) + 2 * pad, _MB)
    box_h = _round_up((bottom - top) + 2 * pad, _MB)
    x1 = (width - _scaled(8, height)) // _MB * _MB
    y0 = _MB
    return (x1 - box_w, y0, x1, y0 + box_h)


def _shape_area(size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Region the moving shape may occupy: below the logo, above the subtitles."""
    width, height = size
    top = max(round(0.17 * height), logo_box(size)[3] + _scaled(8, height))
    return (round(0.05 * width), top, round(0.95 * width),
            subtitle_band(size)[1] - round(0.05 * height))


# --------------------------------------------------------------------------
# Rendering.


def _render_background(shot: ShotSpec, size: tuple[int, int]) -> Image.Image:
    width, height = size
    base = np.array(shot.background, dtype=np.float32)
    # Patterns use a darker shade of the same colour so the shot's colour
    # histogram stays dominated by its own hue.
    dark = base * 0.55
    if shot.layout == "solid":
        pixels = np.broadcast_to(base, (height, width, 3))
    elif shot.layout == "gradient":
        ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
        pixels = np.broadcast_to(base * (1 - ramp) + dark * ramp, (height, width, 3))
    elif shot.layout == "stripes":
        period = max(4, width // 8)
        mask = ((np.arange(width) // (period // 2)) % 2).astype(bool)[None, :, None]
        pixels = np.where(np.broadcast_to(mask, (height, width, 1)), dark, base)
    else:  # checker
        cell = max(4, height // 6)
        ys = (np.arange(height) // cell)[:, None]
        xs = (np.arange(width) // cell)[None, :]
        mask = ((ys + xs) % 2).astype(bool)[:, :, None]
        pixels = np.where(mask, dark, base)
    return Image.fromarray(np.ascontiguousarray(np.round(pixels), dtype=np.uint8), "RGB")


def _triangle_wave(u: float) -> float:
    """Ping-pong in [0, 1]: 0 -> 1 -> 0 as u goes 0 -> 1 -> 2."""
    return 1.0 - abs((u % 2.0) - 1.0)


def shape_position(shot: ShotSpec, frame_in_shot: int, fps: int, size: tuple[int, int],
                   seed: int = 0, shot_index: int = 0) -> tuple[int, int]:
    """Top-left corner of the shape; a pure function of its arguments."""
    x0, y0, x1, y1 = _shape_area(size)
    shape = min(shot.shape_size, x1 - x0, y1 - y0)
    span_x, span_y = x1 - x0 - shape, y1 - y0 - shape
    # The seed shifts where each shot's shape starts, so different seeds give
    # different frames while the same seed always gives the same ones.
    jitter = random.Random(f"vmm-sample-phase:{seed}:{shot_index}").random()
    u = shot.phase + jitter + shot.speed * frame_in_shot / fps
    if shot.motion == "horizontal":
        fx, fy = _triangle_wave(2 * u), 0.5
    elif shot.motion == "vertical":
        fx, fy = 0.5, _triangle_wave(2 * u)
    elif shot.motion == "diagonal":
        fx = fy = _triangle_wave(2 * u)
    else:  # orbit
        angle = 2 * math.pi * u
        fx, fy = 0.5 + 0.5 * math.cos(angle), 0.5 + 0.5 * math.sin(angle)
    return (x0 + round(fx * span_x), y0 + round(fy * span_y))


def _draw_shape(draw: ImageDraw.ImageDraw, shot: ShotSpec, xy: tuple[int, int],
                size: tuple[int, int]) -> None:
    ax0, ay0, ax1, ay1 = _shape_area(size)
    s = min(shot.shape_size, ax1 - ax0, ay1 - ay0)
    x, y = xy
    outline = (20, 20, 20)
    if shot.shape == "circle":
        draw.ellipse((x, y, x + s - 1, y + s - 1), fill=shot.shape_color, outline=outline, width=3)
    elif shot.shape == "square":
        draw.rectangle((x, y, x + s - 1, y + s - 1), fill=shot.shape_color, outline=outline, width=3)
    elif shot.shape == "triangle":
        points = [(x + s / 2, y), (x + s - 1, y + s - 1), (x, y + s - 1)]
        draw.polygon(points, fill=shot.shape_color, outline=outline, width=3)
    else:  # diamond
        points = [(x + s / 2, y), (x + s - 1, y + s / 2), (x + s / 2, y + s - 1), (x, y + s / 2)]
        draw.polygon(points, fill=shot.shape_color, outline=outline, width=3)


def _render_logo(logo: str, size: tuple[int, int]) -> tuple[Image.Image, tuple[int, int]]:
    x0, y0, x1, y1 = logo_box(size, logo)
    height = size[1]
    font = ImageFont.load_default(size=_scaled(LOGO_FONT_PX, height))
    # An opaque box (not text over the scene) keeps the logo pixels identical
    # on every frame, which is what a static-logo detector looks for.
    tile = Image.new("RGB", (x1 - x0, y1 - y0), (25, 30, 70))
    draw = ImageDraw.Draw(tile)
    draw.rectangle((0, 0, x1 - x0 - 1, y1 - y0 - 1), outline=(250, 200, 40), width=2)
    # Centre the text in the (grid-padded) box.
    left, top, right, bottom = font.getbbox(logo)
    tx = (x1 - x0 - (right - left)) // 2 - left
    ty = (y1 - y0 - (bottom - top)) // 2 - top
    draw.text((tx, ty), logo, font=font, fill=(255, 255, 255))
    return tile, (x0, y0)


def _render_subtitle(text: str, size: tuple[int, int]) -> tuple[Image.Image, tuple[int, int]]:
    width, height = size
    band_x0, band_y0, band_x1, band_y1 = subtitle_band(size)
    pad_x, pad_y = _scaled(12, height), _scaled(5, height)
    stroke = 2
    font_px = _scaled(SUBTITLE_FONT_PX, height)
    # Shrink rather than clip a line that is too wide for the frame: clipped
    # subtitles would make OCR ground truth wrong.
    while True:
        font = ImageFont.load_default(size=font_px)
        left, top, right, bottom = font.getbbox(text, stroke_width=stroke)
        box_w, box_h = right - left + 2 * pad_x, bottom - top + 2 * pad_y
        if (box_w <= width - 2 * pad_x and box_h <= band_y1 - band_y0) or font_px <= 10:
            break
        font_px -= 1
    if font_px != _scaled(SUBTITLE_FONT_PX, height):
        logger.warning("subtitle %r too large for %dx%d; font reduced to %d px",
                       text, width, height, font_px)
    tile = Image.new("RGB", (box_w, box_h), (15, 15, 15))
    ImageDraw.Draw(tile).text((pad_x - left, pad_y - top), text, font=font,
                              fill=(255, 255, 255), stroke_width=stroke, stroke_fill=(0, 0, 0))
    x = (width - box_w) // 2
    y = band_y0 + (band_y1 - band_y0 - box_h) // 2
    return tile, (x, y)


def _shot_frame_ranges(shots: list[ShotSpec], fps: int) -> list[tuple[int, int]]:
    """[start, end) frame of each shot; cumulative rounding avoids drift."""
    ranges, elapsed = [], 0.0
    for shot in shots:
        start = round(elapsed * fps)
        elapsed += shot.duration_s
        ranges.append((start, round(elapsed * fps)))
    return ranges


# --------------------------------------------------------------------------
# Speech.


def synthesize_speech(text: str, sample_rate: int = AUDIO_SAMPLE_RATE) -> np.ndarray | None:
    """Speak ``text`` with espeak-ng; float32 mono samples in [-1, 1] at ``sample_rate``.

    Returns None when espeak-ng is not installed; raises RuntimeError when it
    is installed but fails.
    """
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    if not text.strip():
        # espeak-ng reads stdin when given no text; never let it block.
        return np.zeros(0, dtype=np.float32)
    if text.startswith("-"):
        text = " " + text  # would otherwise be parsed as an option
    try:
        proc = subprocess.run([exe, "-v", "en-us", "-s", "150", "--stdout", text],
                              stdin=subprocess.DEVNULL, capture_output=True, check=True,
                              timeout=60)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        stderr = getattr(exc, "stderr", b"") or b""
        raise RuntimeError(f"espeak-ng failed: {exc}; {stderr.decode(errors='replace').strip()}") from exc
    with wave.open(io.BytesIO(proc.stdout)) as wav:
        channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
        # espeak-ng streams to stdout, so the header's length fields are
        # placeholders; read everything after the header instead.
        raw = wav.readframes(wav.getnframes())
    if width != 2:
        raise RuntimeError(f"espeak-ng produced {8 * width}-bit audio; expected 16-bit")
    usable = len(raw) - len(raw) % (width * channels)
    samples = np.frombuffer(raw[:usable], dtype="<i2").astype(np.float32) / 32768.0
    samples = samples.reshape(-1, channels).mean(axis=1)
    if rate != sample_rate and samples.size:
        n_out = round(samples.size * sample_rate / rate)
        t_out = np.arange(n_out, dtype=np.float64) * (rate / sample_rate)
        samples = np.interp(t_out, np.arange(samples.size), samples)
    return np.clip(samples, -1.0, 1.0).astype(np.float32)


def speech_clip_text() -> str:
    """What the recorded clip says."""
    with open(SPEECH_CLIP_TEXT, encoding="utf-8") as f:
        return " ".join(f.read().split())


def recorded_speech(sample_rate: int = AUDIO_SAMPLE_RATE, path: str = SPEECH_CLIP) -> np.ndarray:
    """The recorded clip (or another audio file), decoded: float32 mono samples at ``sample_rate``."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    pieces = []
    with av.open(path) as container:
        for frame in container.decode(audio=0):
            pieces += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    pieces += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.clip(np.concatenate(pieces), -1.0, 1.0).astype(np.float32)


def write_speech_clip(path: str = SPEECH_CLIP, text: str | None = None) -> str:
    """Speaks ``text`` (default: ``speech.txt``) with espeak-ng into an Ogg Opus file at ``path``.

    Run once by a maintainer (``--write-speech-clip``); the file is committed so that machines
    without espeak-ng still get a sample with speech.
    """
    text = speech_clip_text() if text is None else text
    samples = synthesize_speech(text, AUDIO_SAMPLE_RATE)
    if samples is None:
        raise RuntimeError("espeak-ng is needed to write the speech clip (apt-get install espeak-ng)")
    pcm = np.round(samples * 32767).astype("<i2")
    # bitexact: no random Ogg serial number, no encoder version tag: the same text gives the same bytes.
    with av.open(path, "w", format="ogg", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("libopus", rate=AUDIO_SAMPLE_RATE, options={"application": "voip"})
        stream.layout, stream.bit_rate = "mono", _CLIP_BITRATE
        for start in range(0, pcm.size, 320):  # 20 ms frames
            frame = av.AudioFrame.from_ndarray(pcm[None, start:start + 320], format="s16", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = AUDIO_SAMPLE_RATE, start, Fraction(1, AUDIO_SAMPLE_RATE)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    logger.info("wrote %s (%.2f s, %d bytes): %r", path, samples.size / AUDIO_SAMPLE_RATE, os.path.getsize(path), text)
    return path


def speech_track(text: str) -> tuple[np.ndarray, str, str]:
    """(samples at AUDIO_SAMPLE_RATE, the text they say, where they come from) for a video meant to say ``text``.

    espeak-ng speaks ``text``; without espeak-ng the recorded clip stands in, saying its own text.
    """
    samples = synthesize_speech(text, AUDIO_SAMPLE_RATE)
    if samples is not None:
        return samples, text, "espeak-ng"
    return recorded_speech(AUDIO_SAMPLE_RATE), speech_clip_text(), "recorded clip"


# --------------------------------------------------------------------------
# Encoding.


def make_video(path: str, *, shots: list[ShotSpec], subtitles: list[tuple[float, float, str]] | None,
               logo: str | None, speech_text: str | None, fps: int = FPS,
               size: tuple[int, int] = SIZE, codec: str = "libx264", audio: bool = True,
               seed: int = 0) -> str | None:
    """Encode one video with PyAV; returns the text its audio track says (None: no audio).

    ``subtitles`` are ``(start_s, end_s, text)``; a line is shown on frames
    ``round(start_s*fps) <= i < round(end_s*fps)``.  An AAC audio track
    (silence-padded to the video duration) is written when ``audio`` is true
    and ``speech_text`` is given: espeak-ng speaking ``speech_text``, or, where
    espeak-ng is missing, the recorded clip (which says ``speech_clip_text()``).
    Otherwise the video has no audio stream.
    """
    if not shots:
        raise ValueError("at least one shot is required")
    width, height = size
    if width % 2 or height % 2:
        raise ValueError(f"yuv420p needs even dimensions, got {size}")

    ranges = _shot_frame_ranges(shots, fps)
    num_frames = ranges[-1][1]
    duration_s = num_frames / fps

    samples = spoken = None
    if audio and speech_text is not None:
        samples, spoken, source = speech_track(speech_text)
        if source != "espeak-ng":
            logger.warning("espeak-ng not found; %s speaks the %s (%r)", path, source, spoken)
        total = round(duration_s * AUDIO_SAMPLE_RATE)
        if samples.size > total:
            logger.warning("speech for %s is %.2f s, longer than the %.2f s video; trimmed",
                           path, samples.size / AUDIO_SAMPLE_RATE, duration_s)
        padded = np.zeros(total, dtype=np.float32)
        padded[: min(total, samples.size)] = samples[:total]
        samples = padded

    backgrounds = [_render_background(shot, size) for shot in shots]
    logo_tile = _render_logo(logo, size) if logo else None
    subtitle_tiles = [(round(start * fps), round(end * fps), _render_subtitle(text, size))
                      for start, end, text in (subtitles or [])]

    with av.open(path, "w") as container:
        options = {}
        if codec == "libx264":
            # Fixed preset/CRF/threads keep the bitstream reproducible across
            # machines; "superfast" keeps generation quick on small CI boxes and
            # CRF 18 keeps subtitle edges crisp enough for OCR.
            options = {"preset": "superfast", "crf": "18", "threads": "2"}
        vstream = container.add_stream(codec, rate=fps, options=options)
        vstream.width, vstream.height, vstream.pix_fmt = width, height, "yuv420p"
        astream = None
        if samples is not None:
            astream = container.add_stream("aac", rate=AUDIO_SAMPLE_RATE)
            astream.layout = "mono"
        chunk = 1024  # the AAC frame size
        audio_pos = 0

        shot_index = 0
        for i in range(num_frames):
            while i >= ranges[shot_index][1]:
                shot_index += 1
            shot = shots[shot_index]
            img = backgrounds[shot_index].copy()
            pos = shape_position(shot, i - ranges[shot_index][0], fps, size, seed, shot_index)
            _draw_shape(ImageDraw.Draw(img), shot, pos, size)
            if logo_tile is not None:
                img.paste(*logo_tile)
            for start, end, tile in subtitle_tiles:
                if start <= i < end:
                    img.paste(*tile)
            frame = av.VideoFrame.from_image(img)
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            container.mux(vstream.encode(frame))

            # Interleave audio up to the end of this video frame so the muxer
            # never has to buffer a whole stream.
            if astream is not None:
                until = min(samples.size, round((i + 1) / fps * AUDIO_SAMPLE_RATE))
                while audio_pos < until:
                    piece = samples[audio_pos: audio_pos + chunk]
                    aframe = av.AudioFrame.from_ndarray(piece[None, :], format="fltp", layout="mono")
                    aframe.sample_rate = AUDIO_SAMPLE_RATE
                    aframe.pts = audio_pos
                    aframe.time_base = Fraction(1, AUDIO_SAMPLE_RATE)
                    container.mux(astream.encode(aframe))
                    audio_pos += piece.size

        container.mux(vstream.encode(None))
        if astream is not None:
            container.mux(astream.encode(None))
    logger.info("wrote %s (%d frames, %.2f s, audio=%s)", path, num_frames, duration_s,
                astream is not None)
    return spoken


# --------------------------------------------------------------------------
# Sample library.


def _video_plan(index: int, seed: int, fps: int) -> dict:
    """Content of video ``index``: shots, subtitles, speech, title, tags."""
    rng = random.Random(f"vmm-sample:{seed}:{index}")
    topic, sentences = SCRIPTS[(seed + index) % len(SCRIPTS)]
    n_shots = rng.choice((3, 4))
    colour_names = rng.sample(list(PALETTE), n_shots)
    # Duration ranges keep the total in 8-12 s; 0.2 s steps are whole frames at 25 fps.
    lo, hi = (2.8, 4.0) if n_shots == 3 else (2.0, 3.0)
    shots = []
    for k, name in enumerate(colour_names):
        duration = round(rng.uniform(lo, hi) * 5) / 5
        # Shape colour: a different palette colour or white, never the background.
        shape_colour = rng.choice([PALETTE[c] for c in PALETTE if c != name] + [(250, 250, 250)])
        shots.append(ShotSpec(
            duration_s=duration,
            background=PALETTE[name],
            # Consecutive shots get different layouts as well as colours.
            layout=LAYOUTS[(index + k) % len(LAYOUTS)],
            shape=rng.choice(SHAPES),
            shape_color=shape_colour,
            shape_size=rng.choice((60, 70, 80, 90)),
            motion=rng.choice(MOTIONS),
            speed=rng.choice((0.25, 0.4, 0.55)),
            phase=round(rng.random(), 3),
        ))
    num_frames = _shot_frame_ranges(shots, fps)[-1][1]
    duration_s = num_frames / fps

    # Split the video into equal subtitle slots of 2-3 s, on the frame grid.
    n_lines = max(1, min(len(sentences), round(duration_s / 2.5)))
    bounds = [round(num_frames * j / n_lines) for j in range(n_lines + 1)]
    subtitles = [(bounds[j] / fps, bounds[j + 1] / fps, sentences[j]) for j in range(n_lines)]

    # The speech reads the subtitle lines, as many as fit the duration.
    words_budget = _SPEECH_WORDS_PER_SECOND * duration_s
    spoken, words = [], 0
    for _, _, text in subtitles:
        words += len(text.split())
        if words > words_budget:
            break
        spoken.append(text)
    speech_text = " ".join(spoken)

    shown = list(dict.fromkeys(colour_names))
    colours = ", ".join(shown[:-1]) + " and " + shown[-1]
    title = f"{topic}: {colours} shapes with subtitles"
    tags = ["sample", "synthetic", "scene-cuts", "subtitles", "logo",
            topic.lower().replace(" ", "-")] + colour_names
    return {"topic": topic, "shots": shots, "colour_names": colour_names, "subtitles": subtitles,
            "speech_text": speech_text, "title": title, "tags": tags,
            "num_frames": num_frames, "duration_s": duration_s}


def make_sample(output_dir: str, num_videos: int = 3, seed: int = 0) -> str:
    """Writes the videos and ``output_dir/manifest.jsonl``; returns the manifest path.

    Also writes ``output_dir/expected.json`` with the per-video ground truth.
    """
    if num_videos < 1:
        raise ValueError(f"num_videos must be >= 1, got {num_videos}")
    os.makedirs(output_dir, exist_ok=True)
    output_dir = os.path.abspath(output_dir)
    fps, size = FPS, SIZE

    manifest_rows, expected_videos = [], []
    for index in range(num_videos):
        video_id = f"sample-{index:03d}"
        path = os.path.join(output_dir, f"{video_id}.mp4")
        plan = _video_plan(index, seed, fps)
        spoken = make_video(path, shots=plan["shots"], subtitles=plan["subtitles"], logo=LOGO_TEXT,
                            speech_text=plan["speech_text"], fps=fps, size=size, seed=seed)
        with av.open(path) as probe:
            has_audio = bool(probe.streams.audio)
        tags = plan["tags"] + (["speech"] if has_audio else [])
        manifest_rows.append({"uri": path, "video_id": video_id, "title": plan["title"],
                              "tags": tags, "source": SOURCE})

        shots_truth = []
        for shot, name, (start, end) in zip(plan["shots"], plan["colour_names"],
                                            _shot_frame_ranges(plan["shots"], fps)):
            shots_truth.append({
                "start_s": start / fps, "end_s": end / fps,
                "start_frame": start, "end_frame": end,
                "colour": name, "background": list(shot.background), "layout": shot.layout,
                "shape": shot.shape, "shape_color": list(shot.shape_color), "motion": shot.motion,
            })
        expected_videos.append({
            "video_id": video_id,
            "uri": path,
            "title": plan["title"],
            "topic": plan["topic"],
            "duration_s": plan["duration_s"],
            "num_frames": plan["num_frames"],
            "shots": shots_truth,
            "shot_starts_s": [s["start_s"] for s in shots_truth],
            "subtitles": [{"start_s": start, "end_s": end,
                           "start_frame": round(start * fps), "end_frame": round(end * fps),
                           "text": text} for start, end, text in plan["subtitles"]],
            "subtitle_band": list(subtitle_band(size)),
            "logo": {"text": LOGO_TEXT, "box": list(logo_box(size))},
            # What the audio says: the subtitles read by espeak-ng, or the recorded clip's text.
            "speech_text": spoken,
            "has_audio": has_audio,
        })

    manifest_path = os.path.join(output_dir, "manifest.jsonl")
    with open(manifest_path, "w", encoding="utf-8") as f:
        for row in manifest_rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    expected = {"source": SOURCE, "seed": seed, "fps": fps, "width": size[0], "height": size[1],
                "audio_sample_rate": AUDIO_SAMPLE_RATE, "videos": expected_videos}
    with open(os.path.join(output_dir, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, indent=2, ensure_ascii=False)
        f.write("\n")
    logger.info("wrote %d sample videos and %s", num_videos, manifest_path)
    return manifest_path


def add_arguments(parser) -> None:
    parser.add_argument("--output", help="directory for the videos and manifest (required, except with "
                                          "--write-speech-clip)")
    parser.add_argument("--num-videos", type=int, default=3, help="how many videos")
    parser.add_argument("--seed", type=int, default=0, help="everything is a function of the seed and the index")
    parser.add_argument("--write-speech-clip", action="store_true",
                        help="instead of a sample, write the recorded speech clip "
                             "(pipelines/sample_speech/speech.ogg) again from speech.txt beside it (needs espeak-ng)")


def execute(args, options=None) -> int:
    from pipelines.options import UsageError

    if args.write_speech_clip:
        print(write_speech_clip())
        return 0
    if not args.output:
        raise UsageError("--output is required")
    if args.num_videos < 1:
        raise UsageError(f"--num-videos must be >= 1, got {args.num_videos}")
    print(make_sample(args.output, num_videos=args.num_videos, seed=args.seed))
    return 0


if __name__ == "__main__":
    from pipelines.options import main_of

    raise SystemExit(main_of("make-sample")())

"""Test fixtures: write small MP4s with an optional audio track, and read WAVs. Not a test file.

Consumes float32 samples (mono [n] or multichannel [channels, n], nominally in [-1, 1]).
Produces MP4 files (libx264 yuv420p video whose colour changes every second, plus an AAC track by
default) and, for `load_wav`, (float32 samples, sample rate) decoded with PyAV.

Everything is deterministic: fixed colours, fixed encoder preset, no randomness.
"""

from __future__ import annotations

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
) -> str:
    """Writes an MP4 at `path` and returns the path.

    `audio`: mono [n] (copied to every channel when `channels` > 1) or [channels, n] float32, or
    None for a video-only file. `duration_s` is the video length; it defaults to the audio length
    (and must be given when there is no audio). `size` is (width, height).
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

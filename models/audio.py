"""Decode an audio track to what Whisper reads: mono float32 at 16 kHz. No Beam.

Consumes PyAV audio frames (from a demux loop the caller owns, through `AudioCollector`), an audio
stream of a container the caller opened (`collect_audio`), or a local path / binary file object
(through `decode_audio`, which owns its container). Any codec, sample
rate, sample format (planar or packed) and channel layout: stereo and 5.1 are downmixed by
libswresample's standard matrix.
Produces a 1-D float32 numpy array of samples at `SAMPLE_RATE`, at most `max_duration_s` long.

Memory is the output itself (64 KB per second of audio) plus one list of chunk references: chunks
are concatenated once, in `finish()`.
"""

from __future__ import annotations

import logging
import math
from typing import BinaryIO, Callable

import av
import numpy as np

from models.errors import InputError, open_container

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
DEFAULT_MAX_AUDIO_S = 3600.0

# libswresample keeps a float downmix at full gain (stereo -> mono is (L + R) / sqrt(2), which can
# exceed 1.0); a max value of 1.0 normalises the matrix instead, e.g. to (L + R) / 2, as an integer
# output format (and faster-whisper's own decoder) would.
_SWR_OPTIONS = {"rematrix_maxval": "1.0"}


class AudioError(InputError):
    """An audio track that cannot be decoded."""


def _frame_signature(frame: av.AudioFrame) -> tuple[str, str, int, int]:
    return frame.format.name, frame.layout.name, frame.layout.nb_channels, frame.sample_rate


class AudioCollector:
    """Resamples the frames of one audio stream to mono float32 16 kHz and keeps them.

    It does not own the container: the caller decodes (possibly interleaved with video) and passes
    each decoded frame to `add()`, in decode order, until `add()` returns False. `finish()` flushes
    the resampler and returns the samples. `add()` and `finish()` let `av.error.FFmpegError` from
    the resampler through: the caller maps it to its own error record.
    """

    def __init__(self, stream: av.audio.stream.AudioStream, max_duration_s: float = DEFAULT_MAX_AUDIO_S):
        if not (max_duration_s > 0 and math.isfinite(max_duration_s)):
            raise ValueError(f"max_duration_s must be a finite number > 0, got {max_duration_s}")
        self.max_duration_s = float(max_duration_s)
        self._max_samples = int(round(max_duration_s * SAMPLE_RATE))
        self._stream = stream
        self._chunks: list[np.ndarray] = []
        self._collected = 0
        self._resampler: av.AudioResampler | None = None
        self._signature: tuple | None = None
        self._finished = False
        self.frames_added = 0
        self.start_s: float | None = None  # container time of the first frame kept, when it has one

    @property
    def full(self) -> bool:
        """True once `max_duration_s` of audio is collected; further frames are ignored."""
        return self._collected >= self._max_samples

    @property
    def duration_s(self) -> float:
        return min(self._collected, self._max_samples) / SAMPLE_RATE

    def _keep(self, frames: list[av.AudioFrame]) -> None:
        for out in frames:
            # Packed "flt" mono is [1, n]; copy so no buffer of the frame pool is kept alive.
            samples = out.to_ndarray().reshape(-1).astype(np.float32, copy=True)
            if samples.size:
                self._chunks.append(samples)
                self._collected += samples.size

    def _flush(self) -> None:
        if self._resampler is not None:
            self._keep(self._resampler.resample(None))
            self._resampler = None

    def add(self, frame: av.AudioFrame) -> bool:
        """Resamples and keeps `frame`. Returns False once enough audio is collected (stop feeding)."""
        if self._finished:
            raise RuntimeError("AudioCollector.add() after finish()")
        if self.full:
            return False
        if frame.samples == 0:
            return True
        signature = _frame_signature(frame)
        if signature != self._signature:
            # A resampler is fixed to its first frame's format; a track whose rate or layout
            # changes midway (ADTS streams, spliced files) gets a new one after a flush.
            self._flush()
            self._resampler = av.AudioResampler(
                format="flt", layout="mono", rate=SAMPLE_RATE, options=_SWR_OPTIONS
            )
            self._signature = signature
        if self.start_s is None:
            if frame.time is not None:
                self.start_s = float(frame.time)
            elif frame.pts is not None and self._stream.time_base is not None:
                self.start_s = float(frame.pts * self._stream.time_base)
        self.frames_added += 1
        self._keep(self._resampler.resample(frame))
        return not self.full

    def finish(self) -> np.ndarray:
        """Flushes the resampler; returns float32 [n] at 16 kHz, trimmed to `max_duration_s`."""
        if self._finished:
            raise RuntimeError("AudioCollector.finish() called twice")
        self._flush()
        self._finished = True
        chunks, self._chunks = self._chunks, []
        if not chunks:
            return np.zeros(0, dtype=np.float32)
        samples = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
        return samples[: self._max_samples] if samples.size > self._max_samples else samples


def decode_audio(source: str | BinaryIO, max_duration_s: float = DEFAULT_MAX_AUDIO_S) -> np.ndarray | None:
    """Decodes the default audio stream of `source` to mono float32 16 kHz.

    Returns None when the container has no audio stream, an empty array when the stream holds no
    samples. Packets the decoder rejects as invalid data are skipped (as FFmpeg's own CLI does)
    and counted in a warning; if the stream has packets but none decodes, or the container cannot
    be read, raises AudioError.
    """
    container = open_container(source, AudioError, "AudioDecodeError", "a media container")
    with container:
        stream = container.streams.best("audio")
        if stream is None:
            return None
        return collect_audio(container, stream, max_duration_s, name=str(source))


def collect_audio(container, stream: av.audio.stream.AudioStream, max_duration_s: float = DEFAULT_MAX_AUDIO_S,
                  name: str = "", check: Callable[[], None] | None = None) -> np.ndarray:
    """Reads `stream` of an open container to mono float32 16 kHz (see `decode_audio`); raises AudioError.
    `check` is called before each packet (a caller's deadline: whatever it raises goes through)."""
    try:
        collector = AudioCollector(stream, max_duration_s)
    except (av.error.FFmpegError, ValueError) as e:
        raise AudioError("AudioDecodeError", f"audio: {e}") from e
    packets = bad_packets = 0
    try:
        for packet in container.demux(stream):
            if check is not None:
                check()
            packets += 1 if packet.size else 0  # the last, empty packet only drains the decoder
            try:
                frames = packet.decode()
            except av.error.InvalidDataError:
                bad_packets += 1
                continue
            if not all(collector.add(f) for f in frames):
                break
    except (av.error.FFmpegError, ValueError) as e:
        raise AudioError("AudioDecodeError", f"audio decoding failed: {e}") from e
    if packets and bad_packets == packets:
        raise AudioError("AudioDecodeError", f"none of the {packets} audio packets could be decoded")
    if bad_packets:
        logger.warning("skipped %d of %d undecodable audio packets in %s", bad_packets, packets, name or "audio")
    try:
        return collector.finish()
    except (av.error.FFmpegError, ValueError) as e:
        raise AudioError("AudioDecodeError", f"audio resampling failed: {e}") from e

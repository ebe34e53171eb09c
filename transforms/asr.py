"""Transcribe: a video's audio → its transcript (segments, language, speech seconds), per video.

Consumes VideoAudio (16 kHz mono float32, decoded once by DecodeVideos in the same pass as video).
Produces (video_id, VideoAsr): a models.asr.AsrResult, or the stage error that stopped it -- a
failed transcription never loses the video, it is recorded on the video's row.

One Whisper model per worker process, shared by every DoFn instance in it (transforms.process_cache).
"""

from __future__ import annotations

import dataclasses
import logging
import time

import apache_beam as beam

from models.asr import AsrConfig, AsrEngine
from models.memory import release_freed_memory
from schemas.elements import StageError, VideoAsr, VideoAudio
from transforms.files import localize
from transforms.process_cache import process_model

logger = logging.getLogger(__name__)

_NAMESPACE = "vmm"


def engine_for(config: AsrConfig) -> AsrEngine:
    """The process's Whisper for `config` (loaded on first use; a model folder in a bucket is copied first)."""
    return process_model("ASR", config,
                         lambda: AsrEngine(dataclasses.replace(config, model=localize(config.model))).load())


class _TranscribeFn(beam.DoFn):
    def __init__(self, config: AsrConfig):
        self._config = config
        self._videos = beam.metrics.Metrics.counter(_NAMESPACE, "asr_videos")
        self._failed = beam.metrics.Metrics.counter(_NAMESPACE, "asr_failed")
        self._audio_ms = beam.metrics.Metrics.counter(_NAMESPACE, "asr_audio_ms")
        self._ms = beam.metrics.Metrics.distribution(_NAMESPACE, "asr_ms")

    def setup(self):
        self._engine = engine_for(self._config)

    def process(self, audio: VideoAudio):
        started = time.perf_counter()
        try:
            result = self._engine.transcribe(audio.samples)
        except Exception as e:  # a transcription failure is recorded on the video, never fatal
            self._failed.inc()
            logger.warning("ASR failed on %s: %s: %s", audio.video_id, type(e).__name__, e)
            yield audio.video_id, VideoAsr(None, StageError("asr", type(e).__name__, str(e)))
            return
        self._videos.inc()
        self._audio_ms.inc(int(1000 * len(audio.samples) / audio.sample_rate))
        self._ms.update(int((time.perf_counter() - started) * 1000))
        yield audio.video_id, VideoAsr(result)

    def finish_bundle(self):
        release_freed_memory()  # the bundle's audio (115 MB an hour of it) is garbage now


class Transcribe(beam.PTransform):
    """VideoAudio → (video_id, VideoAsr)."""

    def __init__(self, config: AsrConfig):
        super().__init__()
        self._config = config

    def expand(self, audio):
        return audio | "Asr" >> beam.ParDo(_TranscribeFn(self._config))

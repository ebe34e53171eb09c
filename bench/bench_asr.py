"""ASR: the pipeline's Transcribe stage vs faster-whisper called directly, and VAD on vs off.

    python -m bench.bench_asr [--quick] [--repeat 3] [--vad-repeat 5] [--audio DIR] [--media DIR] [--threads N]

Inputs: generated videos (tests.avgen.mux_av: a 320x240 colour-changing picture over an AAC track)
whose audio is real speech from --audio: jfk.wav, librispeech-1995-1837-0001.wav, and both with a 2 s
pause between them; plus nasa_13013.mp4 from --media (real narration, no reference) when it is there.
--quick keeps the first two videos and two rounds.

Part a, overhead. Two sides, the model load excluded from both:
  * pipeline: `pipelines.extract.run` on the videos (DirectRunner in memory, one worker, --no-ocr,
    --clip-model vmm-tiny-vit --clip-pretrained none). The figure is run_summary.json's
    stage_seconds["asr"]: the busy time of the ASR DoFn's process() summed over videos. The model
    is loaded in the DoFn's setup(), outside process(); and an untimed warm-up run loads it first
    (it stays cached in the process, transforms.asr.engine_for). Also reported: the time spent
    inside models.asr.AsrEngine.transcribe (a counting wrapper; the in-memory runner runs the DoFn
    in this process), and the pipeline's end-to-end wall time (decode, tiny CLIP, writing Parquet).
  * direct: faster_whisper.WhisperModel(the same model directory, compute_type int8, the same
    cpu_threads, num_workers 1) on faster_whisper.decode_audio(video) (decoding not timed), with the
    pipeline's decoding options: language en, beam 5, temperature 0, condition_on_previous_text
    False, VAD on; timed from transcribe() until its segment generator is exhausted. Its load is
    timed apart and one untimed transcription warms it up.
  overhead = (pipeline ASR busy seconds - direct seconds) / direct seconds, medians over --repeat
  rounds; the two sides alternate which goes first from round to round.

Part b, VAD. models.asr.AsrEngine (what the pipeline's DoFn calls) with vad on and off, on
jfk + 20 s silence + librispeech + 20 s silence + jfk: seconds (median over --vad-repeat rounds, the
order alternating), speech_seconds and WER against the reference transcripts (jiwer; both sides
lowercased, punctuation removed).

Sanity (exit 1): the pipeline's transcript of each video must be the direct transcript (WER between
them <= 0.05; their audio comes from two different decoders).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import re
import sys
import tempfile
import time

import numpy as np

from bench._common import load_average, machine_line, median, print_table

_SHARED_MEDIA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "media")
AUDIO_DIR = os.path.normpath(os.path.join(_SHARED_MEDIA, "audio"))
MEDIA_DIR = os.path.normpath(os.path.join(_SHARED_MEDIA, "video"))
JFK_REF = "and so my fellow americans ask not what your country can do for you ask what you can do for your country"
LIBRI_REF = ("it was the first great sorrow of his life it was not so much the loss of the cotton itself but the "
             "fantasy the hopes the dreams built around it")
RATE = 16000
AGREE_WER = 0.05


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", text.lower().replace("-", " ")).split())


def wer(reference: str, hypothesis: str) -> float:
    import jiwer

    ref, hyp = normalise(reference), normalise(hypothesis)
    if not ref:
        return float("nan")
    return float(jiwer.wer(ref, hyp)) if hyp else 1.0


def load_16k(path: str) -> np.ndarray:
    from tests.avgen import load_wav

    samples, rate = load_wav(path)
    if samples.ndim != 1 or rate != RATE:
        raise SystemExit(f"{path}: expected mono {RATE} Hz, got {samples.shape} at {rate} Hz")
    return samples


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(round(seconds * RATE)), dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# Part a


def make_inputs(folder: str, audio_dir: str, media_dir: str, quick: bool) -> list[tuple[str, str, str | None]]:
    """[(video_id, path, reference transcript or None)]; also writes folder/manifest.jsonl."""
    from tests.avgen import mux_av

    jfk = load_16k(os.path.join(audio_dir, "jfk.wav"))
    libri = load_16k(os.path.join(audio_dir, "librispeech-1995-1837-0001.wav"))
    specs = [("jfk", jfk, JFK_REF), ("librispeech", libri, LIBRI_REF),
             ("jfk-pause-librispeech", np.concatenate([jfk, silence(2.0), libri]), f"{JFK_REF} {LIBRI_REF}")]
    if quick:
        specs = specs[:2]
    videos = []
    for vid, audio, ref in specs:
        path = os.path.join(folder, f"{vid}.mp4")
        mux_av(path, audio, sample_rate=RATE, channels=1)
        videos.append((vid, path, ref))
    nasa = os.path.join(media_dir, "nasa_13013.mp4")
    if not quick and os.path.isfile(nasa):
        videos.append(("nasa_13013", nasa, None))
    with open(os.path.join(folder, "manifest.jsonl"), "w", encoding="utf-8") as f:
        for vid, path, _ in videos:
            f.write(json.dumps({"uri": path, "video_id": vid}) + "\n")
    return videos


class TranscribeTimer:
    """Wraps models.asr.AsrEngine.transcribe in this process and sums its wall seconds."""

    def __init__(self):
        from models import asr

        self._cls = asr.AsrEngine
        self._orig = asr.AsrEngine.transcribe
        self.seconds = 0.0
        self.cpu = 0.0
        self.calls: list[tuple[int, float]] = []  # (samples, wall seconds) per call

    def __enter__(self):
        orig, timer = self._orig, self

        def timed(engine, samples):
            c0, t0 = time.process_time(), time.perf_counter()
            try:
                return orig(engine, samples)
            finally:
                wall = time.perf_counter() - t0
                timer.seconds += wall
                timer.cpu += time.process_time() - c0
                timer.calls.append((len(samples), wall))

        self._cls.transcribe = timed
        return self

    def __exit__(self, *exc):
        self._cls.transcribe = self._orig
        return False


def run_pipeline(manifest: str, output: str, threads: int) -> dict:
    """One `vmm extract` run; returns run_summary.json plus the outer wall time, the time inside
    AsrEngine.transcribe and each video's transcript."""
    import pyarrow.parquet as pq

    from pipelines import extract

    argv = ["--input", manifest, "--output", output, "--overwrite", "--no-ocr", "--clip-model", "vmm-tiny-vit",
            "--clip-pretrained", "none", "--no-progress", "--runner", "DirectRunner",
            "--direct_running_mode", "in_memory", "--direct_num_workers", "1", "--torch-threads", str(threads)]
    with TranscribeTimer() as timer, contextlib.redirect_stdout(io.StringIO()):
        t0 = time.perf_counter()
        rc = extract.run(argv)
        wall = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(f"vmm extract exited {rc}")
    with open(os.path.join(output, "run_summary.json"), encoding="utf-8") as f:
        summary = json.load(f)
    texts = {}
    for name in sorted(os.listdir(os.path.join(output, "videos"))):
        table = pq.read_table(os.path.join(output, "videos", name), columns=["video_id", "asr_text"])
        texts.update(zip(table.column("video_id").to_pylist(), table.column("asr_text").to_pylist()))
    return dict(summary, outer_wall_s=wall, inside_transcribe_s=timer.seconds, inside_transcribe_cpu=timer.cpu,
                transcribe_calls=timer.calls, texts=texts)


def call_seconds(calls: list[tuple[int, float]], samples: int) -> float:
    """Seconds of the pipeline's transcribe call whose input length is closest to `samples` (the two
    decoders may differ by a few hundred samples of codec padding)."""
    return min(calls, key=lambda c: abs(c[0] - samples))[1]


def direct_transcribe(model, audio: np.ndarray, vad: bool = True) -> tuple[str, float, float]:
    """(text, wall seconds, process CPU seconds)."""
    c0, t0 = time.process_time(), time.perf_counter()
    segments, _info = model.transcribe(
        audio, language="en", beam_size=5, temperature=0.0, condition_on_previous_text=False, vad_filter=vad,
        without_timestamps=False, word_timestamps=False,
    )
    text = " ".join(s.text.strip() for s in segments)  # the generator runs the decoder
    return text, time.perf_counter() - t0, time.process_time() - c0


# ---------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--audio", default=AUDIO_DIR, help="folder holding jfk.wav and librispeech-1995-1837-0001.wav")
    parser.add_argument("--media", default=MEDIA_DIR, help="folder holding nasa_13013.mp4 (used when present)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; figures are medians (default %(default)s)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="CTranslate2 cpu_threads on every side (default: all CPUs, what the pipeline gives "
                             "its one local worker)")
    parser.add_argument("--vad-repeat", type=int, default=5,
                        help="rounds of part b (a call takes seconds; more rounds steady its median)")
    parser.add_argument("--quick", action="store_true", help="two videos, two rounds (part b: three)")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeat = min(args.repeat, 2)
        args.vad_repeat = min(args.vad_repeat, 3)
    if args.repeat < 1 or args.vad_repeat < 1:
        parser.error("--repeat and --vad-repeat must be >= 1")

    # Beam, open_clip and the random-weights notice warn on every pipeline run; the figures are what matters.
    logging.basicConfig(level=logging.ERROR, force=True)
    import faster_whisper

    from models.asr import AsrConfig, AsrEngine, resolve_model

    model_dir, model_id = resolve_model("default")
    print(f"# bench_asr: {model_id}, int8, {args.threads} threads; pipeline (vmm extract, DirectRunner in memory) "
          f"vs direct faster-whisper {faster_whisper.__version__}; VAD on vs off; repeat={args.repeat}, "
          f"vad-repeat={args.vad_repeat} (medians)")
    print(f"# {machine_line()}")
    failed = False

    with tempfile.TemporaryDirectory(prefix="vmm-bench-asr-") as tmp:
        videos = make_inputs(tmp, args.audio, args.media, args.quick)
        manifest = os.path.join(tmp, "manifest.jsonl")
        audio = {vid: faster_whisper.decode_audio(path, sampling_rate=RATE) for vid, path, _ in videos}
        audio_s = {vid: len(a) / RATE for vid, a in audio.items()}

        t0 = time.perf_counter()
        model = faster_whisper.WhisperModel(model_dir, device="cpu", compute_type="int8", cpu_threads=args.threads,
                                            num_workers=1)
        direct_load = time.perf_counter() - t0
        direct_transcribe(model, audio[videos[0][0]])  # warm-up, untimed
        # Warm-up pipeline run, untimed: Beam's lazy imports, the CLIP model, the Whisper engine (cached).
        warm_manifest = os.path.join(tmp, "warm.jsonl")
        with open(warm_manifest, "w", encoding="utf-8") as f:
            f.write(json.dumps({"uri": videos[0][1], "video_id": videos[0][0]}) + "\n")
        t0 = time.perf_counter()
        run_pipeline(warm_manifest, os.path.join(tmp, "out-warm"), args.threads)
        print(f"# direct model load {direct_load:.2f} s; warm-up pipeline run {time.perf_counter() - t0:.1f} s "
              f"(loads the pipeline's Whisper); load average before timing {load_average()}")

        rounds = []
        for r in range(args.repeat):
            order = ("direct", "pipeline") if r % 2 == 0 else ("pipeline", "direct")
            entry = {}
            for side in order:
                if side == "direct":
                    entry["direct"] = {vid: direct_transcribe(model, audio[vid]) for vid, _, _ in videos}
                else:
                    entry["pipeline"] = run_pipeline(manifest, os.path.join(tmp, f"out-{r}"), args.threads)
            rounds.append(entry)
            d = sum(s for _, s, _ in entry["direct"].values())
            busy_r = entry["pipeline"]["stage_seconds"]["asr"]
            print(f"#   round {r + 1}: direct {d:.2f} s, pipeline ASR busy {busy_r:.2f} s, "
                  f"load {load_average()}", file=sys.stderr)

        # ---- part a table
        print("\n## a. ASR inside the pipeline vs faster-whisper directly (model load excluded)\n")
        rows = []
        last = rounds[-1]
        for vid, _, ref in videos:
            d_s = median([e["direct"][vid][1] for e in rounds])
            p_s = median([call_seconds(e["pipeline"]["transcribe_calls"], len(audio[vid])) for e in rounds])
            d_text = last["direct"][vid][0]
            p_text = last["pipeline"]["texts"].get(vid) or ""
            agree = wer(d_text, p_text) if normalise(d_text) else (0.0 if not normalise(p_text) else 1.0)
            failed |= not agree <= AGREE_WER
            rows.append([vid, f"{audio_s[vid]:.1f}", f"{d_s:.2f}", f"{p_s:.2f}", f"{100 * (p_s - d_s) / d_s:+.1f}%",
                         f"{d_s / audio_s[vid]:.3f}",
                         f"{wer(ref, d_text):.3f}" if ref else "", f"{wer(ref, p_text):.3f}" if ref else "",
                         f"{agree:.3f}"])
        total_audio = sum(audio_s.values())
        direct = median([sum(s for _, s, _ in e["direct"].values()) for e in rounds])
        direct_cpu = median([sum(c for _, _, c in e["direct"].values()) for e in rounds])
        inside_cpu = median([e["pipeline"]["inside_transcribe_cpu"] for e in rounds])
        busy = median([e["pipeline"]["stage_seconds"]["asr"] for e in rounds])
        inside = median([e["pipeline"]["inside_transcribe_s"] for e in rounds])
        wall = median([e["pipeline"]["wall_time_s"] for e in rounds])
        outer = median([e["pipeline"]["outer_wall_s"] for e in rounds])
        overhead = (busy - direct) / direct
        rows.append(["TOTAL", f"{total_audio:.1f}", f"{direct:.2f}", f"{inside:.2f}",
                     f"{100 * (inside - direct) / direct:+.1f}%", f"{direct / total_audio:.3f}", "", "", ""])
        print_table(["video", "audio s", "direct s", "pipeline s", "pipe vs direct", "direct RTF", "WER direct",
                     "WER pipeline", "WER pipe vs direct"], rows)
        print("# pipeline s: that video's call of AsrEngine.transcribe inside the pipeline (matched by length).")
        print()
        stage = {k: median([e["pipeline"]["stage_seconds"][k] or 0.0 for e in rounds]) for k in ("decode", "clip")}
        print_table(["pipeline figure (median over rounds)", "seconds", "vs direct"], [
            ["direct faster-whisper, transcribe", f"{direct:.2f}", ""],
            ["pipeline: inside AsrEngine.transcribe", f"{inside:.2f}", f"{100 * (inside - direct) / direct:+.1f}%"],
            ["direct faster-whisper, transcribe: CPU s (all threads)", f"{direct_cpu:.2f}", ""],
            ["pipeline: inside AsrEngine.transcribe: CPU s", f"{inside_cpu:.2f}",
             f"{100 * (inside_cpu - direct_cpu) / direct_cpu:+.1f}%"],
            ["pipeline: ASR DoFn busy (stage_seconds.asr)", f"{busy:.2f}", f"{100 * overhead:+.1f}%"],
            ["pipeline: decode busy (video + audio, one pass)", f"{stage['decode']:.2f}", ""],
            ["pipeline: CLIP busy (vmm-tiny-vit)", f"{stage['clip']:.2f}", ""],
            ["pipeline: end-to-end wall (run_summary wall_time_s)", f"{wall:.2f}", f"RTF {wall / total_audio:.3f}"],
            ["pipeline: extract.run() incl. config and model checks", f"{outer:.2f}", ""],
        ], ["<", ">", ">"])
        print(f"\n# RTF: seconds / audio seconds. Rounds (direct s, pipeline ASR busy s): "
              + ", ".join(f"({sum(s for _, s, _ in e['direct'].values()):.2f}, "
                          f"{e['pipeline']['stage_seconds']['asr']:.2f})" for e in rounds))
        print(f"# model load, excluded from both: direct WhisperModel() {direct_load:.2f} s; the pipeline loads in "
              f"DoFn.setup() (outside process()), once per process, here in the warm-up run.")
        if failed:
            print(f"# SANITY: a pipeline transcript differs from the direct one (WER > {AGREE_WER})")

        # ---- part b
        jfk = load_16k(os.path.join(args.audio, "jfk.wav"))
        libri = load_16k(os.path.join(args.audio, "librispeech-1995-1837-0001.wav"))
        paused = np.concatenate([jfk, silence(20.0), libri, silence(20.0), jfk])
        ref = f"{JFK_REF} {LIBRI_REF} {JFK_REF}"
        engines = {vad: AsrEngine(AsrConfig(vad=vad, threads=args.threads)).load() for vad in (True, False)}
        for engine in engines.values():  # warm-up, untimed
            engine.transcribe(jfk[: 3 * RATE])
        runs = {True: [], False: []}
        results = {}
        for r in range(args.vad_repeat):
            for vad in ((True, False) if r % 2 == 0 else (False, True)):
                t0 = time.perf_counter()
                results[vad] = engines[vad].transcribe(paused)
                runs[vad].append(time.perf_counter() - t0)
    print(f"\n## b. VAD on vs off: AsrEngine on jfk + 20 s silence + librispeech + 20 s silence + jfk "
          f"({len(paused) / RATE:.1f} s)\n")
    rows = []
    for vad in (True, False):
        res = results[vad]
        rows.append(["on" if vad else "off", f"{median(runs[vad]):.2f}", f"{median(runs[vad]) / res.duration_s:.3f}",
                     f"{res.speech_seconds:.1f}", len(res.segments), f"{wer(ref, res.text):.3f}"])
    print_table(["VAD", "seconds", "RTF", "speech s", "segments", "WER"], rows)
    print("# seconds: median; rounds: " + ", ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(runs[True], runs[False]))
          + " (on/off)")
    saved = 1 - median(runs[True]) / median(runs[False])
    for vad in (True, False):
        print(f"# VAD {'on' if vad else 'off'} text: {results[vad].text}")
    print(f"# load average at the end: {load_average()}")
    print(f"asr: pipeline overhead vs direct faster-whisper: {100 * overhead:+.1f}%; VAD saves {100 * saved:.0f}% time "
          f"at WER {wer(ref, results[True].text):.3f} vs {wer(ref, results[False].text):.3f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

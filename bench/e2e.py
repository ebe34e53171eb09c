"""End to end: the whole vmm pipeline vs the loop a user would write, and vs the model calls it needs.

    bench/run.sh [--quick | --media-set] [--repeat N]   # = .venv/bin/python -m bench.e2e ...

Inputs (built once, cached under --cache, default bench/results/e2e/, which git ignores):
  * generated videos of 10 s, 1 min and (full run only) 10 min: 640x360, 25 fps H.264, a hard cut
    every 2-6 s, a burned-in subtitle line every 2.5 s (each line a different sentence), the
    "VMM TV" logo, and an espeak-ng voice reading the sentences (`pipelines.make_sample.make_video`).
    Seeded; the ground truth (subtitle lines, spoken text) is stored next to each video;
  * real media from --media (../shared/media/video): all of it in the full run, three small files
    (nasa_13013.mp4, chaplin.mp4, counter.mp4) in --quick;
  * (quick and full) bench/captions.py's quick-caption video (40 captions of 0.3-2 s over moving
    footage) and slide video (lectures slides with a narration): their report gives subtitle recall
    by how long a line is shown, pipeline vs naive, and the slide lines filed as subtitles.

Sides, each a separate process, timed from outside (wall), with the CPU seconds of its whole
process tree (getrusage(RUSAGE_CHILDREN), cross-checked by summing /proc/<pid>/stat), and its peak
memory sampled from /proc (RSS and PSS summed over the tree; PSS does not count a shared page
twice): RSS every 0.2 s, PSS every `PSS_EVERY_S`, because reading it makes the kernel walk each
process's page tables, which stalls that process's memory calls meanwhile (read every 0.2 s, it
slowed the pipeline's run of the main set from 148.5 to 170.1 s):
  * pipeline: `python -m pipelines.extract` on DirectRunner, 2 worker threads in one process
    (multi_threading, run_local.sh's choice), CLIP
    ViT-B-32 with random weights (`--clip-pretrained none`: no pretrained weights can be downloaded
    here; the architecture and its cost are the real ones), OCR and ASR on (defaults), and a
    frame dictionary (`--codebook`). Per-stage busy seconds are run_summary.json's stage_seconds
    (summed over workers);
  * naive: bench/naive.py, one process, a plain loop (its docstring says what it does), its model
    calls on as many threads as this machine has cores (the pipeline's budget too: its 2 worker
    threads share the cores, `--torch-threads` 0);
  * floor: the standalone model calls the pipeline's outputs need, on exactly what the pipeline
    fed its models, one after another in one process: `decode_keyframes` with the pipeline's own
    DecodeConfig (built by `pipelines.extract.build_config` from the same flags), CLIP on each
    video's keyframes (one call a video), `Codebook.assign`, OCR on every frame the plan reads
    (`f.image is not None`), Whisper (`models.asr.AsrEngine`, VAD on) on the decoded audio. Each
    model runs on one thread (the fewest CPU-seconds per call), is loaded and warmed up before
    timing. Writing Parquet is not in the floor. The frame dictionary
    (k = min(64, keyframes / 2), 2 points per entry at least) is trained here from these CLIP
    vectors with `models.codebook.train_codebook`, the function `vmm train-codebook` runs (that
    CLI would decode and embed everything a second time).

Repetitions (--repeat N): the main set runs N times, the sides' order rotating (floor, pipeline,
naive; then pipeline, naive, floor; then naive, floor, pipeline; ...), so that no side always runs
first on a cold machine or last on a tired one. Each repetition gives its own ratios; the report
prints them all with min / median / max, the targets use the medians, and the stage and quality
tables are repetition 1's. The pipeline must write the same rows in every repetition.

Figures:
  * per stage: seconds per minute of video, share of the side's total, CPU utilisation across the
    machine's cores (CPU seconds / (wall x cores)) and peak RSS -- per stage for naive and floor
    (both run stages one after another in one process); for the pipeline, whose workers run all
    stages at once, per-stage busy seconds and, for the whole run, CPU utilisation and peak memory;
  * floor ratio: pipeline wall / (floor CPU seconds / cores), i.e. against a perfect use of every
    core for the unavoidable work; also pipeline CPU seconds / floor CPU seconds (work done beyond
    the model calls, whatever the parallelism);
  * quality: distinct ground-truth subtitle lines found (lowercase, letters and digits only,
    difflib ratio >= 0.85) in the pipeline's `ocr_subtitle_text` and in any of the naive OCR
    lines; transcript WER (jiwer) against the spoken text for both;
  * real media (no ground truth for the burned-in text): per video, the naive side's distinct OCR
    lines (>= 3 letters/digits) and how many of them the pipeline holds in its subtitle, scene and
    overlay columns and in any (its recall against the naive loop, which reads one frame a second
    at full size), the lines it missed, and WER of both transcripts against the file's own text
    subtitle track where it has one (nasa_13013's narration); lines mostly of digits (counters,
    timecodes) must match exactly;
  * sanity: both sides wrote the same videos;
  * memory: the pipeline's peak on the 10 s video alone vs the longest generated video alone;
  * scaling: the pipeline on 1 and 10 (full: and 100) copies of the 10 s video, distinct ids.
The last line is `e2e speedup vs naive: X.XXx` (naive wall / pipeline wall on the main set).

Load: the machine is shared. Before the first measurement the benchmark waits (at most
--max-wait-s) for the 1-minute load average to fall below --max-load, and for every run it prints
the load average and the CPU seconds other processes used meanwhile ("foreign").
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time

from bench.naive import _hwm_kb, _reset_peak  # the same /proc peak-RSS readers as the naive side

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CACHE = os.path.join(REPO, "bench", "results", "e2e")
DEFAULT_MEDIA = os.path.normpath(os.path.join(REPO, "..", "shared", "media", "video"))
QUICK_MEDIA = ("nasa_13013.mp4", "chaplin.mp4", "counter.mp4")
GEN_VERSION = 1  # bump when the generated content changes: cached videos are rebuilt
CORES = os.cpu_count() or 1
MATCH_RATIO = 0.85
_CLK = os.sysconf("SC_CLK_TCK")
_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
STAGES = ("decode", "sample", "clip", "tokens", "ocr", "asr", "write")


# ---------------------------------------------------------------------------------------------
# Generated inputs

_SUBJECTS = ("The baker", "A farmer", "My sister", "The old man", "A young girl", "The teacher",
             "Our captain", "The doctor", "A small dog", "The pilot", "My brother", "The artist",
             "A tall boy", "The driver")
_VERBS = ("opens", "paints", "carries", "finds", "washes", "fixes", "sells", "builds", "cleans",
          "closes", "moves", "checks", "pulls", "draws")
_OBJECTS = ("the red door", "a small boat", "the green gate", "a heavy box", "the blue car",
            "a wooden chair", "the old clock", "a silver key", "the kitchen", "a yellow kite",
            "the window", "a long rope", "the garden", "a paper map", "the white fence", "a brown bag")


def _sentences(rng: random.Random, n: int) -> list[str]:
    """n distinct short sentences (<= 32 characters: one subtitle line at the sample's font)."""
    out: list[str] = []
    seen = set()
    while len(out) < n:
        s = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}."
        if len(s) <= 32 and s not in seen:
            seen.add(s)
            out.append(s)
    return out


def video_plan(duration_s: int, seed: int = 0) -> dict:
    """Shots (a cut every 2-6 s), one subtitle line every 2.5 s, and the speech: all from the seed."""
    from pipelines.make_sample import FPS, LAYOUTS, MOTIONS, PALETTE, SHAPES, ShotSpec

    rng = random.Random(f"vmm-e2e:{GEN_VERSION}:{seed}:{duration_s}")
    frames_total = duration_s * FPS
    shots, used, prev = [], 0, None
    while used < frames_total:
        n = round(rng.uniform(2.0, 6.0) * FPS)
        if frames_total - (used + n) < FPS:  # never leave a stub shorter than a second
            n = frames_total - used
        name = rng.choice([c for c in PALETTE if c != prev])
        prev = name
        shots.append(ShotSpec(
            duration_s=n / FPS, background=PALETTE[name], layout=LAYOUTS[len(shots) % len(LAYOUTS)],
            shape=rng.choice(SHAPES),
            shape_color=rng.choice([PALETTE[c] for c in PALETTE if c != name] + [(250, 250, 250)]),
            shape_size=rng.choice((60, 70, 80, 90)), motion=rng.choice(MOTIONS),
            speed=rng.choice((0.25, 0.4, 0.55)), phase=round(rng.random(), 3),
        ))
        used += n
    n_lines = max(1, round(duration_s / 2.5))
    lines = _sentences(rng, n_lines)
    bounds = [round(frames_total * j / n_lines) for j in range(n_lines + 1)]
    subtitles = [(bounds[j] / FPS, bounds[j + 1] / FPS, lines[j]) for j in range(n_lines)]
    # Speech reads the lines from the start, as many as fit at 2 words a second (espeak-ng at
    # 150 wpm with its pauses speaks ~2.2), so it is never trimmed.
    spoken, words = [], 0
    for line in lines:
        words += len(line.split())
        if words > 2.0 * duration_s:
            break
        spoken.append(line)
    return {"shots": shots, "subtitles": subtitles, "speech_text": " ".join(spoken)}


def build_generated(cache: str, duration_s: int) -> tuple[str, dict]:
    """(path, truth) of the generated video of `duration_s` seconds; built once, then reused."""
    from pipelines.make_sample import LOGO_TEXT, make_video

    folder = os.path.join(cache, "inputs")
    os.makedirs(folder, exist_ok=True)
    name = f"gen-{duration_s}s"
    path = os.path.join(folder, f"{name}.mp4")
    truth_path = os.path.join(folder, f"{name}.json")
    if os.path.exists(path) and os.path.exists(truth_path):
        with open(truth_path) as f:
            truth = json.load(f)
        if truth.get("version") == GEN_VERSION:
            return path, truth
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is needed for the generated videos' speech (apt-get install espeak-ng)")
    plan = video_plan(duration_s)
    started = time.perf_counter()
    tmp = path + ".part.mp4"
    make_video(tmp, shots=plan["shots"], subtitles=plan["subtitles"], logo=LOGO_TEXT,
               speech_text=plan["speech_text"], audio=True)
    os.replace(tmp, path)
    truth = {"version": GEN_VERSION, "video_id": name, "duration_s": duration_s,
             "shots": len(plan["shots"]), "subtitles": [t for _, _, t in plan["subtitles"]],
             "speech_text": plan["speech_text"]}
    with open(truth_path, "w") as f:
        json.dump(truth, f, indent=1)
    print(f"# built {name}: {len(plan['shots'])} shots, {len(plan['subtitles'])} subtitle lines, "
          f"{len(plan['speech_text'].split())} spoken words in {time.perf_counter() - started:.0f} s", flush=True)
    return path, truth


def write_manifest(path: str, entries: list[tuple[str, str]]) -> str:
    with open(path, "w") as f:
        for video_id, uri in entries:
            f.write(json.dumps({"uri": uri, "video_id": video_id}) + "\n")
    return path


# ---------------------------------------------------------------------------------------------
# Measuring a process tree


def _proc_table() -> dict[int, tuple[int, int, int]]:
    """{pid: (ppid, CPU ticks user+sys, RSS KiB)} of every process, from /proc/<pid>/stat."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        rest = data[data.rindex(b")") + 2:].split()  # fields from 3 (state) on
        out[int(name)] = (int(rest[1]), int(rest[11]) + int(rest[12]), int(rest[21]) * _PAGE_KB)
    return out


def _tree(table: dict, root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            out.append(pid)
            todo.extend(children.get(pid, ()))
    return out


def _what(pid: int) -> str:
    """A short name for a process of a side's tree: the module it runs, or its program."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().decode(errors="replace").split("\0")
    except OSError:
        return "exited"
    if "-m" in argv and argv.index("-m") + 1 < len(argv):
        return argv[argv.index("-m") + 1].rsplit(".", 1)[-1]
    if "-c" in argv and argv.index("-c") + 1 < len(argv):
        code = argv[argv.index("-c") + 1]
        return "decode child" if "isolated" in code else code[:24]
    return os.path.basename(argv[0]) if argv and argv[0] else "?"


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _machine_busy_ticks() -> int:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)  # user nice system irq softirq steal


def load1() -> float:
    return os.getloadavg()[0]


@dataclasses.dataclass
class Measured:
    label: str
    wall_s: float
    cpu_s: float
    peak_rss_mib: float  # sum over the tree, at the sampled peak
    peak_pss_mib: float
    peak_proc_rss_mib: float  # the largest single process
    foreign_cpu_s: float  # CPU seconds other processes used on this machine meanwhile
    load_before: float
    load_after: float
    rc: int
    log: str
    at_peak: list  # [(what, RSS MiB)] of the processes of the tree at the peak RSS sample
    timeline: list  # [(seconds since start, CPU seconds of the tree so far, tree RSS MiB)] per sample

    def breakdown(self) -> str:
        return ", ".join(f"{what} {mib:.0f}" for what, mib in self.at_peak)

    def util_profile(self, parts: int = 10) -> str:
        """CPU utilisation of the tree (of all cores) in each tenth of the run, from the samples."""
        out = []
        for i in range(parts):
            t0, t1 = self.wall_s * i / parts, self.wall_s * (i + 1) / parts
            inside = [x for x in self.timeline if t0 <= x[0] <= t1]
            if len(inside) < 2:
                out.append("?")
                continue
            (a, ca, _), (b, cb, _) = inside[0], inside[-1]
            out.append(f"{100 * (cb - ca) / ((b - a) * CORES):.0f}%" if b > a else "?")
        return " ".join(out)

    @property
    def disturbed(self) -> bool:
        """Other processes used more than a tenth of the machine during the run."""
        return self.foreign_cpu_s > 0.1 * self.wall_s * CORES

    @property
    def util(self) -> float:
        return self.cpu_s / (self.wall_s * CORES) if self.wall_s else float("nan")


PSS_EVERY_S = 5.0  # seconds between PSS readings (see the module doc)


IDLE_WAIT_S = 120.0  # before each run, wait at most this long for an idle machine (--max-wait-s caps it)


def measure(label: str, cmd: list[str], logs: str, interval_s: float = 0.2) -> Measured:
    """Runs `cmd` (cwd = the repository) and measures its whole process tree."""
    os.makedirs(logs, exist_ok=True)
    log_path = os.path.join(logs, f"{label}.log")
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    wait_idle(IDLE_WAIT_S)
    load_before = load1()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0, self0 = _machine_busy_ticks(), time.process_time()
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
        peak = {"rss": 0, "pss": 0, "proc": 0, "at": []}
        cpu_ticks: dict[int, int] = {}
        timeline = []
        done = threading.Event()

        def sample():
            pss_at = -PSS_EVERY_S
            while not done.is_set():
                table = _proc_table()
                pids = _tree(table, proc.pid)
                rss = sum(table[p][2] for p in pids)
                pss = 0
                if time.perf_counter() - pss_at >= PSS_EVERY_S:
                    pss_at = time.perf_counter()
                    pss = sum(_pss_kb(p) for p in pids)
                for p in pids:
                    cpu_ticks[p] = max(cpu_ticks.get(p, 0), table[p][1])
                if rss > peak["rss"]:
                    peak["rss"] = rss
                    peak["at"] = [(_what(p), table[p][2]) for p in pids]
                peak["pss"] = max(peak["pss"], pss)
                peak["proc"] = max([peak["proc"]] + [table[p][2] for p in pids])
                timeline.append((time.perf_counter() - t0, sum(cpu_ticks.values()) / _CLK, rss / 1024))
                done.wait(interval_s)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        rc = proc.wait()
        wall = time.perf_counter() - t0
        done.set()
        sampler.join()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    machine = (_machine_busy_ticks() - busy0) / _CLK
    ours = time.process_time() - self0  # this process (the sampler) is not the side's work
    cpu_rusage = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    # getrusage counts only descendants that were waited for; the /proc sum also sees the others
    # (minus their last 0.2 s).
    cpu = max(cpu_rusage, sum(cpu_ticks.values()) / _CLK)
    names = [(what, kb / 1024) for what, kb in sorted(peak["at"], key=lambda x: -x[1])]
    m = Measured(label, wall, cpu, peak["rss"] / 1024, peak["pss"] / 1024, peak["proc"] / 1024,
                 max(0.0, machine - cpu - ours), load_before, load1(), rc, log_path, names, timeline)
    print(f"# {label}: wall {wall:.1f} s, CPU {cpu:.1f} s ({100 * m.util:.0f}% of {CORES} cores), "
          f"peak RSS {m.peak_rss_mib:.0f} MiB (PSS {m.peak_pss_mib:.0f}), load {load_before:.2f}->{m.load_after:.2f}, "
          f"foreign CPU {m.foreign_cpu_s:.1f} s", flush=True)
    if rc != 0:
        with open(log_path) as f:
            tail = f.read()[-3000:]
        raise SystemExit(f"{label} failed (exit {rc}); log {log_path}:\n{tail}")
    return m


def busy_cores(window_s: float = 5.0) -> float:
    """Cores the whole machine kept busy, on average, over the next `window_s` seconds."""
    b0 = _machine_busy_ticks()
    time.sleep(window_s)
    return (_machine_busy_ticks() - b0) / _CLK / window_s


def wait_for_quiet(max_load: float, max_wait_s: float) -> None:
    """Waits until the 1-minute load average is below `max_load` and the machine is idle now (under a
    quarter of a core busy over 5 s: the load average lags). Other benchmarks wait for the same
    moment, so after it the wait goes on for a random 10-30 s and the machine must still be idle."""
    started = time.perf_counter()
    rng = random.Random()
    while time.perf_counter() - started < max_wait_s:
        busy = busy_cores()
        if load1() < max_load and busy < 0.25:
            time.sleep(rng.uniform(10, 30))
            busy = busy_cores()
            if busy < 0.25:
                break
        print(f"# waiting for load < {max_load} and an idle machine (load {load1():.2f}, {busy:.2f} cores busy)", flush=True)
        time.sleep(10)
    quiet = load1() < max_load
    print(f"# load average {load1():.2f} after {time.perf_counter() - started:.0f} s of waiting"
          + ("" if quiet else f" -- STILL ABOVE {max_load}: figures are disturbed"), flush=True)


def wait_idle(max_wait_s: float = 120.0) -> None:
    """Before each run: waits (at most `max_wait_s`) until other processes leave the machine idle (3 s window).
    The load average cannot tell: it still holds our own previous run."""
    started = time.perf_counter()
    while max_wait_s > 0 and busy_cores(3.0) >= 0.25 and time.perf_counter() - started < max_wait_s:
        time.sleep(5)
    if time.perf_counter() - started > 5:
        print(f"# waited {time.perf_counter() - started:.0f} s for other processes to leave the machine idle", flush=True)


# ---------------------------------------------------------------------------------------------
# The sides' commands


def pipeline_flags(manifest: str, output: str, codebook: str | None) -> list[str]:
    flags = ["--input", manifest, "--output", output, "--overwrite", "--runner", "DirectRunner",
             "--direct_num_workers", "2", "--direct_running_mode", "multi_threading",
             "--clip-model", "ViT-B-32", "--clip-pretrained", "none", "--no-progress"]
    return flags + (["--codebook", codebook] if codebook else [])


def run_pipeline(label: str, manifest: str, work: str, codebook: str) -> Measured:
    """One measured `pipelines.extract` run; its output goes to work/runs/<label>/."""
    out = os.path.join(work, "runs", label)
    m = measure(label, [sys.executable, "-m", "pipelines.extract", *pipeline_flags(manifest, out, codebook)],
                os.path.join(work, "logs"))
    with open(os.path.join(out, "run_summary.json")) as f:
        if not json.load(f).get("accounting_ok"):
            raise SystemExit(f"{label}: run_summary.json says the accounting failed")
    return m


# ---------------------------------------------------------------------------------------------
# The floor (runs in its own process: python -m bench.e2e --floor-worker ...)


def _hwm_mib() -> float:
    return _hwm_kb() / 1024


class _Clock:
    def __init__(self):
        self.wall, self.cpu, self.peak = {}, {}, {}

    def timed(self, stage: str, fn, *args):
        _reset_peak()
        w, c = time.perf_counter(), time.process_time()
        out = fn(*args)
        self.wall[stage] = self.wall.get(stage, 0.0) + time.perf_counter() - w
        self.cpu[stage] = self.cpu.get(stage, 0.0) + time.process_time() - c
        self.peak[stage] = max(self.peak.get(stage, 0.0), _hwm_mib())
        return out


def floor_worker(manifest: str, result_path: str, codebook_dir: str) -> int:
    """The unavoidable work, timed per stage, written to `result_path`; trains the dictionary into `codebook_dir`."""
    import numpy as np
    from apache_beam.options.pipeline_options import PipelineOptions

    from models.asr import AsrEngine
    from models.clip import ClipEncoder
    from models.codebook import train_codebook
    from models.ocr import load_engine
    from pipelines.extract import build_config
    from transforms.decode_uri import decode_uri

    # One thread per model: the least CPU per call (the pipeline's models may use every core).
    flags = pipeline_flags(manifest, os.path.join(os.path.dirname(result_path), "unused"), None)
    config = build_config(PipelineOptions([*flags, "--torch-threads", "1"]))
    clip = ClipEncoder(config.clip).load()
    ocr = load_engine(config.ocr)
    asr = AsrEngine(config.asr).load()
    # Warm-up, untimed: first calls pay one-off setup (allocators, kernels) the steady state does not.
    rng = np.random.default_rng(0)
    warm = rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)
    clip.encode_images([warm])
    ocr.read(np.ascontiguousarray(np.repeat(warm, 2, axis=1)))
    asr.transcribe(np.zeros(16000, np.float32) + rng.normal(0, 0.01, 16000).astype(np.float32))

    with open(manifest) as f:
        entries = [json.loads(line) for line in f if line.strip()]
    clock = _Clock()
    per_video, embeddings = [], []
    for entry in entries:
        cpu0 = time.process_time()
        d = clock.timed("decode", decode_uri, entry["uri"], config.decode)
        images = [img for _, img in d.keyframes]
        emb = clock.timed("clip", clip.encode_images, images)
        reads = [f.image for f in d.ocr_frames if f.image is not None]
        lines = clock.timed("ocr", lambda: [ocr.read(img) for img in reads])
        text = None
        if d.audio is not None and d.audio.size:
            text = clock.timed("asr", asr.transcribe, d.audio).text
        embeddings.append(emb)
        per_video.append({"video_id": entry["video_id"], "cpu_s": time.process_time() - cpu0,
                          "frames_decoded": d.frames_decoded,
                          "keyframes": len(images), "ocr_frames": len(d.ocr_frames), "ocr_frames_read": len(reads),
                          "ocr_lines": sum(len(x) for x in lines), "audio_s": 0 if d.audio is None else d.audio.size / 16000,
                          "asr_text": text, "duration_s": d.duration_s})
        del d, images, reads
    vectors = np.concatenate(embeddings).astype(np.float32)
    k = max(2, min(64, len(vectors) // 2))
    book = train_codebook(vectors, k, level="frame", clip_model=config.clip.model_name,
                          clip_weights=config.clip_weights, seed=0, min_points_per_centroid=2)
    book.save(codebook_dir)
    for emb in embeddings:
        clock.timed("tokens", book.assign, emb)
    with open(result_path, "w") as f:
        json.dump({"stage_wall_s": clock.wall, "stage_cpu_s": clock.cpu, "stage_peak_rss_mib": clock.peak,
                   "threads": config.clip.threads, "codebook_k": k, "train_vectors": len(vectors),
                   "videos": per_video}, f, indent=1)
    return 0


# ---------------------------------------------------------------------------------------------
# Quality


def norm_line(text: str) -> str:
    return re.sub(r"[^0-9a-z]", "", text.lower())


def norm_words(text: str | None) -> str:
    text = (text or "").lower().replace("\u2019", "'")  # a typographic apostrophe (NASA’s) is an apostrophe
    return " ".join(re.sub(r"[^0-9a-z' ]", " ", text).split())


def found_lines(truth: list[str], candidates: list[str]) -> int:
    """Ground-truth lines some candidate matches (normalised, difflib ratio >= MATCH_RATIO). A line
    mostly of digits (a counter, a timecode) must match exactly: 00:00:03;12 is not 00:00:03;13."""
    cands = [c for c in (norm_line(x) for x in candidates) if c]
    exact = set(cands)
    hits = 0
    for t in truth:
        nt = norm_line(t)
        if sum(ch.isdigit() for ch in nt) * 2 >= len(nt):
            hits += nt in exact
        elif any(difflib.SequenceMatcher(None, nt, c).ratio() >= MATCH_RATIO for c in cands):
            hits += 1
    return hits


def wer(reference: str, hypothesis: str | None) -> float:
    import jiwer

    ref, hyp = norm_words(reference), norm_words(hypothesis)
    if not ref:
        return float("nan")
    return float(jiwer.wer(ref, hyp)) if hyp else 1.0


def _split(text: str | None) -> list[str]:
    return [x for x in (text or "").split("\n") if x.strip()]


def read_rows(folder: str, table: str, columns: list[str]) -> list[dict]:
    import pyarrow.parquet as pq

    path = os.path.join(folder, table)
    if os.path.isfile(path + ".parquet"):
        path += ".parquet"
    return pq.read_table(path, columns=columns).to_pylist()


# ---------------------------------------------------------------------------------------------
# Report


def _f(x, fmt="{:.1f}"):
    return "-" if x is None else fmt.format(x)


@dataclasses.dataclass
class Inputs:
    mode: str
    work: str  # this mode's folder under the cache
    generated: dict  # video_id -> (path, truth)
    real: list  # [(video_id, path)]
    long_id: str  # the longest generated video (memory check)
    captions: dict = dataclasses.field(default_factory=dict)  # video_id -> (path, truth): bench.captions' videos

    @property
    def main_set(self) -> list[tuple[str, str]]:
        return ([(vid, p) for vid, (p, _) in self.generated.items()]
                + [(vid, p) for vid, (p, _) in self.captions.items()] + self.real)


SIDES = ("floor", "pipeline", "naive")


def side_order(rep: int) -> list[str]:
    """The order of the sides in repetition `rep` (0-based): they rotate, so that over three
    repetitions each side runs first, second and last once (a machine that warms up, or a
    neighbour that comes and goes, does not favour one side). The floor runs first in repetition
    0: it trains the dictionary the other two sides use."""
    return [SIDES[(rep + i) % len(SIDES)] for i in range(len(SIDES))]


def side_label(side: str, rep: int) -> str:
    """Repetition 0 keeps the plain names (its outputs are the ones the stage and quality reports read)."""
    return side if rep == 0 else f"{side}-{rep + 1}"


@dataclasses.dataclass
class Rep:
    """One repetition of the main set: the three sides, in `order`."""

    order: list
    floor: Measured
    pipeline: Measured
    naive: Measured
    floor_cpu_s: float  # CPU seconds of the floor's model calls (its floor.json), loads excluded

    @property
    def speedup(self) -> float:
        return self.naive.wall_s / self.pipeline.wall_s

    @property
    def floor_ratio(self) -> float:
        return self.pipeline.wall_s / (self.floor_cpu_s / CORES)

    @property
    def cpu_ratio(self) -> float:
        return self.pipeline.cpu_s / self.floor_cpu_s


@dataclasses.dataclass
class Runs:
    """Every measured run and where its outputs are; saved as runs.json so --report-only can re-print."""

    floor: Measured  # repetition 1's sides (whose outputs the stage and quality reports read)
    pipeline: Measured
    naive: Measured
    scaling: dict  # copies -> Measured
    long_alone: Measured | None
    load_start: float
    load_end: float
    began: float
    ended: float
    code: str = "unknown"  # git_revision() when the runs were made
    reps: list = dataclasses.field(default_factory=list)  # [Rep], repetition 1 first

    def all(self) -> list[Measured]:
        main = [m for r in self.reps for m in (r.floor, r.pipeline, r.naive)] or [self.floor, self.pipeline, self.naive]
        return main + [*self.scaling.values()] + ([self.long_alone] if self.long_alone else [])

    def save(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(dataclasses.asdict(self), f, indent=1)

    @classmethod
    def load(cls, path: str) -> "Runs":
        with open(path) as f:
            raw = json.load(f)
        m = lambda d: Measured(**d) if d else None  # noqa: E731
        reps = [Rep(r["order"], m(r["floor"]), m(r["pipeline"]), m(r["naive"]), r["floor_cpu_s"])
                for r in raw.get("reps", [])]
        return cls(m(raw["floor"]), m(raw["pipeline"]), m(raw["naive"]),
                   {int(k): m(v) for k, v in raw["scaling"].items()}, m(raw["long_alone"]),
                   raw["load_start"], raw["load_end"], raw["began"], raw["ended"], raw.get("code", "unknown"), reps)


MODES = {
    # generated lengths (s), real media (None: all), copies of the 10 s video for scaling
    "smoke": ((10,), ("counter.mp4",), (1, 2)),
    "quick": ((10, 60), QUICK_MEDIA, (1, 10)),
    "full": ((10, 60, 600), None, (1, 10, 100)),
    # what each side reads on every real file (and the 10 s generated video), no scaling or memory runs
    "media": ((10,), None, ()),
}


def build_inputs(mode: str, cache: str, media: str) -> Inputs:
    lengths, names, _ = MODES[mode]
    generated = {}
    for n in lengths:
        path, truth = build_generated(cache, n)
        generated[truth["video_id"]] = (path, truth)
    real = []
    if os.path.isdir(media):
        files = sorted(f for f in os.listdir(media) if os.path.isfile(os.path.join(media, f)))
        real = [(os.path.splitext(f)[0], os.path.join(media, f)) for f in files if names is None or f in names]
    else:
        print(f"# note: {media} not found; generated videos only", flush=True)
    captions = {}
    if mode in ("quick", "full"):  # quick captions and slides (issue 23): subtitle recall by line duration
        from bench.captions import build_captions, build_slides

        for build in (build_captions, build_slides):
            path, truth = build(cache)
            captions[truth["video_id"]] = (path, truth)
    work = os.path.join(cache, mode)
    os.makedirs(work, exist_ok=True)
    return Inputs(mode, work, generated, real, f"gen-{lengths[-1]}s", captions)


def naive_cmd(manifest: str, output: str, codebook: str) -> list[str]:
    # The naive loop gets the pipeline's thread budget: the pipeline splits this machine's cores over
    # its 2 worker threads (--torch-threads 0), the loop makes one call at a time with every core.
    return [sys.executable, "-m", "bench.naive", "--manifest", manifest, "--output", output,
            "--codebook", codebook, "--threads", str(CORES)]


def run_all(inputs: Inputs, max_load: float, max_wait_s: float, began: float, repeat: int = 1) -> Runs:
    """Floor, pipeline and naive on the main set `repeat` times (the order rotating, see
    side_order), then the scaling and memory runs."""
    work, logs = inputs.work, os.path.join(inputs.work, "logs")
    manifest = write_manifest(os.path.join(work, "main.jsonl"), inputs.main_set)
    for _, path in inputs.main_set:  # warm the page cache
        with open(path, "rb") as f:
            while f.read(1 << 20):
                pass
    wait_for_quiet(max_load, max_wait_s)
    load_start = load1()
    codebook = os.path.join(work, "codebook")
    reps = []
    for r in range(repeat):
        got: dict = {}
        for side in side_order(r):
            label = side_label(side, r)
            if side == "floor":
                result = os.path.join(work, f"{label}.json")
                # Repetition 1's floor trains the dictionary the other sides use; later ones train it aside.
                book = codebook if r == 0 else os.path.join(work, f"codebook-{r + 1}")
                got[side] = measure(label, [sys.executable, "-m", "bench.e2e", "--floor-worker", manifest, result, book],
                                    logs)
                with open(result) as f:
                    got["floor_cpu_s"] = sum(json.load(f)["stage_cpu_s"].values())
            elif side == "pipeline":
                got[side] = run_pipeline(label, manifest, work, codebook)
            else:
                got[side] = measure(label, naive_cmd(manifest, os.path.join(work, "runs", label), codebook), logs)
        reps.append(Rep(side_order(r), got["floor"], got["pipeline"], got["naive"], got["floor_cpu_s"]))
    floor, pipeline, naive = reps[0].floor, reps[0].pipeline, reps[0].naive
    short_path = inputs.generated["gen-10s"][0]
    scaling = {}
    for n in MODES[inputs.mode][2]:
        man = write_manifest(os.path.join(work, f"scale-{n}.jsonl"), [(f"copy-{i:03d}", short_path) for i in range(n)])
        scaling[n] = run_pipeline(f"scale-{n}", man, work, codebook)
    long_alone = None
    if inputs.long_id != "gen-10s":
        man = write_manifest(os.path.join(work, "long.jsonl"), [(inputs.long_id, inputs.generated[inputs.long_id][0])])
        long_alone = run_pipeline("long-alone", man, work, codebook)
    runs = Runs(floor, pipeline, naive, scaling, long_alone, load_start, load1(), began, time.time(), git_revision(),
                reps)
    runs.save(os.path.join(work, "runs.json"))
    return runs


@dataclasses.dataclass
class Outputs:
    """What the three sides wrote or reported for the main set."""

    summary: dict  # the pipeline's run_summary.json
    naive: dict  # bench/naive.py's timings.json
    floor: dict  # the floor worker's result
    pipe_videos: dict  # video_id -> row
    naive_videos: dict
    minutes: float  # video minutes in the main set

    @classmethod
    def read(cls, work: str) -> "Outputs":
        with open(os.path.join(work, "runs", "pipeline", "run_summary.json")) as f:
            summary = json.load(f)
        with open(os.path.join(work, "runs", "naive", "timings.json")) as f:
            naive = json.load(f)
        with open(os.path.join(work, "floor.json")) as f:
            floor = json.load(f)
        pv = read_rows(os.path.join(work, "runs", "pipeline"), "videos",
                       ["video_id", "duration_s", "ocr_subtitle_text", "ocr_overlay_text", "ocr_scene_text", "asr_text"])
        nv = read_rows(os.path.join(work, "runs", "naive"), "videos", ["video_id", "duration_s", "ocr_text", "asr_text"])
        minutes = sum(r["duration_s"] or 0 for r in pv) / 60.0
        return cls(summary, naive, floor, {r["video_id"]: r for r in pv}, {r["video_id"]: r for r in nv}, minutes)


def report_stages(runs: Runs, out: Outputs) -> None:
    from bench._common import print_table

    minutes, m_pipe, m_naive = out.minutes, runs.pipeline, runs.naive
    busy = out.summary["stage_seconds"]
    cap = m_pipe.wall_s * CORES
    nw, nc, nr = out.naive["stage_wall_s"], out.naive["stage_cpu_s"], out.naive["stage_peak_rss_mib"]
    fw, fc, fr = out.floor["stage_wall_s"], out.floor["stage_cpu_s"], out.floor["stage_peak_rss_mib"]
    naive_total, floor_total = m_naive.wall_s, sum(fw.values())
    per_min = lambda x: _f(None if x is None else x / minutes, "{:.2f}")  # noqa: E731
    pct = lambda x, tot: _f(None if x is None else 100 * x / tot, "{:.1f}%")  # noqa: E731
    util = lambda cpu, wall: _f(100 * cpu / (wall * CORES) if wall else None, "{:.0f}%")  # noqa: E731
    rows = []
    for st in STAGES:
        p_b = busy.get(st)
        rows.append([st, per_min(nw.get(st)), pct(nw.get(st), naive_total), util(nc.get(st, 0), nw.get(st)),
                     _f(nr.get(st), "{:.0f}"),
                     per_min(fw.get(st)) if st != "sample" else "(in decode)", pct(fw.get(st), floor_total),
                     util(fc.get(st, 0), fw.get(st)), _f(fr.get(st), "{:.0f}"),
                     per_min(p_b) if st != "sample" else "(in decode)", pct(p_b, cap)])
    startup = naive_total - out.naive["wall_s"] + nw.get("load", 0.0)
    pipe_startup = (m_pipe.wall_s - out.summary["wall_time_s"]) * CORES
    other = cap - sum(v or 0 for v in busy.values()) - pipe_startup
    rows.append(["startup+load", per_min(startup), pct(startup, naive_total), "", "", "(untimed)", "", "", "",
                 per_min(pipe_startup), pct(pipe_startup, cap)])
    rows.append(["other", "", "", "", "", "", "", "", "", per_min(other), pct(other, cap)])
    rows.append(["TOTAL", per_min(naive_total), "100%", _f(100 * m_naive.util, "{:.0f}%"), _f(m_naive.peak_rss_mib, "{:.0f}"),
                 per_min(floor_total), "100%", util(sum(fc.values()), floor_total), _f(runs.floor.peak_rss_mib, "{:.0f}"),
                 per_min(cap), "100%"])
    print_table(["stage", "naive s/min", "share", "CPU", "RSS MiB", "floor s/min", "share", "CPU", "RSS MiB",
                 "pipeline busy s/min", "share of wall x cores"], rows)
    print()
    print("# s/min: seconds per minute of video. naive/floor: wall seconds of the stage, its share of the side's total,")
    print(f"# CPU seconds / (wall x {CORES} cores) during the stage, peak RSS of the process during the stage.")
    print(f"# pipeline: busy seconds per stage from run_summary.json, summed over its 2 worker threads, against wall x {CORES} cores;")
    print("# startup+load: process start until the Beam run starts (imports, config, weight checks) x cores;")
    print("# other: the rest -- Beam, worker start, model loads, tokens, assembling, writing, idle cores.")
    print("# naive TOTAL: its wall (a subprocess, imports included); floor TOTAL: the sum of its stages (one thread")
    print("# per model, loads excluded); TOTAL RSS: peak over the side's process tree.")
    print()
    print_table(["run", "wall s", "CPU s", "CPU util", "peak RSS MiB", "peak PSS MiB", "largest proc MiB",
                 "load before", "foreign CPU s"],
                [[m.label, f"{m.wall_s:.1f}", f"{m.cpu_s:.1f}", f"{100 * m.util:.0f}%", f"{m.peak_rss_mib:.0f}",
                  f"{m.peak_pss_mib:.0f}", f"{m.peak_proc_rss_mib:.0f}", f"{m.load_before:.2f}",
                  f"{m.foreign_cpu_s:.1f}" + (" DISTURBED" if m.disturbed else "")]
                 for m in runs.all()])
    print("# foreign CPU: CPU seconds the rest of the machine used during the run (other jobs share it); DISTURBED:")
    print(f"# more than a tenth of wall x {CORES} cores. Load before: 1-minute load average, our own previous run included.")
    print()
    for m in (m_pipe, m_naive, runs.floor):
        print(f"{m.label}: CPU utilisation by tenth of the run: {m.util_profile()}")
        print(f"  processes at peak RSS (MiB): {m.breakdown()}")
    print(f"pipeline: {m_pipe.wall_s - out.summary['wall_time_s']:.1f} s from process start to the Beam run, "
          f"{out.summary['wall_time_s']:.1f} s in it (run_summary wall_time_s)")
    print()


def _spread(xs: list[float], fmt: str) -> str:
    return f"{fmt.format(min(xs))} / {fmt.format(statistics.median(xs))} / {fmt.format(max(xs))}"


def report_repeats(runs: Runs, out: Outputs, work: str) -> list[Rep]:
    """Each repetition of the main set, its ratios, and min / median / max over the repetitions."""
    from bench._common import print_table

    reps = runs.reps or [Rep(list(SIDES), runs.floor, runs.pipeline, runs.naive, sum(out.floor["stage_cpu_s"].values()))]
    rows = []
    for i, r in enumerate(reps):
        disturbed = [s for s in r.order if getattr(r, s).disturbed]
        rows.append([i + 1, " > ".join(r.order), f"{r.pipeline.wall_s:.1f}", f"{r.pipeline.cpu_s:.1f}",
                     f"{r.naive.wall_s:.1f}", f"{r.naive.cpu_s:.1f}", f"{r.floor_cpu_s:.1f}", f"{r.speedup:.2f}x",
                     f"{r.floor_ratio:.2f}x", f"{r.cpu_ratio:.2f}x", ", ".join(disturbed) or "-"])
    if len(reps) > 1:
        for name, pick in (("min", min), ("median", statistics.median), ("max", max)):
            rows.append([name, "", *(f"{pick(getattr(getattr(r, side), attr) for r in reps):.1f}"
                                     for side, attr in (("pipeline", "wall_s"), ("pipeline", "cpu_s"),
                                                        ("naive", "wall_s"), ("naive", "cpu_s"))),
                         f"{pick(r.floor_cpu_s for r in reps):.1f}", f"{pick(r.speedup for r in reps):.2f}x",
                         f"{pick(r.floor_ratio for r in reps):.2f}x", f"{pick(r.cpu_ratio for r in reps):.2f}x", ""])
    print_table(["rep", "order", "pipeline s", "pipeline CPU s", "naive s", "naive CPU s", "floor CPU s",
                 "naive/pipeline", "pipeline/floor", "CPU pipeline/floor", "disturbed"], rows)
    print(f"# {len(reps)} repetition(s) of the main set, the sides' order rotating; ratios within a repetition. "
          f"pipeline/floor: pipeline wall / (floor CPU s / {CORES} cores).")
    print(f"# thread budget: pipeline 2 worker threads x {max(1, CORES // 2)} thread(s) per model call, "
          f"naive {out.naive.get('threads', '?')} thread(s) per call (one call at a time), floor 1")
    if len(reps) > 1:
        # Same inputs, same models: every repetition must write the same rows.
        columns = ["video_id", "num_keyframes", "embedding", "ocr_subtitle_text", "ocr_overlay_text",
                   "ocr_scene_text", "asr_text"]
        first = sorted(read_rows(os.path.join(work, "runs", "pipeline"), "videos", columns), key=lambda x: x["video_id"])
        same = all(sorted(read_rows(os.path.join(work, "runs", side_label("pipeline", i)), "videos", columns),
                          key=lambda x: x["video_id"]) == first for i in range(1, len(reps)))
        print(f"pipeline rows identical in every repetition: {'yes' if same else 'NO'}")
    print()
    return reps


def report_floor(runs: Runs, out: Outputs) -> tuple[float, float, bool]:
    """(pipeline wall / ideal floor time, pipeline CPU / floor CPU, the floor saw the pipeline's inputs)."""
    fw, fc = out.floor["stage_wall_s"], out.floor["stage_cpu_s"]
    floor_cpu = sum(fc.values())
    ideal = floor_cpu / CORES
    ratio, cpu_ratio = runs.pipeline.wall_s / ideal, runs.pipeline.cpu_s / floor_cpu
    c = out.summary["counters"]
    videos = out.floor["videos"]
    same = (sum(v["keyframes"] for v in videos) == c.get("vmm.keyframes")
            and sum(v["ocr_frames_read"] for v in videos) == c.get("vmm.ocr_frames_read")
            and sum(v["frames_decoded"] for v in videos) == c.get("vmm.frames_decoded"))
    print(f"floor: {floor_cpu:.1f} CPU-s of standalone model calls ({sum(fw.values()):.1f} s wall, one thread each) = "
          f"{ideal:.1f} s on {CORES} perfectly used cores; pipeline wall {runs.pipeline.wall_s:.1f} s = {ratio:.2f}x "
          f"that; pipeline CPU {runs.pipeline.cpu_s:.1f} s = {cpu_ratio:.2f}x the floor's CPU")
    print(f"  floor fed what the pipeline fed its models: {'yes' if same else 'NO'} (keyframes {c.get('vmm.keyframes')}, "
          f"OCR frames read {c.get('vmm.ocr_frames_read')}, frames decoded {c.get('vmm.frames_decoded')}); "
          f"dictionary k={out.floor['codebook_k']} from {out.floor['train_vectors']} vectors")
    print()
    return ratio, cpu_ratio, same


def report_quality(inputs: Inputs, out: Outputs) -> tuple[dict, float, float, bool]:
    """Subtitle lines found and WER on the generated videos; agreement on real media."""
    from bench._common import print_table

    pv, nv = out.pipe_videos, out.naive_videos
    rows, tot, wers = [], {"gt": 0, "p": 0, "pa": 0, "n": 0}, {"p": [], "n": []}
    for vid, (_, truth) in inputs.generated.items():
        gt, p, n = truth["subtitles"], pv.get(vid, {}), nv.get(vid, {})
        p_sub = _split(p.get("ocr_subtitle_text"))
        p_any = p_sub + _split(p.get("ocr_overlay_text")) + _split(p.get("ocr_scene_text"))
        fp, fpa, fn = found_lines(gt, p_sub), found_lines(gt, p_any), found_lines(gt, _split(n.get("ocr_text")))
        unmatched = sum(1 for line in p_sub if found_lines([line], gt) == 0)
        words = len(truth["speech_text"].split())
        wp, wn = wer(truth["speech_text"], p.get("asr_text")), wer(truth["speech_text"], n.get("asr_text"))
        wers["p"].append((wp, words))
        wers["n"].append((wn, words))
        for key, value in (("gt", len(gt)), ("p", fp), ("pa", fpa), ("n", fn)):
            tot[key] += value
        rows.append([vid, len(gt), fp, fpa, fn, f"{len(p_sub)} ({unmatched})", f"{wp:.3f}", f"{wn:.3f}"])

    def weighted(xs):
        words = sum(w for _, w in xs)
        return sum(x * w for x, w in xs) / words if words else float("nan")

    wer_p, wer_n = weighted(wers["p"]), weighted(wers["n"])
    rows.append(["TOTAL", tot["gt"], tot["p"], tot["pa"], tot["n"], "", f"{wer_p:.3f}", f"{wer_n:.3f}"])
    print_table(["generated video", "subtitle lines", "pipeline found", "(any domain)", "naive found",
                 "pipeline lines out (no match)", "WER pipeline", "WER naive"], rows)
    print("# found: ground-truth lines matched (lowercase alnum, ratio >= 0.85) by the pipeline's ocr_subtitle_text,")
    print("# by any of its OCR columns, by any naive OCR line. WER against the spoken text (TOTAL: word-weighted).")
    print()
    report_real_media(inputs, out)
    same = set(pv) == set(nv) == {v for v, _ in inputs.main_set}
    print(f"same videos in both outputs: {'yes' if same else 'NO'} ({len(pv)} pipeline, {len(nv)} naive)")
    print()
    return tot, wer_p, wer_n, same


def _recall(found: int, total: int) -> str:
    return f"{found}/{total}" + (f" {100 * found / total:.0f}%" if total else "")


def report_real_media(inputs: Inputs, out: Outputs) -> None:
    """Per real video: the naive loop's OCR lines the pipeline also read (in its subtitle, scene and
    overlay columns, and in any), the lines it did not, and WER where the file carries a transcript."""
    from bench._common import print_table

    pv, nv = out.pipe_videos, out.naive_videos
    rows, missed_lines, totals = [], [], {"n": 0, "sub": 0, "scene": 0, "overlay": 0, "any": 0}
    for vid, path in inputs.real:
        p, n = pv.get(vid, {}), nv.get(vid, {})
        domains = {d: _split(p.get(f"ocr_{d}_text")) for d in ("subtitle", "scene", "overlay")}
        p_any = [line for lines in domains.values() for line in lines]
        # The naive side's distinct lines of >= 3 letters or digits: what reading one frame a second
        # at full size finds. Recall: how many of them the pipeline read too.
        n_lines = list({norm_line(x): x for x in _split(n.get("ocr_text")) if len(norm_line(x)) >= 3}.values())
        hits = {d: found_lines(n_lines, lines) for d, lines in domains.items()}
        hit_any = found_lines(n_lines, p_any)
        for key, value in (("n", len(n_lines)), ("sub", hits["subtitle"]), ("scene", hits["scene"]),
                           ("overlay", hits["overlay"]), ("any", hit_any)):
            totals[key] += value
        missed = [x for x in n_lines if not found_lines([x], p_any)]
        if missed:
            missed_lines.append(f"#   {vid}: {len(missed)} missed: " + ", ".join(repr(x) for x in missed[:8])
                                + (", ..." if len(missed) > 8 else ""))
        reference = reference_transcript(path)
        wer_p = wer(reference, p.get("asr_text")) if reference else None
        wer_n = wer(reference, n.get("asr_text")) if reference else None
        agree = wer(n.get("asr_text"), p.get("asr_text")) if norm_words(n.get("asr_text")) else None
        rows.append([vid, len(n_lines), _recall(hits["subtitle"], len(n_lines)), _recall(hits["scene"], len(n_lines)),
                     _recall(hits["overlay"], len(n_lines)), _recall(hit_any, len(n_lines)), len(p_any),
                     _f(wer_p, "{:.3f}"), _f(wer_n, "{:.3f}"), _f(agree, "{:.3f}")])
    if not rows:
        return
    rows.append(["TOTAL", totals["n"], _recall(totals["sub"], totals["n"]), _recall(totals["scene"], totals["n"]),
                 _recall(totals["overlay"], totals["n"]), _recall(totals["any"], totals["n"]), "", "", "", ""])
    print_table(["real video", "naive lines", "in pipeline subtitle", "in scene", "in overlay", "in any",
                 "pipeline lines", "WER pipeline", "WER naive", "WER naive->pipeline"], rows)
    print("# naive lines: distinct OCR lines (>= 3 letters/digits) of the naive loop, which reads one frame a second at")
    print("# full size; 'in X': how many of them the pipeline's ocr_X_text holds (lowercase alnum, ratio >= 0.85; lines")
    print("# mostly of digits -- counters, timecodes -- must match exactly). WER against the file's own subtitle track")
    print("# where it has one ('-': none); WER naive->pipeline: the two transcripts compared.")
    if missed_lines:
        print("# naive lines the pipeline read in no column:")
        print("\n".join(missed_lines))
    print()


def reference_transcript(path: str) -> str | None:
    """The cues of the file's first text subtitle track (mov_text, SubRip) joined, tags and a leading
    speaker label ("NAR:") dropped; None without one. Whether the track transcribes the speech is
    for the reader to judge (nasa_13013's does)."""
    import av

    try:
        container = av.open(path)
    except av.error.FFmpegError:
        return None
    with container:
        tracks = [s for s in container.streams.subtitles if s.codec_context.name in ("mov_text", "subrip", "srt")]
        if not tracks:
            return None
        cues = []
        for packet in container.demux(tracks[0]):
            data = bytes(packet)
            if tracks[0].codec_context.name == "mov_text" and len(data) >= 2:  # 16-bit length, then the text
                data = data[2:2 + int.from_bytes(data[:2], "big")]
            text = re.sub(r"<[^>]*>|\{[^}]*\}", " ", data.decode("utf-8", "replace"))
            text = re.sub(r"^\s*[A-Z]{2,}:\s*", "", text).strip()
            if text:
                cues.append(text)
    return " ".join(cues) or None


def report_scaling(inputs: Inputs, runs: Runs, out: Outputs) -> tuple[float | None, float | None]:
    """(peak RSS long / short, marginal cost per video of the last step / the first step)."""
    from bench._common import print_table

    if 1 not in runs.scaling:
        return None, None
    short, long_ = runs.scaling[1], runs.long_alone
    rss_ratio = None
    if long_ is not None:
        rss_ratio = long_.peak_rss_mib / short.peak_rss_mib
        print(f"memory: pipeline peak RSS over its process tree, gen-10s alone {short.peak_rss_mib:.0f} MiB "
              f"(PSS {short.peak_pss_mib:.0f}, largest process {short.peak_proc_rss_mib:.0f}); {inputs.long_id} alone "
              f"{long_.peak_rss_mib:.0f} MiB (PSS {long_.peak_pss_mib:.0f}, largest {long_.peak_proc_rss_mib:.0f}): "
              f"{rss_ratio:.2f}x (PSS {long_.peak_pss_mib / short.peak_pss_mib:.2f}x, largest process "
              f"{long_.peak_proc_rss_mib / short.peak_proc_rss_mib:.2f}x)")
        print(f"  at peak, gen-10s alone: {short.breakdown()}")
        print(f"  at peak, {inputs.long_id} alone: {long_.breakdown()}")
        print()
    ns = sorted(runs.scaling)
    rows = []
    for i, n in enumerate(ns):
        m = runs.scaling[n]
        marginal = f"{(m.wall_s - runs.scaling[ns[i - 1]].wall_s) / (n - ns[i - 1]):.2f}" if i else ""
        rows.append([n, f"{m.wall_s:.1f}", f"{m.wall_s / n:.2f}", marginal, f"{m.cpu_s:.1f}", f"{m.cpu_s / n:.2f}",
                     f"{100 * m.util:.0f}%", f"{m.peak_rss_mib:.0f}"])
    print_table(["copies of gen-10s", "wall s", "wall s/video", "marginal s/video", "CPU s", "CPU s/video",
                 "CPU util", "peak RSS MiB"], rows)
    if len(ns) >= 2:
        per_video = (runs.scaling[ns[1]].wall_s - runs.scaling[ns[0]].wall_s) / (ns[1] - ns[0])
        cpu_per_video = (runs.scaling[ns[1]].cpu_s - runs.scaling[ns[0]].cpu_s) / (ns[1] - ns[0])
        print(f"# fixed cost of a run (wall at 0 videos, from {ns[0]} and {ns[1]} copies): "
              f"{runs.scaling[ns[0]].wall_s - ns[0] * per_video:.1f} s; each further 10 s video {per_video:.2f} s wall, "
              f"{cpu_per_video:.2f} CPU-s")
        floor_short = next((v.get("cpu_s") for v in out.floor["videos"] if v["video_id"] == "gen-10s"), None)
        if floor_short:
            print(f"# at scale (fixed cost excluded): per 10 s video, pipeline CPU {cpu_per_video:.2f} s = "
                  f"{cpu_per_video / floor_short:.2f}x the floor's {floor_short:.2f} CPU-s; pipeline wall {per_video:.2f} s = "
                  f"{per_video / (floor_short / CORES):.2f}x the floor on {CORES} perfectly used cores")
    linear = None
    if len(ns) >= 3:
        a = (runs.scaling[ns[1]].wall_s - runs.scaling[ns[0]].wall_s) / (ns[1] - ns[0])
        b = (runs.scaling[ns[2]].wall_s - runs.scaling[ns[1]].wall_s) / (ns[2] - ns[1])
        linear = b / a
        print(f"# marginal wall per video, {ns[1]}->{ns[2]} over {ns[0]}->{ns[1]}: {linear:.2f} (1.00: linear)")
    print()
    return rss_ratio, linear


def git_revision() -> str:
    """The commit the measured code is at, '+changes' when the working tree differs from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+changes" if dirty else "")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 s + 1 min generated videos and 3 small real files; "
                        "scaling 1 and 10; memory 10 s vs 1 min (under 10 minutes on 2 cores)")
    parser.add_argument("--smoke", action="store_true", help="tests the instrument only: the 10 s video and "
                        "counter.mp4, scaling 1 and 2; its figures mean nothing")
    parser.add_argument("--media-set", dest="media_set", action="store_true",
                        help="what each side reads on every real file: all real media and the 10 s video, "
                             "no scaling or memory runs")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the main set this many times, the sides' order rotating (floor, pipeline, naive; "
                             "then pipeline, naive, floor; ...); the report gives each repetition and "
                             "min / median / max (default %(default)s)")
    parser.add_argument("--cache", default=DEFAULT_CACHE, help="inputs, outputs and logs (default %(default)s)")
    parser.add_argument("--media", default=DEFAULT_MEDIA, help="real videos (default %(default)s)")
    parser.add_argument("--max-load", type=float, default=1.0, help="wait for a 1-minute load average below this")
    parser.add_argument("--max-wait-s", type=float, default=900.0,
                        help="wait at most this long for it (and at most min(this, 120 s) for an idle machine "
                             "before each run; 0: never wait)")
    parser.add_argument("--report-only", action="store_true", help="print the report of the last run of this mode again")
    parser.add_argument("--floor-worker", nargs=3, metavar=("MANIFEST", "RESULT", "CODEBOOK"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.floor_worker:
        return floor_worker(*args.floor_worker)
    if args.repeat < 1:
        parser.error(f"--repeat must be >= 1, got {args.repeat}")
    if args.smoke + args.quick + args.media_set > 1:
        parser.error("--smoke, --quick and --media-set choose a set: give one")
    from bench._common import machine_line

    global IDLE_WAIT_S
    IDLE_WAIT_S = min(IDLE_WAIT_S, args.max_wait_s)
    mode = "smoke" if args.smoke else "quick" if args.quick else "media" if args.media_set else "full"
    began = time.time()
    print(f"# bench.e2e --{mode}: vmm pipeline (DirectRunner, 2 worker threads) vs naive loop vs model-call floor")
    print(f"# {machine_line()}; started {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(began))}; "
          f"code {git_revision()}", flush=True)
    inputs = build_inputs(mode, os.path.abspath(args.cache), args.media)
    if args.report_only:
        runs = Runs.load(os.path.join(inputs.work, "runs.json"))
        print(f"# report of the run started {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(runs.began))} "
              f"on code {runs.code}")
    else:
        runs = run_all(inputs, args.max_load, args.max_wait_s, began, args.repeat)
    out = Outputs.read(inputs.work)

    print()
    print(f"## main set: {len(inputs.main_set)} videos, {out.minutes:.2f} min of video ("
          + ", ".join("%s %.0fs" % (v, out.pipe_videos[v]["duration_s"]) for v, _ in inputs.main_set if v in out.pipe_videos)
          + ")")
    print()
    reps = report_repeats(runs, out, inputs.work)
    if len(reps) > 1:
        print("## repetition 1 in detail (its outputs are the ones read for quality)")
        print()
    report_stages(runs, out)
    _, _, fed_same = report_floor(runs, out)
    tot, wer_p, wer_n, same_videos = report_quality(inputs, out)
    captions_ok = None
    if inputs.captions:
        from bench.captions import report_captions

        captions_ok = report_captions(inputs, out)
    rss_ratio, linear = report_scaling(inputs, runs, out)

    speedup = statistics.median(r.speedup for r in reps)
    floor_ratio = statistics.median(r.floor_ratio for r in reps)
    cpu_ratio = statistics.median(r.cpu_ratio for r in reps)
    of = f" (median of {len(reps)}; min / median / max {_spread([r.speedup for r in reps], '{:.2f}x')})" if len(reps) > 1 else ""
    verdict = lambda ok: "PASS" if ok else "MISS"  # noqa: E731
    print("targets (issue 8)" + ("" if mode == "full" else f" -- {mode} set: indicative, the targets are for the full set"))
    print(f"  e2e >= 3x naive: {speedup:.2f}x {verdict(speedup >= 3)}{of}")
    print(f"  subtitle lines found >= naive: {tot['p']} vs {tot['n']} of {tot['gt']} {verdict(tot['p'] >= tot['n'])}")
    print(f"  WER <= naive: {wer_p:.3f} vs {wer_n:.3f} {verdict(wer_p <= wer_n + 1e-9)}")
    if captions_ok is not None:
        print(f"  captions >= naive in every duration bucket, no slide text as subtitles (issue 23): {verdict(captions_ok)}")
    print(f"  <= 1.3x floor: {floor_ratio:.2f}x {verdict(floor_ratio <= 1.3)} (CPU-seconds ratio {cpu_ratio:.2f}x)"
          + (f" (median of {len(reps)}; min / median / max {_spread([r.floor_ratio for r in reps], '{:.2f}x')})"
             if len(reps) > 1 else ""))
    if rss_ratio is not None:
        print(f"  peak RSS {inputs.long_id} <= 1.5x gen-10s: {rss_ratio:.2f}x {verdict(rss_ratio <= 1.5)}")
    print(f"  linear in videos: {verdict(0.8 <= linear <= 1.25)} ({linear:.2f})" if linear is not None
          else "  linear in videos: needs 3 points (full run)")
    print(f"# load average {runs.load_start:.2f} at the first measurement, {runs.load_end:.2f} after the last; "
          f"measured runs {sum(m.wall_s for m in runs.all()):.0f} s of {runs.ended - runs.began:.0f} s since the start "
          f"(waiting for a quiet machine and building inputs included); "
          f"logs and outputs in {inputs.work}")
    disturbed = [m.label for m in runs.all() if m.disturbed]
    if disturbed:
        print(f"# WARNING: other processes took over a tenth of the machine during {', '.join(disturbed)}: rerun when quiet")
    print(f"e2e speedup vs naive: {speedup:.2f}x")
    return 0 if same_videos and fed_same else 1


if __name__ == "__main__":
    sys.exit(main())

"""The cost of decoding in an isolated child process, and of the decode bounds, on good videos.

    python -m bench.bench_isolation [--repeat 3] [--pipeline-runs 4] [--quick] [--media DIR] [--only NAME]

The decode modes call `transforms.decode.decode_uri(path, config)` on every input video, with text
frames for OCR and audio for ASR on, as the pipeline decodes when OCR and ASR are on:
`DecodeConfig(text=TextSamplingConfig(), audio=True, short_side=224)`.

  in-process  baseline: a plain loop in this process, no bounds (`timeout_s=None`, and `max_pixels`
              set out of reach -- the size check itself still runs, once per frame size)
  bounds      the same loop with the pipeline's bounds: `timeout_s=900` (a clock read per frame) and
              the default `max_pixels`
  isolated    with the bounds, through `models.isolated.Isolated(timeout_s=905,
              preload=("transforms.decode",))` as `transforms.decode._DecodeFn` sets it up: the request
              goes to a long-lived child over a socket and the `DecodedVideo` comes back pickled.
              The child is started before timing; its start (and its close) is timed on its own,
              --starts times, with that preload and, for comparison, with `models.decode` only
              (the decoder without Apache Beam, which `transforms.decode` imports).

Each video is decoded --repeat times per mode. Within a round the modes run back to back on the same
video, in an order that rotates from round to round, so load drifts hit every mode alike. A cell is
the median over the rounds; totals are sums of the per-video medians. CPU time counts this process
and, for `isolated`, the child (from /proc/<pid>/stat).

Transfer: for every video, `len(pickle.dumps(decoded, HIGHEST_PROTOCOL))` and the time of that dumps
plus the matching loads in this process. The implied transfer cost of one isolated call is measured
without decoding: the decoded result is sent to the same child and straight back (`copy.copy` in the
child, a shallow copy), which pickles, sends and unpickles it twice, so
  implied = empty round trip + (echo - empty round trip) / 2,
with the empty round trip an `int()` call. Compare it with the measured `isolated - bounds`.

Pipeline: the whole `pipelines.extract.run` on the same videos (a JSONL manifest), with
`--no-ocr --no-asr --clip-model vmm-tiny-vit --clip-pretrained none --no-progress` (default
DirectRunner), `--isolate-decode` (A) against `--no-isolate-decode` (B), in the order A B B A ...
(--pipeline-runs), after one untimed warm-up run. Note that without OCR and ASR, the pipeline decodes
no text frames and no audio, and keyframes at the tiny model's 64 px: a smaller result to send back
than in the decode modes. Wall time is this benchmark's own timer around `run()` and the run's
`run_summary.json` `wall_time_s`; the figure is the median per side. In the isolated runs,
`Isolated.start` and `Isolated.close` (the DoFn's setup and teardown; DirectRunner runs in this
process) are wrapped with a timer, to show how much of the difference is the child's start and stop.

The machine is shared: before each measurement block (decode, pipeline) the benchmark waits until the
1-minute load average is below 1.0 (polled every 10 s, at most --max-wait-s), then measures anyway,
and prints the load at the start and end of each block.

Sanity (exit 1 when it fails): every mode must return the same result for a video (frame counts,
keyframe and OCR-frame indices, every image, the audio), and both pipeline sides must account for
every entry and write the same number of rows.

Last line: `isolation: +X.X% decode wall time (bounds +Y.Y%); pipeline +Z.Z%` -- isolated (which
includes the bounds, as the pipeline runs by default) vs in-process, bounds alone vs in-process, and
the pipeline with --isolate-decode vs --no-isolate-decode.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import gc
import io
import json
import os
import pickle
import sys
import tempfile
import time

import numpy as np

from bench._common import add_input_args, input_videos, load_average, machine_line, median, print_table
from models.decode import DecodeConfig, DecodedVideo
from models.isolated import Isolated
from models.textframes import TextSamplingConfig
from transforms.decode import _HARD_TIMEOUT_GRACE_S, decode_uri

MODES = ("in-process", "bounds", "isolated")
BOUND_TIMEOUT_S = 900.0  # the pipeline's --decode-timeout-s default
LOAD_OK = 1.0
QUICK_REPEAT = 2
PIPELINE_FLAGS = ["--no-ocr", "--no-asr", "--clip-model", "vmm-tiny-vit", "--clip-pretrained", "none", "--no-progress"]


# ---- the machine ----------------------------------------------------------------------------------

def wait_for_quiet(max_wait_s: float, what: str) -> dict:
    """Waits until the 1-minute load average is below LOAD_OK (every 10 s, at most max_wait_s)."""
    t0 = time.monotonic()
    load = os.getloadavg()[0]
    while load >= LOAD_OK and time.monotonic() - t0 < max_wait_s:
        print(f"  [{what}] load average {load:.2f} >= {LOAD_OK}: waiting "
              f"({time.monotonic() - t0:.0f}/{max_wait_s:.0f} s)", file=sys.stderr, flush=True)
        time.sleep(10)
        load = os.getloadavg()[0]
    waited = time.monotonic() - t0
    if load >= LOAD_OK:
        print(f"  [{what}] load average still {load:.2f} after {waited:.0f} s: measuring anyway",
              file=sys.stderr, flush=True)
    return {"start_load": load, "waited_s": waited, "quiet": load < LOAD_OK}


def _child_pid(iso: Isolated) -> int:
    # A benchmark may look inside: the child's CPU time is part of the price of isolation.
    return iso._process.pid


def _proc_cpu_s(pid: int) -> float:
    """user + system CPU seconds of a live process (Linux /proc); NaN elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


# ---- the decode modes -----------------------------------------------------------------------------

def decode_configs() -> dict[str, DecodeConfig]:
    bounded = DecodeConfig(text=TextSamplingConfig(), audio=True, short_side=224, timeout_s=BOUND_TIMEOUT_S)
    # No bounds: no deadline, and a pixel limit no frame reaches (the comparison itself is one
    # multiplication per frame size, it cannot be switched off).
    unbounded = dataclasses.replace(bounded, timeout_s=None, max_pixels=1 << 62)
    return {"in-process": unbounded, "bounds": bounded, "isolated": bounded}


def _same(a: DecodedVideo, b: DecodedVideo) -> bool:
    """Same result: counts, indices, every kept image, the audio."""
    if (a.frames_decoded, a.width, a.height, a.has_audio) != (b.frames_decoded, b.width, b.height, b.has_audio):
        return False
    if [c.frame_index for c, _ in a.keyframes] != [c.frame_index for c, _ in b.keyframes]:
        return False
    if not all(np.array_equal(x, y) for (_, x), (_, y) in zip(a.keyframes, b.keyframes)):
        return False
    if [(f.frame_index, f.source) for f in a.ocr_frames] != [(f.frame_index, f.source) for f in b.ocr_frames]:
        return False
    for f, g in zip(a.ocr_frames, b.ocr_frames):
        if (f.image is None) != (g.image is None) or (f.image is not None and not np.array_equal(f.image, g.image)):
            return False
    if (a.audio is None) != (b.audio is None) or (a.audio is not None and not np.array_equal(a.audio, b.audio)):
        return False
    return True


def _pickle_cost(decoded: DecodedVideo) -> tuple[int, float]:
    """(bytes, seconds of dumps + loads) of one result, as the child sends it and this process reads it."""
    t0 = time.perf_counter()
    blob = pickle.dumps(decoded, protocol=pickle.HIGHEST_PROTOCOL)
    pickle.loads(blob)
    return len(blob), time.perf_counter() - t0


def time_child_starts(n: int, preload: tuple[str, ...]) -> tuple[list[float], list[float]]:
    """(start seconds, close seconds) of n children."""
    starts, closes = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        iso = Isolated(timeout_s=BOUND_TIMEOUT_S + _HARD_TIMEOUT_GRACE_S, preload=preload).start()
        t1 = time.perf_counter()
        iso.close()
        starts.append(t1 - t0)
        closes.append(time.perf_counter() - t1)
    return starts, closes


def empty_round_trip(iso: Isolated, calls: int = 50) -> float:
    """Median seconds of a call that does nothing: int() in the child, a request and a 0 back."""
    iso.call(int)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        iso.call(int)
        times.append(time.perf_counter() - t0)
    return median(times)


def echo_seconds(iso: Isolated, decoded: DecodedVideo) -> float:
    """Seconds to send `decoded` to the child and get it back: two transfers, no decoding."""
    t0 = time.perf_counter()
    back = iso.call(copy.copy, decoded)
    seconds = time.perf_counter() - t0
    assert back.frames_decoded == decoded.frames_decoded
    return seconds


def run_decode_modes(videos, repeat: int, iso: Isolated):
    configs = decode_configs()
    results = []
    failed = False
    for name, path in videos:
        ref = decode_uri(path, configs["in-process"])  # untimed: the reference result, and a warm file
        nbytes, _ = _pickle_cost(ref)
        sec = {m: [] for m in MODES}
        cpu = {m: [] for m in MODES}
        pickle_s, echo_s = [], []
        same = True
        for r in range(repeat):
            order = MODES[r % len(MODES):] + MODES[:r % len(MODES)]
            if r % 2:
                order = order[::-1]
            for mode in order:
                gc.collect()
                pid = _child_pid(iso) if mode == "isolated" else None
                c0 = time.process_time()
                k0 = _proc_cpu_s(pid) if pid else 0.0
                t0 = time.perf_counter()
                if mode == "isolated":
                    out = iso.call(decode_uri, path, configs[mode])
                else:
                    out = decode_uri(path, configs[mode])
                sec[mode].append(time.perf_counter() - t0)
                child = (_proc_cpu_s(pid) - k0) if pid else 0.0
                cpu[mode].append(time.process_time() - c0 + child)
                same &= _same(ref, out)
                del out
            pickle_s.append(_pickle_cost(ref)[1])
            echo_s.append(echo_seconds(iso, ref))
        failed |= not same
        results.append(dict(
            name=name, frames=ref.frames_decoded, kf=len(ref.keyframes),
            ocr=sum(f.image is not None for f in ref.ocr_frames),
            audio_s=0.0 if ref.audio is None else len(ref.audio) / 16000.0,
            bytes=nbytes, pickle_s=median(pickle_s), echo_s=median(echo_s),
            sec={m: median(sec[m]) for m in MODES}, cpu={m: median(cpu[m]) for m in MODES}, same=same,
        ))
        del ref
    return results, failed


# ---- the pipeline ---------------------------------------------------------------------------------

class _TimedChild:
    """Times Isolated.start and Isolated.close (the decode DoFn's setup and teardown) while it is active.
    DirectRunner, in memory, runs the DoFns in this process, so wrapping the class methods sees them."""

    def __enter__(self):
        self.start_s = self.close_s = 0.0
        self._start, self._close = Isolated.start, Isolated.close
        Isolated.start, Isolated.close = self._timed(self._start, "start_s"), self._timed(self._close, "close_s")
        return self

    def _timed(self, method, total: str):
        def wrapper(iso):
            t0 = time.perf_counter()
            try:
                return method(iso)
            finally:
                setattr(self, total, getattr(self, total) + time.perf_counter() - t0)

        return wrapper

    def __exit__(self, *exc):
        Isolated.start, Isolated.close = self._start, self._close
        return False


def run_pipeline(manifest: str, output: str, isolate: bool) -> dict:
    from pipelines import extract

    argv = ["--input", manifest, "--output", output, "--overwrite", *PIPELINE_FLAGS,
            "--isolate-decode" if isolate else "--no-isolate-decode"]
    gc.collect()
    c0 = time.process_time()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), _TimedChild() as child:  # run() prints its summary
        rc = extract.run(argv)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    with open(os.path.join(output, "run_summary.json")) as f:
        summary = json.load(f)
    counts = summary["counts"]
    return dict(isolate=isolate, rc=rc, wall=wall, cpu=cpu, child_start=child.start_s, child_close=child.close_s, summary_wall=summary["wall_time_s"],
                decode=summary["stage_seconds"]["decode"], ok=summary["accounting_ok"] and rc == 0,
                rows=(counts["videos"], counts["frames"], counts["errors"]))


def run_pipelines(videos, runs: int, tmp: str, max_wait_s: float):
    manifest = os.path.join(tmp, "manifest.jsonl")
    with open(manifest, "w") as f:
        for _, path in videos:
            f.write(json.dumps({"uri": os.path.abspath(path)}) + "\n")
    output = os.path.join(tmp, "out")
    print(f"  pipeline warm-up (untimed), load {load_average()}", file=sys.stderr, flush=True)
    run_pipeline(manifest, output, isolate=True)
    block = wait_for_quiet(max_wait_s, "pipeline")
    pattern = [True, False, False, True]  # A B B A: a linear drift hits both sides alike
    out = []
    for i in range(runs):
        isolate = pattern[i % 4]
        r = run_pipeline(manifest, output, isolate)
        r["load"] = load_average()
        print(f"  pipeline run {i + 1}/{runs} ({'isolated' if isolate else 'in-process'}): "
              f"{r['wall']:.2f} s, load {r['load']}", file=sys.stderr, flush=True)
        out.append(r)
    block["end_load"] = load_average()
    return out, block


# ---- main -----------------------------------------------------------------------------------------

def _pct(x: float) -> str:
    return f"{x * 100:+.1f}%"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_input_args(parser)
    parser.add_argument("--repeat", type=int, default=3, help="rounds per video per decode mode; cells are medians")
    parser.add_argument("--pipeline-runs", type=int, default=4, help="timed pipeline runs, A B B A ... (0: none)")
    parser.add_argument("--starts", type=int, default=5, help="child starts to time")
    parser.add_argument("--max-wait-s", type=float, default=600.0,
                        help=f"wait at most this long before each block for a load average below {LOAD_OK}")
    parser.add_argument("--quick", action="store_true",
                        help=f"every third real video and one sample video, --repeat {QUICK_REPEAT}, "
                             "--pipeline-runs 2, --starts 3 (about 2 min on an idle 2-core machine)")
    args = parser.parse_args(argv)
    if args.quick:
        args.sample_videos = min(args.sample_videos, 1)
        args.repeat, args.pipeline_runs, args.starts = QUICK_REPEAT, min(args.pipeline_runs, 2), min(args.starts, 3)
    if args.repeat < 1 or args.starts < 1 or args.pipeline_runs < 0:
        parser.error("--repeat and --starts must be >= 1, --pipeline-runs >= 0")

    started = time.perf_counter()
    print(f"# bench_isolation: decode_uri in-process vs bounds (timeout_s={BOUND_TIMEOUT_S:g}, max_pixels "
          f"{DecodeConfig.max_pixels:,}) vs Isolated child; text frames + audio on, short_side 224; "
          f"repeat={args.repeat} (median); pipeline runs={args.pipeline_runs}")
    print(f"# {machine_line()}")
    print(f"# started {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}")
    with input_videos(args) as videos, tempfile.TemporaryDirectory(prefix="vmm-bench-iso-") as tmp:
        if args.quick:
            real = [v for v in videos if not v[0].startswith("sample/")]
            videos = real[::3] + [v for v in videos if v[0].startswith("sample/")]
        print(f"# {len(videos)} videos: {', '.join(n for n, _ in videos)}")

        decode_block = wait_for_quiet(args.max_wait_s, "decode")
        starts, closes = time_child_starts(args.starts, ("transforms.decode",))
        starts_nb, closes_nb = time_child_starts(args.starts, ("models.decode",))
        with Isolated(timeout_s=BOUND_TIMEOUT_S + _HARD_TIMEOUT_GRACE_S, preload=("transforms.decode",)) as iso:
            round_trip = empty_round_trip(iso)
            results, failed = run_decode_modes(videos, args.repeat, iso)
            restarts = iso.restarts
        decode_block["end_load"] = load_average()
        failed |= restarts > 0

        pipes, pipe_block = ([], None)
        if args.pipeline_runs:
            pipes, pipe_block = run_pipelines(videos, args.pipeline_runs, tmp, args.max_wait_s)

    # ---- per-video table
    print()
    headers = ["video", "frames", "kf", "ocr", "audio s", "KiB pickled", "pickle ms",
               "in-proc s", "bounds s", "ratio", "isolated s", "ratio", "iso-bounds ms", "implied ms", "same"]
    rows = []

    def implied(r) -> float:
        return round_trip + max(0.0, r["echo_s"] - round_trip) / 2

    for r in results:
        s = r["sec"]
        rows.append([r["name"], r["frames"], r["kf"], r["ocr"], f"{r['audio_s']:.1f}", f"{r['bytes'] / 1024:.0f}",
                     f"{r['pickle_s'] * 1e3:.1f}", f"{s['in-process']:.3f}", f"{s['bounds']:.3f}",
                     f"{s['bounds'] / s['in-process']:.3f}", f"{s['isolated']:.3f}",
                     f"{s['isolated'] / s['in-process']:.3f}", f"{(s['isolated'] - s['bounds']) * 1e3:+.1f}",
                     f"{implied(r) * 1e3:.1f}", "yes" if r["same"] else "NO"])
    tot = {m: sum(r["sec"][m] for r in results) for m in MODES}
    cpu = {m: sum(r["cpu"][m] for r in results) for m in MODES}
    nbytes = sum(r["bytes"] for r in results)
    pickle_total = sum(r["pickle_s"] for r in results)
    implied_total = sum(implied(r) for r in results)
    rows.append(["TOTAL", sum(r["frames"] for r in results), sum(r["kf"] for r in results),
                 sum(r["ocr"] for r in results), f"{sum(r['audio_s'] for r in results):.1f}",
                 f"{nbytes / 1024:.0f}", f"{pickle_total * 1e3:.1f}", f"{tot['in-process']:.3f}",
                 f"{tot['bounds']:.3f}", f"{tot['bounds'] / tot['in-process']:.3f}", f"{tot['isolated']:.3f}",
                 f"{tot['isolated'] / tot['in-process']:.3f}", f"{(tot['isolated'] - tot['bounds']) * 1e3:+.1f}",
                 f"{implied_total * 1e3:.1f}", "yes" if all(r["same"] for r in results) else "NO"])
    print_table(headers, rows)
    print("# kf: keyframes; ocr: frames OCR would read (keyframes and text frames with an image); s: median "
          "seconds per video; ratio: to in-process; pickle ms: dumps + loads here; implied ms: "
          "empty round trip + half the result's echo through the child.")

    # ---- per-mode summary
    n = len(results)
    print()
    mode_rows = []
    for m in MODES:
        transfer = implied_total / n if m == "isolated" else 0.0
        per_video = median([r["sec"][m] / r["sec"]["in-process"] for r in results])
        mode_rows.append([m, f"{tot[m]:.3f}", f"{tot[m] / tot['in-process']:.3f}", _pct(tot[m] / tot["in-process"] - 1),
                          f"{per_video:.3f}", f"{cpu[m]:.3f}", f"{cpu[m] / cpu['in-process']:.3f}",
                          f"{nbytes / n / 1024:.0f}" if m == "isolated" else "0",
                          f"{transfer * 1e3:.1f}"])
    print_table(["mode", "wall s (sum)", "ratio", "vs in-process", "median video ratio", "CPU s", "CPU ratio",
                 "KiB pickled / video", "implied transfer ms / video"], mode_rows)
    print("# ratio: sum / sum of in-process; median video ratio: the median over videos of each video's ratio "
          "(one disturbed video cannot move it); CPU: this process plus, for isolated, the child.")
    print(f"# child start (Isolated.start, preload transforms.decode), once per worker, not in the figures above: "
          f"median {median(starts):.3f} s (min {min(starts):.3f}, max {max(starts):.3f}, n={len(starts)}); "
          f"close {median(closes):.3f} s. With preload models.decode only (no Beam): start {median(starts_nb):.3f} s, "
          f"close {median(closes_nb):.3f} s.")
    print(f"# empty call round trip {round_trip * 1e6:.0f} us; pickle dumps+loads here "
          f"{nbytes / max(pickle_total, 1e-9) / 2**20:.0f} MiB/s; implied transfer "
          f"{nbytes / max(implied_total - n * round_trip, 1e-9) / 2**20:.0f} MiB/s.")
    print(f"# isolated - bounds, measured: {(tot['isolated'] - tot['bounds']) * 1e3:+.1f} ms over {n} videos; "
          f"implied transfer: {implied_total * 1e3:.1f} ms. Child restarts: {restarts}.")
    print(f"# decode block: load {decode_block['start_load']:.2f} at start (waited {decode_block['waited_s']:.0f} s), "
          f"{decode_block['end_load']} at end.")

    # ---- pipeline
    pipe_ratio = None
    if pipes:
        print()
        prow = [[i + 1, "isolate" if r["isolate"] else "no-isolate", f"{r['wall']:.3f}", f"{r['summary_wall']:.3f}",
                 f"{r['decode']:.3f}" if r["decode"] is not None else "-",
                 f"{r['child_start']:.3f}" if r["isolate"] else "-", f"{r['child_close']:.3f}" if r["isolate"] else "-",
                 f"{r['cpu']:.3f}", "/".join(map(str, r["rows"])), r["load"], "yes" if r["ok"] else "NO"]
                for i, r in enumerate(pipes)]
        print_table(["run", "side", "wall s", "summary wall s", "decode busy s", "child start s", "child close s",
                     "CPU s (this process)", "videos/frames/errors", "load", "ok"], prow)
        iso_w = median([r["wall"] for r in pipes if r["isolate"]])
        raw_w = median([r["wall"] for r in pipes if not r["isolate"]])
        iso_s = median([r["summary_wall"] for r in pipes if r["isolate"]])
        raw_s = median([r["summary_wall"] for r in pipes if not r["isolate"]])
        starts_p = [r["child_start"] for r in pipes if r["isolate"]]
        closes_p = [r["child_close"] for r in pipes if r["isolate"]]
        if raw_w == raw_w and iso_w == iso_w:  # both sides ran
            pipe_ratio = iso_w / raw_w
            print(f"# pipeline median wall: isolate {iso_w:.3f} s, no-isolate {raw_w:.3f} s: {_pct(pipe_ratio - 1)} "
                  f"(run_summary wall_time_s: {iso_s:.3f} vs {raw_s:.3f}: {_pct(iso_s / raw_s - 1)}). The isolated "
                  f"side includes its child's start and close (median {median(starts_p):.3f} + {median(closes_p):.3f} s). "
                  f"CPU s counts this process only (not the child).")
        failed |= not all(r["ok"] for r in pipes) or len({r["rows"] for r in pipes}) != 1
        print(f"# pipeline block: load {pipe_block['start_load']:.2f} at start (waited {pipe_block['waited_s']:.0f} s), "
              f"{pipe_block['end_load']} at end.")
    print(f"# finished {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, {time.perf_counter() - started:.0f} s wall.")
    headline = (f"isolation: {_pct(tot['isolated'] / tot['in-process'] - 1)} decode wall time "
                f"(bounds {_pct(tot['bounds'] / tot['in-process'] - 1)})")
    headline += f"; pipeline {_pct(pipe_ratio - 1)}" if pipe_ratio is not None else "; pipeline not run"
    print(headline)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

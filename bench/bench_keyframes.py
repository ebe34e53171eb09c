"""Keyframe sampling (models.decode.decode_keyframes) vs decoding every frame to full-size RGB.

    python -m bench.bench_keyframes [--repeat 3] [--sample-videos 3] [--media DIR] [--only NAME]

Ours: `decode_keyframes(path, DecodeConfig())` (short_side=224): every frame is decoded, but only the
few analysed ones become 64x36 thumbnails and only the kept ones become 224-pixel RGB, converted and
resized by swscale in one step.

Naive (what a user would write first): decode every frame with PyAV, convert each one to a
full-resolution RGB array (`frame.to_ndarray(format="rgb24")`), keep the frames at the timestamps our
sampler chose, and resize those with PIL to the same size. It is given the answer (the timestamps),
so it measures only the cost of getting the pixels, not of choosing frames. It reads the same stream
as ours (`container.streams.best("video")`) with PyAV's default decoder settings.

Both sides run on the same files in the same process, interleaved (ours first on odd repeats, naive
first on even ones); each cell is the median over --repeat runs. The page cache is warmed first.
Sanity: both sides must decode the same number of frames and pick the same frame indices.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time

import av
import numpy as np
from PIL import Image

from bench._common import (
    CAN_RESET_PEAK, PeakRss, add_input_args, input_videos, load_average, machine_line, median, print_table,
)
from models.decode import DecodeConfig, decode_keyframes


def _ts_key(t: float) -> int:
    return int(round(t * 1e6))


def naive_keyframes(path: str, wanted_ts: set[int], size_wh: tuple[int, int], thread_type: str | None = None):
    """Decode all, convert all to full-size RGB, keep the frames at `wanted_ts` (µs), resize with PIL.

    Returns (frames decoded, [(frame index, uint8 [h, w, 3])]).
    """
    picked = []
    n = 0
    with av.open(path) as container:
        stream = container.streams.best("video")
        if thread_type:
            stream.thread_type = thread_type
        start = stream.start_time or 0
        fps = float(stream.average_rate) if stream.average_rate else None
        for i, frame in enumerate(container.decode(stream)):
            n += 1
            rgb = frame.to_ndarray(format="rgb24")  # full resolution, every frame
            if frame.pts is not None and stream.time_base is not None:
                t = max(0.0, float((frame.pts - start) * stream.time_base))
            else:
                t = i / fps if fps else float(i)
            if _ts_key(t) in wanted_ts:
                img = Image.fromarray(rgb)
                quarter = int(round((frame.rotation or 0) / 90.0)) % 4
                w, h = size_wh if quarter % 2 == 0 else size_wh[::-1]
                small = np.asarray(img.resize((w, h)))
                if quarter:
                    small = np.ascontiguousarray(np.rot90(small, k=quarter))
                picked.append((i, small))
    return n, picked


def _timed(fn):
    gc.collect()
    with PeakRss() as mem:
        c0 = time.process_time()
        t0 = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - c0
    return out, seconds, cpu, mem.mib


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_input_args(parser)
    parser.add_argument("--repeat", type=int, default=3, help="runs per side per video; cells are medians")
    parser.add_argument("--threaded-naive", action="store_true",
                        help="also time the naive way with frame threading on (thread_type=AUTO, as ours uses)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")

    config = DecodeConfig()  # defaults: short_side=224, SamplingConfig()
    print(f"# bench_keyframes: decode_keyframes(DecodeConfig(short_side={config.short_side})) vs decode-all + "
          f"to_ndarray(rgb24) + PIL resize; repeat={args.repeat} (median)")
    print(f"# {machine_line()}")
    sides = ["ours", "naive"] + (["naive_auto"] if args.threaded_naive else [])
    results = []
    failed = False
    with input_videos(args) as videos:
        for name, path in videos:
            try:
                probe = decode_keyframes(path, config)
            except Exception as e:  # a file our decoder rejects is reported, not benchmarked
                print(f"skip {name}: {type(e).__name__}: {e}", file=sys.stderr)
                continue
            wanted = {_ts_key(c.timestamp_s) for c, _ in probe.keyframes}
            h, w = probe.keyframes[0][1].shape[:2]
            ours_idx = [c.frame_index for c, _ in probe.keyframes]
            runs = {s: [] for s in sides}
            cpus = {s: [] for s in sides}
            peaks = {s: [] for s in sides}
            naive_out = None
            for r in range(args.repeat):
                order = sides if r % 2 == 0 else sides[::-1]
                for side in order:
                    if side == "ours":
                        out, sec, cpu, mib = _timed(lambda: decode_keyframes(path, config))
                        assert [c.frame_index for c, _ in out.keyframes] == ours_idx, "ours is not deterministic"
                    else:
                        tt = "AUTO" if side == "naive_auto" else None
                        out, sec, cpu, mib = _timed(lambda: naive_keyframes(path, wanted, (w, h), tt))
                        if naive_out is None:
                            naive_out = out
                    del out
                    runs[side].append(sec)
                    cpus[side].append(cpu)
                    peaks[side].append(mib)
            n_naive, picked = naive_out
            same_idx = [i for i, _ in picked] == ours_idx and n_naive == probe.frames_decoded
            failed |= not same_idx
            px = max((float(np.abs(a.astype(np.int16) - b[1].astype(np.int16)).mean())
                      for (_, a), b in zip(probe.keyframes, picked) if a.shape == b[1].shape), default=float("nan"))
            results.append(dict(
                name=name, size=f"{probe.width}x{probe.height}", codec=probe.video_codec,
                frames=probe.frames_decoded, keyframes=len(probe.keyframes),
                sec={s: median(runs[s]) for s in sides}, cpu={s: median(cpus[s]) for s in sides},
                peak={s: max(peaks[s]) for s in sides},
                same=same_idx, px=px,
            ))
            del probe, naive_out, picked

    headers = ["video", "size", "codec", "frames", "kf", "ours s", "naive s", "speedup"]
    if args.threaded_naive:
        headers += ["naive_auto s", "speedup"]
    headers += ["ours MiB", "naive MiB", "same idx", "px diff"]
    rows = []
    for r in results:
        row = [r["name"], r["size"], r["codec"], r["frames"], r["keyframes"],
               f"{r['sec']['ours']:.3f}", f"{r['sec']['naive']:.3f}", f"{r['sec']['naive'] / r['sec']['ours']:.2f}x"]
        if args.threaded_naive:
            row += [f"{r['sec']['naive_auto']:.3f}", f"{r['sec']['naive_auto'] / r['sec']['ours']:.2f}x"]
        row += [f"{r['peak']['ours']:.1f}", f"{r['peak']['naive']:.1f}", "yes" if r["same"] else "NO", f"{r['px']:.2f}"]
        rows.append(row)
    tot = {s: sum(r["sec"][s] for r in results) for s in sides}
    total = ["TOTAL", "", "", sum(r["frames"] for r in results), sum(r["keyframes"] for r in results),
             f"{tot['ours']:.3f}", f"{tot['naive']:.3f}", f"{tot['naive'] / tot['ours']:.2f}x"]
    if args.threaded_naive:
        total += [f"{tot['naive_auto']:.3f}", f"{tot['naive_auto'] / tot['ours']:.2f}x"]
    total += [f"{max(r['peak']['ours'] for r in results):.1f}", f"{max(r['peak']['naive'] for r in results):.1f}",
              "yes" if all(r["same"] for r in results) else "NO", ""]
    rows.append(total)
    print()
    print_table(headers, rows, ["<", "<", "<"] + [">"] * (len(headers) - 3))
    print()
    print("# s: median seconds per video; speedup: naive s / ours s; TOTAL speedup: sum naive / sum ours.")
    print("# MiB: peak RSS growth during one call (max over repeats)"
          + ("" if CAN_RESET_PEAK else " -- growth of the process-wide peak only (no /proc/self/clear_refs)") + ".")
    print("# same idx: both decoded the same frame count and picked the same frame indices; "
          "px diff: largest per-frame mean |ours - naive| in 0..255 (swscale AREA vs PIL bicubic).")
    cpu = {s: sum(r["cpu"][s] for r in results) for s in sides}
    print("# CPU seconds (all threads), sum of medians: "
          + ", ".join(f"{s} {cpu[s]:.3f}" for s in sides)
          + f"; naive / ours {cpu['naive'] / cpu['ours']:.2f}x. Load average at the end: {load_average()}.")
    print(f"keyframe sampling speedup vs decode-all: {tot['naive'] / tot['ours']:.2f}x")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

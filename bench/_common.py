"""Shared by the benchmarks: the input videos, peak-RSS measurement, table printing. No timing here."""

from __future__ import annotations

import contextlib
import glob
import os
import platform
import resource
import statistics
import sys
import tempfile

DEFAULT_MEDIA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "media", "video")


def add_input_args(parser) -> None:
    parser.add_argument("--media", default=os.path.normpath(DEFAULT_MEDIA),
                        help="folder of real videos, all of them are used (default %(default)s)")
    parser.add_argument("--sample-videos", type=int, default=3,
                        help="also generate this many sample videos (pipelines.make_sample) into a temp dir; 0: none")
    parser.add_argument("--only", default=None, help="substring filter on video names (quick runs)")


@contextlib.contextmanager
def input_videos(args):
    """Yields [(name, path)]: every file in --media, then the generated sample videos."""
    videos = []
    if args.media and os.path.isdir(args.media):
        videos += [(os.path.basename(p), p) for p in sorted(glob.glob(os.path.join(args.media, "*"))) if os.path.isfile(p)]
    else:
        print(f"note: media folder {args.media} not found; using the generated sample only", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="vmm-bench-") as tmp:
        if args.sample_videos > 0:
            from pipelines.make_sample import make_sample

            make_sample(tmp, num_videos=args.sample_videos)
            videos += [(f"sample/{os.path.basename(p)}", p) for p in sorted(glob.glob(os.path.join(tmp, "*.mp4")))]
        if args.only:
            videos = [(n, p) for n, p in videos if args.only in n]
        if not videos:
            raise SystemExit("no input videos")
        for _, path in videos:  # warm the page cache so neither side pays the first read
            with open(path, "rb") as f:
                while f.read(1 << 20):
                    pass
        yield videos


def _can_reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


CAN_RESET_PEAK = _can_reset_peak()


def current_rss_kb() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _vm_hwm_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class PeakRss:
    """Peak RSS growth (MiB) over a block. Linux: resets the high-water mark first (clear_refs 5), so
    each block is measured on its own; elsewhere it is the growth of the process's all-time peak."""

    def __enter__(self):
        if CAN_RESET_PEAK:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self._base = current_rss_kb()
        else:
            self._base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return self

    def __exit__(self, *exc):
        # VmHWM is this process's own mark; ru_maxrss also keeps the parent's mark from exec time
        peak = _vm_hwm_kb() if CAN_RESET_PEAK else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.mib = max(0, peak - self._base) / 1024.0
        return False


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def machine_line() -> str:
    import av
    import numpy

    return (f"python {platform.python_version()}, {os.cpu_count()} cpus, {platform.machine()}, "
            f"PyAV {av.__version__} (FFmpeg {'.'.join(map(str, av.library_versions.get('libavcodec', ())))} libavcodec), "
            f"numpy {numpy.__version__}, load average {load_average()}")


def load_average() -> str:
    """1-minute load average: on a 2-core machine, above ~1 means another process shared the CPUs."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "?"


def print_table(headers, rows, aligns=None) -> None:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    aligns = aligns or ["<"] + [">"] * (len(headers) - 1)
    for n, r in enumerate(cells):
        print("  ".join(f"{c:{a}{w}}" for c, a, w in zip(r, aligns, widths)))
        if n == 0:
            print("  ".join("-" * w for w in widths))


# Where an in-process (DirectRunner, in_memory) pipeline leaves its output for the benchmark to read.
# It lives in an importable module, not in __main__, so Beam pickles a reference to it, not a copy.
SINK: list = []


def collect(element) -> None:
    SINK.append(element)


# Frames an in-process pipeline reads by index (bench_clip --source memory): no pickling into the graph.
FRAMES: list = []


def frame_at(index: int):
    return FRAMES[index]

"""vmm extract on a Flink session cluster of this machine vs DirectRunner, same inputs, same flags.

    python -m bench.bench_cluster [--environment-cache-ms MS [MS ...]] [--copies N] [--cache DIR] [--media DIR]
    # engines: python3 tests/clusters/fetch.py

Inputs: bench/run.sh --quick's main set (bench.e2e: the 10 s and 1 min generated videos, three real
files, the quick-caption and slide videos), built once into --cache. Flags: bench.e2e's pipeline
flags (ViT-B-32 with random weights, OCR and ASR on, no dictionary), the DirectRunner side with its
2 worker threads in one process (run_local.sh's choice), the Flink side as the cluster tier runs it
(tests/test_engines.py): a JobManager and one TaskManager with 2 slots, Beam's Flink job server,
Beam's worker pool starting the SDK workers the TaskManager asks for, --parallelism 2,
--sdk_worker_parallelism N (default 1, the tier's: one SDK process serving both slots, one copy of
the models; 2 gives each slot its own process and models), --torch-threads 1 (2 bundles at once on
2 cores), and Beam's --environment_cache_millis MS: 0 (Beam's default) closes a fused stage's SDK
processes when the stage ends, so the job's next stage starts new ones; above 0 they wait that long
for the next stage of the same job (the tier's: 600000).

The Flink jobs run on one cluster: the first with the first MS on JVMs that have run nothing yet
(a cluster started for this job), then each MS on the warm session cluster (what a long-running
cluster sees). Default MS: 600000. The DirectRunner side runs once. Every run must write the same
rows.

Measured: wall time of `vmm extract` (submission, the job, the commit), and CPU seconds of
everything each side runs: the launcher's process tree, plus on the Flink side every cluster
process and the SDK workers (sampled from /proc every 0.2 s). Where the difference goes:
  * phases of the wall time: launcher start -> Flink has the job (its INITIALIZING timestamp,
    REST) -> the job finished -> the launcher exited (the commit of the outputs);
  * the job's longest vertices (REST), i.e. the fused stage that decodes and runs the models;
  * CPU seconds per process kind (JobManager, TaskManager, job server, worker pool, SDK workers,
    decode children, launcher);
  * SDK workers: how many the worker pool started, and how many loaded the models (peak RSS over
    MODEL_RSS_MIB: an SDK process with CLIP, Whisper and the OCR engine holds over a GB; one that
    ran only the manifest, shuffle or write stages a few hundred MB), with their CPU seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from bench import e2e
from tests.clusters import fetch, processes, versions

MODEL_RSS_MIB = 900.0  # an SDK process over this peak RSS has loaded the models


class TreeCpu:
    """CPU seconds and peak RSS of every process under `roots`, sampled from /proc until stopped."""

    def __init__(self, roots: list[int]):
        self.roots = roots
        self.ticks: dict[int, int] = {}
        self.peak_kib: dict[int, int] = {}
        self.kind: dict[int, str] = {}
        self.start = {p: t for p, (_, t, _) in e2e._proc_table().items()}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _kind(cmd: str) -> str:
        for marker, kind in (("SdkHarness", "SDK workers"), ("isolated", "decode children"),
                             ("StandaloneSessionClusterEntrypoint", "JobManager"),
                             ("TaskManagerRunner", "TaskManager"), ("JobServerDriver", "job server"),
                             ("worker_pool_main", "worker pool"), ("pipelines.extract", "launcher")):
            if marker in cmd:
                return kind
        return "other"

    def _run(self):
        while not self._done.is_set():
            table = e2e._proc_table()
            for root in self.roots:
                for pid in e2e._tree(table, root):
                    self.ticks[pid] = table[pid][1] - self.start.get(pid, 0)
                    self.peak_kib[pid] = max(self.peak_kib.get(pid, 0), table[pid][2])
                    if pid not in self.kind:
                        self.kind[pid] = self._kind(processes.cmdline(pid))
            self._done.wait(0.2)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def cpu_by_kind(self) -> dict[str, float]:
        by: dict[str, float] = {}
        for pid, ticks in self.ticks.items():
            by[self.kind[pid]] = by.get(self.kind[pid], 0.0) + ticks / e2e._CLK
        return by

    def sdk_workers(self) -> list[tuple[float, float]]:
        """(CPU seconds, peak RSS MiB) of each SDK worker process seen."""
        return [(self.ticks[p] / e2e._CLK, self.peak_kib[p] / 1024) for p in self.ticks if self.kind[p] == "SDK workers"]


def start_flink(workdir: Path, sdk_workers: int) -> tuple[processes.Processes, list[str], int]:
    procs = processes.Processes(workdir)
    ports = {"rpc": processes.free_port(), "rest": processes.free_port(), "blob": processes.free_port()}
    conf = workdir / "conf"
    processes.flink_config(conf, ports, slots=2)
    processes.flink_jobmanager(procs, conf)
    processes.flink_taskmanager(procs, conf)
    job = processes.job_server(procs, "flink", ["--flink-master", f"localhost:{ports['rest']}"])
    pool = processes.worker_pool(procs)
    argv = ["--runner", "PortableRunner", "--job_endpoint", f"localhost:{job}", "--environment_type", "EXTERNAL",
            "--environment_config", pool, "--parallelism", "2", "--sdk_worker_parallelism", str(sdk_workers)]
    return procs, argv, ports["rest"]


def direct_flags(manifest: str, out: str) -> list[str]:
    return e2e.pipeline_flags(manifest, out, None)


def flink_flags(manifest: str, out: str, runner: list[str]) -> list[str]:
    flags = e2e.pipeline_flags(manifest, out, None)
    i = flags.index("--runner")
    del flags[i:i + 6]  # --runner DirectRunner --direct_num_workers 2 --direct_running_mode multi_threading
    return [*flags, "--torch-threads", "1", *runner]


def _rest(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://localhost:{port}{path}", timeout=10) as r:
        return json.load(r)


def same_rows(a: str, b: str) -> bool:
    from tests.test_cluster import TABLES, _rows

    return all(_rows(a, t) == _rows(b, t) for t in TABLES)


def flink_job(procs, runner, rest, manifest, out, logs, label) -> dict:
    """One measured `vmm extract` on the running cluster, with where its time and CPU went."""
    e2e.wait_idle(e2e.IDLE_WAIT_S)  # here, not inside measure(): the samplers start with the run
    jobs_before = {j["jid"] for j in _rest(rest, "/jobs/overview")["jobs"]}
    cpu = TreeCpu([p.pid for p in procs.procs.values()])
    idle, e2e.IDLE_WAIT_S = e2e.IDLE_WAIT_S, 0.0
    launched = time.time()
    try:
        m = e2e.measure(label, [sys.executable, "-m", "pipelines.extract", *flink_flags(manifest, out, runner)], logs)
    finally:
        e2e.IDLE_WAIT_S = idle
        cpu.stop()
    time.sleep(2)
    alive = [p for p in processes.children(procs.procs["worker-pool"].pid) if "SdkHarness" in processes.cmdline(p)]
    (jid,) = [j["jid"] for j in _rest(rest, "/jobs/overview")["jobs"] if j["jid"] not in jobs_before]
    job = _rest(rest, f"/jobs/{jid}")
    stamps = {k: v / 1000 for k, v in job["timestamps"].items() if v}
    by_kind = cpu.cpu_by_kind()
    by_kind["launcher"] = m.cpu_s  # the launcher's whole tree, as measure() counted it
    return {"m": m, "launched": launched, "ended": launched + m.wall_s, "stamps": stamps,
            "vertices": sorted(((v["duration"] / 1000, v["name"]) for v in job["vertices"]), reverse=True),
            "cpu": by_kind, "workers": cpu.sdk_workers(),
            "alive": len(alive)}


def report_flink(r: dict, direct) -> None:
    m, st = r["m"], r["stamps"]
    total_cpu = sum(r["cpu"].values())
    print(f"{m.label}: wall {m.wall_s:.1f} s, CPU {total_cpu:.1f} s; ratio to DirectRunner: wall "
          f"{m.wall_s / direct.wall_s:.2f}x, CPU {total_cpu / direct.cpu_s:.2f}x")
    print(f"  wall: launcher start -> Flink has the job {st['INITIALIZING'] - r['launched']:.1f} s, "
          f"job {st['FINISHED'] - st['INITIALIZING']:.1f} s, job end -> launcher exit {r['ended'] - st['FINISHED']:.1f} s")
    print("  longest vertices: " + "; ".join(f"{d:.1f} s {name[:90]}" for d, name in r["vertices"][:3]))
    print("  CPU s: " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(r["cpu"].items(), key=lambda kv: -kv[1])))
    loaded = [(c, rss) for c, rss in r["workers"] if rss >= MODEL_RSS_MIB]
    light = [(c, rss) for c, rss in r["workers"] if rss < MODEL_RSS_MIB]
    desc = lambda ws: ", ".join(f"{c:.1f} s/{rss:.0f} MiB" for c, rss in sorted(ws, reverse=True))  # noqa: E731
    print(f"  SDK workers: {len(r['workers'])} started, {len(loaded)} loaded the models ({desc(loaded)}); "
          f"the others ({desc(light) or 'none'}) CPU s / peak RSS; {r['alive']} still running 2 s after the job")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", default=e2e.DEFAULT_CACHE)
    parser.add_argument("--media", default=e2e.DEFAULT_MEDIA)
    parser.add_argument("--sdk-worker-parallelism", type=int, default=1,
                        help="SDK processes per TaskManager (Beam's --sdk_worker_parallelism; the tier's: 1)")
    parser.add_argument("--environment-cache-ms", type=int, nargs="+", default=[600000],
                        help="Beam's --environment_cache_millis of the Flink jobs (0: Beam's default): the first "
                             "value on the cold cluster, then each value on the warm one")
    parser.add_argument("--copies", type=int, default=1,
                        help="list each quick-set video this many times, under ids <id>-copy<i>: more work per job "
                             "for the same fixed cost of a job on the engine (1: the quick set as it is)")
    args = parser.parse_args(argv)
    why = fetch.missing()
    if why:
        raise SystemExit(f"bench_cluster: {why}")
    inputs = e2e.build_inputs("quick", args.cache, args.media)
    work = os.path.join(inputs.work, "cluster")
    os.makedirs(work, exist_ok=True)
    entries = inputs.main_set if args.copies <= 1 else [
        (f"{vid}-copy{i}", uri) for i in range(args.copies) for vid, uri in inputs.main_set]
    manifest = e2e.write_manifest(os.path.join(work, "main.jsonl"), entries)
    logs = os.path.join(work, "logs")
    began, load_start = time.time(), e2e.load1()
    direct = e2e.measure("direct", [sys.executable, "-m", "pipelines.extract",
                                    *direct_flags(manifest, os.path.join(work, "direct"))], logs)
    clusterdir = Path(tempfile.mkdtemp(prefix="bench-flink-", dir=work))
    t0 = time.perf_counter()
    procs, runner, rest = start_flink(clusterdir, args.sdk_worker_parallelism)
    started_s = time.perf_counter() - t0
    results = []
    try:
        plan = [(args.environment_cache_ms[0], "cold")] + [(ms, "warm") for ms in args.environment_cache_ms]
        for i, (cache_ms, state) in enumerate(plan):
            label = f"flink-{i + 1}-{state}-cache{cache_ms}"
            out = os.path.join(work, label)
            results.append(flink_job(procs, [*runner, "--environment_cache_millis", str(cache_ms)], rest, manifest,
                                     out, logs, label))
            if not same_rows(out, os.path.join(work, "direct")):
                raise SystemExit(f"{label}: the tables differ from the DirectRunner run's")
    finally:
        procs.stop()
    print(f"## bench_cluster {time.strftime('%Y-%m-%d %H:%M', time.gmtime(began))}-"
          f"{time.strftime('%H:%M', time.gmtime())} UTC, code at {e2e.git_revision()}, load average "
          f"{load_start:.1f} -> {e2e.load1():.1f} on {e2e.CORES} cores")
    print(f"quick set x {max(1, args.copies)}: {len(entries)} videos; Flink {versions.FLINK}, Beam job server {versions.BEAM_JAVA}, "
          f"{args.sdk_worker_parallelism} SDK processes per TaskManager; cluster start {started_s:.1f} s (not in any wall)")
    print(f"DirectRunner (2 threads, 1 process): wall {direct.wall_s:.1f} s, CPU {direct.cpu_s:.1f} s")
    for r in results:
        report_flink(r, direct)
    print("rows: every Flink run wrote the DirectRunner run's rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())

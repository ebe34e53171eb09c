"""vmm extract on a Flink session cluster of this machine vs DirectRunner, same inputs, same flags.

    python -m bench.bench_cluster [--cache DIR] [--media DIR]    # engines: python3 tests/clusters/fetch.py

Inputs: bench/run.sh --quick's main set (bench.e2e: the 10 s and 1 min generated videos, three real
files, the quick-caption and slide videos), built once into --cache. Flags: bench.e2e's pipeline
flags (ViT-B-32 with random weights, OCR and ASR on, no dictionary), the DirectRunner side with its
2 worker threads in one process (run_local.sh's choice), the Flink side as the cluster tier runs it
(tests/test_engines.py): a JobManager and one TaskManager with 2 slots, Beam's Flink job server,
Beam's worker pool starting the SDK workers the TaskManager asks for, --parallelism 2,
--sdk_worker_parallelism 2 (two SDK processes, each with its own models), --torch-threads 1 (2
processes on 2 cores).

Measured: wall time of `vmm extract` (submission, the job, the commit), and CPU seconds of
everything each side runs: the launcher's process tree, plus on the Flink side every cluster
process and the SDK workers (sampled from /proc every 0.2 s). Where the difference goes: the Flink
job's own duration (from its REST API) against the launcher's wall; the time from submission to the
first SDK worker; model loads per SDK process (their log lines); the JVMs' CPU seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from bench import e2e
from tests.clusters import fetch, processes


class TreeCpu:
    """CPU seconds of the process trees under `roots`, sampled from /proc until stopped."""

    def __init__(self, roots: list[int]):
        self.roots = roots
        self.ticks: dict[int, int] = {}
        self.what: dict[int, str] = {}
        self.first_sdk_worker: float | None = None  # time.time() an SDK worker process was first seen
        self.start = {p: t for p, (_, t, _) in e2e._proc_table().items()}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._done.is_set():
            table = e2e._proc_table()
            for root in self.roots:
                for pid in e2e._tree(table, root):
                    self.ticks[pid] = table[pid][1] - self.start.get(pid, 0)
                    if pid not in self.what:
                        self.what[pid] = processes.cmdline(pid)[:200]
                        if "SdkHarness" in self.what[pid] and self.first_sdk_worker is None:
                            self.first_sdk_worker = time.time()
            self._done.wait(0.2)

    def stop(self) -> dict[str, float]:
        self._done.set()
        self._thread.join()
        by = {}
        for pid, ticks in self.ticks.items():
            cmd = self.what.get(pid, "")
            kind = ("SDK workers" if "SdkHarness" in cmd else "decode children" if "isolated" in cmd
                    else "JobManager" if "StandaloneSession" in cmd else "TaskManager" if "TaskManagerRunner" in cmd
                    else "job server" if "JobServerDriver" in cmd else "worker pool" if "worker_pool_main" in cmd
                    else "other")
            by[kind] = by.get(kind, 0.0) + ticks / e2e._CLK
        return by


def start_flink(workdir: Path) -> tuple[processes.Processes, list[str], int]:
    procs = processes.Processes(workdir)
    ports = {"rpc": processes.free_port(), "rest": processes.free_port(), "blob": processes.free_port()}
    conf = workdir / "conf"
    processes.flink_config(conf, ports, slots=2)
    processes.flink_jobmanager(procs, conf)
    processes.flink_taskmanager(procs, conf)
    job = processes.job_server(procs, "flink", ["--flink-master", f"localhost:{ports['rest']}"])
    pool = processes.worker_pool(procs)
    argv = ["--runner", "PortableRunner", "--job_endpoint", f"localhost:{job}", "--environment_type", "EXTERNAL",
            "--environment_config", pool, "--parallelism", "2", "--sdk_worker_parallelism", "2"]
    return procs, argv, ports["rest"]


def direct_flags(manifest: str, out: str) -> list[str]:
    return e2e.pipeline_flags(manifest, out, None)


def flink_flags(manifest: str, out: str, runner: list[str]) -> list[str]:
    flags = e2e.pipeline_flags(manifest, out, None)
    i = flags.index("--runner")
    del flags[i:i + 6]  # --runner DirectRunner --direct_num_workers 2 --direct_running_mode multi_threading
    return [*flags, "--torch-threads", "1", *runner]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", default=e2e.DEFAULT_CACHE)
    parser.add_argument("--media", default=e2e.DEFAULT_MEDIA)
    args = parser.parse_args(argv)
    why = fetch.missing()
    if why:
        raise SystemExit(f"bench_cluster: {why}")
    inputs = e2e.build_inputs("quick", args.cache, args.media)
    work = os.path.join(inputs.work, "cluster")
    manifest = e2e.write_manifest(os.path.join(work, "main.jsonl"), inputs.main_set)
    logs = os.path.join(work, "logs")
    direct = e2e.measure("direct", [sys.executable, "-m", "pipelines.extract",
                                    *direct_flags(manifest, os.path.join(work, "direct"))], logs)
    clusterdir = Path(tempfile.mkdtemp(prefix="bench-flink-", dir=work))
    t0 = time.perf_counter()
    procs, runner, rest = start_flink(clusterdir)
    started_s = time.perf_counter() - t0
    try:
        cpu = TreeCpu([p.pid for p in procs.procs.values()])
        submitted = time.time()
        flink = e2e.measure("flink", [sys.executable, "-m", "pipelines.extract",
                                      *flink_flags(manifest, os.path.join(work, "flink"), runner)], logs)
        cluster_cpu = cpu.stop()
        with urllib.request.urlopen(f"http://localhost:{rest}/jobs/overview", timeout=10) as r:
            job = json.load(r)["jobs"][-1]
        pool_log = (clusterdir / "worker-pool.out").read_text(errors="replace")
    finally:
        procs.stop()
    first_worker = f"{cpu.first_sdk_worker - submitted:.1f} s" if cpu.first_sdk_worker else "?"
    loads = re.findall(r"Loaded (\S+ \S+|CLIP \S+|Whisper \S+).*? in ([0-9.]+) ?s", pool_log)
    total_flink_cpu = flink.cpu_s + sum(cluster_cpu.values())
    print(f"## quick set: {len(inputs.main_set)} videos; cluster start {started_s:.1f} s (not in the run's wall)")
    print(f"DirectRunner (2 threads, 1 process): wall {direct.wall_s:.1f} s, CPU {direct.cpu_s:.1f} s")
    print(f"Flink (1 TaskManager, 2 slots, 2 SDK processes): wall {flink.wall_s:.1f} s, CPU {total_flink_cpu:.1f} s "
          f"(launcher {flink.cpu_s:.1f} s, " + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(cluster_cpu.items())) + ")")
    print(f"Flink job duration (REST) {job['duration'] / 1000:.1f} s of the {flink.wall_s:.1f} s wall; "
          f"first SDK worker {first_worker} after submission")
    print("model loads in the SDK workers: " + ", ".join(f"{what} {s} s" for what, s in loads))
    print(f"ratio Flink / DirectRunner: wall {flink.wall_s / direct.wall_s:.2f}x, CPU {total_flink_cpu / direct.cpu_s:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`vmm extract`, `vmm index` and `vmm score` on real engines: a Flink session cluster and a Spark standalone cluster
of separate processes on this machine, from the engines' own jars, with Beam's job servers in front.

    pytest tests/test_engines.py -m flink      # or -m spark; jars: python3 tests/clusters/fetch.py

The SDK harness runs in processes the engine asks for: Beam's worker pool (EXTERNAL environment)
starts one Python SDK worker per request of a TaskManager / executor. (PROCESS would have the engine
exec Beam's Go boot program, which no Python package ships.) Each engine runs the same inputs as a
DirectRunner run -- the generated sample, real videos, a missing file, OCR, ASR, a frame and a patch
dictionary -- with parallelism 2, and all four tables must equal the DirectRunner's row for row.
Then the same again while one TaskManager / executor is killed mid-run by its PID: the engine
retries, and the tables are still the same rows, none twice. `vmm index` and `vmm score` then run on
each engine over the DirectRunner's index: the same shards and search results, the same feature
rows for a pair log with a missing video and a blank query.

One cluster per engine per session (module fixtures); every process started is stopped at the end,
also when a test fails (tests/clusters/processes.py). Without the jars the tier skips locally and
fails in CI.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.clusters import fetch, processes
from tests.conftest import MEDIA, REPO, TINY_MODEL, missing_prerequisite
from tests.test_cluster import KEYS, TABLES, _rows

REAL_VIDEOS = ("nasa_13013.mp4", "androidx_sample_av1.mp4", "bbb_176x144_192kbps_15fps_mpeg4.mp4")
PARALLELISM = 2


def _require_engines() -> None:
    why = fetch.missing()
    if why:
        missing_prerequisite(f"cluster tier: {why}")


@pytest.fixture(scope="module")
def inputs(sample, tiny_checkpoint, tmp_path_factory):
    """The manifest (sample + real videos + a missing file) and the two dictionaries."""
    from pipelines import train_codebook

    for name in REAL_VIDEOS:
        if not os.path.exists(os.path.join(MEDIA, "video", name)):
            missing_prerequisite(f"real media not found: {os.path.join(MEDIA, 'video', name)}")
    root = tmp_path_factory.mktemp("engines")
    lines = [json.dumps({"uri": v["uri"], "video_id": v["video_id"], "title": v["title"]})
             for v in sample["expected"]["videos"]]
    lines += [json.dumps({"uri": os.path.join(MEDIA, "video", name), "video_id": f"real-{i}"})
              for i, name in enumerate(REAL_VIDEOS)]
    lines.append(json.dumps({"uri": str(root / "no-such-video.mp4"), "video_id": "missing"}))
    manifest = root / "m.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    books = {}
    for level in ("frame", "patch"):
        books[level] = str(root / f"dict-{level}")
        assert train_codebook.run(["--input", sample["manifest"], "--output", books[level], "--level", level,
                                   "--k", "4", "--min-points-per-centroid", "2", "--clip-model", TINY_MODEL,
                                   "--clip-pretrained", tiny_checkpoint, "--no-progress"]) == 0
    return {"manifest": str(manifest), "codebook": books["frame"], "patch_codebook": books["patch"],
            "checkpoint": tiny_checkpoint, "videos": len(lines) - 1}


def extract_argv(inputs, output) -> list[str]:
    """`vmm extract`'s own flags for the tier (every run of it, DirectRunner's too)."""
    return ["--input", inputs["manifest"], "--output", str(output), "--clip-model", TINY_MODEL,
            "--clip-pretrained", inputs["checkpoint"], "--codebook", inputs["codebook"],
            "--patch-codebook", inputs["patch_codebook"], "--ocr", "--asr", "--no-progress"]


def vmm(*argv, timeout=900) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", *argv], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)
    return proc


@pytest.fixture(scope="module")
def direct(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("direct")
    proc = vmm("extract", *extract_argv(inputs, out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "accounting OK" in proc.stdout
    return str(out)


def assert_same_tables(output: str, direct: str) -> None:
    for table in TABLES:
        rows = _rows(output, table)
        keys = [tuple(r[k] for k in KEYS[table]) for r in rows]
        twice = [k for k, n in collections.Counter(keys).items() if n > 1]
        assert not twice, f"{table}: rows written twice: {twice[:5]}"
        assert rows == _rows(direct, table), table
    assert len(_rows(output, "videos")) >= 5 and _rows(output, "asr_segments")
    assert any(r["ocr"] for r in _rows(output, "frames")), "no OCR lines"
    summary = json.loads(Path(output, "run_summary.json").read_text())
    assert summary["accounting_ok"], summary["counts"]


class Cluster:
    """One engine's processes and how a `vmm` command reaches them."""

    def __init__(self, engine: str, workdir: Path):
        self.engine = engine
        self.procs = processes.Processes(workdir)
        self.workdir = workdir
        self.job_port = 0
        self.pool = ""
        self.rest = 0  # Flink's REST port

    def runner_argv(self) -> list[str]:
        """Parallelism 2 (both slots / executor cores) served by one SDK process per TaskManager or
        executor (its models loaded once, two bundles at a time on its threads). On Flink the SDK
        process is kept for the job's later stages instead of a new one per fused stage
        (--environment_cache_millis); not on Spark, where with the cache a run whose executor was
        killed lost a video (2 runs of 3; vmm's accounting caught it: exit 1), and none without."""
        cache = ["--environment_cache_millis", "600000"] if self.engine == "flink" else []
        return ["--runner", "PortableRunner", "--job_endpoint", f"localhost:{self.job_port}",
                "--environment_type", "EXTERNAL", "--environment_config", self.pool,
                "--parallelism", str(PARALLELISM), "--sdk_worker_parallelism", "1", *cache]

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{processes.tail(p, 2000)}" for p in sorted(self.workdir.glob("*.log"))
                         + sorted(self.workdir.glob("*.out")))


@pytest.fixture(scope="module")
def flink(tmp_path_factory):
    _require_engines()
    cluster = Cluster("flink", tmp_path_factory.mktemp("flink"))
    try:
        ports = {"rpc": processes.free_port(), "rest": processes.free_port(), "blob": processes.free_port()}
        cluster.rest = ports["rest"]
        cluster.conf = cluster.workdir / "conf"
        processes.flink_config(cluster.conf, ports, slots=PARALLELISM)
        processes.flink_jobmanager(cluster.procs, cluster.conf)
        processes.flink_taskmanager(cluster.procs, cluster.conf)
        cluster.job_port = processes.job_server(cluster.procs, "flink", ["--flink-master", f"localhost:{ports['rest']}"])
        cluster.pool = processes.worker_pool(cluster.procs)
        yield cluster
    finally:
        cluster.procs.stop()


def _flink_jobs(cluster) -> list[dict]:
    with urllib.request.urlopen(f"http://localhost:{cluster.rest}/jobs/overview", timeout=10) as r:
        return json.load(r)["jobs"]


def _flink_get(cluster, path: str) -> dict:
    with urllib.request.urlopen(f"http://localhost:{cluster.rest}{path}", timeout=10) as r:
        return json.load(r)


def _extract_on(cluster, inputs, direct, out: Path) -> None:
    """`vmm extract` on the cluster: exit 0, accounting OK, the DirectRunner's rows."""
    proc = vmm("extract", *extract_argv(inputs, out), *cluster.runner_argv())
    assert proc.returncode == 0, proc.stderr[-4000:] + cluster.logs()
    assert "accounting OK" in proc.stdout
    assert_same_tables(str(out), direct)


@pytest.mark.flink
def test_flink_extract_equals_direct_runner(flink, inputs, direct, tmp_path):
    _extract_on(flink, inputs, direct, tmp_path / "flink")
    # It ran on the cluster: a finished Flink job, its tasks at parallelism 2.
    jobs = [j for j in _flink_jobs(flink) if j["state"] == "FINISHED"]
    assert jobs, _flink_jobs(flink)
    vertices = _flink_get(flink, f"/jobs/{jobs[-1]['jid']}")["vertices"]
    assert max(v["parallelism"] for v in vertices) == PARALLELISM


@pytest.fixture(scope="module")
def spark(tmp_path_factory):
    _require_engines()
    cluster = Cluster("spark", tmp_path_factory.mktemp("spark"))
    try:
        master, cluster.ui = processes.spark_master(cluster.procs)
        processes.spark_worker(cluster.procs, master, cores=PARALLELISM, memory="1g")
        cluster.job_port = processes.spark_job_server(cluster.procs, master, executor_memory="512m")
        cluster.pool = processes.worker_pool(cluster.procs)
        yield cluster
    finally:
        cluster.procs.stop()


def _executors(cluster) -> list[int]:
    """The Spark executor JVMs the worker started (its children)."""
    worker = cluster.procs.procs["spark-worker"].pid
    return [pid for pid in processes.children(worker) if "CoarseGrainedExecutorBackend" in processes.cmdline(pid)]


@pytest.mark.spark
def test_spark_extract_equals_direct_runner(spark, inputs, direct, tmp_path):
    _extract_on(spark, inputs, direct, tmp_path / "spark")
    # It ran on the standalone cluster: an application with an executor on the worker.
    apps = list((spark.workdir / "spark-work").glob("app-*"))
    assert apps, "no Spark application ran on the worker"


def _run_in_background(argv: list[str], workdir: Path) -> tuple[subprocess.Popen, Path]:
    log = workdir / f"vmm-{time.monotonic_ns()}.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", *argv], cwd=REPO, stdout=f,
                                stderr=subprocess.STDOUT)
    return proc, log


def _sdk_workers_started(cluster) -> int:
    return processes.tail(cluster.workdir / "worker-pool.out", 10**7).count("Starting worker with command")


def _wait(condition, what: str, run: subprocess.Popen, log: Path, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert run.poll() is None, f"vmm ended before {what}:\n{processes.tail(log)}"
        assert time.monotonic() < deadline, f"no {what} after {timeout_s:.0f} s"
        time.sleep(0.5)


@pytest.mark.flink
def test_flink_taskmanager_killed_mid_run(flink, inputs, direct, tmp_path):
    """The TaskManager running the job is killed (SIGKILL, by PID) while its SDK workers decode; a new
    one registers (as a supervisor would start it); Flink restarts the job's failed region and the
    tables are the DirectRunner's rows, none twice."""
    out = tmp_path / "flink-fault"
    workers_before = _sdk_workers_started(flink)
    jobs_before = {j["jid"] for j in _flink_jobs(flink)}
    run, log = _run_in_background(["extract", *extract_argv(inputs, out), *flink.runner_argv()], flink.workdir)
    try:
        _wait(lambda: _sdk_workers_started(flink) > workers_before, "SDK worker started", run, log)
        time.sleep(5)  # the workers load models and decode
        assert run.poll() is None, "the run ended before the kill: " + processes.tail(log)
        flink.procs.kill("flink-taskmanager")
        processes.flink_taskmanager(flink.procs, flink.conf, name="flink-taskmanager-2")
        rc = run.wait(timeout=900)
    finally:
        if run.poll() is None:
            run.kill()
    assert rc == 0, processes.tail(log, 4000) + flink.logs()
    (job,) = [j for j in _flink_jobs(flink) if j["jid"] not in jobs_before]
    assert job["state"] == "FINISHED"
    history = _flink_get(flink, f"/jobs/{job['jid']}/exceptions")["exceptionHistory"]["entries"]
    assert history, "the job saw no failure: the TaskManager was not killed mid-run"
    assert_same_tables(str(out), direct)


@pytest.mark.spark
def test_spark_executor_killed_mid_run(spark, inputs, direct, tmp_path):
    """The executor is killed (SIGKILL, by PID) while its SDK workers decode; the worker starts another,
    Spark retries the lost tasks, and the tables are the DirectRunner's rows, none twice."""
    out = tmp_path / "spark-fault"
    workers_before = _sdk_workers_started(spark)
    apps_before = set((spark.workdir / "spark-work").glob("app-*"))
    run, log = _run_in_background(["extract", *extract_argv(inputs, out), *spark.runner_argv()], spark.workdir)
    try:
        _wait(lambda: _sdk_workers_started(spark) > workers_before and _executors(spark), "SDK worker started",
              run, log)
        time.sleep(5)
        assert run.poll() is None, "the run ended before the kill: " + processes.tail(log)
        killed = _executors(spark)
        for pid in killed:
            os.kill(pid, 9)
        rc = run.wait(timeout=900)
    finally:
        if run.poll() is None:
            run.kill()
    assert rc == 0, processes.tail(log, 4000) + spark.logs()
    (app,) = set((spark.workdir / "spark-work").glob("app-*")) - apps_before
    assert len(list(app.iterdir())) >= 2, "no executor replaced the killed one"
    assert_same_tables(str(out), direct)


def _search(index: Path, checkpoint: str, *query) -> list[dict]:
    proc = vmm("search", str(index), *query, "--clip-pretrained", checkpoint, "--json", "--k", "5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def direct_index(direct, tmp_path_factory):
    out = tmp_path_factory.mktemp("direct-index") / "search"
    proc = vmm("index", "--input", direct, "--output", str(out), "--shards", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _index_on(cluster, inputs, direct, direct_index, tmp_path) -> None:
    out = tmp_path / "search"
    proc = vmm("index", "--input", direct, "--output", str(out), "--shards", "2", *cluster.runner_argv())
    assert proc.returncode == 0, proc.stderr[-4000:] + cluster.logs()
    for query in (("--query", "speech"), ("--like", "real-0")):
        hits = _search(out, inputs["checkpoint"], *query)
        assert hits and hits == _search(direct_index, inputs["checkpoint"], *query), query
    for shard in (0, 1):
        built = json.loads((out / f"shard-{shard:05d}" / "shard.json").read_text())
        local = json.loads((direct_index / f"shard-{shard:05d}" / "shard.json").read_text())
        for record in (built, local):  # how long it took is not what was built
            record.pop("seconds", None)
            record.pop("stage_seconds", None)
            record["vector"].pop("tune_seconds", None)
        assert built == local


@pytest.mark.flink
def test_flink_index_equals_direct_runner(flink, inputs, direct, direct_index, tmp_path):
    _index_on(flink, inputs, direct, direct_index, tmp_path)


@pytest.mark.spark
def test_spark_index_equals_direct_runner(spark, inputs, direct, direct_index, tmp_path):
    _index_on(spark, inputs, direct, direct_index, tmp_path)


# ---------------------------------------------------------------------------------------------
# vmm score


@pytest.fixture(scope="module")
def pair_log(direct, tmp_path_factory) -> tuple[list[dict], str]:
    """A small pair log over the DirectRunner index: queries from each video's own title, subtitle
    and speech words, each paired with its video and the next one, plus a pair for the manifest's
    missing file (no videos row: video_not_in_index) and one with a blank query (empty_query)."""
    from models.text import analyze

    videos = _rows(direct, "videos")
    rows = []
    for i, v in enumerate(videos):
        words = [w for w in analyze(" ".join(filter(None, (v["title"], v["ocr_subtitle_text"], v["asr_text"]))))
                 if len(w) > 2]
        queries = [v["title"] or " ".join(words[:2]), " ".join(words[-3:])] if words else [v["video_id"]]
        for j, query in enumerate(queries):
            for other in (v, videos[(i + 1) % len(videos)]):
                rows.append({"query": query, "video_id": other["video_id"], "label": int(other is v),
                             "clicks": 10 * i + j})
    rows.append({"query": "a speaking person", "video_id": "missing", "label": 0, "clicks": 1})
    rows.append({"query": "  ", "video_id": videos[0]["video_id"], "label": 0, "clicks": 2})
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows, str(path)


def score_argv(inputs, direct, pairs: str, output) -> list[str]:
    """`vmm score`'s flags for the tier: the DirectRunner index, both dictionaries (patch features on)."""
    return ["--pairs", pairs, "--index", direct, "--output", str(output), "--clip-pretrained", inputs["checkpoint"],
            "--codebook", inputs["codebook"], "--patch-codebook", inputs["patch_codebook"], "--no-progress"]


def _feature_rows(output) -> list[dict]:
    import pyarrow.parquet as pq

    files = sorted(Path(output, "pairs").glob("*.parquet"))
    assert files, f"no feature files under {output}/pairs"
    return sorted((r for f in files for r in pq.read_table(f).to_pylist()), key=lambda r: r["pair_index"])


@pytest.fixture(scope="module")
def direct_scores(inputs, direct, pair_log, tmp_path_factory):
    from models.ranking import TEXT_FIELDS

    out = tmp_path_factory.mktemp("direct-score")
    proc = vmm("score", *score_argv(inputs, direct, pair_log[1], out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "accounting OK" in proc.stdout, proc.stdout
    rows = _feature_rows(out)
    # What the engines are compared with is itself a scoring of every pair: one row each, the two
    # pairs without features said why, the others scored (not nulls, not one value for all).
    pairs = pair_log[0]
    assert [r["pair_index"] for r in rows] == list(range(len(pairs)))
    assert [(r["query"], r["video_id"], r["clicks"]) for r in rows] == [(p["query"], p["video_id"], p["clicks"])
                                                                        for p in pairs]
    assert collections.Counter(r["missing"] for r in rows) == {None: len(pairs) - 2, "video_not_in_index": 1,
                                                               "empty_query": 1}
    scored = [r for r in rows if r["missing"] is None]
    assert all(r["qv_video"] is not None and r["qv_patch_max"] is not None for r in scored)
    assert len({r["qv_video"] for r in scored}) > len(scored) // 2
    assert any(r[f"bm25_{f}"] for r in scored for f in TEXT_FIELDS)
    return rows


def _score_on(cluster, inputs, direct, pair_log, direct_scores, out: Path) -> None:
    """`vmm score` on the cluster: exit 0, accounting OK, the DirectRunner's feature rows."""
    proc = vmm("score", *score_argv(inputs, direct, pair_log[1], out), *cluster.runner_argv())
    assert proc.returncode == 0, proc.stderr[-4000:] + cluster.logs()
    assert "accounting OK" in proc.stdout, proc.stdout
    rows = _feature_rows(out)
    twice = [i for i, n in collections.Counter(r["pair_index"] for r in rows).items() if n > 1]
    assert not twice, f"pairs written twice: {twice[:5]}"
    assert rows == direct_scores


@pytest.mark.flink
def test_flink_score_equals_direct_runner(flink, inputs, direct, pair_log, direct_scores, tmp_path):
    jobs_before = {j["jid"] for j in _flink_jobs(flink)}
    _score_on(flink, inputs, direct, pair_log, direct_scores, tmp_path / "feats")
    assert [j["state"] for j in _flink_jobs(flink) if j["jid"] not in jobs_before] == ["FINISHED"]


@pytest.mark.spark
def test_spark_score_equals_direct_runner(spark, inputs, direct, pair_log, direct_scores, tmp_path):
    apps_before = set((spark.workdir / "spark-work").glob("app-*"))
    _score_on(spark, inputs, direct, pair_log, direct_scores, tmp_path / "feats")
    assert set((spark.workdir / "spark-work").glob("app-*")) - apps_before, "no Spark application ran"

"""Engine processes for the cluster tier: a Flink session cluster (JobManager + TaskManager), a Spark
standalone cluster (master + worker), Beam's job server for each, and Beam's Python worker pool.

Every process is started here with its own JVM command line (no daemon scripts), so that its PID
is known: `Processes.stop()` ends each one this harness started (its process group, so the SDK
workers a worker pool started go too), and nothing else. Ports are chosen free on loopback.
Heaps are small: the machine is shared.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.clusters import fetch, versions

# Flink 1.19 on Java 17 (Flink's own config.yaml sets the same for every JVM it starts).
FLINK_JAVA_OPTS = [
    "--add-exports=java.base/sun.net.util=ALL-UNNAMED", "--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED",
    *(f"--add-opens=java.base/{p}=ALL-UNNAMED" for p in (
        "java.lang", "java.net", "java.io", "java.nio", "sun.nio.ch", "java.lang.reflect", "java.text",
        "java.time", "java.util", "java.util.concurrent", "java.util.concurrent.atomic",
        "java.util.concurrent.locks", "java.lang.invoke", "sun.nio.cs", "sun.security.action",
        "sun.util.calendar")),
]
# Spark 3.5 and Beam's job servers on Java 17 (what Spark's launcher adds itself).
SPARK_JAVA_OPTS = [
    "-XX:+IgnoreUnrecognizedVMOptions", "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.invoke=ALL-UNNAMED", "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED", "--add-opens=java.base/java.net=ALL-UNNAMED",
    "--add-opens=java.base/java.nio=ALL-UNNAMED", "--add-opens=java.base/java.util=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED", "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.cs=ALL-UNNAMED", "--add-opens=java.base/sun.security.action=ALL-UNNAMED",
    "--add-opens=java.base/sun.util.calendar=ALL-UNNAMED", "-Djdk.reflect.useDirectMethodHandle=false",
]

# Every JVM of the tier (and the Spark executors): one GC thread and the C1 compiler only. A job
# here lasts a minute or two on 2 shared cores, where C2's compile threads and G1's parallel GC
# threads cost more CPU than they save (bench/bench_cluster.py measures the JVMs' CPU seconds).
SMALL_JVM_OPTS = ["-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]

LOG4J2 = """\
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = MainAppender
appender.main.name = MainAppender
appender.main.type = File
appender.main.append = true
appender.main.fileName = ${sys:log.file}
appender.main.layout.type = PatternLayout
appender.main.layout.pattern = %d{HH:mm:ss,SSS} %-5p %-40c{1.} - %m%n
logger.netty.name = org.apache.flink.shaded.netty4
logger.netty.level = WARN
logger.akka.name = org.apache.pekko
logger.akka.level = WARN
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, what: str, log: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening on {port}:\n{tail(log)}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise RuntimeError(f"{what} not listening on {port} after {timeout_s:.0f} s:\n{tail(log)}")


def wait_for_log(log: Path, text: str, proc: subprocess.Popen, what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{tail(log)}")
        time.sleep(0.3)
    raise RuntimeError(f"{what}: no {text!r} in its log after {timeout_s:.0f} s:\n{tail(log)}")


def tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return f"({path} unreadable)"


class Processes:
    """The processes one cluster fixture started, each in a process group of its own."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, cmd: list[str], env: dict | None = None, log: Path | None = None) -> subprocess.Popen:
        log = log or self.workdir / f"{name}.out"
        with open(log, "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=self.workdir, env={**os.environ, **(env or {})}, start_new_session=True)
        self.procs[name] = proc
        return proc

    def kill(self, name: str, sig=signal.SIGKILL) -> None:
        """Ends one process (and its group) by PID: the fault tests' TaskManager/executor kill."""
        proc = self.procs[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM to every group started here, then SIGKILL to whatever is left after 15 s."""
        for proc in reversed(list(self.procs.values())):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the group: children of an exited leader too
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)


def java() -> str:
    home = os.environ.get("JAVA_HOME")
    return os.path.join(home, "bin", "java") if home else "java"


def worker_pool(procs: Processes, name: str = "worker-pool") -> str:
    """Beam's Python worker pool (EXTERNAL environment): the engine asks it for each SDK worker it
    needs, and it starts that worker as a process of this venv's Python. Returns its address."""
    port = free_port()
    bindir = os.path.dirname(sys.executable)
    env = {"PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",  # its workers run `python`
           "PYTHONPATH": os.pathsep.join(p for p in [str(fetch.REPO), os.environ.get("PYTHONPATH", "")] if p)}
    proc = procs.start(name, [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
                              "--service_port", str(port)], env=env)
    wait_for_port(port, proc, "Beam worker pool", procs.workdir / f"{name}.out", timeout_s=120)
    return f"localhost:{port}"


def job_server(procs: Processes, engine: str, args: list[str], heap: str = "384m", system: list[str] = ()) -> int:
    """Beam's job server for `engine` ('flink' / 'spark') on a free port; returns the port."""
    port = free_port()
    cp = fetch.job_server_classpath(engine)
    opts = FLINK_JAVA_OPTS if engine == "flink" else SPARK_JAVA_OPTS
    cmd = [java(), f"-Xmx{heap}", *SMALL_JVM_OPTS, *opts, *system, "-cp", cp, versions.JOB_SERVERS[engine]["main"],
           "--job-port", str(port), "--artifact-port", "0", "--expansion-port", "0", *args]
    proc = procs.start(f"{engine}-job-server", cmd)
    wait_for_port(port, proc, f"Beam {engine} job server", procs.workdir / f"{engine}-job-server.out", timeout_s=180)
    return port


# ---------------------------------------------------------------------------------------------
# Flink


def flink_config(conf: Path, ports: dict, slots: int) -> None:
    """A session cluster on loopback: small JVMs, `slots` task slots per TaskManager, restarts
    after a lost TaskManager (the fault test), heartbeats short enough to notice one quickly."""
    conf.mkdir(parents=True, exist_ok=True)
    settings = {
        "jobmanager.rpc.address": "localhost", "jobmanager.bind-host": "localhost",
        "jobmanager.rpc.port": ports["rpc"], "rest.address": "localhost", "rest.bind-address": "localhost",
        "rest.port": ports["rest"], "blob.server.port": ports["blob"],
        "taskmanager.host": "localhost", "taskmanager.bind-host": "localhost",
        "taskmanager.numberOfTaskSlots": slots,
        "jobmanager.memory.process.size": "768m",
        "jobmanager.memory.jvm-metaspace.size": "192m",
        "jobmanager.memory.off-heap.size": "64m",
        # Every TaskManager memory component set (the JVM is started here, not by Flink's scripts).
        "taskmanager.cpu.cores": slots,
        "taskmanager.memory.framework.heap.size": "128m",
        "taskmanager.memory.task.heap.size": "384m",
        "taskmanager.memory.framework.off-heap.size": "128m",
        "taskmanager.memory.task.off-heap.size": "0m",
        # Beam's batch translation has many exchanges, each wanting buffers: many small ones.
        "taskmanager.memory.network.min": "96m", "taskmanager.memory.network.max": "96m",
        "taskmanager.memory.segment-size": "8kb",
        "taskmanager.network.sort-shuffle.min-buffers": 32,  # of 512 by default, per blocking result
        "taskmanager.memory.managed.size": "128m",
        "taskmanager.memory.jvm-metaspace.size": "192m",
        "taskmanager.memory.jvm-overhead.min": "128m", "taskmanager.memory.jvm-overhead.max": "128m",
        # Restarts outlast the heartbeat timeout: until the JobManager declares a killed TaskManager
        # lost, restarted tasks may still be sent to it and fail again.
        "restart-strategy.type": "fixed-delay", "restart-strategy.fixed-delay.attempts": 10,
        "restart-strategy.fixed-delay.delay": "3 s",
        "heartbeat.interval": 2000, "heartbeat.timeout": 10000,
        "jobmanager.execution.failover-strategy": "region",
        "slot.request.timeout": 120000,
        "io.tmp.dirs": str(conf.parent / "tmp"),
        "classloader.check-leaked-classloader": "false",
        # Beam's runner jars are on the JVMs' classpath (_flink_jvm) and loaded from there: Beam's
        # classes are loaded once per JVM, not once per job, and the SDK process a job's first
        # stage starts serves its later stages too (Beam keeps it in a static cache, which with
        # per-job class loaders was dropped whenever no task of the job ran on the TaskManager:
        # 4 SDK processes a job instead of 1; quick set 1.55-1.57x -> 1.48-1.52x DirectRunner's CPU).
        "classloader.resolve-order": "parent-first",
    }
    (conf / "flink-conf.yaml").write_text("".join(f"{k}: {v}\n" for k, v in settings.items()))
    (conf / "log4j.properties").write_text(LOG4J2)
    (conf.parent / "tmp").mkdir(exist_ok=True)


def _flink_jvm(conf: Path, log: Path, memory: list[str]) -> list[str]:
    return [java(), *memory, *SMALL_JVM_OPTS, *FLINK_JAVA_OPTS, f"-Dlog.file={log}",
            f"-Dlog4j.configurationFile=file:{conf / 'log4j.properties'}",
            "-cp", os.pathsep.join([os.path.join(fetch.flink_home(), "lib", "*"), fetch.job_server_classpath("flink")])]


def flink_jobmanager(procs: Processes, conf: Path) -> None:
    log = procs.workdir / "flink-jobmanager.log"
    cmd = [*_flink_jvm(conf, log, ["-Xmx320m", "-Xms320m", "-XX:MaxMetaspaceSize=192m"]),
           "org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint", "--configDir", str(conf)]
    proc = procs.start("flink-jobmanager", cmd)
    wait_for_log(log, "Rest endpoint listening at", proc, "Flink JobManager")


def flink_taskmanager(procs: Processes, conf: Path, name: str = "flink-taskmanager") -> None:
    log = procs.workdir / f"{name}.log"
    # -Xmx = framework + task heap; direct = framework + task off-heap + network (what Flink's
    # taskmanager.sh would compute from the same settings).
    cmd = [*_flink_jvm(conf, log, ["-Xmx512m", "-Xms512m", "-XX:MaxDirectMemorySize=224m",
                                   "-XX:MaxMetaspaceSize=192m"]),
           "org.apache.flink.runtime.taskexecutor.TaskManagerRunner", "--configDir", str(conf)]
    proc = procs.start(name, cmd)
    wait_for_log(log, "Successful registration at resource manager", proc, f"Flink {name}")


# ---------------------------------------------------------------------------------------------
# Spark


def _spark_jvm(heap: str) -> list[str]:
    return [java(), f"-Xmx{heap}", *SMALL_JVM_OPTS, *SPARK_JAVA_OPTS, "-cp", os.path.join(fetch.spark_home(), "jars", "*")]


def spark_master(procs: Processes) -> tuple[int, int]:
    port, ui = free_port(), free_port()
    cmd = [*_spark_jvm("256m"), "org.apache.spark.deploy.master.Master",
           "--host", "localhost", "--port", str(port), "--webui-port", str(ui)]
    proc = procs.start("spark-master", cmd)
    wait_for_log(procs.workdir / "spark-master.out", "I have been elected leader", proc, "Spark master")
    return port, ui


def spark_worker(procs: Processes, master_port: int, cores: int, memory: str, name: str = "spark-worker") -> None:
    cmd = [*_spark_jvm("256m"), "org.apache.spark.deploy.worker.Worker",
           "--host", "localhost", "--port", str(free_port()), "--webui-port", str(free_port()),
           "--cores", str(cores), "--memory", memory, "--work-dir", str(procs.workdir / "spark-work"),
           f"spark://localhost:{master_port}"]
    proc = procs.start(name, cmd, env={"SPARK_HOME": fetch.spark_home(), "SPARK_SCALA_VERSION": "2.12"})
    wait_for_log(procs.workdir / f"{name}.out", "Successfully registered with master", proc, f"Spark {name}")


def spark_job_server(procs: Processes, master_port: int, executor_memory: str) -> int:
    """Beam's Spark job server, which is also the Spark driver: Spark settings as system properties."""
    conf = {"spark.driver.host": "localhost", "spark.driver.bindAddress": "127.0.0.1",
            "spark.ui.enabled": "false", "spark.executor.memory": executor_memory,
            "spark.executor.cores": "2", "spark.task.maxFailures": "4",
            "spark.local.dir": str(procs.workdir / "spark-local"),
            # Beam's classes ahead of Spark's on the executors too (Guava; see fetch.job_server_classpath).
            "spark.executor.extraClassPath": fetch.job_server_classpath("spark"),
            "spark.executor.extraJavaOptions": " ".join(SMALL_JVM_OPTS)}
    return job_server(procs, "spark", ["--spark-master-url", f"spark://localhost:{master_port}"],
                      heap="512m", system=[f"-D{k}={v}" for k, v in conf.items()])


def children(pid: int) -> list[int]:
    """PIDs of the processes whose parent is `pid` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""

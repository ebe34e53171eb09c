"""Brings the cluster tier's engines into a cache folder, checksums verified (stdlib only).

    python3 tests/clusters/fetch.py          # fetch what is missing, verify everything (CI: .ci/run)
    python3 tests/clusters/fetch.py --check  # verify only; exit 1 naming what is missing
    python3 tests/clusters/fetch.py --lock   # after changing versions.py: rewrite jars.sha256

Cache: $VMM_CLUSTER_CACHE, default ~/.cache/vmm-cluster (never inside the repository):
    flink-<FLINK>/lib/*.jar            Flink's distribution jars (from apache-flink-libraries)
    spark-<SPARK>/jars/*.jar           Spark's jars (from pyspark's source distribution)
    beam-<engine>-<BEAM_JAVA>/lib/*.jar  the Beam runner module and its dependencies (Maven)

PyPI archives are checked by pip (--require-hashes, sha256 in versions.py); every jar Maven brings
is checked by Maven against the repository's checksums (--strict-checksums) and then here against
the sha256 in tests/clusters/jars.sha256. A file that does not match is an error, never used.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if __name__ == "__main__" and str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.clusters import versions  # noqa: E402

LOCK = Path(__file__).with_name("jars.sha256")
DONE = ".verified"


def cache_dir() -> Path:
    return Path(os.environ.get("VMM_CLUSTER_CACHE") or Path.home() / ".cache" / "vmm-cluster")


def flink_home() -> str:
    return str(cache_dir() / f"flink-{versions.FLINK}")


def spark_home() -> str:
    return str(cache_dir() / f"spark-{versions.SPARK}")


def _job_server_dir(engine: str) -> Path:
    return cache_dir() / f"beam-{engine}-{versions.BEAM_JAVA}"


def job_server_classpath(engine: str) -> str:
    """The job server's classpath. Spark's: Beam's jars, then Spark's own (the runner module leaves
    Spark 'provided'); Beam's first so that its Guava wins over Spark's 14.0 -- but not its older
    SLF4J API, which would leave Spark's logging unbound. Spark's executors get the same classpath."""
    lib = _job_server_dir(engine) / "lib"
    if engine != "spark":
        return os.path.join(lib, "*")
    beam = [str(jar) for jar in sorted(lib.glob("*.jar")) if not jar.name.startswith("slf4j-api-")]
    return os.pathsep.join([*beam, os.path.join(spark_home(), "jars", "*")])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _lock() -> dict[str, str]:
    """'<engine>/<jar> <sha256>' lines."""
    entries = {}
    if LOCK.exists():
        for line in LOCK.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                name, digest = line.split()
                entries[name] = digest
    return entries


def missing() -> str | None:
    """Why the tier cannot run now (None: every part is in the cache and was verified)."""
    parts = {"Flink": Path(flink_home()), "Spark": Path(spark_home()),
             **{f"Beam's {e} job server": _job_server_dir(e) for e in versions.JOB_SERVERS}}
    absent = [name for name, path in parts.items() if not (path / DONE).exists()]
    if absent:
        return (f"not in {cache_dir()}: {', '.join(absent)} (run `python3 tests/clusters/fetch.py`; "
                ".ci/run does)")
    if shutil.which(os.path.join(os.environ["JAVA_HOME"], "bin", "java") if os.environ.get("JAVA_HOME")
                    else "java") is None:
        return "no Java runtime (java on PATH or JAVA_HOME): Flink and Spark need Java 17"
    return None


def _pip_download(engine: str, dest: Path) -> Path:
    name, version, digest = versions.PYPI[engine]
    with tempfile.TemporaryDirectory() as tmp:
        req = Path(tmp) / "req.txt"
        req.write_text(f"{name}=={version} --hash=sha256:{digest}\n")
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                        "--require-hashes", "-r", str(req), "-d", str(dest)], check=True)
    archive = next(p for p in dest.iterdir() if p.name.startswith(f"{name}-{version}") and p.suffix == ".gz")
    if _sha256(archive) != digest:  # pip checked; checked again for a file already in dest
        raise SystemExit(f"fetch: {archive} does not match its sha256 in versions.py")
    return archive


def _unpack(engine: str, folder: str, target: Path) -> None:
    """The jars under `deps/<folder>/` of a PyPI source distribution into target/<lib|jars>."""
    downloads = cache_dir() / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    archive = _pip_download(engine, downloads)
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    out = staging / ("lib" if engine == "flink" else "jars")
    out.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if member.isfile() and len(parts) == 4 and parts[1:3] == ("deps", folder) and parts[3].endswith(".jar"):
                with tar.extractfile(member) as src, open(out / parts[3], "wb") as dst:
                    shutil.copyfileobj(src, dst)
    if not any(out.iterdir()):
        raise SystemExit(f"fetch: no jars under deps/{folder} in {archive}")
    if engine == "spark":  # Spark's launcher finds jars/ beside a RELEASE file (a distribution's layout)
        (staging / "RELEASE").write_text(f"Spark {versions.SPARK} (jars from {archive.name})\n")
    (staging / DONE).write_text(archive.name + "\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    archive.unlink()  # hundreds of MB; the jars are what the tier uses


def _maven(engine: str, lock: dict[str, str], write_lock: bool) -> dict[str, str]:
    """The runner module's runtime classpath, by Maven, into the job server's folder."""
    target = _job_server_dir(engine)
    group, artifact, version = versions.JOB_SERVERS[engine]["module"].split(":")
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    (staging / "pom.xml").write_text(f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>vmm.tests</groupId><artifactId>{engine}-job-server</artifactId><version>1</version>
  <dependencies><dependency>
    <groupId>{group}</groupId><artifactId>{artifact}</artifactId><version>{version}</version>
  </dependency></dependencies>
</project>
""")
    subprocess.run(["mvn", "-B", "-q", "--strict-checksums", f"-Dmaven.repo.local={cache_dir() / 'm2'}",
                    "org.apache.maven.plugins:maven-dependency-plugin:2.8:copy-dependencies",
                    "-DincludeScope=runtime", "-DoutputDirectory=lib"], cwd=staging, check=True)
    found = {f"{engine}/{jar.name}": _sha256(jar) for jar in sorted((staging / "lib").iterdir())}
    if not write_lock:
        expected = {k: v for k, v in lock.items() if k.startswith(f"{engine}/")}
        wrong = sorted(k for k in found.keys() | expected.keys() if found.get(k) != expected.get(k))
        if wrong:
            raise SystemExit(f"fetch: {len(wrong)} jar(s) of Beam's {engine} job server differ from "
                             f"{LOCK.name}: {', '.join(wrong[:5])}")
    (staging / DONE).write_text(f"{len(found)} jars\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return found


def fetch(write_lock: bool = False) -> None:
    lock = _lock()
    if not (Path(flink_home()) / DONE).exists():
        print(f"fetch: Flink {versions.FLINK} (apache-flink-libraries)", flush=True)
        _unpack("flink", "lib", Path(flink_home()))
    if not (Path(spark_home()) / DONE).exists():
        print(f"fetch: Spark {versions.SPARK} (pyspark source distribution)", flush=True)
        _unpack("spark", "jars", Path(spark_home()))
    new_lock = {}
    for engine in versions.JOB_SERVERS:
        if write_lock or not (_job_server_dir(engine) / DONE).exists():
            print(f"fetch: Beam {versions.BEAM_JAVA} {engine} runner and dependencies (Maven)", flush=True)
            new_lock.update(_maven(engine, lock, write_lock))
    if write_lock:
        LOCK.write_text(f"# sha256 of each jar of Beam's job servers (tests/clusters/fetch.py --lock), "
                        f"Beam {versions.BEAM_JAVA}\n" + "".join(f"{k} {v}\n" for k, v in sorted(new_lock.items())))
        print(f"fetch: wrote {LOCK} ({len(new_lock)} jars)")


def main(argv: list[str]) -> int:
    if "--check" in argv:
        why = missing()
        print(why or f"fetch: all in {cache_dir()}")
        return 1 if why else 0
    fetch(write_lock="--lock" in argv)
    why = missing()
    if why:
        print(f"fetch: {why}", file=sys.stderr)
        return 1
    print(f"fetch: Flink {versions.FLINK}, Spark {versions.SPARK}, Beam {versions.BEAM_JAVA} job servers in {cache_dir()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

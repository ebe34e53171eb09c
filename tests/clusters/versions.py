"""The engines of the cluster tier (tests/test_engines.py), pinned in one place.

`python3 tests/clusters/fetch.py` brings them into the cache folder ($VMM_CLUSTER_CACHE, default
~/.cache/vmm-cluster) and checks every file against the sha256 below (jar downloads are never
committed). Stdlib only: `.ci/run` runs it before the project's venv exists.

Why these versions
  * Beam's job servers: the package registry here serves Beam's Java runner modules
    (beam-runners-flink-1.19, beam-runners-spark-3 and their dependencies) completely only at 2.62.0,
    and none of the prebuilt `*-job-server` jars at any version. The job servers are therefore the
    runner modules' own driver classes (FlinkJobServerDriver, SparkJobServerDriver) on a classpath
    that Maven resolves from the modules' POMs. The Python SDK of the venv (2.77) talks to them over
    Beam's portable protocol.
  * Flink 1.19.0: the Flink version beam-runners-flink-1.19:2.62.0 is built against (client and
    cluster of one version), and one of the Flink versions Beam 2.77 supports (1.19–2.2). Its jars
    come from PyPI's apache-flink-libraries (Flink's own distribution jars: flink-dist et al.).
    Runs on Java 17.
  * Spark 3.5.0 (Scala 2.12): Beam's Spark 3 runner is Scala 2.12; pyspark 3.5.0's source
    distribution carries Spark's own jars (the venv's pyspark 4 is Spark 4 / Scala 2.13, which
    Beam's runner cannot use). Spark 3.5 runs on Java 17.
"""

BEAM_JAVA = "2.62.0"
FLINK = "1.19.0"
SPARK = "3.5.0"

# PyPI source distributions (pip download --require-hashes checks these).
PYPI = {
    "flink": ("apache-flink-libraries", FLINK,
              "bb3115c1c63702f95c3f89d5d952e9d98e26fd35b980a265d139790a6ea2c2a2"),
    "spark": ("pyspark", SPARK,
              "d41a9b76bd2aca370a6100d075c029e22ba44c5940927877e9435a3a9c566558"),
}

# Maven modules whose classpath runs each job server (their main classes), resolved transitively.
JOB_SERVERS = {
    "flink": {"module": f"org.apache.beam:beam-runners-flink-1.19:{BEAM_JAVA}",
              "main": "org.apache.beam.runners.flink.FlinkJobServerDriver"},
    "spark": {"module": f"org.apache.beam:beam-runners-spark-3:{BEAM_JAVA}",
              "main": "org.apache.beam.runners.spark.SparkJobServerDriver"},
}

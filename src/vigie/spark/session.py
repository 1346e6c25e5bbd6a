"""A Spark session for vigie: local (``local[N]``) or a cluster through Spark Connect.

vigie's executors run its own Python code (``vigie.spark.tasks``) over Arrow batches, so
the interpreter Spark starts for them is this one (``PYSPARK_PYTHON``), with vigie and its
C extension importable. The JDBC drivers come from Debian's packages; the Parquet KMS
client (``VigieKms.java``) is compiled once per Spark version with the JDK's ``javac``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from vigie.errors import Unavailable
from vigie.keys import Keys
from vigie.scan.detectors import without_values
from vigie.spark.target import SparkTarget

JDBC_JARS = {
    "postgresql": ("/usr/share/java/postgresql.jar", "org.postgresql.Driver"),
    "mysql": ("/usr/share/java/mariadb-java-client.jar", "org.mariadb.jdbc.Driver"),
}
_KMS_SOURCE = Path(__file__).with_name("VigieKms.java")
_sessions: dict[str, Any] = {}


def _pyspark() -> Any:
    try:
        import pyspark
    except ImportError:
        raise Unavailable(
            "The Spark engine needs pyspark, which is not installed.",
            hint="pip install -e '.[spark]' (make test installs it), and a JDK 17 or newer.",
        ) from None
    return pyspark


def _javac() -> str:
    javac = shutil.which("javac")
    if javac is None:
        raise Unavailable(
            "The Spark engine needs a JDK (javac) to build vigie's Parquet KMS client.",
            hint="Install one (Debian: apt-get install openjdk-17-jdk-headless).",
        )
    return javac


def kms_jar() -> Path:
    """``VigieKms.java`` compiled against this pyspark's Parquet jars (once; cached)."""
    pyspark = _pyspark()
    jars = Path(pyspark.__file__).parent / "jars"
    digest = hashlib.sha256(_KMS_SOURCE.read_bytes() + pyspark.__version__.encode())
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vigie" / "spark"
    jar = cache / f"vigie-kms-{digest.hexdigest()[:16]}.jar"
    if jar.exists():
        return jar
    build = cache / f"build-{os.getpid()}"
    build.mkdir(parents=True, exist_ok=True)
    try:
        javac = [_javac(), "-nowarn", "-d", str(build), "-cp", f"{jars}/*", str(_KMS_SOURCE)]
        subprocess.run(javac, check=True, capture_output=True, text=True)  # noqa: S603
        tmp = build / "kms.jar"
        jar_tool = shutil.which("jar") or "jar"
        packing = [jar_tool, "cf", str(tmp), "-C", str(build), "vigie"]
        subprocess.run(packing, check=True, capture_output=True, text=True)  # noqa: S603
        tmp.replace(jar)
    except subprocess.CalledProcessError as exc:
        raise Unavailable(
            f"Building vigie's Parquet KMS client failed: {exc.stderr.strip()[:400]}",
            hint="Check that the JDK matches Spark (17 or newer).",
        ) from None
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return jar


def spark_session(target: SparkTarget) -> Any:
    """The process's session for ``target`` (started once, then shared)."""
    if target.name in _sessions:
        return _sessions[target.name]
    _pyspark()
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ.setdefault("PYARROW_IGNORE_TIMEZONE", "1")
    from pyspark.sql import SparkSession

    os.umask(0o077)  # the JVM inherits it: every file Spark writes is 0600, folders 0700
    jars = [str(kms_jar())] + [j for j, _ in JDBC_JARS.values() if Path(j).exists()]
    builder = SparkSession.builder.appName("vigie")
    if target.remote:
        builder = builder.remote(target.remote)
    else:
        builder = (
            builder.master(target.master)
            .config("spark.jars", ",".join(jars))
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.driver.memory", "4g")
            .config("spark.sql.shuffle.partitions", "8")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.sql.execution.arrow.maxRecordsPerBatch", "100000")
            .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
            .config("spark.python.worker.reuse", "true")
            .config("spark.hadoop.fs.permissions.umask-mode", "077")
        )
    session = builder.getOrCreate()
    _quiet_query_context()
    if not target.remote:
        # Spark logs what a task raised, JDBC errors included, which may quote a row: only
        # fatal errors are logged; the driver raises every failure again, without values.
        session.sparkContext.setLogLevel("FATAL")
    session.conf.set("spark.sql.session.timeZone", "UTC")
    session.conf.set("fs.permissions.umask-mode", "077")  # files 0600, folders 0700
    _sessions[target.name] = session
    return session


def error_line(exc: BaseException, keys: Keys) -> str:
    """Spark's error as one line, without key material or the values it may quote (a
    driver's message may quote a row)."""
    lines = [ln for ln in keys.scrub(str(exc)).splitlines() if ln.strip()]
    first = next(
        (ln for ln in lines if "Exception" in ln or "Error" in ln), lines[0] if lines else ""
    )
    return without_values(first.strip() or type(exc).__name__)[:500]


def _quiet_query_context() -> None:
    """pyspark logs every SQL error it raises, message included, which may quote a row
    (a cast that failed): vigie raises them again without values, so these logs stay off."""
    from pyspark.logger import PySparkLogger

    for name in ("SQLQueryContextLogger", "DataFrameQueryContextLogger"):
        PySparkLogger.getLogger(name).disabled = True


def stop_sessions() -> None:
    for name in list(_sessions):
        _sessions.pop(name).stop()

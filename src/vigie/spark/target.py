"""Where Spark work runs, parsed from the command line (no pyspark import here)."""

from __future__ import annotations

from dataclasses import dataclass

from vigie.errors import UsageError


@dataclass(frozen=True)
class SparkTarget:
    """``master`` (``local[2]``, ``spark://...``) or ``remote`` (``sc://host:port``, Spark
    Connect)."""

    master: str = "local[2]"
    remote: str | None = None

    @property
    def name(self) -> str:
        return self.remote or self.master


def check_engine_args(engine: str, master: str | None, remote: str | None) -> SparkTarget | None:
    if engine == "duckdb":
        if master or remote:
            raise UsageError("--master and --remote go with --engine spark.")
        return None
    if engine != "spark":
        raise UsageError(f"--engine must be duckdb or spark, got '{engine}'.")
    if master and remote:
        raise UsageError("Give --master or --remote, not both.")
    return SparkTarget(master or "local[2]", remote)

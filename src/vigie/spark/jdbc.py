"""Production read by Spark through JDBC: in parallel, partitioned on the primary key, in the
sync's snapshot where the server can share one (PostgreSQL's exported snapshots).

The SQL each partition runs is the DuckDB path's (``vigie.sources.duck``): the same columns
(PostgreSQL numerics as float8), the same cursor filter, so both paths read the same rows.
"""

from __future__ import annotations

from typing import Any

from vigie.db.dsn import Dsn
from vigie.db.quote import ident, literal
from vigie.errors import UsageError
from vigie.sources.base import Filter, SourceTable, bucketed
from vigie.spark.session import JDBC_JARS


def jdbc_url(dsn: Dsn) -> str:
    if dsn.engine == "postgresql":
        return f"jdbc:postgresql://{dsn.host}:{dsn.port}/{dsn.database}"
    if dsn.engine == "mysql":
        # jdbc:mysql: so that Spark picks its MySQL dialect (backquotes); the driver is MariaDB's
        return f"jdbc:mysql://{dsn.host}:{dsn.port}/{dsn.database}?permitMysqlScheme"
    raise UsageError(
        f"--engine spark reads PostgreSQL or MySQL/MariaDB through JDBC, not {dsn.engine}.",
        hint="Use the DuckDB engine for SQLite, or load the SQLite data into a server.",
    )


def options(dsn: Dsn, snapshot: str | None) -> dict[str, str]:
    """Connection options; the password only here, never in a logged plan."""
    out = {
        "url": jdbc_url(dsn),
        "driver": JDBC_JARS[dsn.engine][1],
        "user": dsn.user or ("postgres" if dsn.engine == "postgresql" else "root"),
        "fetchsize": "20000",
    }
    if dsn.password:
        out["password"] = dsn.password
    if dsn.engine == "postgresql":
        out["preferTimestampNTZ"] = "true"
        if snapshot:  # every partition reads the driver's snapshot
            out["sessionInitStatement"] = (
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; "
                f"SET TRANSACTION SNAPSHOT {literal('postgresql', snapshot)}"
            )
    else:
        out["preferTimestampNTZ"] = "true"
        out["sessionInitStatement"] = "SET time_zone = '+00:00'"
    return out


def select_sql(dsn: Dsn, table: SourceTable, columns: list[str], where: Filter | None,
               extra: str | None = None) -> str:  # fmt: skip
    """The rows a pass reads, as a derived table (``(SELECT ...) t``)."""
    engine = dsn.engine
    cols = []
    for c in columns:
        name = ident(engine, c)
        if engine == "postgresql" and table.column(c).kind == "decimal":
            cols.append(f"{name}::float8 AS {name}")
        else:
            cols.append(name)
    conds = []
    if where is not None:
        op = ">=" if where.inclusive else ">"
        conds.append(f"{ident(engine, where.column)} {op} {_literal(engine, where.value)}")
    if extra:
        conds.append(extra)
    sql = f"SELECT {', '.join(cols)} FROM {ident(engine, table.name)}"
    sql += f" WHERE {' AND '.join(conds)}" if conds else ""
    return f"({sql}) vigie_read"


def _literal(engine: str, value: object) -> str:
    from datetime import datetime

    if isinstance(value, datetime):
        text = value.strftime("%Y-%m-%d %H:%M:%S.%f")
        return f"TIMESTAMP '{text}'" if engine == "postgresql" else f"'{text}'"
    return str(int(value))  # type: ignore[call-overload]


def read(spark: Any, dsn: Dsn, snapshot: str | None, table: SourceTable, columns: list[str],
         where: Filter | None, *, span: tuple[int, int] | None = None, partitions: int = 1,
         extra: str | None = None) -> Any:  # fmt: skip
    """A DataFrame of the rows; ``partitions`` readers over the first key column's ``span``."""
    reader = spark.read.format("jdbc").options(**options(dsn, snapshot))
    reader = reader.option("dbtable", select_sql(dsn, table, columns, where, extra))
    if partitions > 1 and span is not None and bucketed(table):
        reader = (
            reader.option("partitionColumn", table.primary_key[0])
            .option("lowerBound", str(span[0]))
            .option("upperBound", str(span[1] + 1))
            .option("numPartitions", str(partitions))
        )
    return reader.load()

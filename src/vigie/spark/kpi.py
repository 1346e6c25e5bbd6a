"""KPIs over a lake on Spark SQL, for a lake past one machine (``vigie kpi show --store DIR
--engine spark``).

The KPI compiler, the facts and the suppression planner are the DuckDB engine's: their
SQL is transpiled to Spark SQL (sqlglot, with the parameters bound as literals first) and
runs over the lake's current tables, read through the lake's decryption. What comes back
to the driver is what comes back on DuckDB: the cells' counts, and the distinct rows of
the weeks that hold a small day (the planner's moves need them). So the driver's memory
follows the cells, not the rows, and the answers are a DuckDB store's, cell for cell
(tested on every shipped KPI).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from vigie.db.quote import literal
from vigie.errors import StoreError
from vigie.keys import Keys
from vigie.kpi import calendar
from vigie.kpi.engine import KpiResult, keyed_sql, read_cells
from vigie.kpi.fit import check_against
from vigie.kpi.model import Metrics
from vigie.kpi.patterns import plan_pattern, sync_horizon
from vigie.kpi.protect import Pattern
from vigie.kpi.query import KpiQuery, compile_query, q, validate
from vigie.spark import lake
from vigie.spark.session import error_line
from vigie.spark.tasks import DAY_COLUMN
from vigie.stores.duckdb_store import Store
from vigie.stores.meta import META


def to_spark(sql: str, params: Sequence[object] = ()) -> str:
    """DuckDB SQL with ``?`` parameters as one Spark SQL statement, the parameters bound
    as literals (Spark Connect and classic sessions take the same text)."""
    import sqlglot
    from sqlglot.tokens import TokenType  # type: ignore[attr-defined]

    tokens = [t for t in sqlglot.Dialect.get_or_raise("duckdb").tokenize(sql)
              if t.token_type == TokenType.PLACEHOLDER]  # fmt: skip
    if len(tokens) != len(params):
        raise ValueError(f"{len(tokens)} placeholders for {len(params)} parameters")
    for token, value in reversed(list(zip(tokens, params, strict=True))):
        sql = sql[: token.start] + _literal(value) + sql[token.end + 1 :]
    return str(sqlglot.parse_one(sql, read="duckdb").transform(_for_spark).sql(dialect="spark"))


def _for_spark(node: Any) -> Any:
    """What sqlglot's DuckDB-to-Spark translation leaves to do."""
    from sqlglot import exp

    if isinstance(node, exp.CTE):
        node.set("materialized", None)  # a hint Spark's grammar lacks (it reuses exchanges)
    if isinstance(node, exp.Filter) and isinstance(node.this, exp.PercentileCont):
        return _quantile(node.this, node.expression.this)
    if isinstance(node, exp.PercentileCont) and not isinstance(node.parent, exp.Filter):
        return _quantile(node, None)
    return node


def _quantile(node: Any, where: Any) -> Any:
    """DuckDB's ``quantile_cont(x, p)``, to the last bit: the values sorted, the position
    ``(n - 1) * p`` in double, then ``lo * (1 - d) + hi * d`` with ``d`` its fraction.
    Spark's own ``percentile`` differs from it in the last bits. The sorted list is bound
    once (a one-element ``transform``)."""
    import sqlglot

    values = f"collect_list({node.this.sql(dialect='spark')})"
    if where is not None:
        values += f" FILTER (WHERE {where.sql(dialect='spark')})"
    p = node.expression.sql(dialect="spark")
    rn = f"(CAST(size(s) - 1 AS DOUBLE) * CAST({p} AS DOUBLE))"
    lo = f"CAST(element_at(s, CAST(floor({rn}) AS INT) + 1) AS DOUBLE)"
    hi = f"CAST(element_at(s, CAST(ceil({rn}) AS INT) + 1) AS DOUBLE)"
    d = f"({rn} - floor({rn}))"
    value = (
        f"CASE WHEN size(s) = 0 THEN NULL ELSE {lo} * (CAST(1 AS DOUBLE) - {d}) + {hi} * {d} END"
    )
    sql = f"element_at(transform(array(array_sort({values})), s -> {value}), 1)"
    return sqlglot.parse_one(sql, read="spark")


def _literal(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime):
        return f"TIMESTAMP '{value.isoformat(sep=' ')}'"
    if isinstance(value, date):
        return f"DATE '{value.isoformat()}'"
    if isinstance(value, str):  # in the DuckDB text sqlglot reads, not Spark's syntax
        return literal("duckdb", value)
    raise TypeError(f"no Spark SQL literal for {type(value).__name__}")


class SparkSql:
    """Spark SQL as the KPI engine's ``SqlRunner``: results as tuples, timestamps naive in
    UTC as DuckDB gives them (read through Arrow, not the driver's time zone)."""

    def __init__(self, spark: Any, keys: Keys) -> None:
        self.spark, self.keys = spark, keys
        self._cached: dict[str, Any] = {}

    def rows(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        try:
            table = self.spark.sql(to_spark(sql, params or [])).toArrow()
        except Exception as exc:
            raise _failed(exc, self.keys) from None
        columns = [_naive(c).to_pylist() for c in table.columns]
        return list(zip(*columns, strict=True)) if columns else []

    def temp_table(self, name: str, sql: str, params: Sequence[object]) -> None:
        try:
            frame = self.spark.sql(to_spark(sql, params)).cache()
        except Exception as exc:
            raise _failed(exc, self.keys) from None
        frame.createOrReplaceTempView(name)
        self._cached[name] = frame

    def drop_temp(self, name: str) -> None:
        frame = self._cached.pop(name, None)
        if frame is not None:
            frame.unpersist()
        self.spark.catalog.dropTempView(name)


def _failed(exc: Exception, keys: Keys) -> StoreError:
    return StoreError(
        f"A KPI query failed on Spark: {error_line(exc, keys)}",
        hint="Check the facts' SQL against Spark SQL (docs/scale.md, 'KPIs over a lake'); "
        "values are not repeated here.",
    )


def _naive(column: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_timestamp(column.type) and column.type.tz is not None:
        return column.cast(pa.timestamp(column.type.unit, tz="UTC")).cast(
            pa.timestamp(column.type.unit)
        )
    return column


class LakeKpis:
    """Answers KPI queries over the lake at ``root`` on ``spark``; one per session and lake
    (its tables are registered once, each fact's pattern computed once). Use as a context
    manager: it holds the lake's metadata open."""

    def __init__(self, spark: Any, root: Path, keys: Keys, metrics: Metrics) -> None:
        from vigie.spark.sync import configure_encryption

        configure_encryption(spark, keys)
        self.metrics, self.sql = metrics, SparkSql(spark, keys)
        self.meta = lake.open_meta(root, keys, read_only=True)
        try:
            self.horizon = sync_horizon(self.meta)
            self.tables = _register(spark, root, self.meta)
        except BaseException:
            self.meta.close()
            raise
        self._patterns: dict[str, Pattern] = {}

    def __enter__(self) -> LakeKpis:
        return self

    def __exit__(self, *exc: object) -> None:
        self.meta.close()

    def answer(self, query: KpiQuery) -> KpiResult:
        """As ``engine.run_kpi`` answers on a store without rollups."""
        started = time.perf_counter()
        kpi = validate(self.metrics, query)
        check_against(self.meta, self.tables, self.metrics, [kpi.fact])
        until = calendar.publishable_end(query.grain, self.horizon)
        end = min(query.end, until) if query.end else until
        query = KpiQuery(query.kpi, query.by, query.where, query.start, end, query.grain)
        pattern = self.pattern(kpi.fact.name)
        rows: list[tuple[Any, ...]] = []
        if query.start is None or query.start < end:
            compiled = compile_query(self.metrics, query)
            rows = self.sql.rows(keyed_sql(compiled.sql, query.by), compiled.params)
        cells = read_cells(rows, query, pattern, self.metrics.min_users)
        return KpiResult(query, cells, self.metrics.min_users, None,
                         time.perf_counter() - started, until)  # fmt: skip

    def pattern(self, fact: str) -> Pattern:
        if fact not in self._patterns:
            until = calendar.publishable_end("day", self.horizon)
            self._patterns[fact] = plan_pattern(self.sql, self.metrics, self.metrics.facts[fact],
                                                until)  # fmt: skip
        return self._patterns[fact]

    def latest(self, query: KpiQuery) -> datetime | None:
        """The fact's latest time (``engine.default_range`` asks it)."""
        fact = validate(self.metrics, query).fact
        rows = self.sql.rows(f"WITH fact AS ({fact.sql}) SELECT MAX({q(fact.time)}) FROM fact")
        latest = rows[0][0]
        assert latest is None or isinstance(latest, datetime)
        return latest


def _register(spark: Any, root: Path, meta: Store) -> set[str]:
    """Each current table of the lake as a temporary view of its name; returns the names."""
    versions = lake.manifest(root)
    if not versions:
        raise StoreError(f"The lake at {root} holds no table yet.", hint="Run vigie sync first.")
    for name, version in versions.items():
        folders = [str(root / f) for f in version.folders if any((root / f).rglob("*.parquet"))]
        frame = spark.read.parquet(*folders) if folders else _empty(spark, meta, name)
        if DAY_COLUMN in frame.columns:
            frame = frame.drop(DAY_COLUMN)
        frame.createOrReplaceTempView(name)
    return set(versions)


def _empty(spark: Any, meta: Store, table: str) -> Any:
    """A table without rows, typed as its column records say (a pseudonym is 16 bytes)."""
    import sqlglot

    def spark_type(stored: str) -> str:
        if stored == "UUID":
            return "BINARY"
        return sqlglot.exp.DataType.build(stored, dialect="duckdb").sql(dialect="spark")

    columns = meta.rows(
        f"SELECT column_name, store_type FROM {META}.columns WHERE table_name = ? "
        "AND store_type IS NOT NULL ORDER BY column_name",
        [table],
    )
    return spark.createDataFrame([], ", ".join(f"`{c}` {spark_type(t)}" for c, t in columns))

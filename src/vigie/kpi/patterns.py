"""A fact's suppression pattern on a store: computed (``protect.Planner``), kept beside the
rollups after each sync, and read back for the periods an answer shows."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import pyarrow as pa

from vigie.errors import UsageError
from vigie.kpi import calendar
from vigie.kpi.model import Fact, Metrics
from vigie.kpi.protect import (
    Key,
    Pattern,
    Planner,
    Row,
    Shape,
    Stats,
    cells_queries,
    columns_needed,
    rows_sql,
    shape_of,
)
from vigie.kpi.query import q
from vigie.stores.duckdb_store import Store
from vigie.stores.meta import META, ROLLUP_SCHEMA

REGISTRY = f"{ROLLUP_SCHEMA}.patterns"


class SqlRunner(Protocol):
    """Where a pattern's queries run (the engine's DuckDB SQL): a store's DuckDB, or Spark
    SQL over a lake (``vigie.spark.kpi``)."""

    def rows(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]: ...

    def temp_table(self, name: str, sql: str, params: Sequence[object]) -> None: ...

    def drop_temp(self, name: str) -> None: ...


@dataclass(frozen=True)
class OnStore:
    """A store's DuckDB as a ``SqlRunner``."""

    store: Store

    def rows(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        return self.store.rows(sql, params)

    def temp_table(self, name: str, sql: str, params: Sequence[object]) -> None:
        self.store.con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS {sql}", list(params))

    def drop_temp(self, name: str) -> None:
        self.store.con.execute(f"DROP TABLE IF EXISTS {name}")


def sync_horizon(store: Store) -> datetime:
    """When the store's last completed sync started: periods over by then are published."""
    (horizon,) = store.rows(f"SELECT MAX(started_at) FROM {META}.runs WHERE status = 'ok'")[0]
    if horizon is None:
        raise UsageError(
            "The store has no completed sync yet: no period is published.", hint="Run vigie sync."
        )
    assert isinstance(horizon, datetime)
    return horizon


def compute_pattern(store: Store, metrics: Metrics, fact: Fact,
                    horizon: datetime | None = None) -> Pattern:  # fmt: skip
    """The pattern of ``fact`` for the metrics' k's, from the store's tables, as of
    ``horizon`` (default: the start of the store's last completed sync)."""
    until = calendar.publishable_end("day", horizon or sync_horizon(store))
    return plan_pattern(OnStore(store), metrics, fact, until)


def plan_pattern(sql: SqlRunner, metrics: Metrics, fact: Fact, until: datetime) -> Pattern:
    """The pattern of ``fact`` for the metrics' k's over its rows before ``until``, its
    queries run by ``sql``: only the cells' counts and a few weeks' rows come back."""
    shape = shape_of(metrics, fact)
    with _fact_rows(sql, fact, shape, f"{q(fact.time)} < ?", [until]) as source:
        stats = _stats(sql, fact, shape, source)
        rows = _rows_of(sql, fact, shape, source, _small_weeks_days(metrics, stats))
    return _planned(metrics, fact, stats, until, rows)


def pattern_from_stats(store: Store, metrics: Metrics, fact: Fact, stats: dict[Key, Stats],
                       until: datetime) -> Pattern:  # fmt: skip
    """The pattern from the cells' counts kept by the refresh (``kpi.refresh``): the rows
    of the weeks holding a small day are read from the fact for those days only."""
    shape = shape_of(metrics, fact)
    days = _small_weeks_days(metrics, stats)
    rows: dict[datetime, list[Row]] = {}
    if days:
        t = q(fact.time)
        span = [days[0], days[-1] + timedelta(days=1), until]
        sql = OnStore(store)
        with _fact_rows(sql, fact, shape, f"{t} >= ? AND {t} < ? AND {t} < ?", span) as source:
            rows = _rows_of(sql, fact, shape, source, days)
    return _planned(metrics, fact, stats, until, rows)


def _planned(metrics: Metrics, fact: Fact, stats: dict[Key, Stats], until: datetime,
             rows: dict[datetime, list[Row]]) -> Pattern:  # fmt: skip
    planner = Planner(stats, fact.dimensions, until, rows)
    for each in metrics.ks:
        planner.run(each)
    return Pattern(fact.name, max(metrics.ks), until, planner.suppressed)


@contextmanager
def _fact_rows(sql: SqlRunner, fact: Fact, shape: Shape, where: str,
               params: Sequence[object]) -> Iterator[str]:  # fmt: skip
    """A temporary table of the fact's rows ``where`` selects, with the columns a pattern
    reads; yields its name."""
    source = f"vigie_pattern_{fact.name}"
    columns = ", ".join(q(c) for c in columns_needed(fact, shape))
    sql.temp_table(source, f"SELECT {columns} FROM ({fact.sql}) WHERE {where}", params)
    try:
        yield source
    finally:
        sql.drop_temp(source)


def _stats(sql: SqlRunner, fact: Fact, shape: Shape, source: str) -> dict[Key, Stats]:
    n = len(shape.populations)
    stats: dict[Key, Stats] = {}
    for query in cells_queries(fact, shape, source):
        for grain, period, dim, value, *rest in sql.rows(query):
            key = (str(grain), period, dim, value)
            stats[key] = Stats(tuple(int(u) for u in rest[:n]), tuple(bool(m) for m in rest[n:]))
    return stats


def _small_weeks_days(metrics: Metrics, stats: dict[Key, Stats]) -> list[datetime]:
    """The days of the weeks that hold a small day, in order."""
    k = max(metrics.ks)
    days = [(p, s) for (g, p, d, _), s in stats.items() if g == "day" and d is None]
    weeks = {calendar.week_of(p) for p, s in days if any(0 < u < k for u in s.users)}
    return sorted(p for p, _ in days if calendar.week_of(p) in weeks)


def _rows_of(sql: SqlRunner, fact: Fact, shape: Shape, source: str,
             days: list[datetime]) -> dict[datetime, list[Row]]:  # fmt: skip
    """The distinct rows of ``days`` (those of the weeks holding a small day): the
    planner's moves copy them (a row the fact can hold)."""
    rows: dict[datetime, list[Row]] = {}
    width = len(fact.dimensions)
    for start in range(0, len(days), 500):
        chunk = days[start : start + 500]
        for hour, *rest in sql.rows(rows_sql(fact, shape, source, len(chunk)), chunk):
            row = Row(hour, tuple(rest[:width]), tuple(bool(m) for m in rest[width:]))
            rows.setdefault(calendar.midnight(hour), []).append(row)
    return rows


def save_pattern(store: Store, pattern: Pattern, run_id: int, seconds: float) -> None:
    """Keep ``pattern`` as the pattern of the store's run ``run_id``."""
    table = f'{ROLLUP_SCHEMA}."pattern__{pattern.fact}"'
    with store.transaction() as con:
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {REGISTRY} (fact VARCHAR PRIMARY KEY, k INTEGER, "
            "until TIMESTAMP, run_id INTEGER, built_at TIMESTAMP, seconds DOUBLE)"
        )
        con.execute(
            f"CREATE OR REPLACE TABLE {table} (grain VARCHAR, period TIMESTAMP, dim VARCHAR, "
            "value VARCHAR, reason VARCHAR)"
        )
        if pattern.suppressed:
            keys, reasons = list(pattern.suppressed), list(pattern.suppressed.values())
            batch = pa.table({  # one Arrow batch, not a row at a time
                "grain": [k[0] for k in keys], "period": [k[1] for k in keys],
                "dim": [k[2] for k in keys], "value": [k[3] for k in keys], "reason": reasons,
            })  # fmt: skip
            con.register("vigie_pattern_batch", batch)
            try:
                con.execute(f"INSERT INTO {table} SELECT * FROM vigie_pattern_batch")
            finally:
                con.unregister("vigie_pattern_batch")
        con.execute(
            f"INSERT OR REPLACE INTO {REGISTRY} VALUES (?, ?, ?, ?, now(), ?)",
            [pattern.fact, pattern.k, pattern.until, run_id, seconds],
        )


def forget_pattern(store: Store, fact: Fact) -> None:
    """No kept pattern for ``fact``: answers compute it (and refuse if it cannot be)."""
    if _has_registry(store):
        store.con.execute(f"DELETE FROM {REGISTRY} WHERE fact = ?", [fact.name])


def pattern_for(store: Store, metrics: Metrics, fact: Fact, grain: str, start: datetime | None,
                end: datetime) -> Pattern:  # fmt: skip
    """The pattern's cells of ``grain`` in [start, end): from the kept pattern when it was
    built after the last sync for the same k, else computed now."""
    stored = _stored(store, fact, metrics)
    if stored is None:
        return compute_pattern(store, metrics, fact)
    until, table = stored
    rows = store.rows(
        f"SELECT grain, period, dim, value, reason FROM {table} WHERE grain = ? "
        "AND period >= ? AND period < ?",
        [grain, start or datetime.min, end],
    )
    return Pattern(fact.name, metrics.min_users, until,
                   {(g, p, d, v): r for g, p, d, v, r in rows})  # fmt: skip


def _stored(store: Store, metrics_fact: Fact, metrics: Metrics) -> tuple[datetime, str] | None:
    if len(metrics.ks) > 1 or not _has_registry(store):
        return None
    rows = store.rows(
        f"SELECT until, run_id = (SELECT MAX(run_id) FROM {META}.runs), k FROM {REGISTRY} "
        "WHERE fact = ?",
        [metrics_fact.name],
    )
    if not rows or not rows[0][1] or rows[0][2] != metrics.min_users:
        return None
    return rows[0][0], f'{ROLLUP_SCHEMA}."pattern__{metrics_fact.name}"'


def _has_registry(store: Store) -> bool:
    return bool(store.rows(
        "SELECT 1 FROM duckdb_tables() WHERE database_name = 'store' "
        f"AND schema_name = '{ROLLUP_SCHEMA}' AND table_name = 'patterns'"
    ))  # fmt: skip

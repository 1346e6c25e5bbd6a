"""Answer a KPI query on the store: from a fresh rollup when one fits, else from the
tables; either way the same cells, then small-cell suppression."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from vigie.errors import UsageError
from vigie.kpi import calendar
from vigie.kpi.fit import check_against_store, rollup_name
from vigie.kpi.model import Metrics
from vigie.kpi.patterns import pattern_for, sync_horizon
from vigie.kpi.protect import PRIMARY, Pattern, ProtectionError
from vigie.kpi.query import KpiQuery, compile_query, q, validate
from vigie.kpi.suppress import Cell
from vigie.stores.duckdb_store import Store
from vigie.stores.meta import META, ROLLUP_SCHEMA

ROLLUPS = ROLLUP_SCHEMA


@dataclass(frozen=True)
class KpiResult:
    query: KpiQuery
    cells: list[Cell]
    k: int
    rollup: str | None  # the rollup table that answered, if any
    seconds: float
    until: datetime | None = None  # periods from here on are not over: not published yet


def lock_down(store: Store) -> None:
    """No file, network, extension or setting from this connection on: whatever SQL runs
    on it reads the attached store and nothing else (``kpi.factsql`` checks the facts
    first; this holds for what a parser might miss)."""
    store.con.execute("SET enable_external_access = false")
    store.con.execute("SET lock_configuration = true")


def run_kpi(
    store: Store, metrics: Metrics, query: KpiQuery, *, use_rollups: bool = True
) -> KpiResult:
    """The answer to ``query``: its whole periods that are over at the store's last sync,
    read through the fact's suppression pattern (``kpi.protect``)."""
    started = time.perf_counter()
    kpi = validate(metrics, query)
    check_against_store(store, metrics, [kpi.fact])
    until = calendar.publishable_end(query.grain, sync_horizon(store))
    end = min(query.end, until) if query.end else until
    query = KpiQuery(query.kpi, query.by, query.where, query.start, end, query.grain)
    pattern = pattern_for(store, metrics, kpi.fact, query.grain, query.start, end)
    rollup = find_rollup(store, metrics, query) if use_rollups else None
    rows: list[tuple[object, ...]] = []
    if query.start is not None and query.start >= end:
        pass  # nothing of the range is over yet
    elif rollup:
        rows = _from_rollup(store, query, rollup)
    else:
        compiled = compile_query(metrics, query)
        rows = store.rows(keyed_sql(compiled.sql, query.by), compiled.params)
    cells = read_cells(rows, query, pattern, metrics.min_users)
    return KpiResult(query, cells, metrics.min_users, rollup, time.perf_counter() - started,
                     until)  # fmt: skip


def keyed_sql(sql: str, by: tuple[str, ...]) -> str:
    """Each row with its dimension value as text (how the pattern names cells)."""
    dims = [q(d) for d in by]
    cols = ", ".join(["period", *dims, *(f"CAST({d} AS VARCHAR)" for d in dims), "is_total",
                      "value", "users"])  # fmt: skip
    order = ", ".join(["period", "is_total", *dims])
    return f"SELECT {cols} FROM ({sql}) ORDER BY {order}"


def _from_rollup(store: Store, query: KpiQuery, rollup: str) -> list[tuple[object, ...]]:
    conds, params = ["period < ?"], [query.end]
    if query.start:
        conds.append("period >= ?")
        params.append(query.start)
    sql = f"SELECT * FROM {ROLLUPS}.{q(rollup)} WHERE {' AND '.join(conds)}"
    return store.rows(keyed_sql(sql, query.by), params)


def read_cells(
    rows: list[tuple[object, ...]], query: KpiQuery, pattern: Pattern, k: int
) -> list[Cell]:
    """Rows as cells, suppressed as the pattern says (and below k, whatever it says). A
    row is (period, [value, value as text,] is_total, value, users): one dimension at most.
    A tight loop: on a two-year daily answer this is most of the time an answer takes."""
    grain, hidden, cells = query.grain, pattern.suppressed, []
    whole = (grain, *query.where[0]) if query.where else (grain, None, None)
    by = query.by[0] if query.by else None
    for row in rows:
        if by is None:
            period, is_total, value, users = row
            dims: tuple[object, ...] = ()
            key = (whole[0], period, whole[1], whole[2])
        else:
            period, dim_value, text, is_total, value, users = row
            dims = (dim_value,)
            key = (whole[0], period, whole[1], whole[2]) if is_total else (grain, period, by, text)  # type: ignore[assignment]
        reason = hidden.get(key)  # type: ignore[arg-type]
        count = int(users or 0)  # type: ignore[call-overload]
        if reason is None and count < k:
            reason = PRIMARY
        shown = None if value is None else float(value)  # type: ignore[arg-type]
        cells.append(Cell(period, dims, bool(is_total), shown, count, reason is not None,  # type: ignore[arg-type]
                          reason or ""))  # fmt: skip
    return cells


def find_rollup(store: Store, metrics: Metrics, query: KpiQuery) -> str | None:
    """A fresh day-grain rollup of exactly these dimensions, for an unfiltered query on
    whole days; else None."""
    if query.grain != "day" or query.where:
        return None
    for bound in (query.start, query.end):
        if bound is not None and bound != bound.replace(hour=0, minute=0, second=0, microsecond=0):
            return None
    kpi = metrics.kpis[query.kpi]
    for dims in kpi.fact.rollups:
        if set(dims) == set(query.by):
            name = rollup_name(kpi.name, dims)
            return name if _fresh(store, name) else None
    return None


def _fresh(store: Store, name: str) -> bool:
    """Built after the store's latest sync run."""
    if not has_registry(store):
        return False
    rows = store.rows(
        f"SELECT r.run_id = (SELECT MAX(run_id) FROM {META}.runs) FROM {ROLLUPS}.registry r "
        "WHERE r.name = ?",
        [name],
    )
    return bool(rows and rows[0][0])


def has_registry(store: Store) -> bool:
    """Whether rollups were ever built (duckdb_tables(): information_schema is slower)."""
    return bool(store.rows(
        "SELECT 1 FROM duckdb_tables() WHERE database_name = 'store' "
        f"AND schema_name = '{ROLLUPS}' AND table_name = 'registry'"
    ))  # fmt: skip


def refresh_rollups(store: Store, metrics: Metrics, *, full: bool = False) -> dict[str, float]:
    """Bring every declared rollup and every fact's pattern to the store's latest run, by
    what the syncs since changed (``kpi.refresh``; ``full``: from scratch); returns
    seconds per rollup and per pattern."""
    from vigie.kpi.refresh import refresh

    timings: dict[str, float] = {}
    done = refresh(store, metrics, full=full)
    for fact in done:
        timings.update({k: v for k, v in fact.timings.items() if k not in ("states", "stats")})
    if failed := [f for f in done if f.error]:  # the others are refreshed; these refused
        raise ProtectionError(failed[0].error, hint=f"Answers for fact '{failed[0].fact}' "
                              "are refused until a pattern protects it.")  # fmt: skip
    return timings


def default_range(store: Store, metrics: Metrics, query: KpiQuery) -> KpiQuery:
    """Without --from/--to: the last periods of the grain that are over, up to the fact's
    latest data (``calendar.DEFAULT_PERIODS`` of them)."""
    if query.start and query.end:
        return query
    kpi = validate(metrics, query)
    sql = f"WITH fact AS ({kpi.fact.sql}) SELECT MAX({q(kpi.fact.time)}) FROM fact"
    (latest,) = store.rows(sql)[0]
    return range_ending(query, latest, sync_horizon(store))


def range_ending(query: KpiQuery, latest: datetime | None, horizon: datetime) -> KpiQuery:
    """``default_range`` given the fact's ``latest`` time and the store's sync horizon."""
    if query.start and query.end:
        return query
    if latest is None:
        raise UsageError(
            f"The store holds no data for KPI '{query.kpi}' yet.", hint="Run vigie sync."
        )
    grain = query.grain
    last = calendar.step(grain, calendar.label_of(grain, latest), 1)
    end = query.end or min(last, calendar.publishable_end(grain, horizon))
    start = query.start or calendar.step(grain, end, -calendar.DEFAULT_PERIODS[grain])
    return KpiQuery(query.kpi, query.by, query.where, start, end, grain)

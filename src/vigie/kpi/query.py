"""The query compiler: KPI + dimensions + filters + time range + grain → SQL on the store.

Every cell carries the number of distinct users it rests on; ``suppress`` (applied to every
answer, from raw tables or rollups alike) hides cells under k users. Filter values are
bound as parameters; dimension names are checked against the fact's declared ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from vigie.errors import UsageError
from vigie.kpi import calendar
from vigie.kpi.model import (
    GRAINS,
    Avg,
    Count,
    CountDistinct,
    Grain,
    Kpi,
    Measure,
    Metrics,
    Quantile,
    Ratio,
    ShareWithin,
    Simple,
    Sum,
)


@dataclass(frozen=True)
class KpiQuery:
    kpi: str
    by: tuple[str, ...] = ()
    where: tuple[tuple[str, str], ...] = ()
    start: datetime | None = None  # inclusive
    end: datetime | None = None  # exclusive
    grain: Grain = "day"


@dataclass(frozen=True)
class Compiled:
    kpi: Kpi
    query: KpiQuery
    sql: str
    params: list[Any]


def q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def validate(metrics: Metrics, query: KpiQuery) -> Kpi:
    """The KPI of ``query``, after checking its names; errors list the valid choices."""
    kpi = metrics.kpis.get(query.kpi)
    if kpi is None:
        raise UsageError(
            f"Unknown KPI '{query.kpi}'.", hint=f"One of: {', '.join(sorted(metrics.kpis))}."
        )
    dims = kpi.fact.dimensions
    for name in [*query.by, *(w[0] for w in query.where)]:
        if name not in dims:
            raise UsageError(
                f"KPI '{kpi.name}' has no dimension '{name}'.",
                hint=f"Dimensions of {kpi.fact.name}: {', '.join(dims)}.",
            )
    if len(set(query.by)) != len(query.by):
        raise UsageError(f"--by names a dimension twice: {', '.join(query.by)}.")
    if query.grain not in GRAINS:
        raise UsageError(f"Unknown grain '{query.grain}'.", hint=f"One of: {', '.join(GRAINS)}.")
    if isinstance(kpi.measure, ShareWithin) and kpi.measure.across not in query.by:
        raise UsageError(
            f"KPI '{kpi.name}' is a share across {kpi.measure.across}.",
            hint=f"Add --by {kpi.measure.across}.",
        )
    _check_space(kpi, query)
    if query.start and query.end and query.start >= query.end:
        raise UsageError(f"--from {query.start} is not before --to {query.end}.")
    return kpi


def _check_space(kpi: Kpi, query: KpiQuery) -> None:
    """What can be asked (docs/kpi.md): whole periods, and per period its total and one
    dimension at a time (by or where); hours show their total only. Crossing two
    dimensions, or cutting a period, is how a few people get isolated by subtraction."""
    used = list(dict.fromkeys([*query.by, *(w[0] for w in query.where)]))
    if len(query.where) > 1 or len(used) > 1:
        raise UsageError(
            f"KPI '{kpi.name}' is asked across {', '.join(used)}: an answer shows one "
            "dimension at a time (--by DIM or --where DIM=VALUE, the same DIM).",
            hint="Ask once per dimension. Crossed dimensions make cells that subtraction "
            "between answers can narrow to a few people (docs/kpi.md, 'What can be asked').",
        )
    if query.grain == "hour" and used:
        raise UsageError(
            f"Hourly answers show the total only; --grain hour with {used[0]} is refused.",
            hint="Use --grain day (or coarser) to split by a dimension.",
        )
    for bound, option in ((query.start, "--from"), (query.end, "--to")):
        if bound is not None:
            calendar.check_aligned(query.grain, bound, option)


def compile_query(metrics: Metrics, query: KpiQuery, source: str | None = None) -> Compiled:
    """SQL for ``query``; ``source`` names a table already holding the fact's rows."""
    kpi = validate(metrics, query)
    fact = kpi.fact
    fact_sql = f"SELECT * FROM {source}" if source else fact.sql
    conds, params = _conditions(kpi, query)
    where = " AND ".join(conds) or "true"
    period = f"{calendar.period_sql(query.grain, q(fact.time))} AS period"
    users = _users(kpi)
    dims = [q(d) for d in query.by]
    if isinstance(kpi.measure, ShareWithin):
        sql = _share_within(kpi, kpi.measure, query, period, where, users, fact_sql)
    else:
        value = _measure(kpi.measure)
        select = ", ".join(["period", *dims, _is_total(query.by), f"{value} AS value", users])
        groups = _grouping_sets(query.by)
        sql = (
            f"WITH fact AS ({fact_sql}), base AS (SELECT *, {period} FROM fact WHERE {where}) "
            f"SELECT {select} FROM base GROUP BY {groups}"
        )
    order = ", ".join(["period", "is_total", *dims])
    return Compiled(kpi, query, f"{sql} ORDER BY {order}", params)


def _conditions(kpi: Kpi, query: KpiQuery) -> tuple[list[str], list[Any]]:
    conds: list[str] = []
    params: list[Any] = []
    if query.start is not None:  # whole periods: labels to their first instants
        conds.append(f"{q(kpi.fact.time)} >= ?")
        params.append(calendar.start_of(query.grain, query.start))
    if query.end is not None:
        conds.append(f"{q(kpi.fact.time)} < ?")
        params.append(calendar.start_of(query.grain, query.end))
    for name, value in query.where:
        conds.append(f"CAST({q(name)} AS VARCHAR) = ?")
        params.append(value)
    return conds, params


def _users(kpi: Kpi) -> str:
    population = f" FILTER (WHERE {q(kpi.population)})" if kpi.population else ""
    return f"COUNT(DISTINCT {q(kpi.fact.user)}){population} AS users"


def _is_total(by: tuple[str, ...]) -> str:
    if not by:
        return "false AS is_total"
    return f"GROUPING({q(by[0])}) = 1 AS is_total"


def _grouping_sets(by: tuple[str, ...]) -> str:
    if not by:
        return "period"
    cells = ", ".join(["period", *(q(d) for d in by)])
    return f"GROUPING SETS (({cells}), (period))"


def _filter(*conditions: str | None) -> str:
    parts = [q(c) for c in conditions if c]
    return f" FILTER (WHERE {' AND '.join(parts)})" if parts else ""


def _simple(m: Simple) -> str:
    if isinstance(m, Count):
        return f"COUNT(*){_filter(m.column, m.where)}"
    if isinstance(m, CountDistinct):
        return f"COUNT(DISTINCT {q(m.column)}){_filter(m.where)}"
    if isinstance(m, Sum):
        return f"SUM({q(m.column)}){_filter(m.where)}"
    if isinstance(m, Avg):
        return f"AVG({q(m.column)}){_filter(m.where)}"
    assert isinstance(m, Quantile)
    return f"quantile_cont({q(m.column)}, {m.p}){_filter(m.where)}"


def _measure(m: Measure) -> str:
    if isinstance(m, Ratio):
        return f"CAST({_simple(m.numerator)} AS DOUBLE) / NULLIF({_simple(m.denominator)}, 0)"
    assert not isinstance(m, ShareWithin)
    return f"CAST({_simple(m)} AS DOUBLE)"


def _share_within(
    kpi: Kpi, m: ShareWithin, query: KpiQuery, period: str, where: str, users: str, fact_sql: str
) -> str:
    """Each cell's measure over the same measure for all values of ``m.across``."""
    others = [d for d in query.by if d != m.across]
    cell_set = ", ".join(["period", *(q(d) for d in query.by)])
    whole_set = ", ".join(["period", *(q(d) for d in others)])
    join = " AND ".join(["c.period = w.period", *(f"c.{q(d)} IS NOT DISTINCT FROM w.{q(d)}"
                                                  for d in others)])  # fmt: skip
    dims = ", ".join(f"c.{q(d)}" for d in query.by)
    return (
        f"WITH fact AS ({fact_sql}), base AS (SELECT *, {period} FROM fact WHERE {where}), "
        f"cells AS (SELECT period, {', '.join(q(d) for d in query.by)}, "
        f"GROUPING({q(m.across)}) AS whole, {_simple(m.measure)} AS n, {users} FROM base "
        f"GROUP BY GROUPING SETS (({cell_set}), ({whole_set}))) "
        f"SELECT c.period, {dims}, false AS is_total, CAST(c.n AS DOUBLE) / NULLIF(w.n, 0) "
        f"AS value, c.users FROM cells c JOIN cells w ON c.whole = 0 AND w.whole = 1 AND {join}"
    )

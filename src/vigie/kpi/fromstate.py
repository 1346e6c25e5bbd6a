"""Read a fact's states (``kpi.state``): its KPIs' day cells as the rollups keep them, and
the counts of every cell its suppression pattern is planned on."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from vigie.kpi import calendar
from vigie.kpi.model import Count, CountDistinct, Grain, Kpi, Quantile, Ratio, ShareWithin, Simple
from vigie.kpi.protect import Key, Stats
from vigie.kpi.query import q
from vigie.kpi.state import Plan, when


def rollup_sql(plan: Plan, kpi: Kpi, dims: tuple[str, ...], days: str,
               types: dict[str, str]) -> str:  # fmt: skip
    """A KPI's day cells for the rollup of ``dims`` (one dimension at most) on the days
    ``days`` (SQL on ``period``) selects: the rows ``compile_query`` gives on the fact."""
    dim = dims[0] if dims else None
    which = f"(dim IS NULL OR dim = '{dim}')" if dim else "dim IS NULL"
    withs = [
        f"c AS (SELECT * FROM {plan.table('cnt')} WHERE grain = 'day' AND {days} AND {which} "
        f"AND c0 <> 0), k AS (SELECT * FROM {plan.table('cells')} WHERE grain = 'day' AND "
        f"{days} AND {which})"
    ]
    joins = ["LEFT JOIN k ON k.period = c.period AND k.dim IS NOT DISTINCT FROM c.dim AND "
             "k.value IS NOT DISTINCT FROM c.value"]  # fmt: skip
    person = plan.families[0]
    users = f"COALESCE(k.{person.k(person.filters.index(kpi.population))}, 0)"
    m = kpi.measure
    if isinstance(m, ShareWithin):
        assert dim is not None
        n = _simple(plan, withs, joins, days, which, m.measure)
        return (
            f"WITH {', '.join(withs)}, x AS (SELECT c.period, c.dim, c.value, {n} AS n, "
            f"{users} AS users FROM c {' '.join(joins)}) SELECT x.period, CAST(x.value AS "
            f"{types[dim]}) AS {q(dim)}, false AS is_total, CAST(x.n AS DOUBLE) / "
            "NULLIF(w.n, 0) AS value, x.users FROM x JOIN x w ON w.period = x.period AND "
            "w.dim IS NULL WHERE x.dim IS NOT NULL"
        )
    if isinstance(m, Ratio):
        num = _simple(plan, withs, joins, days, which, m.numerator)
        den = _simple(plan, withs, joins, days, which, m.denominator)
        value = f"CAST({num} AS DOUBLE) / NULLIF({den}, 0)"
    else:
        value = f"CAST({_simple(plan, withs, joins, days, which, m)} AS DOUBLE)"
    cols = ["c.period"]
    if dim:
        cols.append(f"CAST(c.value AS {types[dim]}) AS {q(dim)}")
    cols += [("c.dim IS NULL" if dim else "false") + " AS is_total", f"{value} AS value",
             f"{users} AS users"]  # fmt: skip
    return f"WITH {', '.join(withs)} SELECT {', '.join(cols)} FROM c {' '.join(joins)}"


def _simple(plan: Plan, withs: list[str], joins: list[str], days: str, which: str,
            m: Simple) -> str:  # fmt: skip
    if isinstance(m, Count):
        return f"c.c{plan.counter(when(m.column, m.where))}"
    if isinstance(m, CountDistinct):
        fam = plan.family(m.column)
        return f"COALESCE(k.{fam.k(fam.filters.index(m.where))}, 0)"
    assert isinstance(m, Quantile)
    i, name = plan.quantiles.index((m.column, m.where)), f"q{len(withs)}"
    withs.append(
        f"{name}h AS (SELECT period, dim, value, x, SUM(n) OVER (PARTITION BY period, dim, "
        "value ORDER BY x ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS cum, "
        f"CAST(SUM(n) OVER (PARTITION BY period, dim, value) - 1 AS DOUBLE) * "
        f"CAST({m.p!r} AS DOUBLE) AS rn FROM {plan.table('hist')} WHERE q = {i} AND {days} "
        f"AND {which}), {name} AS (SELECT period, dim, value, ANY_VALUE(rn) AS rn, MIN(x) "
        "FILTER (WHERE cum > floor(rn)) AS lo, MIN(x) FILTER (WHERE cum > ceil(rn)) AS hi "
        f"FROM {name}h GROUP BY ALL)"
    )
    joins.append(f"LEFT JOIN {name} ON {name}.period = c.period AND {name}.dim IS NOT "
                 f"DISTINCT FROM c.dim AND {name}.value IS NOT DISTINCT FROM c.value")  # fmt: skip
    d = f"({name}.rn - floor({name}.rn))"  # DuckDB's own interpolation, to the last bit
    return (f"CASE WHEN floor({name}.rn) = ceil({name}.rn) THEN {name}.lo ELSE "
            f"{name}.lo * (1 - {d}) + {name}.hi * {d} END")  # fmt: skip


def read_stats(con: Any, plan: Plan, until: datetime) -> dict[Key, Stats]:
    """Every cell the pattern is planned on, before ``until``: people per population and
    whether each quantity has rows (``protect.Stats``), as ``compute_pattern`` counts them."""
    person = plan.families[0]
    users = ", ".join(f"COALESCE(k.{person.k(i)}, 0)" for i in range(plan.npop))
    mass = ", ".join(f"c.c{j} > 0" for j in plan.supports)
    sums = ", ".join(f"SUM(c{j}) AS c{j}" for j in sorted({0, *plan.supports}))
    on = ("k.grain = c.grain AND k.period = c.period AND k.dim IS NOT DISTINCT FROM c.dim "
          "AND k.value IS NOT DISTINCT FROM c.value")  # fmt: skip
    cnt, cells = plan.table("cnt"), plan.table("cells")
    grains: tuple[Grain, ...] = ("week", "month")
    coarse = " UNION ALL ".join(
        f"SELECT '{g}' AS grain, {calendar.period_sql(g, 'period')} AS period, dim, value, "
        f"{sums} FROM {cnt} WHERE grain = 'day' AND period < $1 GROUP BY ALL"
        for g in grains
    )
    kept = ", ".join(f"c{j}" for j in sorted({0, *plan.supports}))
    sql = (
        f"WITH c AS (SELECT grain, period, dim, value, {kept} FROM {cnt} WHERE period < $1 "
        f"UNION ALL {coarse}) "
        f"SELECT c.grain, c.period, c.dim, c.value, {users}, {mass} FROM c LEFT JOIN {cells} k "
        f"ON {on} WHERE c.c0 <> 0"
    )
    out: dict[Key, Stats] = {}
    for grain, period, dim, value, *rest in con.execute(sql, [until]).fetchall():
        out[(grain, period, dim, value)] = Stats(
            tuple(int(u) for u in rest[: plan.npop]), tuple(bool(x) for x in rest[plan.npop :])
        )
    return out

"""Add a fact's signed rows to its states (``kpi.state``) and count the touched cells again."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from vigie.kpi import calendar
from vigie.kpi.delta import SIGN
from vigie.kpi.query import q
from vigie.kpi.state import USER, Family, Plan, merge, when

# A source of fact rows for some people in a time range (the refresh reads the fact).
Redo = Callable[[str, str, datetime, datetime], str]  # (column, entities table, from, to)
MONTH_BASE = "date_trunc('week', {m} + INTERVAL 3 DAY)"  # the Monday that starts month m


def apply(con: Any, plan: Plan, source: str, redo: Redo) -> None:
    """Add ``source``'s rows (fact columns and ``SIGN``) to every state."""
    t = q(plan.fact.time)
    sums = ", ".join(f"SUM({SIGN} * ({c}))::HUGEINT AS c{i}" for i, c in enumerate(plan.counters))
    counts = [f"c{i}" for i in range(len(plan.counters))]
    parts = [f"SELECT 'hour' AS grain, date_trunc('hour', {t}) AS period, {_cell(None)}, "
             f"{sums} FROM {source} GROUP BY ALL"]  # fmt: skip
    parts += [f"SELECT 'day' AS grain, date_trunc('day', {t}) AS period, {_cell(d)}, {sums} "
              f"FROM {source} GROUP BY ALL" for d in plan.dims(True)]  # fmt: skip
    merge(con, plan.table("cnt"), ("grain", "period", "dim", "value"), counts,
          " UNION ALL ".join(parts), "+")  # fmt: skip
    if plan.quantiles:
        parts = []
        for i, (column, where) in enumerate(plan.quantiles):
            held = f"{q(column)} IS NOT NULL" + (f" AND {q(where)}" if where else "")
            parts += [f"SELECT {i} AS q, date_trunc('day', {t}) AS period, {_cell(d)}, "
                      f"CAST({q(column)} AS DOUBLE) AS x, SUM({SIGN})::BIGINT AS n "
                      f"FROM {source} WHERE {held} GROUP BY ALL" for d in plan.dims(False)]  # fmt: skip
        merge(con, plan.table("hist"), ("q", "period", "dim", "value", "x"), ["n"],
              " UNION ALL ".join(parts), "+")  # fmt: skip
    for fam in plan.families:
        _people(con, plan, fam, source, redo, hours=False)
        if fam.name == USER:
            _people(con, plan, fam, source, redo, hours=True)


def _cell(dim: str | None) -> str:
    if dim is None:
        return "NULL::VARCHAR AS dim, NULL::VARCHAR AS value"
    return f"'{dim}' AS dim, CAST({q(dim)} AS VARCHAR) AS value"


def _people(con: Any, plan: Plan, fam: Family, source: str, redo: Redo, *, hours: bool) -> None:
    """The family's bits: set by rows gained; read again from the fact for the people who
    lost rows in a period (a bit may still hold by another row)."""
    t, entity = q(plan.fact.time), q(fam.column)
    table = plan.table("ph" if hours else f"pm_{fam.name}")
    period = "date_trunc('day', {t})" if hours else calendar.period_sql("month", "{t}")
    period = period.format(t=t)
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE vigie_lost AS SELECT DISTINCT {period} AS period, "
        f"{entity} AS entity FROM {source} WHERE {SIGN} < 0 AND {entity} IS NOT NULL"
    )
    keys = ("period", "entity") if hours else ("period", "dim", "value", "entity")
    bits = [f"b{i}" for i in range(len(fam.filters))]
    lost = (f"EXISTS (SELECT 1 FROM vigie_lost l WHERE l.period = {period} "
            f"AND l.entity = {entity})")  # fmt: skip
    gained = _bits_sql(plan, fam, source, hours, f"{SIGN} > 0 AND NOT {lost}")
    (n, start, end) = con.execute("SELECT COUNT(*), MIN(period), MAX(period) FROM vigie_lost").fetchone()
    if n:
        con.execute(
            f"DELETE FROM {table} WHERE rowid IN (SELECT p.rowid FROM {table} p JOIN vigie_lost l "
            "ON p.period = l.period AND p.entity = l.entity)"
        )
        stop = end + timedelta(days=1) if hours else calendar.first_week(calendar.next_month(end))
        rows = redo(fam.column, "vigie_lost", _first_day(start, hours), stop)
        again = _bits_sql(plan, fam, rows, hours, lost, signed=False)
        nonzero = " OR ".join(f"{b} <> 0" for b in bits)
        con.execute(f"INSERT INTO {table} SELECT * FROM ({again}) WHERE {nonzero}")
    merge(con, table, keys, bits, gained, "|")
    con.execute("DROP TABLE vigie_lost")


def _first_day(period: datetime, hours: bool) -> datetime:
    return period if hours else calendar.first_week(period)


def _bits_sql(plan: Plan, fam: Family, source: str, hours: bool, where: str,
              signed: bool = True) -> str:  # fmt: skip
    """One row per key of ``source``'s rows that ``where`` selects: the bit of each row's
    day in its month (its hour in its day), or-ed per filter."""
    t, entity = q(plan.fact.time), q(fam.column)
    if hours:
        period, bit = f"date_trunc('day', {t})", f"hour({t})"
    else:
        month = calendar.period_sql("month", t)
        period = month
        bit = f"date_diff('day', {MONTH_BASE.format(m=month)}, date_trunc('day', {t}))"
    ors = ", ".join(f"bit_or(CASE WHEN {when(f)} = 1 THEN 1::BIGINT << {bit} ELSE 0 END) AS b{i}"
                    for i, f in enumerate(fam.filters))  # fmt: skip
    held = f"{entity} IS NOT NULL AND {where}"
    if hours:
        return f"SELECT {period} AS period, {entity} AS entity, {ors} FROM {source} WHERE {held} GROUP BY ALL"
    dims = plan.dims(fam.every_dim)
    return " UNION ALL ".join(
        f"SELECT {period} AS period, {_cell(d)}, {entity} AS entity, {ors} FROM {source} "
        f"WHERE {held} GROUP BY ALL" for d in dims
    )


# -- counting the touched cells again -------------------------------------------------------


def recount(con: Any, plan: Plan, days: list[datetime] | None, until: datetime) -> None:
    """Rewrite ``cells`` for the periods holding one of ``days`` (None: every period):
    people per day cell, per hour, and per week and month cell before ``until``."""
    if days is None:
        days = [d for (d,) in con.execute(
            f"SELECT DISTINCT period FROM {plan.table('cnt')} WHERE grain = 'day'").fetchall()]  # fmt: skip
    days = sorted(set(days))
    weeks = sorted({calendar.week_of(d) for d in days})
    months = sorted({calendar.month_of_week(w) for w in weeks})
    _periods(con, "vigie_tdays", [(d, calendar.month_of_week(calendar.week_of(d)),
                                  (d - calendar.first_week(calendar.month_of_week(calendar.week_of(d)))).days)
                                 for d in days])  # fmt: skip
    _periods(con, "vigie_weeks", [(w, calendar.month_of_week(w), _week_mask(w, until)) for w in weeks])
    _periods(con, "vigie_months", [(m, m, _until_mask(m, until)) for m in months])
    table = plan.table("cells")
    con.execute(
        f"DELETE FROM {table} WHERE (grain = 'day' AND period IN (SELECT p FROM vigie_tdays)) "
        "OR (grain = 'hour' AND date_trunc('day', period) IN (SELECT p FROM vigie_tdays)) "
        "OR (grain = 'week' AND period IN (SELECT p FROM vigie_weeks)) "
        "OR (grain = 'month' AND period IN (SELECT p FROM vigie_months))"
    )
    parts = []
    for fam in plan.families:
        day = ", ".join(f"COUNT(*) FILTER (WHERE (x.b{i} >> t.a) & 1 = 1)" for i in range(len(fam.filters)))
        parts.append(_wide(plan, fam, "'day'", f"t.p, x.dim, x.value, {day}",
                           f"{plan.table(f'pm_{fam.name}')} x JOIN vigie_tdays t ON x.period = t.m"))  # fmt: skip
    person = plan.families[0]
    masked = ", ".join(f"COUNT(*) FILTER (WHERE x.b{i} & t.a <> 0)" for i in range(len(person.filters)))
    for grain, periods in (("week", "vigie_weeks"), ("month", "vigie_months")):
        parts.append(_wide(plan, person, f"'{grain}'", f"t.p, x.dim, x.value, {masked}",
                           f"{plan.table('pm_' + USER)} x JOIN {periods} t ON x.period = t.m"))  # fmt: skip
    hourly = ", ".join(f"COUNT(*) FILTER (WHERE (x.b{i} >> r.h) & 1 = 1)"
                       for i in range(len(person.filters)))  # fmt: skip
    parts.append(_wide(plan, person, "'hour'", "x.period + to_hours(r.h), NULL::VARCHAR, "
                       f"NULL::VARCHAR, {hourly}", f"{plan.table('ph')} x CROSS JOIN range(24) "
                       "r(h) WHERE x.period IN (SELECT p FROM vigie_tdays)"))  # fmt: skip
    union = " UNION ALL BY NAME ".join(f"({part})" for part in parts)
    ks = ", ".join(f"MAX({k}) AS {k}" for k in plan.ks)
    con.execute(f"INSERT INTO {table} BY NAME SELECT grain, period, dim, value, {ks} "
                f"FROM ({union}) GROUP BY ALL")  # fmt: skip
    for name in ("vigie_tdays", "vigie_weeks", "vigie_months"):
        con.execute(f"DROP TABLE {name}")


def _wide(plan: Plan, fam: Family, grain: str, select: str, source: str) -> str:
    """``select`` (period, dim, value, one count per filter) named as ``cells`` columns."""
    names = ", ".join(fam.k(i) for i in range(len(fam.filters)))
    return (f"SELECT {grain} AS grain, * FROM (SELECT {select} FROM {source} GROUP BY ALL) "
            f"AS s(period, dim, value, {names})")  # fmt: skip


def _periods(con: Any, name: str, rows: list[tuple[datetime, datetime, int]]) -> None:
    con.execute(f"CREATE OR REPLACE TEMP TABLE {name} (p TIMESTAMP, m TIMESTAMP, a BIGINT)")
    if rows:
        con.executemany(f"INSERT INTO {name} VALUES (?, ?, ?)", [list(r) for r in rows])


def _until_mask(month: datetime, until: datetime) -> int:
    """Bits of the month's days before ``until``."""
    days = max(0, min(62, (until - calendar.first_week(month)).days))
    return (1 << days) - 1


def _week_mask(week: datetime, until: datetime) -> int:
    month = calendar.month_of_week(week)
    return (127 << (week - calendar.first_week(month)).days) & _until_mask(month, until)

"""Add a fact's signed rows to its states (``kpi.state``), and the people they add to or
take from each cell to ``cells``: from the bits that changed, never a scan of a month."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from vigie.kpi import calendar
from vigie.kpi.delta import SIGN
from vigie.kpi.query import q
from vigie.kpi.state import USER, Family, Plan, merge, update_bits, when

# The fact's rows now, for the entities of a table, in [start, stop): a table's name.
Redo = Callable[[str, str, datetime, datetime], str]
MONTH_BASE = "date_trunc('week', {m} + INTERVAL 3 DAY)"  # the Monday that starts month m
CELL = ("grain", "period", "dim", "value")


def derived(time: str) -> str:
    """The columns every source of signed rows carries besides the fact's, computed once:
    hour, day, month (of the nested calendar), day in the month, hour in the day."""
    t = q(time)
    month = calendar.period_sql("month", t)
    return (f"date_trunc('hour', {t}) AS _vh, date_trunc('day', {t}) AS _vd, {month} AS _vm, "
            f"date_diff('day', {MONTH_BASE.format(m=month)}, date_trunc('day', {t})) AS _vi, "
            f"hour({t}) AS _vhh")  # fmt: skip


def apply(con: Any, plan: Plan, source: str, redo: Redo, until: datetime,
          *, full: bool = False) -> None:  # fmt: skip
    """Add ``source``'s rows (fact columns and ``SIGN``) to every state; people counted
    per week and month are those with a row before ``until``. ``full``: the states are
    empty and ``source`` is every row of the fact (the people are counted from it)."""
    sums = ", ".join(f"SUM({SIGN} * ({c}))::HUGEINT AS c{i}" for i, c in enumerate(plan.counters))
    counts = [f"c{i}" for i in range(len(plan.counters))]
    parts = [f"SELECT 'hour' AS grain, _vh AS period, {_cell(None)}, "
             f"{sums} FROM {source} GROUP BY ALL"]  # fmt: skip
    parts += [f"SELECT 'day' AS grain, _vd AS period, {_cell(d)}, {sums} "
              f"FROM {source} GROUP BY ALL" for d in plan.dims(True)]  # fmt: skip
    merge(con, plan.table("cnt"), CELL, counts, " UNION ALL ".join(parts))
    if plan.quantiles:
        parts = []
        for i, (column, where) in enumerate(plan.quantiles):
            held = f"{q(column)} IS NOT NULL" + (f" AND {q(where)}" if where else "")
            parts += [f"SELECT {i} AS q, _vd AS period, {_cell(d)}, "
                      f"CAST({q(column)} AS DOUBLE) AS x, SUM({SIGN})::BIGINT AS n "
                      f"FROM {source} WHERE {held} GROUP BY ALL"
                      for d in plan.dims(False)]  # fmt: skip
        merge(con, plan.table("hist"), ("q", "period", "dim", "value", "x"), ["n"],
              " UNION ALL ".join(parts))  # fmt: skip
    for fam in plan.families:
        for hours in (False, True) if fam.name == USER else (False,):
            if full:
                table = plan.table("ph" if hours else f"pm_{fam.name}")
                con.execute(
                    f"INSERT INTO {table} BY NAME {_bits_sql(plan, fam, source, hours, 'true')}"
                )
                _counted_cells(con, plan, fam, source, hours, until)
            else:
                _people(con, plan, fam, source, redo, until, hours=hours)


def _cell(dim: str | None) -> str:
    if dim is None:
        return "NULL::VARCHAR AS dim, NULL::VARCHAR AS value"
    return f"'{dim}' AS dim, CAST({q(dim)} AS VARCHAR) AS value"


def _people(con: Any, plan: Plan, fam: Family, source: str, redo: Redo, until: datetime,
            *, hours: bool) -> None:  # fmt: skip
    """The family's bits: set by rows gained; read again from the fact for the people who
    lost rows in a period (a bit may still hold by another row); then the cells."""
    entity = q(fam.column)
    table = plan.table("ph" if hours else f"pm_{fam.name}")
    period = "_vd" if hours else "_vm"
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE vigie_lost AS SELECT DISTINCT {period} AS period, "
        f"{entity} AS entity FROM {source} WHERE {SIGN} < 0 AND {entity} IS NOT NULL"
    )
    keys = ("period", "entity") if hours else ("period", "dim", "value", "entity")
    bits = [f"b{i}" for i in range(len(fam.filters))]
    lost = f"EXISTS (SELECT 1 FROM vigie_lost l WHERE l.period = {period} AND l.entity = {entity})"
    row = con.execute("SELECT COUNT(*), MIN(period), MAX(period) FROM vigie_lost").fetchone()
    gained = _bits_sql(
        plan, fam, source, hours, f"{SIGN} > 0" + (f" AND NOT {lost}" if row[0] else "")
    )
    again = None
    if row[0]:
        if hours:
            start, end = row[1], row[2] + timedelta(days=1)
        else:
            start, end = (
                calendar.first_week(row[1]),
                calendar.first_week(calendar.next_month(row[2])),
            )
        again = _bits_sql(plan, fam, redo(fam.column, "vigie_lost", start, end), hours, lost)
    update_bits(con, table, keys, bits, gained, "vigie_lost" if row[0] else None, again)
    _moved_cells(con, plan, fam, hours, until)
    con.execute("DROP TABLE vigie_moved")
    con.execute("DROP TABLE vigie_lost")


def _bits_sql(plan: Plan, fam: Family, source: str, hours: bool, where: str) -> str:
    """One row per key of ``source``'s rows that ``where`` selects: the bit of each row's
    day in its month (its hour in its day), or-ed per filter."""
    entity = q(fam.column)
    period, bit = ("_vd", "_vhh") if hours else ("_vm", "_vi")
    ors = ", ".join(f"bit_or(CASE WHEN {when(f)} = 1 THEN 1::BIGINT << {bit} ELSE 0 END) AS b{i}"
                    for i, f in enumerate(fam.filters))  # fmt: skip
    held = f"{entity} IS NOT NULL AND {where}"
    dims = [None] if hours else plan.dims(fam.every_dim)
    return " UNION ALL ".join(
        f"SELECT {period} AS period, {'' if hours else _cell(d) + ', '}{entity} AS entity, "
        f"{ors} FROM {source} WHERE {held} GROUP BY ALL"
        for d in dims
    )


def _moved_cells(con: Any, plan: Plan, fam: Family, hours: bool, until: datetime) -> None:
    """The people ``vigie_moved`` (old and new bits per key) adds to or takes from each
    cell: per day (per hour), and for the person, per week and month before ``until``."""
    n = len(fam.filters)
    ks = [fam.k(i) for i in range(n)]

    def flips(bit: str) -> str:
        return ", ".join(f"SUM((((n{i} >> {bit}) & 1) - ((o{i} >> {bit}) & 1))::BIGINT) AS {k}"
                         for i, k in enumerate(ks))  # fmt: skip

    changed = " OR ".join(f"((xor(o{i}, n{i}) >> r.i) & 1) = 1" for i in range(n))
    if hours:
        parts = [f"SELECT 'hour' AS grain, period + to_hours(r.i) AS period, NULL::VARCHAR AS "
                 f"dim, NULL::VARCHAR AS value, {flips('r.i')} FROM vigie_moved, range(24) r(i) "
                 f"WHERE {changed} GROUP BY ALL"]  # fmt: skip
    else:
        base = MONTH_BASE.format(m="period")
        parts = [f"SELECT 'day' AS grain, {base} + to_days(r.i::INTEGER) AS period, dim, value, "
                 f"{flips('r.i')} FROM vigie_moved, range(35) r(i) WHERE {changed} "
                 "GROUP BY ALL"]  # fmt: skip
        if fam.name == USER:
            until_bits = (f"((1::BIGINT << least(62, greatest(0, date_diff('day', {base}, "
                          f"TIMESTAMP '{until.isoformat(sep=' ')}')))) - 1)")  # fmt: skip
            parts.append(_masked("week", f"{base} + to_days((7 * r.i)::INTEGER)",
                                 f"(127::BIGINT << (7 * r.i)) & {until_bits}", ks,
                                 "vigie_moved, range(5) r(i)"))  # fmt: skip
            parts.append(_masked("month", "period", until_bits, ks, "vigie_moved"))
    merge(con, plan.table("cells"), CELL, ks, " UNION ALL ".join(parts), drop_zero=False)


def _counted_cells(con: Any, plan: Plan, fam: Family, source: str, hours: bool,
                   until: datetime) -> None:  # fmt: skip
    """The people of every cell, counted from every row of the fact (a full rebuild)."""
    entity = q(fam.column)
    n = len(fam.filters)
    ks = [fam.k(i) for i in range(n)]
    if hours:
        counts = ", ".join(f"COUNT(DISTINCT {entity}) FILTER (WHERE {when(f)} = 1) AS {k}"
                           for f, k in zip(fam.filters, ks, strict=True))  # fmt: skip
        merge(con, plan.table("cells"), CELL, ks,
              f"SELECT 'hour' AS grain, _vh AS period, NULL::VARCHAR AS dim, NULL::VARCHAR AS "
              f"value, {counts} FROM {source} WHERE {entity} IS NOT NULL GROUP BY ALL",
              drop_zero=False)  # fmt: skip
        return
    before = f"TIMESTAMP '{until.isoformat(sep=' ')}'"
    flags = ", ".join(f"bool_or({when(f)} = 1) AS f{i}" for i, f in enumerate(fam.filters))
    for dim in plan.dims(fam.every_dim):
        people = (f"SELECT _vd AS d, {_cell(dim)}, {entity} AS e, {flags} FROM {source} "
                  f"WHERE {entity} IS NOT NULL GROUP BY ALL")  # fmt: skip
        day = ", ".join(f"COUNT(*) FILTER (WHERE f{i}) AS {k}" for i, k in enumerate(ks))
        parts = [f"SELECT 'day' AS grain, d AS period, dim, value, {day} FROM p GROUP BY ALL"]
        if fam.name == USER:
            seen = ", ".join(f"COUNT(DISTINCT e) FILTER (WHERE f{i} AND d < {before}) AS {k}"
                             for i, k in enumerate(ks))  # fmt: skip
            for grain in ("week", "month"):
                label = calendar.period_sql(grain, "d")
                parts.append(f"SELECT '{grain}' AS grain, {label} AS period, dim, value, {seen} "
                             "FROM p GROUP BY ALL")  # fmt: skip
        merge(con, plan.table("cells"), CELL, ks,
              f"WITH p AS MATERIALIZED ({people}) " + " UNION ALL ".join(parts),
              drop_zero=False)  # fmt: skip


def _masked(grain: str, period: str, mask: str, ks: list[str], source: str) -> str:
    counts = ", ".join(f"SUM(((n{i} & {mask}) <> 0)::BIGINT - ((o{i} & {mask}) <> 0)::BIGINT) "
                       f"AS {k}" for i, k in enumerate(ks))  # fmt: skip
    return (f"SELECT '{grain}' AS grain, {period} AS period, dim, value, {counts} FROM {source} "
            "GROUP BY ALL")  # fmt: skip


def recount_published(con: Any, plan: Plan, start: datetime, until: datetime) -> None:
    """Days in [start, until) were published since the last refresh: the people of the
    weeks and months holding them are counted again over their days before ``until``."""
    months = sorted({calendar.month_of_week(calendar.week_of(start + timedelta(days=i)))
                     for i in range((until - start).days)})  # fmt: skip
    if not months:
        return
    fam = plan.families[0]
    among = ", ".join(f"TIMESTAMP '{m.isoformat(sep=' ')}'" for m in months)
    weeks = ", ".join(f"TIMESTAMP '{w.isoformat(sep=' ')}'" for m in months
                      for w in _weeks_of(m))  # fmt: skip
    cells = plan.table("cells")
    con.execute(f"DELETE FROM {cells} WHERE (grain = 'month' AND period IN ({among})) OR "
                f"(grain = 'week' AND period IN ({weeks}))")  # fmt: skip
    n = len(fam.filters)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE vigie_moved AS SELECT period, dim, value, "
        + ", ".join(f"0::BIGINT AS o{i}, b{i} AS n{i}" for i in range(n))
        + f" FROM {plan.table('pm_' + USER)} WHERE period IN ({among})"
    )  # fmt: skip
    ks = [fam.k(i) for i in range(n)]
    base = MONTH_BASE.format(m="period")
    until_bits = (f"((1::BIGINT << least(62, greatest(0, date_diff('day', {base}, "
                  f"TIMESTAMP '{until.isoformat(sep=' ')}')))) - 1)")  # fmt: skip
    week = f"(127::BIGINT << (7 * r.i)) & {until_bits}"
    parts = [_masked("week", f"{base} + to_days((7 * r.i)::INTEGER)", week, ks,
                     "vigie_moved, range(5) r(i)"),
             _masked("month", "period", until_bits, ks, "vigie_moved")]  # fmt: skip
    merge(con, cells, CELL, ks, " UNION ALL ".join(parts), drop_zero=False)
    con.execute("DROP TABLE vigie_moved")


def _weeks_of(month: datetime) -> list[datetime]:
    first, stop = calendar.first_week(month), calendar.first_week(calendar.next_month(month))
    return [first + timedelta(days=7 * i) for i in range((stop - first).days // 7)]


def until_mask(month: datetime, until: datetime) -> int:
    """Bits of the month's days before ``until`` (as the SQL above computes them)."""
    days = max(0, min(62, (until - calendar.first_week(month)).days))
    return (1 << days) - 1

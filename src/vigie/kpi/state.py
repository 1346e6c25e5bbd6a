"""The exact, mergeable states a fact's rollups and suppression pattern are read from.

The rows a sync added to a fact count +1, the rows it took away -1 (``kpi.delta``), and a
refresh adds them to these tables, so that it costs what changed:

- ``cnt``: per hour (totals) and per day cell (total, and each value of each dimension),
  the fact's rows and each quantity its KPIs count (attempts, failures...): sums;
- ``hist``: per day cell of the rollups' dimensions, the rows per value of each quantile's
  column (a quantile of those values is then exact): sums;
- ``pm_<family>``: per month cell and person (or device, for a distinct count), a bit per
  day of the month they have a row on, per population; ``ph``: per day and person, a bit
  per hour. Rows gained set bits; the people who lost rows get their bits read again
  from the fact, for them only. A day, week or month then counts the people whose bits
  meet it, whatever the history: one row per person and value per month.
- ``cells``: those counts per cell, rewritten for the periods a refresh touched.

A cell's key is (period, dimension, value as text); the totals have no dimension.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vigie.kpi.model import (
    Count,
    CountDistinct,
    Fact,
    Metrics,
    Quantile,
)
from vigie.kpi.protect import shape_of, simples
from vigie.kpi.query import q
from vigie.stores.meta import KPI_STATE_DB

USER = "u"  # the family of the fact's person column


@dataclass(frozen=True)
class Family:
    """Distinct values of one column counted per cell, under each of some filters."""

    name: str  # USER, or d<i>
    column: str
    filters: tuple[str | None, ...]
    every_dim: bool  # every dimension (the pattern counts people there), else the rollups'

    def k(self, i: int) -> str:
        """The ``cells`` column counting this family under filter ``i``."""
        return f"k_{self.name}_{i}"


@dataclass(frozen=True)
class Plan:
    """What the refresh keeps for one fact."""

    fact: Fact
    counters: tuple[str, ...]  # SQL over a fact row, summed per cell; [0] counts rows
    supports: tuple[int, ...]  # per pattern quantity (``protect.Shape``), its counter
    families: tuple[Family, ...]  # [0]: the person, whose first filters are the populations
    quantiles: tuple[tuple[str, str | None], ...]  # (column, where)
    rollup_dims: tuple[str, ...]
    npop: int
    reads: tuple[str, ...]  # the fact's columns the states read

    def table(self, part: str) -> str:
        return f"{KPI_STATE_DB}.main.{q(f'{self.fact.name}__{part}')}"

    def counter(self, sql: str) -> int:
        return self.counters.index(sql)

    def family(self, column: str) -> Family:
        return next(f for f in self.families if f.column == column)

    def dims(self, every: bool) -> list[str | None]:
        """The cells' dimensions: None for the totals, then each one."""
        return [None, *(self.fact.dimensions if every else self.rollup_dims)]

    @property
    def ks(self) -> list[str]:
        return [f.k(i) for f in self.families for i in range(len(f.filters))]


def unsupported(metrics: Metrics, fact: Fact) -> str | None:
    """Why the fact's KPIs cannot be kept as mergeable counts (None: they can)."""
    for kpi in metrics.kpis.values():
        if kpi.fact.name == fact.name:
            for simple in simples(kpi.measure):
                if not isinstance(simple, Count | CountDistinct | Quantile):
                    return f"KPI '{kpi.name}' uses {type(simple).__name__.lower()}"
    return None


def plan_for(metrics: Metrics, fact: Fact) -> Plan:
    shape = shape_of(metrics, fact)
    counters: list[str] = ["1"]
    supports = tuple(_add(counters, when(s)) for s in shape.supports)
    filters: dict[str, list[str | None]] = {fact.user: list(shape.populations)}
    quantiles: list[tuple[str, str | None]] = []
    reads: list[str | None] = [fact.time, *fact.dimensions, *shape.supports]
    for kpi in metrics.kpis.values():
        if kpi.fact.name != fact.name:
            continue
        for simple in simples(kpi.measure):
            reads += [getattr(simple, "column", None), simple.where]
            if isinstance(simple, Count):
                _add(counters, when(simple.column, simple.where))
            elif isinstance(simple, CountDistinct):
                _add(filters.setdefault(simple.column, []), simple.where)
            elif isinstance(simple, Quantile):
                _add(quantiles, (simple.column, simple.where))
    families = tuple(
        Family(USER if col == fact.user else f"d{i}", col, tuple(wanted), col == fact.user)
        for i, (col, wanted) in enumerate(filters.items())
    )
    dims = tuple(dict.fromkeys(d for group in fact.rollups for d in group))
    reads += [c for f in families for c in (f.column, *f.filters)]
    return Plan(fact, tuple(counters), supports, families, tuple(quantiles), dims,
                len(shape.populations), tuple(dict.fromkeys(c for c in reads if c)))  # fmt: skip


def _add(items: list[Any], item: object) -> int:
    if item not in items:
        items.append(item)
    return items.index(item)


def when(*conditions: str | None) -> str:
    """1 where every condition (a boolean column) holds, else 0; 1 without conditions."""
    parts = [q(c) for c in conditions if c]
    return f"CASE WHEN {' AND '.join(parts)} THEN 1 ELSE 0 END" if parts else "1"


# -- the tables -----------------------------------------------------------------------------


def ddl(plan: Plan, types: dict[str, str]) -> list[str]:
    """CREATE statements of the plan's state tables (empty); ``types``: the fact's."""
    cell = "period TIMESTAMP, dim VARCHAR, value VARCHAR"
    counters = ", ".join(f"c{i} HUGEINT" for i in range(len(plan.counters)))
    out = [
        f"CREATE TABLE {plan.table('cnt')} (grain VARCHAR, {cell}, {counters})",
        f"CREATE TABLE {plan.table('hist')} (q INTEGER, {cell}, x DOUBLE, n BIGINT)",
        f"CREATE TABLE {plan.table('cells')} (grain VARCHAR, {cell}, "
        + ", ".join(f"{k} BIGINT" for k in plan.ks) + ")",
    ]  # fmt: skip
    for fam in plan.families:
        bits = ", ".join(f"b{i} BIGINT" for i in range(len(fam.filters)))
        entity = f"entity {types[fam.column]}"
        out.append(f"CREATE TABLE {plan.table(f'pm_{fam.name}')} ({cell}, {entity}, {bits})")
        if fam.name == USER:
            out.append(f"CREATE TABLE {plan.table('ph')} (period TIMESTAMP, {entity}, {bits})")
    return out


def merge(con: Any, table: str, keys: tuple[str, ...], values: list[str], delta: str,
          *, drop_zero: bool = True) -> None:  # fmt: skip
    """Add ``delta`` (SQL: ``keys`` then some of the table's ``values``, one row per key)
    to ``table``; with ``drop_zero``, a key whose values all come to zero goes. Rows that
    change are deleted and appended again (DuckDB appends and deletes cheaply; updates in
    place rewrite whole row groups)."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE vigie_add AS {delta}")
    on = " AND ".join(f"t.{k} IS NOT DISTINCT FROM a.{k}" for k in keys)
    summed = ", ".join(f"COALESCE(t.{v}, 0) + a.{v} AS {v}" for v in values)
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE vigie_hit AS SELECT t.rowid AS _rid, t.* REPLACE "
        f"({summed}) FROM {table} t JOIN vigie_add a ON {on}"
    )
    con.execute(f"DELETE FROM {table} WHERE rowid IN (SELECT _rid FROM vigie_hit)")
    nonzero = " OR ".join(f"{v} <> 0" for v in values) if drop_zero else "true"
    fresh = " AND ".join(f"h.{k} IS NOT DISTINCT FROM a.{k}" for k in keys)
    con.execute(
        f"INSERT INTO {table} BY NAME SELECT * EXCLUDE (_rid) FROM vigie_hit WHERE {nonzero}"
    )
    con.execute(
        f"INSERT INTO {table} BY NAME SELECT * FROM vigie_add a WHERE ({nonzero}) AND NOT EXISTS "
        f"(SELECT 1 FROM vigie_hit h WHERE {fresh})"
    )
    con.execute("DROP TABLE vigie_hit")
    con.execute("DROP TABLE vigie_add")


def update_bits(con: Any, table: str, keys: tuple[str, ...], bits: list[str], gained: str,
                lost: str | None, again: str | None) -> None:  # fmt: skip
    """Or the ``gained`` bits (SQL: ``keys``, ``bits``) into ``table``; the keys of the
    (period, entity) pairs in table ``lost`` are replaced by their rows in ``again``.
    Leaves ``vigie_moved``: every key whose bits changed, old (o<i>) and new (n<i>)."""
    on = " AND ".join(f"t.{k} IS NOT DISTINCT FROM a.{k}" for k in keys)
    con.execute(f"CREATE OR REPLACE TEMP TABLE vigie_add AS {gained}")
    # the rows of the people touched, found on two fixed-width columns (cheap to hash
    # over the whole table), then the exact keys among them
    pairs = "SELECT DISTINCT period, entity FROM vigie_add"
    if lost:
        pairs += f" UNION SELECT period, entity FROM {lost}"
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE vigie_old AS SELECT t.rowid AS _rid, t.* FROM {table} t "
        f"SEMI JOIN ({pairs}) p ON t.period = p.period AND t.entity = p.entity"
    )
    kept = f"EXISTS (SELECT 1 FROM vigie_add a WHERE {on})"
    if lost:
        kept += (
            f" OR EXISTS (SELECT 1 FROM {lost} l WHERE t.period = l.period AND t.entity = l.entity)"
        )
    con.execute(f"DELETE FROM vigie_old t WHERE NOT ({kept})")
    ored = ", ".join(f"COALESCE(t.{b}, 0) | a.{b} AS {b}" for b in bits)
    new = (f"SELECT {', '.join('a.' + k for k in keys)}, {ored} FROM vigie_add a "
           f"LEFT JOIN vigie_old t ON {on}")  # fmt: skip
    if again:
        new += f" UNION ALL SELECT {', '.join([*keys, *bits])} FROM ({again})"
    con.execute(f"CREATE OR REPLACE TEMP TABLE vigie_new AS {new}")
    match = " AND ".join(f"o.{k} IS NOT DISTINCT FROM n.{k}" for k in keys)
    pick = ", ".join(f"COALESCE(n.{k}, o.{k}) AS {k}" for k in keys)
    pairs = ", ".join(f"COALESCE(o.{b}, 0) AS o{i}, COALESCE(n.{b}, 0) AS n{i}"
                      for i, b in enumerate(bits))  # fmt: skip
    moved = " OR ".join(f"COALESCE(o.{b}, 0) <> COALESCE(n.{b}, 0)" for b in bits)
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE vigie_moved AS SELECT {pick}, {pairs} FROM vigie_old o "
        f"FULL OUTER JOIN vigie_new n ON {match} WHERE {moved}"
    )
    # only the keys whose bits moved are written again (most of the people of a short tick
    # were already seen that day)
    same = " AND ".join(f"o.{k} IS NOT DISTINCT FROM m.{k}" for k in keys)
    con.execute(f"DELETE FROM {table} WHERE rowid IN (SELECT o._rid FROM vigie_old o "
                f"SEMI JOIN vigie_moved m ON {same})")  # fmt: skip
    nonzero = " OR ".join(f"n{i} <> 0" for i in range(len(bits)))
    news = ", ".join(f"n{i} AS {b}" for i, b in enumerate(bits))
    con.execute(f"INSERT INTO {table} BY NAME SELECT {', '.join(keys)}, {news} FROM vigie_moved "
                f"WHERE {nonzero}")  # fmt: skip
    for name in ("vigie_add", "vigie_old", "vigie_new"):
        con.execute(f"DROP TABLE {name}")

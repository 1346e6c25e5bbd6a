"""Refresh the KPI rollups and suppression patterns by what the syncs changed.

Per fact, the refresh keeps exact mergeable states (``kpi.state``) as of a run. After
later runs it reads the fact's rows gained and lost since (``kpi.delta``, from the change
log the sync keeps), adds them to the states with their signs (``kpi.maintain``), and
rewrites the rollup rows of the days they touched; the planner then runs on the counts of
every cell (``kpi.fromstate``), as a full rebuild does. The answers are those of a full
rebuild, cell for cell: a full rebuild is the same code, every row of the fact counted
once into empty states.

A fact is rebuilt in full when it has no state yet, when its definition changed, when its
SQL is not a select-project-join (``delta.incremental_shape`` says why), when a KPI of it
has no mergeable state, or when asked (``full=True``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import duckdb

from vigie.db.quote import literal
from vigie.errors import UsageError
from vigie.kpi import calendar
from vigie.kpi.delta import (
    COUNT,
    SIGN,
    KeyedCte,
    KeyedFact,
    Narrow,
    Scalar,
    Shape,
    delta_rows,
    delta_sql,
    incremental_shape,
    indexed,
    keyed_ctes,
    keyed_fact,
    named_columns,
    partners,
    replace_ctes,
    with_kept,
)
from vigie.kpi.fit import check_against_store, rollup_name
from vigie.kpi.fromstate import read_stats, rollup_sql
from vigie.kpi.maintain import Redo, apply, derived, recount_published
from vigie.kpi.model import Fact, Kpi, Metrics, ShareWithin
from vigie.kpi.patterns import forget_pattern, pattern_from_stats, save_pattern, sync_horizon
from vigie.kpi.protect import ProtectionError
from vigie.kpi.query import q
from vigie.kpi.state import Plan, ddl, merge, plan_for, unsupported
from vigie.scan.detectors import without_values
from vigie.stores.duckdb_store import Store
from vigie.stores.meta import (
    KPI_STATE,
    KPI_STATE_DB,
    META,
    REPLACED_BY,
    ROLLUP_SCHEMA,
    change_log_from,
    log_table,
    start_change_log,
    trim_change_log,
)

STATES = f"{KPI_STATE_DB}.main.registry"  # per fact: its states' signature and run
ROLLUPS = f"{ROLLUP_SCHEMA}.registry"
DELTA = "vigie_delta"
NOW = "vigie_now"  # a fact that is not a select-project-join, evaluated (for some keys)
FORMAT = 6  # of the states: a state of another format is rebuilt


@dataclass
class FactRefresh:
    """What one fact's refresh did."""

    fact: str
    mode: str  # "incremental", "difference" (evaluated whole, compared) or "full"
    why: str  # why full (empty otherwise)
    rows: int  # fact rows gained and lost (full: every row)
    days: int | None  # days whose rollup rows were rewritten (None: all)
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    error: str = ""  # the pattern could not be planned: the fact's answers are refused


def refresh(store: Store, metrics: Metrics, *, full: bool = False,
            on_fact: Callable[[FactRefresh], None] | None = None) -> list[FactRefresh]:  # fmt: skip
    """Bring every fact's rollups and pattern to the store's latest run."""
    check_against_store(store, metrics)
    (run_id,) = store.rows(f"SELECT COALESCE(MAX(run_id), 0) FROM {META}.runs")[0]
    until = calendar.publishable_end("day", sync_horizon(store))
    con = store.con
    if full:  # every state is rebuilt: in a new file, not beside the old ones (twice the space)
        store.discard_kpi_state()
    store.attach_kpi_state()
    _drop_legacy_states(store)
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {ROLLUP_SCHEMA}")
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {ROLLUPS} (name VARCHAR PRIMARY KEY, kpi VARCHAR, "
        "dims VARCHAR, run_id INTEGER, built_at TIMESTAMP, seconds DOUBLE)"
    )
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {STATES} (fact VARCHAR PRIMARY KEY, signature VARCHAR, "
        "run_id INTEGER, until TIMESTAMP, built_at TIMESTAMP, run_started TIMESTAMP)"
    )
    done: list[FactRefresh] = []
    logged: dict[str, frozenset[str] | None] = {}  # table: the columns its log keeps
    for fact in metrics.facts.values():
        if any(k.fact.name == fact.name for k in metrics.kpis.values()):
            result = _refresh_fact(store, metrics, fact, run_id, until, full)
            named = named_columns(fact)
            for table in _logged_tables(fact):
                held = logged.get(table, frozenset())
                logged[table] = None if named is None or held is None else held | named
            done.append(result)
            if on_fact:
                on_fact(result)
    with store.transaction() as tx:  # from now on the syncs keep what they replace
        for table in sorted(logged):
            start_change_log(tx, table, run_id, logged[table])
        for table in store.table_names():
            trim_change_log(tx, table, run_id)
    return done


def _refresh_fact(store: Store, metrics: Metrics, fact: Fact, run_id: int, until: datetime,
                  full: bool) -> FactRefresh:  # fmt: skip
    started = time.perf_counter()
    plan = plan_for(metrics, fact)
    signature = _signature(metrics, fact)
    since, until0, why = _incremental_from(store, metrics, fact, signature, full)
    if until0 is not None and until < until0:
        since, why = None, "the sync horizon went back"
    timings: dict[str, float] = {}
    behind = since is not None and _rollups_behind(store, metrics, fact, since)
    # Two transactions, one per file (DuckDB writes one attached file per transaction): the
    # states, then the rollups. A crash between them leaves rollups behind their states,
    # which the next refresh rewrites whole (``_rollups_behind``).
    with store.transaction() as con:
        if since is None:
            rows, days = _full(store, plan, until), None
        else:
            rows, days = _incremental(store, plan, since, until0, until)  # type: ignore[arg-type]
        timings["states"] = time.perf_counter() - started
        _check_quantiles(plan, _types(store))
        con.execute(f"INSERT OR REPLACE INTO {STATES} SELECT ?, ?, ?, ?, now(), (SELECT "
                    f"started_at FROM {META}.runs WHERE run_id = ?)",
                    [fact.name, signature, run_id, until, run_id])  # fmt: skip
    days = None if behind else days
    with store.transaction() as con:
        _write_rollups(store, metrics, plan, days, run_id, timings)
        stats = read_stats(con, plan, until)
        for name in (DELTA, NOW, "vigie_diff"):
            con.execute(f"DROP TABLE IF EXISTS {name}")
    mark, error = time.perf_counter(), ""
    try:
        pattern = pattern_from_stats(store, metrics, fact, stats, until)
        save_pattern(store, pattern, run_id, time.perf_counter() - mark)
    except ProtectionError as exc:  # no pattern kept: its answers are refused, as before
        forget_pattern(store, fact)
        error = exc.message
    timings[f"pattern__{fact.name}"] = time.perf_counter() - mark
    mode = "full" if since is None else "incremental" if _is_spj(fact) else "difference"
    return FactRefresh(fact.name, mode,
                       why if since is None else "", rows, None if days is None else len(days),
                       time.perf_counter() - started, timings, error)  # fmt: skip


def _rollups_behind(store: Store, metrics: Metrics, fact: Fact, since: int) -> bool:
    """Whether a rollup of the fact was not written from its states at run ``since`` (a
    crash between the two commits, or a rollup new or lost)."""
    names = [name for _, _, name in _rollups_of(metrics, fact)]
    if not names:
        return False
    among = ", ".join(literal("duckdb", n) for n in names)
    ((fresh,),) = store.rows(f"SELECT COUNT(*) FROM {ROLLUPS} WHERE run_id = ? AND name IN "
                             f"({among})", [since])  # fmt: skip
    return int(fresh) < len(names)


def _rollups_of(metrics: Metrics, fact: Fact) -> list[tuple[Kpi, tuple[str, ...], str]]:
    """The fact's declared rollups: (KPI, dimensions, table name); a share only with the
    dimension it is a share across."""
    return [(k, dims, rollup_name(k.name, dims)) for k in metrics.kpis.values()
            if k.fact.name == fact.name for dims in fact.rollups
            if not isinstance(k.measure, ShareWithin) or k.measure.across in dims]  # fmt: skip


def _drop_legacy_states(store: Store) -> None:
    """Drop the KPI states a store kept in its own file before they had one of their own
    (the state file was just made: they are rebuilt there)."""
    for (name,) in store.rows(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = 'store' AND "
        "schema_name = ? AND starts_with(table_name, ?)", [ROLLUP_SCHEMA, KPI_STATE]):  # fmt: skip
        store.con.execute(f"DROP TABLE {ROLLUP_SCHEMA}.{q(name)}")


def _signature(metrics: Metrics, fact: Fact) -> str:
    """What the states depend on: the fact and its KPIs' definitions."""
    kpis = sorted(repr((k.name, k.measure, k.population)) for k in metrics.kpis.values()
                  if k.fact.name == fact.name)  # fmt: skip
    text = repr((FORMAT, fact.sql, fact.time, fact.user, fact.dimensions, fact.rollups, kpis))
    return hashlib.sha256(text.encode()).hexdigest()


def _incremental_from(store: Store, metrics: Metrics, fact: Fact, signature: str,
                      full: bool) -> tuple[int | None, datetime | None, str]:  # fmt: skip
    """(the run the states are at, their horizon, "") when they can be brought forward,
    else (None, None, why not)."""
    if full:
        return None, None, "asked for"
    if why := unsupported(metrics, fact):
        return None, None, why
    rows = store.rows(f"SELECT signature, run_id, until, s.run_started IS NOT DISTINCT FROM "
                      f"r.started_at FROM {STATES} s LEFT JOIN {META}.runs r USING (run_id) "
                      "WHERE fact = ?", [fact.name])  # fmt: skip
    if not rows:
        return None, None, "no state yet (a first refresh, or the store was rewritten)"
    if rows[0][0] != signature:
        return None, None, "its definition changed"
    if not rows[0][3]:
        return None, None, "its states are at a run the store does not hold (restored?)"
    since = int(rows[0][1])
    for table in sorted(_logged_tables(fact)):
        start = change_log_from(store, table)
        if start is None or start > since:
            return None, None, f"the change log of {table} does not reach back to its state"

    return since, rows[0][2], ""


def _logged_tables(fact: Fact) -> set[str]:
    """The tables whose change log the fact's refresh reads."""
    shape = incremental_shape(fact)
    if isinstance(shape, Shape):
        return set(shape.names)
    keyed = keyed_fact(fact)
    linked = ({keyed.table, *(k.name for k in keyed.links if not k.kept),
               *(s.table for s in keyed.scalars if s.table)} if keyed else set())  # fmt: skip
    return {c.table for c in keyed_ctes(fact)} | linked


def _kept_ctes(store: Store, plan: Plan, since: int | None) -> str:
    """Keep the fact's keyed ``WITH`` queries as tables, bringing forward the groups whose
    keys have rows changed since run ``since`` (None: computing them all), each group
    brought forward listed in ``vigie_ck_<query>``; and, for a ``KeyedFact``, its one-row
    queries: kept after a full refresh, evaluated into ``vigie_sc_<query>`` otherwise.
    Returns the fact's SQL reading them."""
    kept = {}
    for cte in keyed_ctes(plan.fact):
        table = plan.table(f"cte_{cte.name}")
        kept[cte.name] = table
        if since is None:
            _run(store, plan, f"CREATE OR REPLACE TABLE {table} AS {cte.kept_sql}")
        elif cte.aggs is not None:
            _merge_cte(store, plan, cte, table, since)
        else:
            key, log = q(cte.key), log_table(cte.table)
            store.con.execute(
                f"CREATE OR REPLACE TEMP TABLE vigie_keys AS SELECT DISTINCT {key} AS k FROM "
                f"{q(cte.table)} WHERE _vigie_run > {since} UNION SELECT {key} FROM {log} "
                f"WHERE {REPLACED_BY} > {since}"
            )
            store.con.execute(f"DELETE FROM {table} WHERE {_among(cte.key, 'vigie_keys')}")
            store.con.execute(f"CREATE OR REPLACE TEMP TABLE {_changed_keys(cte.name)} AS "
                              "SELECT k FROM vigie_keys")  # fmt: skip
            _recompute(store, plan, cte, table)
    sql = with_kept(plan.fact, kept) if kept else plan.fact.sql
    keyed = keyed_fact(plan.fact)
    scalars = {}
    for scalar in keyed.scalars if keyed else ():
        if since is None:
            table = plan.table(f"cte_{scalar.name}")
            _run(store, plan, f"CREATE OR REPLACE TABLE {table} AS {scalar.sql}")
        else:
            table = _now_of(scalar.name)
            if not _merge_scalar(store, plan, scalar, since):
                _run(store, plan, f"CREATE OR REPLACE TEMP TABLE {table} AS {scalar.sql}")
        scalars[scalar.name] = f"SELECT * FROM {table}"
    return replace_ctes(sql, scalars) if scalars else sql


def _merge_scalar(store: Store, plan: Plan, scalar: Scalar, since: int) -> bool:
    """A one-row query of MIN, MAX and COUNT over one table, brought forward into
    ``_now_of`` by the rows changed since run ``since`` (the data's end: the latest of the
    new events), as ``_merge_cte`` does a group. False when it must be evaluated whole: not
    such a query, no kept value, or a lost row held an extreme."""
    kept = plan.table(f"cte_{scalar.name}")
    if scalar.aggs is None or scalar.table is None or not _exists(store, plan, kept):
        return False
    reads = [c for c in _stored_columns(store, scalar.table) if c.lower() in scalar.reads]
    changed = f"({delta_rows(scalar.table, since, reads)}) AS {q(scalar.alias)}"
    sums, merged, again = _merged_aggs(scalar.aggs, "o")
    where = f" WHERE {scalar.where}" if scalar.where else ""
    _run(store, plan, f"CREATE OR REPLACE TEMP TABLE vigie_sg AS SELECT {', '.join(sums)} "
         f"FROM {changed}{where}")  # fmt: skip
    pair = f"FROM vigie_sg g, {kept} o"
    ((lost_extreme,),) = store.rows(f"SELECT {' OR '.join(['false', *again])} {pair}")
    if not lost_extreme:
        store.con.execute(f"CREATE OR REPLACE TEMP TABLE {_now_of(scalar.name)} AS SELECT "
                          f"{', '.join(merged)} {pair}")  # fmt: skip
    store.con.execute("DROP TABLE vigie_sg")
    return not lost_extreme


def _merged_aggs(aggs: tuple[tuple[str, str, str], ...],
                 old: str) -> tuple[list[str], list[str], list[str]]:  # fmt: skip
    """For aggregates of MIN, MAX and COUNT (name, kind, argument) kept in the table aliased
    ``old``: the sums of the changed rows (``g<i>`` gained, ``l<i>`` lost extremes), the
    merged values, and the conditions under which a lost row held an extreme."""
    sums, merged, again = [], [], []
    for i, (name, kind, arg) in enumerate(aggs):
        was = f"{old}.{q(name)}"
        if kind == "count":
            held = "1" if arg == "*" else f"CASE WHEN ({arg}) IS NULL THEN 0 ELSE 1 END"
            sums.append(f"COALESCE(SUM({SIGN} * {held}), 0) AS g{i}")
            merged.append(f"CAST(COALESCE({was}, 0) + g.g{i} AS BIGINT) AS {q(name)}")
            continue
        sums.append(f"{kind}({arg}) FILTER (WHERE {SIGN} > 0) AS g{i}, "
                    f"{kind}({arg}) FILTER (WHERE {SIGN} < 0) AS l{i}")  # fmt: skip
        merged.append(f"{'least' if kind == 'min' else 'greatest'}({was}, g.g{i}) AS {q(name)}")
        reached = "<=" if kind == "min" else ">="
        again.append(f"(g.l{i} IS NOT NULL AND ({was} IS NULL OR g.l{i} {reached} {was}))")
    return sums, merged, again


def _exists(store: Store, plan: Plan, table: str) -> bool:
    """Whether the fact's state ``table`` (as ``plan.table`` names it) is in the store."""
    name = table.split(".", 2)[2].strip('"')
    sql = ("SELECT 1 FROM duckdb_tables() WHERE database_name = ? AND schema_name = 'main' "
           "AND table_name = ?")  # fmt: skip
    return bool(store.rows(sql, [KPI_STATE_DB, name]))


def _changed_keys(cte: str) -> str:
    """The temporary table of a kept ``WITH`` query's groups brought forward."""
    return q(f"vigie_ck_{cte.lower()}")


def _now_of(scalar: str) -> str:
    """The temporary table of a one-row ``WITH`` query's value now."""
    return q(f"vigie_sc_{scalar.lower()}")


def _recompute(store: Store, plan: Plan, cte: KeyedCte, table: str) -> None:
    """Insert the groups of the keys in ``vigie_keys``, computed from the table."""
    import sqlglot

    if store.rows("SELECT 1 FROM vigie_keys LIMIT 1"):
        again = sqlglot.parse_one(cte.kept_sql, read="duckdb").where(  # type: ignore[attr-defined]
            _among(cte.key, "vigie_keys"), dialect="duckdb")  # fmt: skip
        _run(store, plan, f"INSERT INTO {table} BY NAME {again.sql(dialect='duckdb')}")
    store.con.execute("DROP TABLE vigie_keys")


def _among(key: str, keys: str, column: str = "k") -> str:
    """SQL: column ``key`` is one of ``keys``'s ``column`` (NULL included, as GROUP BY has
    it)."""
    return _among_sql(q(key), keys, column)


def _among_sql(value: str, keys: str, column: str = "k") -> str:
    """SQL: ``value`` (SQL) is one of ``keys``'s ``column``, NULL included."""
    return (f"({value} IN (SELECT {column} FROM {keys}) OR ({value} IS NULL AND EXISTS "
            f"(SELECT 1 FROM {keys} WHERE {column} IS NULL)))")  # fmt: skip


def _merge_cte(store: Store, plan: Plan, cte: KeyedCte, table: str, since: int) -> None:
    """Merge the changed rows of a keyed ``WITH`` query of MIN, MAX and COUNT into its
    kept groups (``KeyedCte``); compute again from the table only the groups where a lost
    row held an extreme."""
    assert cte.aggs is not None
    reads = [c for c in _stored_columns(store, cte.table) if c.lower() in cte.reads]
    changed = f"({delta_rows(cte.table, since, reads)}) AS {q(cte.alias)}"
    sums, merged, again = _merged_aggs(cte.aggs, "t")
    sums.insert(0, f"SUM({SIGN}) AS dn")
    where = f" WHERE {cte.where}" if cte.where else ""
    _run(store, plan, f"CREATE OR REPLACE TEMP TABLE vigie_cg AS SELECT {q(cte.key)} AS k, "
         f"{', '.join(sums)} FROM {changed}{where} GROUP BY ALL")  # fmt: skip
    n = f"COALESCE(t.{COUNT}, 0) + g.dn"
    redo = " OR ".join([f"{n} < 0", *again])  # a count below 0: the state is not the table's
    store.con.execute(
        f"CREATE OR REPLACE TEMP TABLE vigie_cm AS SELECT g.k AS {q(cte.key)}, "
        f"{', '.join(merged)}, {n} AS {COUNT}, ({redo}) AS _again FROM vigie_cg g "
        f"LEFT JOIN {table} t ON t.{q(cte.key)} IS NOT DISTINCT FROM g.k"
    )
    store.con.execute(f"CREATE OR REPLACE TEMP TABLE {_changed_keys(cte.name)} AS SELECT "
                      f"{q(cte.key)} AS k FROM vigie_cm")  # fmt: skip
    store.con.execute(f"DELETE FROM {table} WHERE {_among(cte.key, 'vigie_cm', q(cte.key))}")
    store.con.execute(f"INSERT INTO {table} BY NAME SELECT * EXCLUDE (_again) FROM vigie_cm "
                      f"WHERE NOT _again AND {COUNT} > 0")  # fmt: skip
    store.con.execute(f"CREATE OR REPLACE TEMP TABLE vigie_keys AS SELECT {q(cte.key)} AS k "
                      f"FROM vigie_cm WHERE _again AND {COUNT} > 0")  # fmt: skip
    _recompute(store, plan, cte, table)
    store.con.execute("DROP TABLE vigie_cm")
    store.con.execute("DROP TABLE vigie_cg")


def _full(store: Store, plan: Plan, until: datetime) -> int:
    """Empty states, then every row of the fact counted once."""
    prefix = f"{plan.fact.name}__"
    for (name,) in store.rows(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = ? AND "
        "schema_name = 'main' AND starts_with(table_name, ?)", [KPI_STATE_DB, prefix]):  # fmt: skip
        store.con.execute(f"DROP TABLE {KPI_STATE_DB}.main.{q(name)}")
    cols = ", ".join(q(c) for c in plan.reads)
    spj = _is_spj(plan.fact)
    sql = plan.fact.sql if spj else _kept_ctes(store, plan, None)
    kept = cols if spj else _row_columns(plan)  # with its key, for a ``KeyedFact``
    _run(store, plan, f"CREATE OR REPLACE TEMP TABLE {DELTA} AS SELECT {kept}, 1::BIGINT AS "
         f"{SIGN}, {derived(plan.fact.time)} FROM ({sql})")  # fmt: skip
    for sql in ddl(plan, _types(store)):
        store.con.execute(sql)
    if not spj:  # kept whole: the next refresh is its difference with it
        store.con.execute(f"CREATE TABLE {plan.table('rows')} AS SELECT {kept}, "
                          f"{_digest(kept)} FROM {DELTA}")  # fmt: skip
    if first := indexed(plan.fact):
        key, day = q(first.key), f"date_trunc('day', {q(first.time)})"
        _run(store, plan, f"CREATE TABLE {plan.table('kd')} AS SELECT {key} AS k, {day} AS d, "
             f"COUNT(*)::BIGINT AS n FROM {q(first.table)} GROUP BY ALL")  # fmt: skip
    apply(store.con, plan, DELTA, _redo(store, plan, None), until, full=True)
    return int(store.rows(f"SELECT COUNT(*) FROM {DELTA}")[0][0])


def _key_days(store: Store, plan: Plan, since: int, changed: set[str]) -> Narrow | None:
    """Bring the days kept per join key of the fact's first table (``delta.Indexed``)
    forward by its changed rows; returns how a term narrows that table to the days of
    the keys it can meet."""
    first = indexed(plan.fact)
    if first is None:
        return None
    kd = plan.table("kd")
    if first.table in changed:
        key, time = q(first.key), q(first.time)
        rows = delta_rows(first.table, since, [first.key, first.time])
        merge(store.con, kd, ("k", "d"), ["n"], f"SELECT {key} AS k, date_trunc('day', {time}) "
              f"AS d, SUM({SIGN})::BIGINT AS n FROM ({rows}) GROUP BY ALL")  # fmt: skip

    def narrow(keys: str) -> str | None:
        _run(store, plan, f"SELECT CAST(MIN(d) AS VARCHAR), CAST(MAX(d) AS VARCHAR), "
             f"typeof(MIN(d)), bool_or(d IS NULL) FROM {kd} WHERE k IN ({keys})")  # fmt: skip
        ((lo, hi, kind, undated),) = store.con.fetchall()
        t = f"{q(first.alias)}.{q(first.time)}"
        when = [f"{t} IS NULL"] if undated else []  # rows without a time are not forgotten
        if lo is not None:
            start, stop = literal("duckdb", lo), literal("duckdb", hi)
            when.append(f"({t} >= CAST({start} AS {kind}) AND "
                        f"{t} < CAST({stop} AS {kind}) + INTERVAL 1 DAY)")  # fmt: skip
        return f"({' OR '.join(when)})" if when else "false"

    return narrow


def _digest(cols: str) -> str:
    """Two 64-bit hashes of a row: rows are compared by them first, then in full."""
    return f"hash({cols}) AS _vh1, hash('vigie', {cols}) AS _vh2"


def _row_columns(plan: Plan) -> str:
    """The columns a fact that is not a select-project-join is kept with: those the states
    read, and a ``KeyedFact``'s key."""
    cols = list(plan.reads)
    keyed = keyed_fact(plan.fact)
    if keyed is not None and keyed.output not in cols:
        cols.append(keyed.output)
    return ", ".join(q(c) for c in cols)


def _difference(store: Store, plan: Plan, since: int) -> str:
    """A fact that is not a select-project-join, evaluated again (``NOW``) and compared
    with the rows kept last time: SQL for the rows that differ, signed; the kept rows
    become the new ones. A ``KeyedFact`` is evaluated for the keys whose rows may have
    changed (``_fact_keys``), any other whole. Digests find the candidates in one pass
    over single keys; the candidates are then compared column by column (``_incremental``
    groups them)."""
    cols, kept = _row_columns(plan), plan.table("rows")
    sql = _kept_ctes(store, plan, since)
    keyed = keyed_fact(plan.fact)
    among = "true"
    if keyed is not None and _fact_keys(store, plan, keyed, since):
        sql = _for_keys(plan, keyed, sql)
        among = _among_sql(f"k.{q(keyed.output)}", "vigie_fk")
    _run(store, plan, f"CREATE OR REPLACE TEMP TABLE {NOW} AS SELECT {cols}, {_digest(cols)} "
         f"FROM ({sql})")  # fmt: skip
    before = f"(SELECT * FROM {kept} k WHERE {among})"
    store.con.execute(
        "CREATE OR REPLACE TEMP TABLE vigie_differ AS SELECT _vh1, _vh2 FROM (SELECT _vh1, "
        f"_vh2, 1 AS s FROM {NOW} UNION ALL SELECT _vh1, _vh2, -1 FROM {before}) GROUP BY ALL "
        "HAVING SUM(s) <> 0"
    )
    store.con.execute(
        f"CREATE OR REPLACE TEMP TABLE vigie_diff AS SELECT {cols}, 1::BIGINT AS {SIGN} FROM "
        f"{NOW} SEMI JOIN vigie_differ USING (_vh1, _vh2) UNION ALL SELECT {cols}, -1::BIGINT "
        f"FROM {before} SEMI JOIN vigie_differ USING (_vh1, _vh2)"
    )
    store.con.execute(f"DELETE FROM {kept} WHERE rowid IN (SELECT k.rowid FROM {kept} k "
                      f"SEMI JOIN vigie_differ USING (_vh1, _vh2) WHERE {among})")  # fmt: skip
    store.con.execute(f"INSERT INTO {kept} SELECT * FROM {NOW} SEMI JOIN vigie_differ "
                      "USING (_vh1, _vh2)")  # fmt: skip
    store.con.execute("DROP TABLE vigie_differ")
    _keep_scalars(store, plan, keyed)
    return "SELECT * FROM vigie_diff"


def _for_keys(plan: Plan, keyed: KeyedFact, sql: str) -> str:
    """The ``KeyedFact``'s SQL (kept queries read from their tables) for the keys in
    ``vigie_fk``: its first table, and the kept queries joined on its key, are read for
    those keys alone (a filter over the joined result would be applied after the joins)."""
    import sqlglot
    from sqlglot import exp

    query = sqlglot.parse_one(sql, read="duckdb")
    from_ = query.args.get("from") or query.args.get("from_")
    assert from_ is not None  # a KeyedFact reads its first table
    first = f"SELECT * FROM {q(keyed.table)} WHERE {_among_sql(q(keyed.column), 'vigie_fk')}"
    alias = exp.TableAlias(this=exp.to_identifier(keyed.alias))
    from_.this.replace(exp.Subquery(this=sqlglot.parse_one(first, read="duckdb"), alias=alias))
    bodies = {
        link.name: f"SELECT * EXCLUDE ({COUNT}) FROM {plan.table(f'cte_{link.name}')} "
        f"WHERE {_among_sql(q(link.column), 'vigie_fk')}"
        for link in keyed.links
        if link.kept and link.first_column == keyed.column
    }
    out = query.sql(dialect="duckdb")
    return replace_ctes(out, bodies) if bodies else out


def _fact_keys(store: Store, plan: Plan, keyed: KeyedFact, since: int) -> bool:
    """List in ``vigie_fk`` the keys of a ``KeyedFact`` whose rows may have changed since
    run ``since``: those of first-table rows changed, of first-table rows joined to a row
    changed (old or new) or to a kept group brought forward, and of rows with an
    expression between the old and new value of a one-row query it is compared with.
    False when that cannot be told (every key is then evaluated)."""
    first, col = q(keyed.table), q(keyed.column)

    def of(column: str, values: str) -> str:
        if column == keyed.column:  # the keys themselves (one not in the table: no row)
            return values
        return f"SELECT {col} AS k FROM {first} WHERE {q(column)} IN ({values})"

    def changed(table: str, column: str) -> str:
        c = q(column)
        return (f"SELECT {c} FROM {q(table)} WHERE _vigie_run > {since} UNION ALL "
                f"SELECT {c} FROM {log_table(table)} WHERE {REPLACED_BY} > {since}")  # fmt: skip

    parts = [f"SELECT {col} AS k FROM {first} WHERE _vigie_run > {since}",
             f"SELECT {col} FROM {log_table(keyed.table)} "
             f"WHERE {REPLACED_BY} > {since}"]  # fmt: skip
    for link in keyed.links:
        values = (f"SELECT k FROM {_changed_keys(link.name)}" if link.kept
                  else changed(link.name, link.column))  # fmt: skip
        parts.append(of(link.first_column, values))
    for scalar in keyed.scalars:
        old, new = plan.table(f"cte_{scalar.name}"), _now_of(scalar.name)
        if not _exists(store, plan, old):
            return False  # no value kept (a state of before): compared whole this once
        for column in dict.fromkeys(c for c, _ in scalar.bounds):
            c = q(column)
            pair = f"FROM {old} o, {new} n"
            ((same, unknown),) = store.rows(
                f"SELECT o.{c} IS NOT DISTINCT FROM n.{c}, o.{c} IS NULL OR n.{c} IS NULL {pair}"
            )
            if same:
                continue
            if unknown:
                return False
            low = f"(SELECT least(o.{c}, n.{c}) {pair})"
            high = f"(SELECT greatest(o.{c}, n.{c}) {pair})"
            parts += [f"SELECT {q(keyed.alias)}.{col} FROM {first} AS {q(keyed.alias)} WHERE "
                      f"({expr}) BETWEEN {low} AND {high}"
                      for name, expr in scalar.bounds if name == column]  # fmt: skip
    _run(store, plan, "CREATE OR REPLACE TEMP TABLE vigie_fk AS SELECT DISTINCT k FROM ("
         + " UNION ALL ".join(parts) + ")")  # fmt: skip
    return True


def _keep_scalars(store: Store, plan: Plan, keyed: KeyedFact | None) -> None:
    """A ``KeyedFact``'s one-row queries: their values now are kept for the next refresh."""
    for scalar in keyed.scalars if keyed else ():
        store.con.execute(f"CREATE OR REPLACE TABLE {plan.table(f'cte_{scalar.name}')} AS "
                          f"SELECT * FROM {_now_of(scalar.name)}")  # fmt: skip
        store.con.execute(f"DROP TABLE {_now_of(scalar.name)}")
    for cte in keyed_ctes(plan.fact):
        store.con.execute(f"DROP TABLE IF EXISTS {_changed_keys(cte.name)}")
    store.con.execute("DROP TABLE IF EXISTS vigie_fk")


def _is_spj(fact: Fact) -> bool:
    return isinstance(incremental_shape(fact), Shape)


def _incremental(store: Store, plan: Plan, since: int, until0: datetime,
                 until: datetime) -> tuple[int, list[datetime]]:  # fmt: skip
    """The rows gained and lost since run ``since`` into the states; returns their number
    and the days whose cells changed."""
    cols = ", ".join(q(c) for c in plan.reads)
    shape = incremental_shape(plan.fact)
    if isinstance(shape, Shape):
        changed = {t for t in shape.names if _changed(store, t, since)}
        columns = {t: _stored_columns(store, t) for t in shape.names}
        sql = delta_sql(plan.fact, shape, since, changed, columns,
                        _key_days(store, plan, since, changed))  # fmt: skip
        if sql is None:
            sql = f"SELECT *, 0::BIGINT AS {SIGN} FROM ({plan.fact.sql}) LIMIT 0"
        now = None
    else:
        # the kept rows are the fact now: people who lost rows are read again from them
        sql, now = _difference(store, plan, since), plan.table("rows")
    _run(store, plan, f"CREATE OR REPLACE TEMP TABLE {DELTA} AS SELECT *, "
         f"{derived(plan.fact.time)} FROM (SELECT {cols}, SUM({SIGN})::BIGINT AS {SIGN} FROM "
         f"({sql}) GROUP BY ALL HAVING SUM({SIGN}) <> 0)")  # fmt: skip
    apply(store.con, plan, DELTA, _redo(store, plan, now), until)
    if until > until0:
        recount_published(store.con, plan, until0, until)
    t = q(plan.fact.time)
    days = {d for (d,) in store.rows(f"SELECT DISTINCT date_trunc('day', {t}) FROM {DELTA}")}
    (rows,) = store.rows(f"SELECT COALESCE(SUM(abs({SIGN})), 0) FROM {DELTA}")[0]
    return int(rows), sorted(d for d in days if d is not None)


def _redo(store: Store, plan: Plan, now: str | None) -> Redo:
    """The fact's rows, now, of the entities in a table, in [start, stop): from ``now``
    (the rows kept for a fact that is not a select-project-join) or from the fact's SQL,
    which a short list of entities is pushed down into (a long one is a semi-join).
    Entities gone from a table the fact joins them to inner (``delta.partners``: a deleted
    account) have no row: not read."""

    def rows(column: str, entities: str, start: datetime, stop: datetime) -> str:
        cols = ", ".join(q(c) for c in plan.reads)
        t = q(plan.fact.time)
        held = "" if now else "".join(f" AND entity IN (SELECT {q(c)} FROM {q(table)})"
                                      for table, c in partners(plan.fact, column))  # fmt: skip
        alive = f"SELECT DISTINCT entity FROM {entities} WHERE true{held}"
        listed = [e for (e,) in store.rows(alive)]
        if len(listed) <= 2000:
            among = ", ".join(literal("duckdb", str(e)) for e in listed)
        else:
            among = alive
        source = now or f"({plan.fact.sql})"
        where = f"{q(column)} IN ({among})" if listed else "false"
        _run(store, plan, f"CREATE OR REPLACE TEMP TABLE vigie_redo AS SELECT {cols}, 1::BIGINT "
             f"AS {SIGN}, {derived(plan.fact.time)} FROM {source} WHERE {where} "
             f"AND {t} >= ? AND {t} < ?", [start, stop])  # fmt: skip
        return "vigie_redo"

    return rows


# Types whose values a DOUBLE holds exactly, and whose quantile_cont DuckDB computes in DOUBLE
# (BIGINT: up to 2^53, beyond any count or duration a fact holds).
EXACT_QUANTILE_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT",
                        "UINTEGER", "DOUBLE"}  # fmt: skip


def _check_quantiles(plan: Plan, types: dict[str, str]) -> None:
    """A quantile is kept as counts per value, read back as DOUBLE: the column must be one
    whose quantile DuckDB computes in DOUBLE too, or the rollups would not be the tables'."""
    for column, _ in plan.quantiles:
        if types.get(column) not in EXACT_QUANTILE_TYPES:
            raise UsageError(
                f"{plan.fact.where}: fact '{plan.fact.name}': a KPI takes a quantile of "
                f"'{column}', of type {types.get(column)}; rollups keep quantiles of integer "
                "and DOUBLE columns only.",
                hint=f"Cast it in the fact's SQL (CAST(... AS DOUBLE) AS {column}).",
            )


def _types(store: Store) -> dict[str, str]:
    return dict(store.rows(f"SELECT column_name, column_type FROM (DESCRIBE {DELTA})"))


def _changed(store: Store, table: str, since: int) -> bool:
    return bool(store.rows(
        f"SELECT 1 FROM {q(table)} WHERE _vigie_run > ? UNION ALL SELECT 1 FROM "
        f"{log_table(table)} WHERE {REPLACED_BY} > ? LIMIT 1", [since, since]))  # fmt: skip


def _stored_columns(store: Store, table: str) -> list[str]:
    return [c for (c,) in store.rows(
        "SELECT column_name FROM duckdb_columns() WHERE database_name = 'store' AND "
        "schema_name = 'main' AND lower(table_name) = lower(?) ORDER BY column_index",
        [table])]  # fmt: skip


def _run(store: Store, plan: Plan, sql: str, params: list[object] | None = None) -> None:
    try:
        store.con.execute(sql, params or [])
    except duckdb.Error as exc:
        raise UsageError(
            f"Fact '{plan.fact.name}' cannot be refreshed: "
            f"{without_values(str(exc).splitlines()[0])}",
            hint=f"{plan.fact.where}: does the store hold the tables and columns its SQL reads?",
        ) from None


def _write_rollups(store: Store, metrics: Metrics, plan: Plan, days: list[datetime] | None,
                   run_id: int, timings: dict[str, float]) -> None:  # fmt: skip
    """Rewrite the rollups' rows of ``days`` (None: every day)."""
    con = store.con
    con.execute("CREATE OR REPLACE TEMP TABLE vigie_days (d TIMESTAMP)")
    if days:
        con.executemany("INSERT INTO vigie_days VALUES (?)", [[d] for d in days])
    among = "period IN (SELECT d FROM vigie_days)"
    types = _types(store)
    for kpi, dims, name in _rollups_of(metrics, plan.fact):
        started = time.perf_counter()
        table = f"{ROLLUP_SCHEMA}.{q(name)}"
        if days is None or not store.rows(
            "SELECT 1 FROM duckdb_tables() WHERE database_name = 'store' AND "
            "schema_name = ? AND table_name = ?", [ROLLUP_SCHEMA, name]):  # fmt: skip
            con.execute(f"CREATE OR REPLACE TABLE {table} AS "
                        f"{rollup_sql(plan, kpi, dims, 'true', types)}")  # fmt: skip
        else:
            con.execute(f"DELETE FROM {table} WHERE {among}")
            con.execute(f"INSERT INTO {table} {rollup_sql(plan, kpi, dims, among, types)}")
        seconds = time.perf_counter() - started
        con.execute(f"INSERT OR REPLACE INTO {ROLLUPS} VALUES (?, ?, ?, ?, now(), ?)",
                    [name, kpi.name, ",".join(dims), run_id, seconds])  # fmt: skip
        timings[name] = seconds
    con.execute("DROP TABLE vigie_days")

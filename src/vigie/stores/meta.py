"""The store's own metadata (schema ``_vigie``): what each column is, under which policy.

Tables kept here besides runs and per-table state (``duckdb_store`` lists them all):
- ``columns``: per stored table and policy column, production's type, the action and its
  full spec (``pseudonymize: user``, ``generalize: day``), the data class and the type the
  store gives it. The sync compares it with the policy in force to converge the store
  (``vigie.sync.converge``); ``vigie store verify`` compares it with the store's schema;
- ``policies``: the text of every policy a run used, by its sha256;
- ``run_columns``: per run, each column's class and action as the run applied them, so
  that "which columns were readable between T1 and T2" is answered from what was in force
  then (``readable_between``), not from today's policy;
- ``before__<table>``: the change log the KPI refresh reads (``vigie.kpi.refresh``): the
  stored version of every row a run replaced or deleted, with the run that did it. It
  exists only once a refresh asked for it (``start_change_log``), is emptied as refreshes
  consume it, and is dropped, with the KPI states, whenever a store rewrite makes it
  incomplete (``reset_changes``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import pyarrow as pa

from vigie.policy.model import Action, Drop, Keep, Policy, Pseudonymize


class Store(Protocol):
    """What this module needs of a store (``duckdb_store.Store``, which imports this)."""

    def rows(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]: ...


META = "_vigie"
ROLLUP_SCHEMA = "_vigie_kpi"  # the KPI rollups (``vigie.kpi.engine``): derived, rebuildable
# What every stored table has besides the policy's columns (see ``duckdb_store``).
LINEAGE_COLUMNS = ("_vigie_bucket", "_vigie_first_seen", "_vigie_run")
SCHEMA_SQL = f"""
CREATE SCHEMA IF NOT EXISTS {META};
CREATE TABLE IF NOT EXISTS {META}.meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS {META}.runs (
    run_id INTEGER PRIMARY KEY, started_at TIMESTAMP, finished_at TIMESTAMP, status VARCHAR,
    source VARCHAR, policy_sha256 VARCHAR, message VARCHAR);
CREATE TABLE IF NOT EXISTS {META}.table_runs (
    run_id INTEGER, table_name VARCHAR, inserted BIGINT, updated BIGINT, deleted BIGINT,
    seconds DOUBLE, status VARCHAR, PRIMARY KEY (run_id, table_name));
CREATE TABLE IF NOT EXISTS {META}.state (
    table_name VARCHAR PRIMARY KEY, cursor_column VARCHAR, loaded BOOLEAN,
    watermark_ts TIMESTAMP, watermark_int BIGINT,
    pass_kind VARCHAR, pass_from_ts TIMESTAMP, pass_from_int BIGINT,
    pass_target_ts TIMESTAMP, pass_target_int BIGINT, chunks VARCHAR);
ALTER TABLE {META}.runs ADD COLUMN IF NOT EXISTS converged_at TIMESTAMP;
ALTER TABLE {META}.state ADD COLUMN IF NOT EXISTS delete_counter VARCHAR;
ALTER TABLE {META}.state ADD COLUMN IF NOT EXISTS deletes_by VARCHAR;
ALTER TABLE {META}.state ADD COLUMN IF NOT EXISTS verified_at TIMESTAMP;
ALTER TABLE {META}.state ADD COLUMN IF NOT EXISTS rows_checked_at TIMESTAMP;
CREATE TABLE IF NOT EXISTS {META}.columns (
    table_name VARCHAR, column_name VARCHAR, source_type VARCHAR, action VARCHAR,
    PRIMARY KEY (table_name, column_name));
ALTER TABLE {META}.columns ADD COLUMN IF NOT EXISTS spec VARCHAR;
ALTER TABLE {META}.columns ADD COLUMN IF NOT EXISTS data_class VARCHAR;
ALTER TABLE {META}.columns ADD COLUMN IF NOT EXISTS store_type VARCHAR;
CREATE TABLE IF NOT EXISTS {META}.policies (
    policy_sha256 VARCHAR PRIMARY KEY, first_used_at TIMESTAMP, text VARCHAR);
CREATE TABLE IF NOT EXISTS {META}.run_columns (
    run_id INTEGER, table_name VARCHAR, column_name VARCHAR, data_class VARCHAR,
    action VARCHAR, PRIMARY KEY (run_id, table_name, column_name));
"""
BEFORE = "before__"  # + table: the change log (rows replaced or deleted, as stored)
REPLACED_BY = "_vigie_replaced_run"
RUN_COLUMN = "_vigie_run"  # the run that wrote a stored row
KPI_STATE = "state__"  # + fact...: the KPI states, in ROLLUP_SCHEMA before they had a file
KPI_STATE_DB = "kpi_state"  # the KPI states' own file, attached under this name
KPI_STATE_KEY = "kpi_state"  # in both files' meta: the state file the store goes with
# Tables of ``_vigie`` that vigie makes besides ``deleted__<table>`` and ``before__<table>``.
META_TABLES = ("meta", "runs", "table_runs", "state", "columns", "policies", "run_columns")


def action_spec(action: Action) -> str:
    """An action as the policy writes it: ``keep``, ``pseudonymize: user``, ``generalize:
    day``... Two rules with the same spec store the same values."""
    if isinstance(action, Keep | Drop):
        return action.name
    if isinstance(action, Pseudonymize):
        return f"pseudonymize: {action.domain}"
    return action.describe()


@dataclass(frozen=True)
class ColumnRecord:
    """A policy column as the store holds it."""

    table: str
    column: str
    source_type: str
    spec: str  # the action's spec (``drop``: not in the store)
    data_class: str | None
    store_type: str | None  # None for dropped columns
    legacy: bool = False  # recorded before specs and classes were: ``spec`` is the action

    @property
    def stored(self) -> bool:
        return self.spec != "drop"


def column_records(store: Store) -> dict[str, dict[str, ColumnRecord]]:
    """Every recorded column, by table. Stores made before specs were recorded give the
    action's name as its spec (also when opened read-only, before any migration ran)."""
    out: dict[str, dict[str, ColumnRecord]] = {}
    have = {c for (c,) in store.rows(
        "SELECT column_name FROM information_schema.columns WHERE table_catalog = 'store' "
        f"AND table_schema = '{META}' AND table_name = 'columns'"
    )}  # fmt: skip
    extra = [c if c in have else f"NULL AS {c}" for c in ("spec", "data_class", "store_type")]
    for table, column, source_type, action, spec, data_class, store_type in store.rows(
        f"SELECT table_name, column_name, source_type, action, {', '.join(extra)} "
        f"FROM {META}.columns"
    ):
        out.setdefault(table, {})[column] = ColumnRecord(
            table, column, source_type, spec or action, data_class, store_type, spec is None
        )
    return out


def record_column(con: Any, record: ColumnRecord) -> None:
    con.execute(
        f"INSERT OR REPLACE INTO {META}.columns (table_name, column_name, source_type, action, "
        "spec, data_class, store_type) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            record.table, record.column, record.source_type, record.spec.split(":")[0],
            record.spec, record.data_class, record.store_type,
        ],
    )  # fmt: skip


def forget_columns(con: Any, table: str, columns: list[str]) -> None:
    for column in columns:
        con.execute(
            f"DELETE FROM {META}.columns WHERE table_name = ? AND column_name = ?",
            [table, column],
        )


def forget_table(con: Any, table: str) -> None:
    """The store no longer holds ``table``: its columns, state and delete history go (the
    runs' counts and the lineage of what was readable stay)."""
    con.execute(f"DELETE FROM {META}.columns WHERE table_name = ?", [table])
    con.execute(f"DELETE FROM {META}.state WHERE table_name = ?", [table])
    con.execute(f"DROP TABLE IF EXISTS {META}.{quote('deleted__' + table)}")


def record_policy(con: Any, run_id: int, policy: Policy, now: datetime) -> None:
    """The policy's text (once per digest) and each column's class and action in this run."""
    con.execute(
        f"INSERT INTO {META}.policies VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        [policy.digest, now, policy.text],
    )
    rules = [rule for table in policy.tables.values() for rule in table.columns.values()]
    columns = pa.table({
        "table_name": [r.table for r in rules],
        "column_name": [r.column for r in rules],
        "data_class": [r.data_class for r in rules],
        "action": [action_spec(r.action) for r in rules],
    })  # fmt: skip
    con.register("vigie_run_columns", columns)  # one statement, not one per column
    try:
        con.execute(f"INSERT INTO {META}.run_columns SELECT ?, * FROM vigie_run_columns", [run_id])
    finally:
        con.unregister("vigie_run_columns")


@dataclass(frozen=True)
class Readable:
    """A column the store held, readable from ``since`` until ``until`` (None: still)."""

    table: str
    column: str
    data_class: str
    action: str
    since: datetime
    until: datetime | None


def readable_between(store: Store, start: datetime, end: datetime) -> list[Readable]:
    """Columns readable in the store at any moment of [start, end), each with its class and
    action then: a run's policy is in force from the moment the run converged the store to
    it (``runs.converged_at``, set once its removals are done) to the moment the next run
    did. A run that crashed before converging never was in force. A column's consecutive
    runs under the same rule merge into one span."""
    rows = store.rows(
        f"""
        WITH spans AS (
            SELECT run_id, converged_at AS since,
                   LEAD(converged_at) OVER (ORDER BY run_id) AS until
            FROM {META}.runs WHERE converged_at IS NOT NULL
        ), held AS (
            SELECT c.table_name, c.column_name, c.data_class, c.action, s.since, s.until,
                   s.run_id - ROW_NUMBER() OVER (
                       PARTITION BY c.table_name, c.column_name, c.data_class, c.action
                       ORDER BY s.run_id) AS grp
            FROM {META}.run_columns c JOIN spans s USING (run_id)
            WHERE c.action <> 'drop'
        )
        SELECT table_name, column_name, data_class, action, MIN(since),
               CASE WHEN COUNT(until) = COUNT(*) THEN MAX(until) END
        FROM held GROUP BY table_name, column_name, data_class, action, grp
        HAVING MIN(since) < ? AND (COUNT(until) < COUNT(*) OR MAX(until) > ?)
        ORDER BY table_name, column_name, MIN(since)
        """,
        [end, start],
    )
    return [Readable(*row) for row in rows]


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def converged_policy_text(store: Store) -> tuple[int, str] | None:
    """The run id and policy text of the last run that converged the store (None: none)."""
    rows = store.rows(
        f"SELECT r.run_id, p.text FROM {META}.runs r JOIN {META}.policies p USING "
        f"(policy_sha256) WHERE r.converged_at IS NOT NULL ORDER BY r.run_id DESC LIMIT 1"
    )
    return (int(rows[0][0]), str(rows[0][1])) if rows else None


def history_columns(store: Store, table: str) -> set[str]:
    """The columns the delete history of ``table`` keeps (empty: it has none)."""
    return {c for (c,) in store.rows(
        "SELECT column_name FROM duckdb_columns() WHERE database_name = 'store' AND "
        "schema_name = ? AND table_name = ?", [META, f"deleted__{table}"])}  # fmt: skip


# -- the change log ------------------------------------------------------------------------


def log_replaced(con: Any, table: str, rowids: str, run_id: int) -> None:
    """Keep the stored version of the rows of ``table`` whose row ids ``rowids`` (a
    subquery) selects, before the run ``run_id`` replaces or deletes them: when a KPI
    refresh asked for the change log of ``table`` (else nothing)."""
    if logged := log_columns(con, table):
        cols = ", ".join(f"t.{quote(c)}" for c in logged)
        con.execute(
            f"INSERT INTO {log_table(table)} ({_names(logged)}, {REPLACED_BY}) SELECT "
            f"{cols}, ? FROM {quote(table)} t WHERE t.rowid IN ({rowids})",
            [run_id],
        )


def log_found(con: Any, table: str, found: str, run_id: int) -> None:
    """Keep the rows of the temporary table ``found``, which holds (at least) the change
    log's columns of ``table``, as replaced by run ``run_id``: rows a delete found by one
    scan, whose log columns that scan read too (a second scan by row id would read every
    column of the table whole)."""
    if logged := log_columns(con, table):
        con.execute(
            f"INSERT INTO {log_table(table)} ({_names(logged)}, {REPLACED_BY}) SELECT "
            f"{_names(logged)}, ? FROM {quote(found)}",
            [run_id],
        )


def log_columns(con: Any, table: str) -> list[str]:
    """The columns of ``table`` its change log keeps, in its order (empty: no log). A log
    keeps only what some KPI fact reads, and the run (``start_change_log``)."""
    return [c for c in _columns(con, META, BEFORE + table) if c != REPLACED_BY]


def _columns(con: Any, schema: str, table: str) -> list[str]:
    """The columns of the store's ``schema.table`` (its name in any case), in order."""
    return [c for (c,) in con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE database_name = 'store' AND "
        "schema_name = ? AND lower(table_name) = ? ORDER BY column_index",
        [schema, table.lower()]).fetchall()]  # fmt: skip


def _names(columns: list[str]) -> str:
    return ", ".join(quote(c) for c in columns)


def _has_log(con: Any, table: str) -> bool:
    return bool(con.execute(
        "SELECT 1 FROM duckdb_tables() WHERE database_name = 'store' AND schema_name = ? "
        "AND lower(table_name) = ?", [META, BEFORE + table.lower()]).fetchall())  # fmt: skip


def log_table(table: str) -> str:
    """The change log of ``table``. DuckDB's names ignore case: so do the logs' (a fact
    may spell a table otherwise than the policy does)."""
    return f"{META}.{quote(BEFORE + table.lower())}"


def start_change_log(con: Any, table: str, run_id: int, read: frozenset[str] | None = None) -> None:
    """From now on (after run ``run_id``) the sync keeps what it replaces in ``table``:
    the columns named in ``read`` (lower case; None: every column) and the run. A log
    that keeps other columns is made again (a refresh has just consumed it: it holds no
    change after ``run_id``)."""
    stored = _columns(con, "main", table)
    keep = [c for c in stored if read is None or c.lower() in read or c == RUN_COLUMN]
    if log_columns(con, table) == keep:
        return
    con.execute(f"DROP TABLE IF EXISTS {log_table(table)}")
    con.execute(
        f"CREATE TABLE {log_table(table)} AS SELECT {_names(keep)}, "
        f"NULL::INTEGER AS {REPLACED_BY} FROM {quote(table)} LIMIT 0"
    )
    _log_from(con, table, run_id)


def trim_change_log(con: Any, table: str, through_run: int) -> None:
    """Forget the changes of runs up to ``through_run``: a refresh has them."""
    if _has_log(con, table):
        con.execute(
            f"DELETE FROM {log_table(table)} WHERE {REPLACED_BY} <= ?",
            [through_run],
        )
        _log_from(con, table, through_run)


def _log_from(con: Any, table: str, run_id: int) -> None:
    con.execute(f"INSERT OR REPLACE INTO {META}.meta VALUES (?, ?)",
                [f"change_log_from:{table.lower()}", str(run_id)])  # fmt: skip


def bound_change_logs(con: Any) -> bool:
    """A change log no refresh reads (syncs with ``--no-rollups`` and no ``vigie kpi
    refresh``) would grow without end: once one holds more rows than its table, the logs
    and the states go (``reset_changes``), and the next refresh rebuilds in full, which
    then costs less than reading the log. Returns whether they went."""
    sql = ("SELECT table_name, estimated_size FROM duckdb_tables() WHERE database_name = "
           "'store' AND schema_name = ?")  # fmt: skip
    sizes = {(s, t.lower()): n for s in (META, "main") for t, n in con.execute(sql, [s]).fetchall()}
    for (schema, name), rows in sizes.items():
        table = name.removeprefix(BEFORE)
        if schema == META and name != table and rows > max(1000, sizes.get(("main", table), 0)):
            reset_changes(con)
            return True
    return False


def change_log_from(store: Store, table: str) -> int | None:
    """The run after which the change log of ``table`` holds every change (None: it has
    no log)."""
    key = f"change_log_from:{table.lower()}"
    rows = store.rows(f"SELECT value FROM {META}.meta WHERE key = ?", [key])
    logged = store.rows(
        "SELECT 1 FROM duckdb_tables() WHERE database_name = 'store' AND schema_name = ? "
        "AND lower(table_name) = ?", [META, BEFORE + table.lower()])  # fmt: skip
    return int(rows[0][0]) if rows and logged else None


def sorted_since(store: Store, table: str) -> tuple[int, str] | None:
    """The run that last sorted ``table`` for its cascades, and by which column (None:
    never; ``vigie.sync.cluster``)."""
    rows = store.rows(f"SELECT value FROM {META}.meta WHERE key = ?", [_sorted_key(table)])
    if not rows:
        return None
    run, column = str(rows[0][0]).split(" ", 1)
    return int(run), column


def record_sorted(con: Any, table: str, run_id: int, column: str) -> None:
    """Run ``run_id`` sorted ``table`` by ``column``."""
    con.execute(f"INSERT OR REPLACE INTO {META}.meta VALUES (?, ?)",
                [_sorted_key(table), f"{run_id} {column}"])  # fmt: skip


def forget_sorted(con: Any, table: str) -> None:
    """``table`` is dropped (``--rebuild``): it is no longer sorted."""
    con.execute(f"DELETE FROM {META}.meta WHERE key = ?", [_sorted_key(table)])


def _sorted_key(table: str) -> str:
    return f"clustered:{table.lower()}"


def reset_changes(con: Any) -> None:
    """The store's tables were rewritten in a way the change log does not follow (a policy
    change, a table loaded again, pseudonyms rotated): drop the logs and disown the KPI
    states built on them (their file goes when the store closes, ``Store.close``). The
    next refresh finds no state and rebuilds in full (and starts the logs again)."""
    for schema, prefix in ((META, BEFORE), (ROLLUP_SCHEMA, KPI_STATE)):
        sql = ("SELECT table_name FROM duckdb_tables() WHERE database_name = 'store' AND "
               "schema_name = ? AND starts_with(table_name, ?)")  # fmt: skip
        for (name,) in con.execute(sql, [schema, prefix]).fetchall():
            con.execute(f"DROP TABLE {schema}.{quote(name)}")
    con.execute(f"DELETE FROM {META}.meta WHERE starts_with(key, 'change_log_from:') "
                "OR key = ?", [KPI_STATE_KEY])  # fmt: skip

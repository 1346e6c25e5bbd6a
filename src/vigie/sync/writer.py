"""Writing masked batches into a store table: create it, append, merge by key.

Each batch is written with its chunk's checkpoint in one store transaction (the caller
passes the checkpoint as ``on_commit``), so a sync killed at any moment resumes where it
stopped.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa

from vigie.errors import SyncError
from vigie.policy.compile import BUCKET_COLUMN, CompiledTable, Masked
from vigie.policy.model import Keep
from vigie.stores.duckdb_store import Store, q
from vigie.stores.meta import META, ColumnRecord, action_spec, log_replaced, record_column
from vigie.sync.state import TableResult

ROW_GROUP = 122_880
_TYPES = {
    "integer": "BIGINT",
    "float": "DOUBLE",
    "decimal": "DOUBLE",
    "text": "VARCHAR",
    "timestamp": "TIMESTAMP",
    "date": "DATE",
    "boolean": "BOOLEAN",
}


def store_type(compiled: CompiledTable, column: str) -> str:
    """The store's type for a copied column: what its action makes of production's."""
    if column in compiled.pseudonym_columns:
        return "UUID"
    source = compiled.source.column(column)
    kind = source.kind
    if kind == "integer" and "unsigned" in source.raw_type.lower() and "bigint" in source.raw_type:
        return "UBIGINT"  # MySQL's unsigned 64-bit integers
    if compiled.policy.columns[column].action.name == "generalize":
        return {"timestamp": "TIMESTAMP", "date": "DATE", "text": "VARCHAR"}.get(kind, "DOUBLE")
    return _TYPES.get(kind, "VARCHAR")


def column_record(compiled: CompiledTable, column: str) -> ColumnRecord:
    """How the store holds ``column`` under the compiled policy."""
    rule = compiled.policy.columns[column]
    stored = rule.leaves_production
    return ColumnRecord(
        compiled.policy.name, column, compiled.source.column(column).raw_type,
        action_spec(rule.action), rule.data_class,
        store_type(compiled, column) if stored else None,
    )  # fmt: skip


def select_columns(compiled: CompiledTable, columns: list[str] | None = None) -> str:
    """The batch's copied columns (or ``columns``) as the store types them."""
    names = columns if columns is not None else [c.name for c in compiled.columns]
    return ", ".join(
        f"{q(c)}::UUID AS {q(c)}" if c in compiled.pseudonym_columns else q(c) for c in names
    )


class TableWriter:
    """The store side of one table's sync in one run."""

    def __init__(self, store: Store, compiled: CompiledTable, run_id: int,
                 run_time: datetime, result: TableResult) -> None:  # fmt: skip
        self.store, self.c = store, compiled
        self.run_id, self.run_time, self.result = run_id, run_time, result
        self.name = compiled.policy.name
        self.compare_all = False  # compare every copied column (verification passes)

    def ensure_table(self) -> None:
        """Create the table, its delete history and its metadata on first sight."""
        if self.store.has_table(self.name):
            return
        cols = [f"{q(c.name)} {store_type(self.c, c.name)}" for c in self.c.columns]
        cols += [f"{BUCKET_COLUMN} BIGINT", "_vigie_first_seen TIMESTAMP", "_vigie_run INTEGER"]
        keys = ", ".join(f"{q(k)} {store_type(self.c, k)}" for k in self.c.key)
        with self.store.transaction() as con:
            con.execute(f"CREATE TABLE {q(self.name)} ({', '.join(cols)})")
            con.execute(
                f"CREATE TABLE IF NOT EXISTS {META}.{q('deleted__' + self.name)} ({keys}, "
                "_vigie_first_seen TIMESTAMP, _vigie_deleted_at TIMESTAMP, _vigie_run INTEGER)"
            )
            for name in self.c.policy.columns:
                record_column(con, column_record(self.c, name))
            con.execute(
                f"INSERT OR REPLACE INTO {META}.state (table_name, cursor_column, loaded) "
                "VALUES (?, ?, false)",
                [self.name, self.c.policy.cursor],
            )

    def write(self, masked: Masked, merge: bool,
              on_commit: Callable[[Any, int], None] | None = None) -> int:  # fmt: skip
        """Write one masked batch; ``on_commit(con, last_bucket)`` runs in its transaction
        (the chunk's checkpoint)."""
        last_bucket = int(masked.buckets[-1]) if masked.rows else None
        # record batches of one DuckDB row group each: DuckDB scans and appends them in parallel
        arrow = pa.Table.from_batches(masked.arrow.to_batches(max_chunksize=ROW_GROUP))
        with self.store.transaction() as con:
            con.register("vigie_batch", arrow)
            try:
                if merge:
                    buckets = masked.buckets
                    low, high = (int(buckets.min()), int(buckets.max())) if masked.rows else (0, 0)
                    self.merge(con, low, high, arrow.num_rows)
                else:
                    self.insert(con)
                    self.result.inserted += arrow.num_rows
                if on_commit is not None and last_bucket is not None:
                    on_commit(con, last_bucket)
            except duckdb.ConversionException as exc:
                raise self._unfit(exc, masked) from None
            finally:
                con.unregister("vigie_batch")
        return int(arrow.num_rows)

    def _unfit(self, exc: Exception, masked: Masked) -> SyncError:
        """A value the store's type cannot hold: the table, the column and the key buckets,
        never the value (the engine's message holds it)."""
        found = re.search(r"column (\S+)", str(exc))
        column = found[1].strip('"') if found else "one of its columns"
        buckets = f"{int(masked.buckets.min())}-{int(masked.buckets.max())}" if masked.rows else ""
        return SyncError(
            f"{self.name}.{column}: a value does not fit the store's type "
            f"({type(exc).__name__}), in key buckets {buckets}; nothing of the batch was "
            "written.",
            hint="Check the column's type in production against what the policy does with it; "
            "pseudonymize or generalize it if it holds values out of the usual range.",
        )

    def insert(self, con: Any) -> None:
        names = [q(c.name) for c in self.c.columns]
        con.execute(
            f"INSERT INTO {q(self.name)} ({', '.join(names)}, {BUCKET_COLUMN}, "
            f"_vigie_first_seen, _vigie_run) SELECT {select_columns(self.c)}, {BUCKET_COLUMN}, "
            "?, ? FROM vigie_batch",
            [self.run_time, self.run_id],
        )

    def merge(self, con: Any, low: int, high: int, rows: int) -> None:
        """Upsert the batch by key; only rows that changed (``change_columns``) count as
        updated.

        Changed rows are deleted and appended again (keeping when they were first seen)
        rather than updated in place: DuckDB marks deletes cheaply, while in-place updates
        of rows spread over the table rewrite every row group they touch (86k changed
        devices of 4.1M: 2.6 s as a MERGE). A key's bucket follows from the key, so only
        the batch's bucket range of the table can match: the condition lets DuckDB skip
        the rest (zone maps)."""
        table, names = q(self.name), [q(c.name) for c in self.c.columns]
        on = " AND ".join(f"t.{q(k)} = s.{q(k)}" for k in self.c.key)
        on += f" AND t.{BUCKET_COLUMN} BETWEEN {low} AND {high}"
        compared = [q(c) for c in self.change_columns()]
        changed = (
            f"({', '.join('t.' + n for n in compared)}) IS DISTINCT FROM "
            f"({', '.join('s.' + n for n in compared)})"
        )
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE vigie_new AS SELECT {select_columns(self.c)}, "
            f"{BUCKET_COLUMN} FROM vigie_batch"
        )
        keys = ", ".join(f"s.{q(k)}" for k in self.c.key)
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE vigie_old AS SELECT t.rowid AS _rid, {keys}, "
            f"t._vigie_first_seen AS _first_seen, {changed} AS _changed "
            f"FROM {table} t JOIN vigie_new s ON ({on})"
        )
        replaced = "SELECT _rid FROM vigie_old WHERE _changed"
        log_replaced(con, self.name, replaced, self.run_id)
        con.execute(f"DELETE FROM {table} WHERE rowid IN ({replaced})")
        same = " AND ".join(f"o.{q(k)} = s.{q(k)}" for k in self.c.key)
        con.execute(
            f"INSERT INTO {table} ({', '.join(names)}, {BUCKET_COLUMN}, _vigie_first_seen, "
            f"_vigie_run) SELECT {', '.join('s.' + n for n in names)}, s.{BUCKET_COLUMN}, "
            f"COALESCE(o._first_seen, ?), {self.run_id} FROM vigie_new s "
            f"LEFT JOIN vigie_old o ON ({same}) WHERE o._changed IS NOT FALSE",
            [self.run_time],
        )
        matched, updated = one(
            con, "SELECT COUNT(*), COUNT(*) FILTER (WHERE _changed) FROM vigie_old"
        )
        con.execute("DROP TABLE vigie_new")
        con.execute("DROP TABLE vigie_old")
        self.result.updated += int(updated)
        self.result.inserted += rows - int(matched)

    def change_columns(self) -> list[str]:
        """The columns whose stored values tell whether a re-read row changed.

        A cursor column kept as is moves whenever production changes the row, so comparing
        it alone is enough: the merge then reads one column of the stored table instead of
        all of them (rows updated in production are spread over the whole table, so each
        compared column is read whole). Otherwise every copied column is compared."""
        cursor = self.c.policy.cursor
        rule = self.c.policy.columns.get(cursor) if cursor else None
        if self.compare_all:  # a verification pass: a missed update may not show in the cursor
            return [c.name for c in self.c.columns]
        if rule is not None and isinstance(rule.action, Keep) and cursor not in self.c.key:
            return [cursor]  # type: ignore[list-item]
        return [c.name for c in self.c.columns]


def one(con: Any, sql: str, params: list[Any] | None = None) -> tuple[Any, ...]:
    row = con.execute(sql, params or []).fetchone()
    assert row is not None
    return tuple(row)

"""PostgreSQL and MySQL/MariaDB sources, read through DuckDB's scanner extensions.

The scanners move rows in native code straight into Arrow (PostgreSQL with binary COPY on
parallel connections that share one exported snapshot). A DuckDB transaction maps to one
REPEATABLE READ transaction on the server, so ``snapshot()`` is a ``BEGIN`` here. Full
reads use the native table scan; filtered and grouped reads are sent to the server as
SQL (``postgres_query``/``mysql_query``) so that its indexes do the work.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa

from vigie.db.dsn import Dsn
from vigie.db.quote import ident, literal
from vigie.errors import ConnectionFailed, SyncError
from vigie.scan.detectors import without_values
from vigie.sources.base import (
    CursorValue,
    Filter,
    ForeignKey,
    KeyRange,
    Kind,
    RowCounters,
    Source,
    SourceColumn,
    SourceTable,
    bucketed,
)
from vigie.stores.extensions import load_extension

_PG_KINDS: dict[str, Kind] = {
    "smallint": "integer", "integer": "integer", "bigint": "integer",
    "real": "float", "double precision": "float", "numeric": "decimal",
    "character varying": "text", "text": "text", "character": "text", "uuid": "text",
    "timestamp without time zone": "timestamp", "timestamp with time zone": "timestamp",
    "date": "date", "boolean": "boolean",
}  # fmt: skip
_MY_KINDS: dict[str, Kind] = {
    "tinyint": "integer", "smallint": "integer", "mediumint": "integer", "int": "integer",
    "bigint": "integer", "float": "float", "double": "float", "decimal": "decimal",
    "varchar": "text", "char": "text", "text": "text", "mediumtext": "text", "longtext": "text",
    "tinytext": "text", "datetime": "timestamp", "timestamp": "timestamp", "date": "date",
}  # fmt: skip

# What a PostgreSQL transaction sees (xmin:xmax:running): a reader that joined the run's
# snapshot sees what the run sees
SEEN = "SELECT pg_current_snapshot()::text"


class DuckSource:
    """A PostgreSQL or MySQL source attached read-only to a private DuckDB."""

    def __init__(self, dsn: Dsn) -> None:
        self.dsn = dsn
        # One thread: each query here is one server-side scan, and a sync runs two readers
        # beside the masking and the store's writer on the same cores (measured: 2 -> 1
        # thread per reader took a full load of 37.8M events from 70 s to 58 s).
        self.con = duckdb.connect(config={"threads": 1})
        self.con.execute("SET enable_progress_bar = false")
        self.pg = dsn.engine == "postgresql"
        load_extension(self.con, "postgres" if self.pg else "mysql")
        try:
            self.con.execute(f"ATTACH '{self._attach_string()}' AS src {self._attach_options()}")
        except duckdb.Error as exc:
            raise ConnectionFailed(
                f"Cannot connect to {dsn}: {self._scrub(str(exc)).splitlines()[0]}",
                hint="Is the server running, the database created, the user allowed to read?",
            ) from None
        self.schema = self._scalar("SELECT current_schema()") if self.pg else dsn.database
        self._in_snapshot = False
        self.snapshot_id = self.snapshot_seen = ""
        self._catalog_cache: tuple[dict[str, SourceTable], dict[str, list[ForeignKey]]] | None
        self._catalog_cache = None

    def _attach_string(self) -> str:
        """The connection string, its values quoted by the driver's rules (never pasted);
        then made one DuckDB string literal."""
        # PostgreSQL without JIT: compiling each scan costs more CPU than it saves here
        text = self.dsn.libpq(options="-cjit=off") if self.pg else self.dsn.mysql_attach()
        return text.replace("'", "''")

    def _attach_options(self) -> str:
        return "(TYPE postgres, READ_ONLY)" if self.pg else "(TYPE mysql, READ_ONLY)"

    def _scrub(self, text: str) -> str:
        """An engine message without the connection string or the password, in any of the
        forms it is written in (raw, or escaped by either connection-string syntax)."""
        if not self.dsn.password:
            return text
        conninfo = self.dsn.libpq(options="-cjit=off") if self.pg else self.dsn.mysql_attach()
        text = text.replace(conninfo, "<connection string>")
        p = self.dsn.password
        for form in (p, p.replace("\\", "\\\\").replace("'", "\\'"),
                     p.replace("\\", "\\\\").replace('"', '\\"')):  # fmt: skip
            text = text.replace(form, "***")
        return text

    # -- raw SQL on the server -------------------------------------------------------------

    def _remote(self, sql: str) -> duckdb.DuckDBPyRelation:
        fn = "postgres_query" if self.pg else "mysql_query"
        return self.con.sql(f"SELECT * FROM {fn}('src', '{sql.replace(chr(39), chr(39) * 2)}')")

    def _rows(self, sql: str) -> list[tuple[Any, ...]]:
        try:
            return self._remote(sql).fetchall()
        except duckdb.Error as exc:
            raise SyncError(
                f"Reading {self.dsn} failed: {without_values(self._scrub(str(exc)))}"
            ) from None

    def _scalar(self, sql: str) -> Any:
        rows = self._rows(sql)
        return rows[0][0] if rows else None

    def q(self, name: str) -> str:
        return ident("postgresql" if self.pg else "mysql", name)

    def lit(self, text: str) -> str:
        return literal("postgresql" if self.pg else "mysql", text)

    # -- schema ----------------------------------------------------------------------------

    def table_names(self) -> list[str]:
        rows = self._rows(
            "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
            f"AND table_schema = {self.lit(self.schema)}"
        )
        return sorted(str(r[0]) for r in rows)

    def identity(self) -> str:
        if self.pg:
            # the cluster's identifier, where this role may read it (a failed statement
            # would abort the snapshot's transaction: the privilege is asked first)
            system = f"{self.dsn.host}:{self.dsn.port}"
            if self._scalar("SELECT has_function_privilege('pg_control_system()', 'EXECUTE')"):
                system = str(self._scalar("SELECT system_identifier FROM pg_control_system()"))
            oid = self._scalar("SELECT oid FROM pg_database WHERE datname = current_database()")
            return f"postgresql:{system}:{oid}:{self.schema}"
        host, port, server_id = self._rows("SELECT @@hostname, @@port, @@server_id")[0]
        return f"mysql:{host}:{port}:{server_id}:{self.schema}"

    def describe(self, table: str) -> SourceTable:
        return self._catalog()[0].get(table) or SourceTable(table, (), ())

    def foreign_keys(self, table: SourceTable) -> list[ForeignKey]:
        return self._catalog()[1].get(table.name, [])

    def _catalog(self) -> tuple[dict[str, SourceTable], dict[str, list[ForeignKey]]]:
        """Every table's columns, primary key and foreign keys, read once per snapshot in
        three queries (one per table each took a round trip apiece)."""
        if self._catalog_cache is None:
            keys: dict[str, list[str]] = {}
            for name, column in self._rows(self._primary_keys_sql()):
                keys.setdefault(str(name), []).append(str(column))
            columns: dict[str, list[SourceColumn]] = {}
            kinds = _PG_KINDS if self.pg else _MY_KINDS
            for name, column, kind, nullable, raw in self._rows(
                "SELECT table_name, column_name, data_type, is_nullable, "
                + ("udt_name" if self.pg else "column_type")
                + f" FROM information_schema.columns WHERE table_schema = {self.lit(self.schema)} "
                "ORDER BY table_name, ordinal_position"
            ):
                columns.setdefault(str(name), []).append(
                    SourceColumn(
                        str(column),
                        kinds.get(str(kind).lower(), "other"),
                        str(raw),
                        nullable == "YES",
                    )
                )
            tables = {
                n: SourceTable(n, tuple(cols), tuple(keys.get(n, [])))
                for n, cols in columns.items()
            }
            fks: dict[str, list[ForeignKey]] = {}
            for child, column, parent, parent_column, rule in self._rows(self._foreign_keys_sql()):
                fks.setdefault(str(child), []).append(
                    ForeignKey(str(column), str(parent), str(parent_column), str(rule).upper())
                )
            self._catalog_cache = tables, fks
        return self._catalog_cache

    def _primary_keys_sql(self) -> str:
        if self.pg:
            return (
                "SELECT c.relname, a.attname FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
                f"WHERE i.indisprimary AND n.nspname = {self.lit(self.schema)} "
                "ORDER BY c.relname, array_position(i.indkey::int2[], a.attnum)"
            )
        return (
            "SELECT table_name, column_name FROM information_schema.key_column_usage "
            f"WHERE table_schema = {self.lit(self.schema)} AND constraint_name = 'PRIMARY' "
            "ORDER BY table_name, ordinal_position"
        )

    def _foreign_keys_sql(self) -> str:
        """Single-column foreign keys: (table, column, parent table, parent column, rule)."""
        if self.pg:
            return (
                "SELECT c.relname AS child, a.attname AS child_column, p.relname AS parent, "
                "pa.attname AS parent_column, CASE k.confdeltype "
                "WHEN 'c' THEN 'CASCADE' WHEN 'r' THEN 'RESTRICT' WHEN 'n' THEN 'SET NULL' "
                "WHEN 'd' THEN 'SET DEFAULT' ELSE 'NO ACTION' END AS rule "
                "FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "JOIN pg_class p ON p.oid = k.confrelid "
                "JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1] "
                "JOIN pg_attribute pa ON pa.attrelid = k.confrelid AND pa.attnum = k.confkey[1] "
                "WHERE k.contype = 'f' AND cardinality(k.conkey) = 1 "
                f"AND n.nspname = {self.lit(self.schema)}"
            )
        return (
            "SELECT kcu.table_name, kcu.column_name, kcu.referenced_table_name, "
            "kcu.referenced_column_name, rc.delete_rule "
            "FROM information_schema.referential_constraints rc "
            "JOIN information_schema.key_column_usage kcu ON kcu.constraint_name = "
            "rc.constraint_name AND kcu.constraint_schema = rc.constraint_schema "
            f"WHERE kcu.table_schema = {self.lit(self.schema)}"
        )

    # -- snapshot --------------------------------------------------------------------------

    def snapshot(self) -> None:
        self._catalog_cache = None  # read again in this snapshot
        self.con.execute("BEGIN TRANSACTION")
        self._in_snapshot = True
        if self.pg:  # lets parallel readers join this very snapshot
            self.snapshot_id = str(self._scalar("SELECT pg_export_snapshot()"))
            self.snapshot_seen = str(self._scalar(SEEN))

    def _join_snapshot(self, snapshot_id: str) -> None:
        """Begin a transaction on the snapshot another connection exported."""
        self.con.execute("BEGIN TRANSACTION")
        self._in_snapshot = True
        inner = f"SET TRANSACTION SNAPSHOT '{snapshot_id}'".replace("'", "''")
        self.con.execute(f"CALL postgres_execute('src', '{inner}')")

    @property
    def shares_snapshot(self) -> bool:
        return self.pg and self._in_snapshot

    def readers(self, n: int) -> list[Source]:
        """PostgreSQL: extra connections that import this snapshot (pg_export_snapshot)."""
        if not self.shares_snapshot or n <= 1:
            return [self]
        return [self, *(self.reader() for _ in range(n - 1))]

    def reader(self, spare: Source | None = None) -> Source:
        """One more connection reading this very snapshot; ``spare``, a reader of an earlier
        snapshot of the same server, is reused instead of connecting again."""
        if isinstance(spare, DuckSource) and spare.dsn == self.dsn:
            spare.release()
            clone = spare
        else:
            if spare is not None:
                spare.close()
            clone = DuckSource(self.dsn)
        for attempt in range(2):  # a reader that sees another state is never read through
            if attempt:
                clone = DuckSource(self.dsn)
            clone._join_snapshot(self.snapshot_id)
            if str(clone._scalar(SEEN)) == self.snapshot_seen:
                return clone
            clone.close()
        raise SyncError(
            f"A reader of {self.dsn} did not join the run's snapshot of PostgreSQL: "
            "nothing was read through it.",
            hint="Run the sync again; if it recurs, report it with the server version.",
        )

    def release(self) -> None:
        if self._in_snapshot:
            self.con.execute("ROLLBACK")
            self._in_snapshot = False

    def close(self) -> None:
        self.release()
        self.con.close()

    # -- reads -----------------------------------------------------------------------------

    def max_value(self, table: SourceTable, column: str) -> CursorValue | None:
        """The largest value of ``column`` in the snapshot."""
        top = f"MAX({self.q(column)})"
        if self._zoned(table, column):  # as UTC wall time: no time zone crosses into Python
            top = f"({top} AT TIME ZONE 'UTC')"
        value = self._rows(f"SELECT {top} FROM {self.q(table.name)}")[0][0]
        return value if value is None or isinstance(value, int | datetime) else None

    def _zoned(self, table: SourceTable, column: str) -> bool:
        """A PostgreSQL ``timestamp with time zone`` column."""
        return self.pg and table.column(column).raw_type == "timestamptz"

    def key_span(self, table: SourceTable) -> tuple[int, int] | None:
        if not bucketed(table):
            return None
        c = self.q(table.primary_key[0])
        lo, hi = self._rows(f"SELECT MIN({c}), MAX({c}) FROM {self.q(table.name)}")[0]
        return None if lo is None else (int(lo), int(hi))

    def estimate_rows(self, table: SourceTable) -> int | None:
        if self.pg:
            name = self.lit(f"{self.q(self.schema)}.{self.q(table.name)}")
            sql = f"SELECT reltuples::bigint FROM pg_class WHERE oid = {name}::regclass"
        else:
            sql = (
                "SELECT table_rows FROM information_schema.tables "
                f"WHERE table_schema = {self.lit(self.schema)} "
                f"AND table_name = {self.lit(table.name)}"
            )
        value = self._scalar(sql)
        return int(value) if value is not None and int(value) > 0 else None

    def read(
        self,
        table: SourceTable,
        columns: list[str],
        where: Filter | None,
        keys: KeyRange | None,
        batch_rows: int,
    ) -> Iterator[pa.Table]:
        cols = ", ".join(self._select(table, c) for c in columns)
        conds = []
        if where is not None:
            op = ">=" if where.inclusive else ">"
            value = self.literal(where.value)
            if self._zoned(table, where.column):  # the watermark is UTC wall time
                value = f"({value} AT TIME ZONE 'UTC')"
            conds.append(f"{self.q(where.column)} {op} {value}")
        conds += self._range(table, keys)
        order = ", ".join(self.q(c) for c in table.primary_key)
        sql = f"SELECT {cols} FROM {self.q(table.name)}"
        sql += f" WHERE {' AND '.join(conds)}" if conds else ""
        sql += f" ORDER BY {order}"
        try:
            for batch in self._remote(sql).to_arrow_reader(batch_rows):
                yield pa.Table.from_batches([batch])
        except duckdb.Error as exc:
            raise SyncError(
                f"Reading {table.name} from {self.dsn} failed: "
                f"{without_values(self._scrub(str(exc)))}"
            ) from None

    def _select(self, table: SourceTable, column: str) -> str:
        """A column as read. PostgreSQL numerics come as float8 (the store keeps DOUBLE):
        the scanner's decimal has no NaN or infinity and turned them into 0."""
        if self.pg and table.column(column).kind == "decimal":
            return f"{self.q(column)}::float8 AS {self.q(column)}"
        return self.q(column)

    def _range(self, table: SourceTable, keys: KeyRange | None) -> list[str]:
        if keys is None or not bucketed(table):
            return []
        first = self.q(table.primary_key[0])
        out = []
        if keys.start is not None:
            out.append(f"{first} >= {int(keys.start)}")
        if keys.stop is not None:
            out.append(f"{first} < {int(keys.stop)}")
        return out

    def literal(self, value: CursorValue) -> str:
        if isinstance(value, datetime):
            text = value.strftime("%Y-%m-%d %H:%M:%S.%f")
            return f"TIMESTAMP '{text}'" if self.pg else f"'{text}'"
        return str(int(value))

    def bucket_counts(self, table: SourceTable, width: int) -> dict[int, int]:
        if not bucketed(table):
            return {0: int(self._scalar(f"SELECT COUNT(*) FROM {self.q(table.name)}"))}
        c = self.q(table.primary_key[0])
        bucket = f"FLOOR({c} / {width})"
        rows = self._rows(
            f"SELECT {bucket} AS b, COUNT(*) FROM {self.q(table.name)} GROUP BY {bucket}"
        )
        return {int(b): int(n) for b, n in rows}

    def row_count(self, table: SourceTable) -> int:
        return int(self._scalar(f"SELECT COUNT(*) FROM {self.q(table.name)}"))

    def row_counters(self) -> dict[str, RowCounters]:
        if not self.pg:
            return {}
        rows = self._rows(
            "SELECT s.relname, s.n_tup_del, s.n_live_tup, s.n_tup_ins + s.n_tup_upd AS written, "
            "d.datid::text || '/' || "
            "c.relfilenode::text || '/' || pg_postmaster_start_time()::text || '/' || "
            "COALESCE(d.stats_reset::text, ''), (s.vacuum_count + s.autovacuum_count + "
            "s.analyze_count + s.autoanalyze_count)::text "
            "FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid "
            "JOIN pg_stat_database d ON d.datname = current_database() "
            f"WHERE s.schemaname = {self.lit(self.schema)}"
        )
        return {
            str(name): RowCounters(
                str(epoch), int(deleted), f"{epoch}/{maintained}", int(live), int(written)
            )
            for name, deleted, live, written, epoch, maintained in rows
        }

    def keys_between(self, table: SourceTable, ranges: list[KeyRange]) -> Iterator[pa.Table]:
        """One query per 500 ranges (an OR of index range scans), not one per range."""
        cols = ", ".join(self.q(c) for c in table.primary_key)
        for start in range(0, len(ranges), 500):
            conds = [
                " AND ".join(self._range(table, r)) or "true" for r in ranges[start : start + 500]
            ]
            where = " OR ".join(f"({c})" for c in conds)
            yield self._remote(
                f"SELECT {cols} FROM {self.q(table.name)} WHERE {where}"
            ).to_arrow_table()

    def sample(self, table: SourceTable, rows: int) -> pa.Table:
        cols = ", ".join(self._select(table, c) for c in table.names)
        sql = f"SELECT {cols} FROM {self.q(table.name)} LIMIT {rows}"
        return self._remote(sql).to_arrow_table()

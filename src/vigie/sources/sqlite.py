"""SQLite source, read with the standard library inside one read transaction.

A ``BEGIN`` followed by a first read pins a snapshot (WAL mode lets writers go on
meanwhile). Rows are turned into Arrow a batch at a time; timestamps stored as text are
parsed by Arrow compute, not in Python.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from vigie.db.connect import connect
from vigie.db.dsn import Dsn
from vigie.db.quote import ident
from vigie.errors import SyncError
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

_ARROW: dict[Kind, pa.DataType] = {
    "integer": pa.int64(),
    "float": pa.float64(),
    "decimal": pa.float64(),
    "text": pa.string(),
    "timestamp": pa.timestamp("us"),
    "date": pa.date32(),
    "boolean": pa.bool_(),
    "other": pa.string(),
}


def sqlite_kind(declared: str) -> Kind:
    """SQLite's affinity rules, refined for the dates and times SQLite stores as text."""
    t = declared.upper()
    if "INT" in t:
        return "integer"
    if "TIMESTAMP" in t or "DATETIME" in t:
        return "timestamp"
    if t == "DATE":
        return "date"
    if "CHAR" in t or "CLOB" in t or "TEXT" in t:
        return "text"
    if "REAL" in t or "FLOA" in t or "DOUB" in t or "NUMERIC" in t or "DECIMAL" in t:
        return "float"
    if "BOOL" in t:
        return "boolean"
    return "other"


class SQLiteSource:
    def __init__(self, dsn: Dsn) -> None:
        self.dsn = dsn
        self.conn: sqlite3.Connection = connect(dsn)
        self.conn.execute("PRAGMA query_only = ON")

    def table_names(self) -> list[str]:
        rows = self.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        ).fetchall()
        return sorted(r[0] for r in rows)

    def identity(self) -> str:
        return f"sqlite:{self.dsn.path.resolve()}"

    def describe(self, table: str) -> SourceTable:
        info = self.conn.execute(f"PRAGMA table_info({_q(table)})").fetchall()
        rowid = sum(1 for r in info if r[5]) == 1  # a lone INTEGER PRIMARY KEY is the rowid
        columns = tuple(
            SourceColumn(name, sqlite_kind(decl or ""), decl or "",
                         not notnull and not (pk and rowid and (decl or "").upper() == "INTEGER"))
            for _, name, decl, notnull, _, pk in info
        )  # fmt: skip
        pk = tuple(name for _, name, *_rest, pos in sorted(info, key=lambda r: r[5]) if pos)
        return SourceTable(table, columns, pk)

    def snapshot(self) -> None:
        self.conn.execute("BEGIN")
        self.conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchall()  # pin the snapshot

    def release(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    def close(self) -> None:
        self.release()
        self.conn.close()

    def max_value(self, table: SourceTable, column: str) -> CursorValue | None:
        (value,) = self.conn.execute(f"SELECT MAX({_q(column)}) FROM {_q(table.name)}").fetchone()
        if value is None:
            return None
        if table.column(column).kind == "timestamp":
            return datetime.fromisoformat(str(value))
        return int(value)

    def key_span(self, table: SourceTable) -> tuple[int, int] | None:
        if not bucketed(table):
            return None
        first = table.primary_key[0]
        lo, hi = self.conn.execute(
            f"SELECT MIN({_q(first)}), MAX({_q(first)}) FROM {_q(table.name)}"
        ).fetchone()
        return None if lo is None else (int(lo), int(hi))

    shares_snapshot = False

    def readers(self, n: int) -> list[Source]:
        return [self]

    def reader(self, spare: Source | None = None) -> Source:
        raise NotImplementedError("SQLite does not share its snapshot with other connections")

    def estimate_rows(self, table: SourceTable) -> int | None:
        (n,) = self.conn.execute(f"SELECT COUNT(*) FROM {_q(table.name)}").fetchone()
        return int(n)

    def read(
        self,
        table: SourceTable,
        columns: list[str],
        where: Filter | None,
        keys: KeyRange | None,
        batch_rows: int,
    ) -> Iterator[pa.Table]:
        conds, params = _range(table, keys)
        if where is not None:
            conds.append(f"{_q(where.column)} {'>=' if where.inclusive else '>'} ?")
            params.append(_param(where.value))
        sql = f"SELECT {_read_cols(table, columns)} FROM {_q(table.name)}"
        sql += f" WHERE {' AND '.join(conds)}" if conds else ""
        sql += f" ORDER BY {_cols(list(table.primary_key))}"
        cursor = self.conn.execute(sql, params)
        schema = _schema(table, columns)
        while rows := cursor.fetchmany(batch_rows):
            try:
                yield _to_arrow(rows, schema)
            except SourceValueError as exc:
                raise SyncError(
                    f"{table.name}.{exc.column} holds {exc.what} (declared "
                    f"{table.column(exc.column).raw_type or 'untyped'}); nothing of the batch "
                    "was copied.",
                    hint="Fix those values in production, or classify the column for what it "
                    "holds (drop it if it is not needed). Timestamps are read as "
                    "YYYY-MM-DD HH:MM:SS[.ffffff][+HH:MM], ISO 8601 with T, a date, or epoch "
                    "seconds.",
                ) from None

    def bucket_counts(self, table: SourceTable, width: int) -> dict[int, int]:
        if not bucketed(table):
            (n,) = self.conn.execute(f"SELECT COUNT(*) FROM {_q(table.name)}").fetchone()
            return {0: int(n)}
        first = table.primary_key[0]
        rows = self.conn.execute(
            f"SELECT {_q(first)} / {width} AS b, COUNT(*) FROM {_q(table.name)} GROUP BY b"
        ).fetchall()
        return {int(b): int(n) for b, n in rows}

    def row_count(self, table: SourceTable) -> int:
        (n,) = self.conn.execute(f"SELECT COUNT(*) FROM {_q(table.name)}").fetchone()
        return int(n)

    def row_counters(self) -> dict[str, RowCounters]:
        return {}  # SQLite keeps no such statistic: deletes are always counted

    def foreign_keys(self, table: SourceTable) -> list[ForeignKey]:
        rows = self.conn.execute(f"PRAGMA foreign_key_list({_q(table.name)})").fetchall()
        return [ForeignKey(r[3], r[2], r[4], str(r[6]).upper()) for r in rows]

    def keys_between(self, table: SourceTable, ranges: list[KeyRange]) -> Iterator[pa.Table]:
        schema = pa.schema([(c, _ARROW[table.column(c).kind]) for c in table.primary_key])
        for start in range(0, len(ranges), 400):
            parts, params = [], []
            for keys in ranges[start : start + 400]:
                conds, values = _range(table, keys)
                parts.append(" AND ".join(conds) or "1")
                params += values
            where = " OR ".join(f"({p})" for p in parts)
            sql = f"SELECT {_cols(list(table.primary_key))} FROM {_q(table.name)} WHERE {where}"
            yield _to_arrow(self.conn.execute(sql, params).fetchall(), schema)

    def sample(self, table: SourceTable, rows: int) -> pa.Table:
        schema = _schema(table, list(table.names))
        data = self.conn.execute(
            f"SELECT {_read_cols(table, list(table.names))} FROM {_q(table.name)} LIMIT ?",
            (rows,),
        ).fetchall()
        return _to_arrow(data, schema)


def _range(table: SourceTable, keys: KeyRange | None) -> tuple[list[str], list[Any]]:
    if keys is None or not bucketed(table):
        return [], []
    first = table.primary_key[0]
    conds, params = [], []
    if keys.start is not None:
        conds.append(f"{_q(first)} >= ?")
        params.append(keys.start)
    if keys.stop is not None:
        conds.append(f"{_q(first)} < ?")
        params.append(keys.stop)
    return conds, params


def _q(name: str) -> str:
    return ident("sqlite", name)


def _schema(table: SourceTable, columns: list[str]) -> pa.Schema:
    kinds = {c: table.column(c).kind for c in columns}
    return pa.schema([pa.field(c, _ARROW[k], metadata={"kind": k}) for c, k in kinds.items()])


def _read_cols(table: SourceTable, columns: list[str]) -> str:
    """Text and untyped columns are read as bytes (``CAST AS BLOB``): SQLite would raise on
    text that is not UTF-8, with the value in its message; Arrow checks UTF-8 instead."""
    return ", ".join(
        f"CAST({_q(c)} AS BLOB) AS {_q(c)}" if table.column(c).kind in ("text", "other") else _q(c)
        for c in columns
    )


def _cols(columns: list[str]) -> str:
    return ", ".join(_q(c) for c in columns)


def _param(value: CursorValue) -> Any:
    if isinstance(value, datetime):
        return (
            value.strftime("%Y-%m-%d %H:%M:%S") if not value.microsecond else value.isoformat(" ")
        )
    return value


def _to_arrow(rows: list[tuple[Any, ...]], schema: pa.Schema) -> pa.Table:
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
    arrays = [_column(field, values) for field, values in zip(schema, columns, strict=True)]
    return pa.Table.from_arrays(
        arrays, schema=pa.schema([(f.name, a.type) for f, a in zip(schema, arrays, strict=True)])
    )


def _column(field: pa.Field, values: tuple[Any, ...]) -> pa.Array:
    """One column of SQLite values as Arrow. SQLite stores any value in any column: the
    declared type's fast path first, then the messy forms, never a traceback."""
    if pa.types.is_timestamp(field.type) or pa.types.is_date32(field.type):
        return _times(field, values)
    try:
        return pa.array(values, field.type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        pass
    kind = (field.metadata or {}).get(b"kind", b"").decode()
    if field.type != pa.string():
        raise SourceValueError(field.name, f"values that are not {kind or field.type}")
    raw = pa.array([v if v is None or isinstance(v, bytes) else str(v).encode()
                    for v in values], pa.binary())  # fmt: skip
    try:
        return raw.cast(pa.string())
    except pa.ArrowInvalid:
        if kind == "text":
            raise SourceValueError(field.name, "text that is not UTF-8") from None
        return raw  # an untyped column: its bytes, for the scan to decode or refuse


def _times(field: pa.Field, values: tuple[Any, ...]) -> pa.Array:
    """Timestamps as SQLite apps write them, normalized to UTC: ``YYYY-MM-DD HH:MM:SS``
    (the fast path), ISO 8601 with ``T``, fractions or an offset, a date alone, or Unix
    epoch seconds. A naive time is taken as UTC; one with an offset is converted."""
    fmt = "%Y-%m-%d %H:%M:%S" if pa.types.is_timestamp(field.type) else "%Y-%m-%d"
    try:
        return pc.cast(pc.strptime(pa.array(values, pa.string()), fmt, "s"), field.type)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    text = pa.array([None if v is None else str(v) for v in values], pa.string())
    con = duckdb.connect()
    try:
        con.register("vigie_times", pa.table({"v": text}))
        (parsed, failed) = (
            con.execute(
                "SELECT CASE WHEN regexp_full_match(v, '-?[0-9]+([.][0-9]+)?') "
                "THEN make_timestamp(CAST(CAST(v AS DOUBLE) * 1000000 AS BIGINT)) "
                "ELSE CAST(timezone('UTC', TRY_CAST(v AS TIMESTAMPTZ)) AS TIMESTAMP) END AS t, "
                "v IS NOT NULL AND t IS NULL AS failed FROM vigie_times"
            )
            .to_arrow_table()
            .columns
        )
    finally:
        con.close()
    if pc.any(failed).as_py():
        raise SourceValueError(field.name, "values that are not a date or time vigie reads")
    return parsed.combine_chunks().cast(field.type)


class SourceValueError(ValueError):
    """A column of a SQLite table whose values do not fit (the values are never named)."""

    def __init__(self, column: str, what: str) -> None:
        super().__init__(column, what)
        self.column, self.what = column, what

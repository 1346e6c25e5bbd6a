"""Small engine-neutral helpers: run SQL with ``?`` placeholders, read results as Arrow."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

from vigie.db.connect import Connection
from vigie.db.dsn import Dsn


def _paramstyle(dsn: Dsn, sql: str) -> str:
    return sql if dsn.engine == "sqlite" else sql.replace("%", "%%").replace("?", "%s")


def execute(conn: Connection, dsn: Dsn, sql: str, params: Sequence[Any] = ()) -> int:
    """Run one statement; returns the affected row count."""
    cur = conn.cursor()
    cur.execute(_paramstyle(dsn, sql), tuple(params))
    return int(cur.rowcount)


def query(
    conn: Connection, dsn: Dsn, sql: str, params: Sequence[Any] = ()
) -> list[tuple[Any, ...]]:
    cur = conn.cursor()
    cur.execute(_paramstyle(dsn, sql), tuple(params))
    return [tuple(r) for r in cur.fetchall()]


def scalar(conn: Connection, dsn: Dsn, sql: str, params: Sequence[Any] = ()) -> Any:
    rows = query(conn, dsn, sql, params)
    return rows[0][0] if rows else None


def query_arrow(conn: Connection, dsn: Dsn, sql: str, schema: pa.Schema) -> pa.Table:
    """Read a (possibly large) result as Arrow; PostgreSQL streams it through COPY."""
    if dsn.engine == "postgresql":
        buf = io.BytesIO()
        with conn.cursor() as cur, cur.copy(f"COPY ({sql}) TO STDOUT (FORMAT csv)") as copy:
            for block in copy:
                buf.write(block)
        buf.seek(0)
        return pacsv.read_csv(
            buf,
            read_options=pacsv.ReadOptions(column_names=schema.names),
            convert_options=pacsv.ConvertOptions(
                column_types=schema, strings_can_be_null=True, quoted_strings_can_be_null=False
            ),
        )
    rows = query(conn, dsn, sql)
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema.names]
    return pa.table(
        {f.name: pa.array(list(col), f.type) for f, col in zip(schema, columns, strict=True)}
    )


def commit(conn: Connection, dsn: Dsn) -> None:
    if dsn.engine == "postgresql":
        conn.commit()

"""Bulk writers of Arrow tables into each production engine.

PostgreSQL takes CSV through ``COPY FROM STDIN``, MySQL/MariaDB ``LOAD DATA LOCAL
INFILE``, SQLite ``executemany`` in one transaction. Arrow writes the CSV (in C++), so no
Python code touches individual values on the server engines.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from vigie.db.connect import Connection
from vigie.db.dsn import Dsn
from vigie.fleet.ddl import (
    create_table,
    drop_table,
    post_load,
    quote,
)
from vigie.fleet.pg_finish import finish_load
from vigie.fleet.schema import Table

_CSV = pacsv.WriteOptions(include_header=False, quoting_style="needed")


class Writer(Protocol):
    def create(self, tables: tuple[Table, ...], drop: list[str]) -> None: ...
    def write(self, table: Table, data: pa.Table) -> None: ...
    def finish(self, tables: tuple[Table, ...]) -> None: ...


def writer_for(dsn: Dsn, conn: Connection) -> Writer:
    if dsn.engine == "postgresql":
        return PostgresWriter(conn)
    if dsn.engine == "mysql":
        return MySQLWriter(conn)
    return SQLiteWriter(conn)


def csv_bytes(data: pa.Table) -> bytes:
    buf = io.BytesIO()
    pacsv.write_csv(data, buf, _CSV)
    return buf.getvalue()


class PostgresWriter:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def create(self, tables: tuple[Table, ...], drop: list[str]) -> None:
        with self.conn.cursor() as cur:
            cur.execute("SET synchronous_commit = off")
            cur.execute("SET maintenance_work_mem = '512MB'")
            for name in drop:
                cur.execute(drop_table("postgresql", name))
            for t in tables:
                cur.execute(create_table("postgresql", t))
        self.conn.commit()

    def write(self, table: Table, data: pa.Table) -> None:
        cols = ", ".join(quote("postgresql", c) for c in data.column_names)
        sql = f"COPY {quote('postgresql', table.name)} ({cols}) FROM STDIN (FORMAT csv)"
        with self.conn.cursor() as cur, cur.copy(sql) as copy:
            copy.write(csv_bytes(data))
        self.conn.commit()

    def finish(self, tables: tuple[Table, ...]) -> None:
        """Keys, indexes and foreign keys after the load, on two parallel sessions."""
        info = self.conn.info
        params = info.get_parameters()
        kwargs = {k: params[k] for k in ("host", "port", "user", "dbname") if k in params}
        finish_load(kwargs | {"password": info.password or None}, tables)


class MySQLWriter:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def create(self, tables: tuple[Table, ...], drop: list[str]) -> None:
        with self.conn.cursor() as cur:
            cur.execute("SET SESSION foreign_key_checks = 0")
            for name in drop:
                cur.execute(drop_table("mysql", name))
            for t in tables:
                cur.execute(create_table("mysql", t))

    def write(self, table: Table, data: pa.Table) -> None:
        with tempfile.NamedTemporaryFile(prefix="vigie-load-", suffix=".csv", delete=False) as f:
            f.write(csv_bytes(data))
        path = Path(f.name)
        names = data.column_names
        variables = ", ".join(f"@v{i}" for i in range(len(names)))
        sets = ", ".join(
            f"{quote('mysql', n)} = "
            + (f"NULLIF(@v{i}, '')" if table.column(n).nullable else f"@v{i}")
            for i, n in enumerate(names)
        )
        sql = (
            f"LOAD DATA LOCAL INFILE %s INTO TABLE {quote('mysql', table.name)} "
            "CHARACTER SET utf8mb4 FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' "
            f"ESCAPED BY '' LINES TERMINATED BY '\\n' ({variables}) SET {sets}"
        )
        try:
            with self.conn.cursor() as cur:
                cur.execute(sql, (str(path),))
        finally:
            path.unlink()

    def finish(self, tables: tuple[Table, ...]) -> None:
        with self.conn.cursor() as cur:
            for t in tables:
                for stmt in post_load("mysql", t):
                    cur.execute(stmt)
            cur.execute("SET SESSION foreign_key_checks = 1")
            for t in tables:
                cur.execute(f"ANALYZE TABLE {quote('mysql', t.name)}")
                cur.fetchall()


class SQLiteWriter:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def create(self, tables: tuple[Table, ...], drop: list[str]) -> None:
        self.conn.execute("PRAGMA journal_mode = WAL")  # readers (a sync) never block writers
        self.conn.execute("PRAGMA foreign_keys = OFF")
        self.conn.execute("BEGIN")
        for name in drop:
            self.conn.execute(drop_table("sqlite", name))
        for t in tables:
            self.conn.execute(create_table("sqlite", t))

    def write(self, table: Table, data: pa.Table) -> None:
        columns = [_sqlite_values(data.column(i)) for i in range(data.num_columns)]
        marks = ", ".join("?" for _ in columns)
        names = ", ".join(quote("sqlite", n) for n in data.column_names)
        sql = f"INSERT INTO {quote('sqlite', table.name)} ({names}) VALUES ({marks})"
        self.conn.executemany(sql, zip(*columns, strict=True))

    def finish(self, tables: tuple[Table, ...]) -> None:
        for t in tables:
            for stmt in post_load("sqlite", t):
                self.conn.execute(stmt)
        self.conn.execute("COMMIT")
        self.conn.execute("PRAGMA foreign_keys = ON")
        broken = self.conn.execute("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise AssertionError(f"fleet generator produced dangling foreign keys: {broken[:5]}")
        self.conn.execute("ANALYZE")


def _sqlite_values(col: pa.ChunkedArray) -> list[Any]:
    if pa.types.is_timestamp(col.type):
        col = pc.strftime(col, "%Y-%m-%d %H:%M:%S")
    return list(col.to_pylist())

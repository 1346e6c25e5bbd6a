"""Open DB-API connections to the three production engines, with actionable errors."""

from __future__ import annotations

import sqlite3
from typing import Any

from vigie.db.dsn import Dsn
from vigie.errors import ConnectionFailed

Connection = Any  # sqlite3.Connection | psycopg.Connection | pymysql.Connection


def connect(dsn: Dsn, *, create: bool = False) -> Connection:
    """Connect to ``dsn``. SQLite files are only created when ``create`` is true. A SQLite
    connection may be handed to another thread (never used by two at once)."""
    if dsn.engine == "sqlite":
        return _connect_sqlite(dsn, create)
    if dsn.engine == "postgresql":
        return _connect_postgres(dsn)
    return _connect_mysql(dsn)


def _connect_sqlite(dsn: Dsn, create: bool) -> sqlite3.Connection:
    if not create and not dsn.path.exists():
        raise ConnectionFailed(
            f"SQLite database {dsn.path} does not exist.",
            hint="Check the path, or generate it with `vigie fleet generate --to sqlite:///PATH`.",
        )
    if create:
        dsn.path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(dsn.path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _connect_postgres(dsn: Dsn) -> Any:
    import psycopg

    try:
        return psycopg.connect(dsn.libpq(), connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise ConnectionFailed(
            f"Cannot connect to PostgreSQL at {dsn}: {_first_line(exc)}",
            hint="Is the server running and the database created? "
            "(`createdb NAME`, or check host, port and user in the DSN)",
        ) from None


def _connect_mysql(dsn: Dsn) -> Any:
    import pymysql

    try:
        return pymysql.connect(
            host=dsn.host,
            port=dsn.port,
            user=dsn.user or "root",
            password=dsn.password,
            database=dsn.database,
            connect_timeout=5,
            local_infile=True,
            autocommit=True,
            charset="utf8mb4",
        )
    except pymysql.err.MySQLError as exc:
        raise ConnectionFailed(
            f"Cannot connect to MySQL/MariaDB at {dsn}: {_first_line(exc)}",
            hint="Is the server running and the database created? "
            "(`CREATE DATABASE name`, or check host, port and user in the DSN)",
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def list_tables(conn: Connection, dsn: Dsn) -> list[str]:
    """Names of the base tables in the DSN's database/schema, sorted."""
    if dsn.engine == "sqlite":
        sql = "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
    elif dsn.engine == "postgresql":
        sql = (
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
        )
    else:
        sql = (
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE'"
        )
    cur = conn.cursor()
    cur.execute(sql)
    return sorted(str(row[0]) for row in cur.fetchall())

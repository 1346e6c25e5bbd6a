"""Look at a production fleet: row counts, sensitive columns, engine-neutral checksums."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from vigie.db.connect import connect, list_tables
from vigie.db.dsn import Dsn
from vigie.db.ops import query, scalar
from vigie.errors import UsageError
from vigie.fleet.ddl import quote
from vigie.fleet.schema import TABLES, Column, DataClass, Table


@dataclass(frozen=True)
class TableSummary:
    name: str
    rows: int
    sensitive: dict[DataClass, tuple[str, ...]]  # pii / secret / identifier -> columns


def summarize(dsn: Dsn) -> list[TableSummary]:
    """Row counts per fleet table and which of its columns carry PII, secrets, identifiers."""
    conn = connect(dsn)
    try:
        present = set(list_tables(conn, dsn))
        out = []
        for t in TABLES:
            if t.name not in present:
                continue
            rows = int(scalar(conn, dsn, f"SELECT COUNT(*) FROM {quote(dsn.engine, t.name)}"))
            out.append(TableSummary(t.name, rows, _sensitive(t)))
        return out
    finally:
        conn.close()


def _sensitive(t: Table) -> dict[DataClass, tuple[str, ...]]:
    classes: tuple[DataClass, ...] = ("secret", "pii", "quasi", "identifier")
    return {k: tuple(c.name for c in t.columns if c.data_class == k) for k in classes}


def checksums(dsn: Dsn) -> dict[str, str]:
    """SHA-256 per fleet table over its rows in primary-key order, values normalized so that
    the same content gives the same digest on SQLite, PostgreSQL and MySQL/MariaDB."""
    conn = connect(dsn)
    try:
        present = set(list_tables(conn, dsn))
        missing = [t.name for t in TABLES if t.name not in present]
        if missing:
            raise UsageError(f"{dsn} has no fleet tables {', '.join(missing)}.")
        return {t.name: _table_digest(conn, dsn, t) for t in TABLES}
    finally:
        conn.close()


def _table_digest(conn: Any, dsn: Dsn, table: Table) -> str:
    q = partial(quote, dsn.engine)
    cols = ", ".join(q(c) for c in table.column_names)
    order = ", ".join(q(c) for c in table.primary_key)
    digest = hashlib.sha256()
    for row in query(conn, dsn, f"SELECT {cols} FROM {q(table.name)} ORDER BY {order}"):
        line = "\t".join(_norm(c, v) for c, v in zip(table.columns, row, strict=True))
        digest.update(line.encode() + b"\n")
    return digest.hexdigest()


def _norm(col: Column, value: Any) -> str:
    if value is None:
        return "\\N"
    if col.type == "decimal":
        return f"{float(value):.2f}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)

"""`vigie incident notify-list`: the production users whose data was in the store during an
exposure window, with their e-mail and what of theirs was readable.

With the pseudonymization key and read access to production, the pseudonyms of every
production user id are recomputed in bulk (the same HMAC engine as the sync, on Arrow
arrays) and joined in DuckDB with the pseudonyms present in the window; nothing of it is
written to the store. The CSV is created 0600 and never overwrites a file.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pyarrow as pa

from vigie.db.dsn import Dsn
from vigie.errors import UsageError
from vigie.keys import Keys
from vigie.policy.hmac_engine import pseudonyms
from vigie.stores.duckdb_store import Store
from vigie.stores.meta import META, column_records, history_columns, quote, readable_between


@dataclass(frozen=True)
class NotifyResult:
    path: Path
    users: int  # rows written
    affected: int  # distinct user pseudonyms in the window
    unmatched: int  # pseudonyms with no production user (deleted from production since)
    seconds: float


def _user_tables(store: Store) -> list[tuple[str, str, bool]]:
    """(table, column, has history) for every stored ``pseudonymize: user`` column."""
    out = []
    for table, cols in sorted(column_records(store).items()):
        if store.has_table(table):
            for col in sorted(c for c, r in cols.items() if r.spec == "pseudonymize: user"):
                out.append((table, col, col in history_columns(store, table)))
    return out


def affected_sql(store: Store) -> tuple[str, list[str]]:
    """SQL of (p UUID, mask): each user pseudonym present in the window ($1, $2) and a bit
    per table its rows were in, and the tables in bit order."""
    parts, tables = [], []
    for table, col, history in _user_tables(store):
        if table not in tables:
            tables.append(table)
        bit = 1 << tables.index(table)
        t, c = quote(table), quote(col)
        parts.append(f"SELECT DISTINCT {c} AS p, {bit} AS b FROM {t} WHERE _vigie_first_seen < $2")
        if history:
            parts.append(
                f"SELECT DISTINCT {c}, {bit} FROM {META}.{quote('deleted__' + table)} "
                "WHERE _vigie_first_seen < $2 AND _vigie_deleted_at >= $1"
            )
    if not parts:
        return "SELECT NULL::UUID AS p, 0 AS mask WHERE false", tables
    union = " UNION ALL ".join(parts)
    return f"SELECT p, bit_or(b) AS mask FROM ({union}) WHERE p IS NOT NULL GROUP BY p", tables


def notify_list(
    store: Store,
    keys: Keys,
    production: Dsn,
    start: datetime,
    end: datetime,
    out: Path,
    *,
    users_table: str = "users",
    id_column: str = "id",
    email_column: str = "email",
) -> NotifyResult:
    """Written in one pass of DuckDB on the store's own connection: the window's pseudonyms
    (a bit per table), production's recomputed ones (registered Arrow, UUIDs), the join,
    and the CSV. ``<out>.columns.txt`` says what each table's readable columns were."""
    started = time.monotonic()
    for path in (out, _legend(out)):
        if path.exists():
            raise UsageError(
                f"{path} exists; the notify list never overwrites a file.",
                hint="Give a new --out path.",
            )
    prod = _production_users(production, keys, users_table, id_column, email_column)
    sql, tables = affected_sql(store)
    masks = _masks(tables)
    view = store.cursor_view()
    con = view.con
    try:
        con.register("vigie_prod", prod)
        con.register("vigie_masks", masks)
        con.execute(f"CREATE TEMP TABLE vigie_affected AS {sql}", [start, end])
        _create_private(out)
        con.execute(f"""COPY (SELECT prod.user_id, prod.email, m.tables AS exposed
            FROM vigie_affected a JOIN vigie_prod prod ON prod.p = a.p
            JOIN vigie_masks m ON m.mask = a.mask ORDER BY prod.user_id)
            TO '{_sql_str(out)}' (FORMAT csv, HEADER)""")
        counts = con.execute(
            "SELECT (SELECT COUNT(*) FROM vigie_affected), (SELECT COUNT(*) FROM vigie_affected "
            "a SEMI JOIN vigie_prod p ON p.p = a.p)"
        ).fetchone()
        affected, matched = (int(counts[0]), int(counts[1])) if counts else (0, 0)
    finally:
        con.close()
    legend = _readable_by_table(store, start, end)
    _write_private(_legend(out), "".join(f"{line}\n" for line in legend))
    return NotifyResult(
        out, matched, affected, affected - matched, round(time.monotonic() - started, 2)
    )


def _legend(out: Path) -> Path:
    return out.with_name(out.name + ".columns.txt")


def _masks(tables: list[str]) -> pa.Table:
    """Every combination of tables as its bit mask and its text ("devices; users")."""
    n = len(tables)
    masks = list(range(1 << n))
    names = ["; ".join(t for i, t in enumerate(tables) if m >> i & 1) for m in masks]
    return pa.table({"mask": pa.array(masks, pa.int64()), "tables": names})


def _readable_by_table(store: Store, start: datetime, end: datetime) -> list[str]:
    """Per table, its columns readable in the window and how (the CSV's legend)."""
    by: dict[str, list[str]] = {}
    for r in readable_between(store, start, end):
        how = "" if r.action == "keep" else f" ({r.action})"
        entry = f"{r.column}{how}"
        if entry not in by.setdefault(r.table, []):
            by[r.table].append(entry)
    return [f"{t}: {', '.join(sorted(cols))}" for t, cols in sorted(by.items())]


def _production_users(dsn: Dsn, keys: Keys, table: str, id_col: str, email_col: str) -> pa.Table:
    """Every production user's id, e-mail and recomputed pseudonym (Arrow UUID), in batches."""
    from vigie.sources import open_source

    source = open_source(dsn)
    try:
        described = source.describe(table)
        missing = [c for c in (id_col, email_col) if c not in described.names]
        if missing:
            raise UsageError(
                f"Production table {table} has no column {missing[0]}.",
                hint="Name the users table and its columns: --users-table, "
                "--id-column, --email-column.",
            )
        source.snapshot()
        batches = [
            pa.table(
                {
                    "p": pseudonyms(b.column(id_col), "user", keys.pseudonym_key),
                    "user_id": b.column(id_col),
                    "email": b.column(email_col),
                }
            )
            for b in source.read(described, [id_col, email_col], None, None, 1_000_000)
        ]
        source.release()
    finally:
        source.close()
    if not batches:
        raise UsageError(f"Production table {table} is empty.")
    return pa.concat_tables(batches)


def _sql_str(path: Path) -> str:
    return str(path).replace("'", "''")


def _create_private(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)

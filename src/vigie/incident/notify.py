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

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv

from vigie.db.dsn import Dsn
from vigie.errors import UsageError
from vigie.keys import Keys
from vigie.policy.hmac_engine import pseudonyms
from vigie.stores.duckdb_store import Store
from vigie.stores.meta import META, column_records, quote, readable_between


@dataclass(frozen=True)
class NotifyResult:
    path: Path
    users: int  # rows written
    affected: int  # distinct user pseudonyms in the window
    unmatched: int  # pseudonyms with no production user (deleted from production since)
    seconds: float


def affected_users(store: Store, start: datetime, end: datetime) -> pa.Table:
    """(p, tables): each user pseudonym present in the window, and where its rows were."""
    parts = []
    for table, cols in column_records(store).items():
        if not store.has_table(table):
            continue
        for col in (c for c, r in cols.items() if r.spec == "pseudonymize: user"):
            t, c = quote(table), quote(col)
            parts.append(f"SELECT {c} AS p, '{table}' AS t FROM {t} WHERE _vigie_first_seen < $2")
            history = f"{META}.{quote('deleted__' + table)}"
            if _history_has(store, table, col):
                parts.append(
                    f"SELECT {c}, '{table}' FROM {history} WHERE _vigie_first_seen < $2 "
                    "AND _vigie_deleted_at >= $1"
                )
    if not parts:
        return pa.table({"p": pa.array([], pa.binary(16)), "tables": pa.array([], pa.string())})
    sql = (
        f"SELECT p, string_agg(DISTINCT t, ',' ORDER BY t) AS tables FROM "
        f"({' UNION ALL '.join(parts)}) WHERE p IS NOT NULL GROUP BY p"
    )
    return store.con.execute(sql, [start, end]).to_arrow_table()


def _history_has(store: Store, table: str, col: str) -> bool:
    return bool(
        store.rows(
            "SELECT 1 FROM duckdb_columns() WHERE database_name = 'store' AND schema_name = ? "
            "AND table_name = ? AND column_name = ?",
            [META, f"deleted__{table}", col],
        )
    )


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
    started = time.monotonic()
    if out.exists():
        raise UsageError(
            f"{out} exists; the notify list never overwrites a file.", hint="Give a new --out path."
        )
    affected = affected_users(store, start, end)
    readable = _readable_by_table(store, start, end)
    prod = _production_users(production, keys, users_table, id_column, email_column)
    con = duckdb.connect()
    try:
        con.register("affected_raw", affected)
        con.execute(
            "CREATE TEMP VIEW affected AS SELECT lower(p::VARCHAR) AS p, tables FROM affected_raw"
        )
        con.register("prod_raw", prod)
        # the store gives pseudonyms as UUID text; the engine as their 16 bytes
        con.execute(r"""CREATE TEMP VIEW prod AS SELECT lower(regexp_replace(hex(p),
            '^(.{8})(.{4})(.{4})(.{4})(.{12})$', '\1-\2-\3-\4-\5')) AS p, user_id, email
            FROM prod_raw""")
        con.register("readable", readable)
        result = con.execute("""
            SELECT prod.user_id, prod.email,
                   string_agg(r.what, '; ' ORDER BY r.t) AS exposed
            FROM affected a JOIN prod ON prod.p = a.p
            CROSS JOIN LATERAL unnest(string_split(a.tables, ',')) AS u(t)
            JOIN readable r ON r.t = u.t
            GROUP BY prod.user_id, prod.email ORDER BY prod.user_id""").to_arrow_table()
        (unmatched,) = con.execute(
            "SELECT COUNT(*) FROM affected a ANTI JOIN prod ON prod.p = a.p"
        ).fetchone() or (0,)
    finally:
        con.close()
    _write_private_csv(out, result)
    return NotifyResult(
        out,
        result.num_rows,
        affected.num_rows,
        int(unmatched),
        round(time.monotonic() - started, 2),
    )


def _readable_by_table(store: Store, start: datetime, end: datetime) -> pa.Table:
    """Per table, its columns readable in the window with how (for the CSV's last column)."""
    by: dict[str, list[str]] = {}
    for r in readable_between(store, start, end):
        how = "" if r.action == "keep" else f" ({r.action.split(':')[0]})"
        entry = f"{r.column}{how}"
        if entry not in by.setdefault(r.table, []):
            by[r.table].append(entry)
    tables = sorted(by)
    return pa.table({"t": tables, "what": [f"{t}: {', '.join(sorted(by[t]))}" for t in tables]})


def _production_users(dsn: Dsn, keys: Keys, table: str, id_col: str, email_col: str) -> pa.Table:
    """Every production user's id, e-mail and recomputed pseudonym, batch by batch."""
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
        batches = []
        for batch in source.read(described, [id_col, email_col], None, None, 1_000_000):
            p = pseudonyms(batch.column(id_col), "user", keys.pseudonym_key)
            batches.append(
                pa.table(
                    {
                        "p": p.storage if hasattr(p, "storage") else p,
                        "user_id": batch.column(id_col),
                        "email": batch.column(email_col),
                    }
                )
            )
        source.release()
    finally:
        source.close()
    return (
        pa.concat_tables(batches)
        if batches
        else pa.table(
            {
                "p": pa.array([], pa.binary(16)),
                "user_id": pa.array([], pa.int64()),
                "email": pa.array([], pa.string()),
            }
        )
    )


def _write_private_csv(out: Path, table: pa.Table) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as fh:
        pacsv.write_csv(table, fh)

"""Shared test helpers: read a store back, run SQL on production."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vigie.db.connect import connect
from vigie.db.dsn import Dsn
from vigie.db.ops import execute, query
from vigie.keys import Keys
from vigie.stores.duckdb_store import Store, q

LINEAGE = ("_vigie_first_seen", "_vigie_run")


def prod(dsn: Dsn, sql: str) -> list[tuple[Any, ...]]:
    conn = connect(dsn)
    try:
        return query(conn, dsn, sql)
    finally:
        conn.close()


def prod_exec(dsn: Dsn, *statements: str) -> None:
    conn = connect(dsn)
    try:
        for sql in statements:
            execute(conn, dsn, sql)
        if dsn.engine == "postgresql":
            conn.commit()
    finally:
        conn.close()


def store_rows(path: Path, keys: Keys, sql: str) -> list[tuple[Any, ...]]:
    with Store(path, keys) as store:
        return store.rows(sql)


def store_content(path: Path, keys: Keys) -> dict[str, list[tuple[Any, ...]]]:
    """Every synced table's rows, sorted, without the lineage columns (which hold times)."""
    out = {}
    with Store(path, keys) as store:
        for table in store.table_names():
            cols = [
                c
                for (c,) in store.rows(
                    "SELECT column_name FROM information_schema.columns WHERE table_catalog = "
                    "'store' AND table_schema = 'main' AND table_name = ? ORDER BY ordinal_position",
                    [table],
                )
                if c not in LINEAGE
            ]
            select = ", ".join(q(c) for c in cols)
            out[table] = sorted(store.rows(f"SELECT {select} FROM {q(table)}"), key=repr)
    return out


def synced_fleet(root: Path, users: int, days: int, seed: int, *, small_countries: int = 0):
    """A generated SQLite fleet synced with the example policy into a fresh store;
    ``small_countries``: one user in 25 moves to one of that many tiny countries first.
    Returns (production dsn, store path, keys)."""
    from conftest import EXAMPLE_POLICY
    from vigie.db.dsn import parse_dsn
    from vigie.fleet.build import generate_fleet
    from vigie.fleet.generate import FleetSpec
    from vigie.keys import init_keyfile, load_keys
    from vigie.sync.run import sync

    dsn = parse_dsn(f"sqlite:///{root / 'production.db'}")
    generate_fleet(dsn, FleetSpec(users=users, days=days, seed=seed))
    if small_countries:
        codes = [f"X{chr(65 + i // 26)}{chr(65 + i % 26)}" for i in range(small_countries)]
        cases = " ".join(f"WHEN {i} THEN '{c}'" for i, c in enumerate(codes))
        prod_exec(dsn, f"UPDATE users SET country = CASE (id / 25) % {small_countries} "
                       f"{cases} END WHERE id % 25 = 0")  # fmt: skip
    init_keyfile(root / "keys")
    keys = load_keys(root / "keys")
    store = root / "store" / "vigie.duckdb"
    sync(dsn, EXAMPLE_POLICY, store, keys)
    return dsn, store, keys


def read_together(monkeypatch, owner: object, name: str) -> None:
    """Make ``owner.name`` (the read of a read-then-write) wait after reading until a second
    caller has read too, 2 s at most: two threads then both read before either writes,
    unless a lock makes the second wait for the first to finish."""
    import threading
    from contextlib import suppress

    both_read = threading.Barrier(2, timeout=2)
    read = getattr(owner, name)

    def read_then_wait_for_the_other(*args: Any) -> Any:
        got = read(*args)
        with suppress(threading.BrokenBarrierError):
            both_read.wait()  # passes only if the other caller could read meanwhile
        return got

    monkeypatch.setattr(owner, name, read_then_wait_for_the_other)


def in_threads(*calls: Any) -> None:
    """Run the calls at once, each in a thread of its own; wait for all."""
    import threading

    threads = [threading.Thread(target=call) for call in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

"""Rotating the pseudonymization key: every pseudonym in the store rewritten under a new
key, in place (the lineage incident response needs stays), then the old key destroyed.

For each domain, production's values of every column pseudonymized in it are read in
Arrow batches and their old and new pseudonyms computed in bulk; the store's columns (and
delete histories) are rewritten by one join each, in one transaction. A pseudonym whose
value left production is given a fresh random one (the same for all its occurrences, so
joins hold). The new key is written first to ``<keyfile>.next`` (0600); after the commit,
it replaces the keyfile (one rename). A crash before the commit changes nothing; a crash
after it is finished by running the step again.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from vigie.db.dsn import Dsn
from vigie.errors import KeyfileError, StoreError
from vigie.keys import Keys, load_keys, write_keyfile
from vigie.policy.hmac_engine import pseudonyms
from vigie.policy.load import parse_policy
from vigie.policy.model import Policy, Pseudonymize
from vigie.stores.duckdb_store import Store
from vigie.stores.meta import META, converged_policy_text, history_columns, quote, reset_changes


@dataclass(frozen=True)
class RekeyResult:
    columns: int
    rewritten: int  # pseudonyms mapped from production's values
    orphans: int  # pseudonyms whose value left production: given fresh random ones
    seconds: float


def _next_keys(keyfile: Path, old: Keys) -> Keys:
    """The new keys, written to ``<keyfile>.next`` once (a second run finds them there)."""
    pending = keyfile.with_name(keyfile.name + ".next")
    if not pending.exists():
        write_keyfile(pending, Keys(secrets.token_hex(32), old.store_key))
    return load_keys(pending)


def rotate_pseudonym_key(store_path: Path, keyfile: Path, production: Dsn) -> RekeyResult:
    started = time.monotonic()
    old = load_keys(keyfile)
    new = _next_keys(keyfile, old)
    pending = keyfile.with_name(keyfile.name + ".next")
    try:
        store = Store(store_path, old)
    except KeyfileError:  # the store was rewritten, the key not yet swapped: finish
        Store(store_path, new, read_only=True).close()
        pending.replace(keyfile)
        return RekeyResult(0, 0, 0, round(time.monotonic() - started, 2))
    with store:
        found = converged_policy_text(store)
        if found is None:
            raise StoreError(f"Store {store_path} records no policy.", hint="Sync it first.")
        policy = parse_policy(found[1], Path("<recorded policy>"))
        columns = _columns(store, policy)
        maps = _maps(production, columns, old, new)
        rewritten, orphans = _rewrite(store, columns, maps, new)
    pending.replace(keyfile)  # the old key is gone
    return RekeyResult(len(columns), rewritten, orphans, round(time.monotonic() - started, 2))


def _columns(store: Store, policy: Policy) -> list[tuple[str, str, str]]:
    """(table, column, domain) of every stored pseudonym column."""
    stored = store.columns()
    out = []
    for table in policy.tables.values():
        for rule in table.columns.values():
            if isinstance(rule.action, Pseudonymize) and rule.column in stored.get(table.name, {}):
                out.append((table.name, rule.column, rule.action.domain))
    return out


def _maps(
    dsn: Dsn, columns: list[tuple[str, str, str]], old: Keys, new: Keys
) -> dict[str, pa.Table]:
    """Per domain, (old, new) pseudonyms of every production value of its columns."""
    from vigie.sources import open_source

    parts: dict[str, list[pa.Table]] = {}
    by_table: dict[str, list[tuple[str, str]]] = {}
    for table, column, domain in columns:
        by_table.setdefault(table, []).append((column, domain))
    source = open_source(dsn)
    try:
        source.snapshot()
        for table, cols in by_table.items():  # one read per table, all its pseudonym columns
            described = source.describe(table)
            names = [c for c, _ in cols]
            for batch in source.read(described, names, None, None, 1_000_000):
                for column, domain in cols:
                    values = batch.column(column)
                    parts.setdefault(domain, []).append(
                        pa.table(
                            {
                                "old": pseudonyms(values, domain, old.pseudonym_key),
                                "new": pseudonyms(values, domain, new.pseudonym_key),
                            }
                        )
                    )
        source.release()
    finally:
        source.close()
    return {d: pa.concat_tables(ts) for d, ts in parts.items()}


def _rewrite(
    store: Store, columns: list[tuple[str, str, str]], maps: dict[str, pa.Table], new: Keys
) -> tuple[int, int]:
    con = store.con
    targets: dict[str, list[tuple[str, str]]] = {}  # domain -> (table, column), quoted
    for table, column, domain in columns:
        targets.setdefault(domain, []).append((quote(table), quote(column)))
        if column in history_columns(store, table):
            targets[domain].append((f"{META}.{quote(f'deleted__{table}')}", quote(column)))
    rewritten = orphans = 0
    con.execute("BEGIN TRANSACTION")
    try:
        for i, (domain, places) in enumerate(sorted(targets.items())):
            m = f"vigie_rekey_{i}"
            empty = pa.table({"old": pa.array([], pa.uuid()), "new": pa.array([], pa.uuid())})
            con.register(f"{m}_arrow", maps.get(domain, empty))
            con.execute(f"CREATE TEMP TABLE {m} AS SELECT DISTINCT old, new FROM {m}_arrow")
            con.unregister(f"{m}_arrow")
            (known,) = con.execute(f"SELECT COUNT(*) FROM {m}").fetchone() or (0,)
            for t, c in places:  # values gone from production: a fresh pseudonym each
                con.execute(
                    f"INSERT INTO {m} SELECT DISTINCT x.{c}, uuid() FROM {t} x WHERE "
                    f"x.{c} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {m} WHERE "
                    f"{m}.old = x.{c})"
                )
            (total,) = con.execute(f"SELECT COUNT(*) FROM {m}").fetchone() or (0,)
            orphans += int(total) - int(known)
            for t, c in places:
                row = con.execute(
                    f"UPDATE {t} AS x SET {c} = m.new FROM {m} m WHERE x.{c} = m.old"
                ).fetchone()
                rewritten += int(row[0]) if row else 0
        reset_changes(con)  # the KPI states hold old pseudonyms: rebuilt at the next refresh
        con.execute(
            f"UPDATE {META}.meta SET value = ? WHERE key = 'pseudonym_key_id'",
            [new.pseudonym_key_id],
        )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return rewritten, orphans

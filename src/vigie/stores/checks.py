"""`vigie store verify`: does the store conform to the policy in force?

Each check yields findings, one per problem, each saying what is wrong, where, and what to
do. The store conforms when there is none. Checks:
- ``modes``: the store's folder is 0700 and its files 0600, owned by this user (paths
  resolved, symlinks followed);
- ``encryption``: the file is encrypted, and opens with this keyfile's store key;
- ``keys``: the store's pseudonymization key id is the keyfile's;
- ``schema``: every table and column the store holds is one the policy copies, as it
  copies it (the action recorded by the last sync equals the policy's), with the type
  recorded; no table or column is missing;
- ``foreign``: no table in the store that vigie did not make (by hand, or a ransom note);
- ``scan``: every kept text column, over the whole table, passes every detector (shapes,
  person names, near-unique values).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from vigie.errors import KeyfileError, StoreError
from vigie.keys import Keys
from vigie.policy.model import Keep, Policy, Pseudonymize, TablePolicy
from vigie.scan.column import describe, scan_whole_column
from vigie.scan.identifying import Singling, measurable
from vigie.stores.duckdb_store import Store, q, store_files
from vigie.stores.meta import (
    BEFORE,
    KPI_STATE,
    KPI_STATE_DB,
    KPI_STATE_KEY,
    LINEAGE_COLUMNS,
    META,
    META_TABLES,
    REPLACED_BY,
    ROLLUP_SCHEMA,
    RUN_COLUMN,
    ColumnRecord,
    action_spec,
    column_records,
)

CHECKS = ("modes", "encryption", "keys", "schema", "foreign", "scan")


@dataclass(frozen=True)
class Finding:
    check: str  # one of CHECKS
    where: str  # a file, a table or table.column
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.check}: {self.where}: {self.problem} → {self.fix}"


def verify_store(path: Path, policy: Policy, keys: Keys) -> list[Finding]:
    """Every finding about the store at ``path`` under ``policy`` (none: it conforms)."""
    findings = list(check_modes(path))
    try:
        store = Store(path, keys, read_only=True, check_file_modes=False)
    except KeyfileError as exc:
        findings.append(Finding("keys", str(path), exc.message, exc.hint or "Use its keyfile."))
        return findings
    with store:
        findings += check_encrypted(store)
        findings += check_kpi_state(store)
        findings += check_schema(store, policy)
        findings += check_foreign(store, policy)
        findings += check_scan(store, policy)
    return findings


def check_modes(path: Path) -> Iterator[Finding]:
    real = path.resolve()
    folder = real.parent
    files = [(f, 0o600) for f in dict.fromkeys([real, *store_files(real)])]
    for where, want in [(folder, 0o700), *files]:
        if not where.exists():
            continue
        info = where.stat()
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            yield Finding(
                "modes", str(where), f"mode {mode:04o} lets others in", f"chmod {want:o} {where}"
            )
        if info.st_uid != os.getuid():
            yield Finding(
                "modes",
                str(where),
                f"owned by uid {info.st_uid}, not this user",
                f"chown the store to the user that runs vigie: {where}",
            )


def check_encrypted(store: Store) -> Iterator[Finding]:
    (encrypted,) = store.rows(
        "SELECT encrypted FROM duckdb_databases() WHERE database_name = 'store'"
    )[0]
    if not encrypted:
        yield Finding(
            "encryption",
            str(store.path),
            "the store file is not encrypted",
            "Sync into a new store (vigie always creates encrypted ones).",
        )


def check_kpi_state(store: Store) -> Iterator[Finding]:
    """The KPI state file, when there is one: encrypted with the store's key, the one the
    store names, and holding only the states' tables."""
    path = store.kpi_state_path
    if not path.exists():
        return
    fix = "Remove it (vigie kpi refresh rebuilds the states), after finding out who made it."
    try:
        with store.kpi_state_read_only():
            found = list(_kpi_state_tables(store, path, fix))
    except StoreError:
        why = "does not open with the store's key (made under a key since rotated, or not vigie's)"
        found = [Finding("encryption", str(path), f"the KPI state file {why}", fix)]
    yield from found


def _kpi_state_tables(store: Store, path: Path, fix: str) -> Iterator[Finding]:
    db = KPI_STATE_DB
    listed = "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = ?"
    tables = {(s, t) for s, t in store.rows(listed, [db])}
    named = store.rows(f"SELECT value FROM {META}.meta WHERE key = ?", [KPI_STATE_KEY])
    held = store.rows(f"SELECT value FROM {db}.main.meta WHERE key = ?", [KPI_STATE_KEY]) if (
        ("main", "meta") in tables) else []  # fmt: skip
    if not named or held != named:
        yield Finding("foreign", str(path), "a KPI state file this store does not name (left by "
                      "a crash, or copied in)", fix)  # fmt: skip
        return
    facts = [f for (f,) in store.rows(f"SELECT fact FROM {db}.main.registry")] if (
        ("main", "registry") in tables) else []  # fmt: skip
    for schema, table in sorted(tables):
        if schema == "main" and (table in ("meta", "registry")
                                 or any(table.startswith(f"{f}__") for f in facts)):  # fmt: skip
            continue
        yield Finding("foreign", f"{path}: {schema}.{table}",
                      "a table vigie did not make in the KPI state file", fix)  # fmt: skip


def check_schema(store: Store, policy: Policy) -> Iterator[Finding]:
    records = column_records(store)
    stored = store.columns()
    for extra in sorted(set(stored) - set(policy.tables)):
        why = "excluded by" if extra in policy.exclude else "not in"
        fix = "Run `vigie sync` (it removes what the policy no longer copies)."
        yield _schema(extra, f"the store holds table {extra}, {why} the policy", fix)
    for name, table in policy.tables.items():
        if name not in stored:
            yield _schema(name, "the policy copies this table; the store lacks it",
                          "Run `vigie sync`.")  # fmt: skip
        else:
            yield from _check_columns(table, stored[name], records.get(name, {}))


def _check_columns(
    table: TablePolicy, have: dict[str, str], records: dict[str, ColumnRecord]
) -> Iterator[Finding]:
    """A stored table's columns against its policy and what the last sync recorded."""
    converge = "Run `vigie sync`: it converges the store to the policy."
    for column in sorted(set(have) - set(LINEAGE_COLUMNS)):
        rule, record = table.columns.get(column), records.get(column)
        where = f"{table.name}.{column}"
        if rule is None or not rule.leaves_production:
            why = "not in the policy" if rule is None else f"'drop' at {rule.where}"
            yield _schema(where, f"the store holds this column, {why}", converge)
            continue
        spec = action_spec(rule.action)
        if record is None:
            yield _schema(where, "no sync recorded this column (added by hand?)", converge)
        elif record.spec != spec and not (record.legacy and record.spec == rule.action.name):
            yield _schema(where, f"stored as '{record.spec}', the policy says '{spec}' at "
                          f"{rule.where}", converge)  # fmt: skip
        expected = "UUID" if isinstance(rule.action, Pseudonymize) else None
        expected = expected or (record.store_type if record else None)
        if expected and have[column] != expected:
            yield _schema(where, f"type {have[column]}, recorded {expected} (altered outside "
                          "vigie)", converge)  # fmt: skip
    for column, rule in table.columns.items():
        if rule.leaves_production and column not in have:
            yield _schema(f"{table.name}.{column}",
                          f"the policy copies this column ({rule.where}); the store lacks it",
                          "Run `vigie sync`: it backfills the column.")  # fmt: skip


def _schema(where: str, problem: str, fix: str) -> Finding:
    return Finding("schema", where, problem, fix)


def check_foreign(store: Store, policy: Policy) -> Iterator[Finding]:
    """Tables vigie did not make: outside its schemas, or unknown inside them."""
    history = {f"deleted__{t}" for t in store.table_names()} | {
        f"deleted__{t}" for t in policy.tables
    }
    rollups = _rollup_names(store)
    patterns = _pattern_names(store)
    for schema, table in store.rows(
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_catalog = 'store' AND table_schema <> 'main' ORDER BY 1, 2"
    ):
        known = (schema == META and (table in META_TABLES or table in history)) or (
            schema == ROLLUP_SCHEMA
            and (table in ("registry", "patterns") or table in rollups or table in patterns
                 or table.startswith(KPI_STATE))
        )  # fmt: skip
        if schema == META and table.startswith(BEFORE) and not known:
            known = _log_fits(store, table.removeprefix(BEFORE))
        if not known:
            yield Finding(
                "foreign",
                f"{schema}.{table}",
                "a table vigie did not make (by hand, an intruder, a ransom note?)",
                "Find out who made it (audit, server logs) before removing it.",
            )


def check_scan(store: Store, policy: Policy) -> Iterator[Finding]:
    """Every kept text column of the store, whole, through every detector."""
    stored = store.columns()
    for name, table in policy.tables.items():
        have = stored.get(name, {})
        entities = [
            c for c, r in table.columns.items() if isinstance(r.action, Pseudonymize) and c in have
        ]
        for column, rule in table.columns.items():
            if not isinstance(rule.action, Keep) or have.get(column) != "VARCHAR":
                continue
            distinct = pl.Series(
                column,
                [
                    v
                    for (v,) in store.rows(
                        f"SELECT DISTINCT {q(column)} FROM {q(name)} WHERE {q(column)} IS NOT NULL"
                    )
                ],
                dtype=pl.String,
            )
            worst = _singling(store, name, column, entities) if measurable(distinct.len()) else None
            for hit in scan_whole_column(column, distinct, worst, set(rule.allow)):
                yield Finding(
                    "scan",
                    f"{name}.{column}",
                    describe(hit, "in the whole table"),
                    f"Change the rule at {rule.where} (drop or pseudonymize), then "
                    "run `vigie sync`; or allow the detector with a reason.",
                )


def _singling(store: Store, table: str, column: str, entities: list[str]) -> Singling:
    """The worst singling-out of a stored column over the whole table (see identifying)."""
    t, c = q(table), q(column)
    singled, rows = store.rows(
        f"SELECT COUNT(*) FILTER (WHERE n = 1), COALESCE(SUM(n), 0) FROM "
        f"(SELECT COUNT(*) AS n FROM {t} WHERE {c} IS NOT NULL GROUP BY {c})"
    )[0]
    worst = Singling("row", int(singled), int(rows))
    for entity in entities:
        e = q(entity)
        singled, total = store.rows(
            f"WITH o AS (SELECT COUNT(DISTINCT {e}) AS owners, ANY_VALUE({e}) AS e FROM {t} "
            f"WHERE {c} IS NOT NULL AND {e} IS NOT NULL GROUP BY {c}) "
            f"SELECT (SELECT COUNT(DISTINCT e) FROM o WHERE owners = 1), "
            f"(SELECT COUNT(DISTINCT {e}) FROM {t} WHERE {c} IS NOT NULL)"
        )[0]
        found = Singling(entity, int(singled), int(total))
        if found.identifies and found.share > worst.share:
            worst = found
    return worst


def _log_fits(store: Store, table: str) -> bool:
    """A change log (``stores.meta``) holds columns of its table (those KPI facts read),
    the run that wrote each row and the run that replaced it; no other."""

    def columns(schema: str, name: str) -> set[str]:
        return {c for (c,) in store.rows(
            "SELECT column_name FROM duckdb_columns() WHERE database_name = 'store' AND "
            "schema_name = ? AND lower(table_name) = lower(?)", [schema, name])}  # fmt: skip

    held = columns("main", table)
    logged = columns(META, BEFORE + table)
    return bool(held) and {RUN_COLUMN, REPLACED_BY} <= logged <= held | {REPLACED_BY}


def _pattern_names(store: Store) -> set[str]:
    """The suppression patterns the rollup refresh registered (``kpi.patterns``)."""
    try:
        return {
            f"pattern__{n}" for (n,) in store.rows(f"SELECT fact FROM {ROLLUP_SCHEMA}.patterns")
        }
    except duckdb.CatalogException:
        return set()


def _rollup_names(store: Store) -> set[str]:
    try:
        return {n for (n,) in store.rows(f"SELECT name FROM {ROLLUP_SCHEMA}.registry")}
    except duckdb.CatalogException:  # no rollups built yet
        return set()

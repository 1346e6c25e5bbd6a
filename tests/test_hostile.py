"""Hostile and messy production (issue 10): names that are code, secrets through side
doors, values that must not reach a message. Real SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import yaml

from helpers import prod_exec, store_content
from vigie.db.connect import connect
from vigie.db.dsn import Dsn
from vigie.errors import VigieError
from vigie.sources import open_source
from vigie.stores.duckdb_store import Store, q
from vigie.sync.run import sync

VAULT_PIN = "0000-vault-pin-never-leaves"


def _q(engine: str, name: str) -> str:
    """The test's own quoting (not vigie's), to build the hostile schema."""
    if engine == "mysql":
        return "`" + name.replace("`", "``") + "`"
    return '"' + name.replace('"', '""') + '"'


def hostile_names(engine: str) -> list[str]:
    long = {"sqlite": 130, "postgresql": 63, "mysql": 64}[engine]  # each engine's maximum
    close = "`" if engine == "mysql" else '"'
    return [
        f"pin{close} FROM vault -- x",  # the old way out: read another table's column
        'dq"uote',
        "back`tick",
        "[bracket]",
        "semi;colon",
        "select",
        "ünï©ødé 名前",
        "l" * long,
    ]


def _table_name(engine: str) -> str:
    return "t; DROP TABLE vault; --" if engine != "mysql" else "t`; DROP TABLE vault; --"


def _build(dsn: Dsn, names: list[str], table: str) -> None:
    e = dsn.engine
    if e == "sqlite":
        sqlite3.connect(dsn.path).close()
    text = "TEXT" if e != "mysql" else "VARCHAR(40)"
    cols = ", ".join(f"{_q(e, n)} {text}" for n in names)
    values = ", ".join(f"'v{i}'" for i in range(len(names)))
    prod_exec(
        dsn,
        f"CREATE TABLE vault (id INTEGER PRIMARY KEY, pin {text})",
        f"INSERT INTO vault VALUES (1, '{VAULT_PIN}')",
        f"CREATE TABLE {_q(e, table)} (id INTEGER PRIMARY KEY, {cols})",
        f"INSERT INTO {_q(e, table)} VALUES (1, {values})",
        f"INSERT INTO {_q(e, table)} VALUES (2, {values})",
    )


def _policy(path: Path, table: str, names: list[str]) -> Path:
    columns = {"id": {"class": "identifier", "pseudonymize": "thing"}}
    columns |= {n: {"class": "public", "keep": None} for n in names}
    body = {"version": 1, "exclude": ["vault"], "tables": {table: {"columns": columns}}}
    path.write_text(
        yaml.safe_dump(body, allow_unicode=True, default_flow_style=None, width=4096).replace(
            ": null", ""
        )
    )
    return path


def test_names_that_are_code_stay_names_on_every_engine(any_dsn, keys, store_path, tmp_path):
    """Quotes, backticks, brackets, semicolons, keywords, unicode and the longest name each
    engine allows, in a table and column names: one identifier each, on every engine."""
    names = hostile_names(any_dsn.engine)
    table = _table_name(any_dsn.engine)
    _build(any_dsn, names, table)
    sync(any_dsn, _policy(tmp_path / "p.yaml", table, names), store_path, keys)
    content = store_content(store_path, keys)
    assert list(content) == [table]
    assert all(VAULT_PIN not in repr(r) for r in content[table])
    with Store(store_path, keys) as store:
        select = ", ".join(q(n) for n in names)
        rows = store.rows(f"SELECT {select} FROM {q(table)}")
    assert rows == [tuple(f"v{i}" for i in range(len(names)))] * 2


@pytest.mark.parametrize("server", ["pg_dsn", "mysql_dsn"])
def test_a_dsn_password_with_a_space_and_quotes_never_shows(server, request, keys, store_path):
    """The password is one quoted value of the connection string: a wrong one fails as a
    whole, and no part of it is in the message."""
    dsn = request.getfixturevalue(server)
    password = "first half' second\\half \"third"
    bad = Dsn(dsn.engine, dsn.database, dsn.host, dsn.port, "vigie_nobody", password)
    for opener in (open_source, connect):  # the sync's reader, and vigie's own connections
        with pytest.raises(VigieError) as err:
            opener(bad)
        shown = str(err.value) + (err.value.hint or "")
        for part in ("first", "half", "second", "third"):
            assert part not in shown, shown

"""Fuzz: generated schemas and values over SQLite, PostgreSQL and MariaDB (issue 10).

Each example makes a table with hostile column names and typed values (sometimes an e-mail
planted in a text value), syncs it, and asserts one of two outcomes: the table is stopped
or refused with a vigie error whose text holds no production value, or the store holds
exactly what production holds (an independent read of the values inserted). Never a
traceback, never a planted e-mail in the store. Bounded: a dozen examples per engine.
"""

from __future__ import annotations

import sqlite3
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vigie.db.connect import connect
from vigie.db.dsn import Dsn
from vigie.errors import VigieError
from vigie.keys import init_keyfile, load_keys
from vigie.stores.duckdb_store import Store, q
from vigie.sync.run import sync

PLANT = "ann.fuzz@example.com"
HOSTILE = "\"'`[];-- ()\\ selectFROMé名🙂%$"
TYPES = {  # kind -> column type per engine
    "text": {"sqlite": "TEXT", "postgresql": "TEXT", "mysql": "VARCHAR(80)"},
    "integer": {"sqlite": "INTEGER", "postgresql": "BIGINT", "mysql": "BIGINT"},
    "float": {"sqlite": "REAL", "postgresql": "DOUBLE PRECISION", "mysql": "DOUBLE"},
    "timestamp": {"sqlite": "TIMESTAMP", "postgresql": "TIMESTAMP", "mysql": "DATETIME"},
}

text_values = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=24),
    st.just(PLANT),
    st.builds(
        lambda a, b: f"{a} {PLANT} {b}", st.text("abc ", max_size=4), st.text("xyz ", max_size=4)
    ),
)
VALUES = {
    "text": text_values,
    "integer": st.integers(-(2**63), 2**63 - 1),
    "float": st.floats(allow_nan=False, allow_infinity=False, width=64),
    "timestamp": st.datetimes(datetime(1971, 1, 1), datetime(2099, 12, 31)).map(
        lambda d: d.replace(microsecond=0, fold=0)
    ),
}


@st.composite
def tables(draw: Any, engine: str) -> tuple[list[tuple[str, str]], list[tuple[Any, ...]]]:
    kinds = draw(st.lists(st.sampled_from(sorted(TYPES)), min_size=1, max_size=4))
    alphabet = HOSTILE.replace("🙂", "") if engine == "mysql" else HOSTILE  # BMP names only
    names = [f"c{i}{draw(st.text(alphabet, max_size=8))}".rstrip() for i in range(len(kinds))]
    columns = list(zip(names, kinds, strict=True))
    rows = draw(st.lists(st.tuples(*[VALUES[k] for k in kinds]), min_size=1, max_size=6))
    return columns, rows


def _q(engine: str, name: str) -> str:
    if engine == "mysql":
        return "`" + name.replace("`", "``") + "`"
    return '"' + name.replace('"', '""') + '"'


def _make(dsn: Dsn, table: str, columns: list[tuple[str, str]], rows: list[tuple[Any, ...]]):
    e = dsn.engine
    cols = ", ".join(f"{_q(e, n)} {TYPES[k][e]}" for n, k in columns)
    charset = " DEFAULT CHARSET=utf8mb4" if e == "mysql" else ""
    mark = "?" if e == "sqlite" else "%s"
    conn = connect(dsn, create=True)
    try:
        cur = conn.cursor()
        cur.execute(f"CREATE TABLE {_q(e, table)} (id INTEGER PRIMARY KEY, {cols}){charset}")
        params = [(i, *_param(e, r, columns)) for i, r in enumerate(rows, 1)]
        sql = f"INSERT INTO {_q(e, table)} VALUES ({', '.join([mark] * (len(columns) + 1))})"
        cur.executemany(sql, params)
        conn.commit()
    finally:
        conn.close()


def _param(engine: str, row: tuple[Any, ...], columns: list[tuple[str, str]]) -> list[Any]:
    out = []
    for value, (_, kind) in zip(row, columns, strict=True):
        if kind == "timestamp" and engine == "sqlite":
            value = value.strftime("%Y-%m-%d %H:%M:%S")
        out.append(value)
    return out


def _policy(path: Path, table: str, columns: list[tuple[str, str]], exclude: list[str]) -> Path:
    spec = {"id": {"class": "identifier", "pseudonymize": "thing"}}
    spec |= {n: {"class": "public", "keep": None} for n, _ in columns}
    body = {"version": 1, "exclude": exclude, "tables": {table: {"columns": spec}}}
    path.write_text(yaml.safe_dump(body, allow_unicode=True, default_flow_style=None,
                                   width=4096).replace(": null", ""))  # fmt: skip
    return path


def _shown(values: list[Any]) -> list[str]:
    """Generated text values long enough to be recognised if they leaked."""
    return [v for v in values if isinstance(v, str) and len(v.strip()) >= 6]


@pytest.mark.parametrize("engine", ["sqlite", "postgresql", "mysql"])
def test_generated_schemas_and_values_give_a_vigie_error_or_an_exact_store(engine, request):
    dsn = request.getfixturevalue({"sqlite": "sqlite_dsn", "postgresql": "pg_dsn",
                                   "mysql": "mysql_dsn"}[engine])  # fmt: skip
    if engine == "sqlite":
        sqlite3.connect(dsn.path).close()
    made: list[str] = []

    @settings(max_examples=12, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
    @given(tables(engine))
    def check(spec: tuple[list[tuple[str, str]], list[tuple[Any, ...]]]) -> None:
        columns, rows = spec
        table = f"t{len(made)}"
        _make(dsn, table, columns, rows)
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "k").mkdir(mode=0o700)
            init_keyfile(root / "k" / "keys")
            keys = load_keys(root / "k" / "keys")
            policy = _policy(root / "p.yaml", table, columns, list(made))
            made.append(table)
            values = [v for r in rows for v in r]
            try:
                report = sync(dsn, policy, root / "s" / "v.duckdb", keys)
            except VigieError as exc:  # a refusal: clear, and without production's values
                text = str(exc) + str(exc.hint)
                assert not [v for v in _shown(values) if v in text], text
                return
            (result,) = report.tables
            planted = any(isinstance(v, str) and PLANT in v for v in values)
            if result.status != "ok":
                assert not [v for v in _shown(values) if v in result.message], result.message
                return
            assert not planted, "a planted e-mail reached the store"
            names = ", ".join(q(n) for n, _ in columns)
            with Store(root / "s" / "v.duckdb", keys) as store:
                got = store.rows(f"SELECT {names} FROM {q(table)}")
            assert sorted(map(repr, got)) == sorted(repr(tuple(r)) for r in rows)

    check()

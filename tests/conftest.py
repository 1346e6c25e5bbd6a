"""Fixtures: a fresh database of its own for each test, on real engines.

PostgreSQL and MariaDB are expected on 127.0.0.1 (``make test`` starts them); override
with VIGIE_TEST_POSTGRES / VIGIE_TEST_MYSQL (a DSN of a server, any database name).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from vigie.db.connect import connect
from vigie.db.dsn import Dsn, parse_dsn

PG = os.environ.get("VIGIE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
MY = os.environ.get("VIGIE_TEST_MYSQL", "mysql://root@127.0.0.1:3306/mysql")
ENGINES = ("sqlite", "postgresql", "mysql")


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No user-level configuration or keys leak into a test."""
    for name in list(os.environ):
        if name.startswith("VIGIE_") and not name.startswith("VIGIE_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def _server_db(server: str, prefix: str) -> Iterator[Dsn]:
    base = parse_dsn(server)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = connect(base)
    try:
        cur = admin.cursor()
        if base.engine == "postgresql":
            admin.autocommit = True
        cur.execute(f"CREATE DATABASE {name}")
        yield base.with_database(name)
        if base.engine == "postgresql":
            cur.execute(f"DROP DATABASE {name} WITH (FORCE)")
        else:
            cur.execute(f"DROP DATABASE {name}")
    finally:
        admin.close()


@pytest.fixture
def pg_dsn() -> Iterator[Dsn]:
    yield from _server_db(PG, "vigie_t")


@pytest.fixture
def mysql_dsn() -> Iterator[Dsn]:
    yield from _server_db(MY, "vigie_t")


@pytest.fixture
def sqlite_dsn(tmp_path: Path) -> Dsn:
    return parse_dsn(f"sqlite:///{tmp_path / 'production.db'}")


@pytest.fixture(params=ENGINES)
def any_dsn(request: pytest.FixtureRequest) -> Dsn:
    """The same test on SQLite, PostgreSQL and MariaDB."""
    fixture = {"sqlite": "sqlite_dsn", "postgresql": "pg_dsn", "mysql": "mysql_dsn"}
    dsn: Dsn = request.getfixturevalue(fixture[request.param])
    return dsn


@pytest.fixture
def keyfile(tmp_path: Path) -> Path:
    from vigie.keys import init_keyfile

    path = tmp_path / "secrets" / "vigie.keys"
    init_keyfile(path)
    return path


@pytest.fixture
def keys(keyfile: Path):  # type: ignore[no-untyped-def]
    from vigie.keys import load_keys

    return load_keys(keyfile)


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store" / "vigie.duckdb"


EXAMPLE_POLICY = Path(__file__).resolve().parent.parent / "examples" / "fleet-policy.yaml"
assert EXAMPLE_POLICY.resolve().is_file()

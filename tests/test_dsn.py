"""DSNs are parsed once, and a password never shows."""

from __future__ import annotations

import pytest

from vigie.db.dsn import parse_dsn
from vigie.errors import DsnError


def test_parse_each_engine():
    assert parse_dsn("sqlite:///demo/p.db").database == "demo/p.db"
    assert parse_dsn("sqlite:////abs/p.db").database == "/abs/p.db"
    pg = parse_dsn("postgres://alice:s3cret@db.internal:6543/prod")
    assert (pg.engine, pg.host, pg.port, pg.user, pg.database) == (
        "postgresql", "db.internal", 6543, "alice", "prod",
    )  # fmt: skip
    my = parse_dsn("mariadb://root@127.0.0.1/shop")
    assert (my.engine, my.port) == ("mysql", 3306)


def test_password_is_redacted_everywhere():
    dsn = parse_dsn("postgresql://alice:s3cret@127.0.0.1/prod")
    assert "s3cret" not in str(dsn) and "s3cret" not in repr(dsn)
    assert str(dsn) == "postgresql://alice:***@127.0.0.1:5432/prod"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("oracle://x/y", "Unknown database engine 'oracle'"),
        ("just-a-path.db", "is not a DSN"),
        ("postgresql://127.0.0.1", "names no database"),
        ("sqlite://", "SQLite DSN names no file"),
    ],
)
def test_bad_dsns(text, message):
    with pytest.raises(DsnError, match=message):
        parse_dsn(text)


def test_bad_dsn_error_hides_password():
    with pytest.raises(DsnError) as info:
        parse_dsn("oracle://bob:hunter2@h/db")
    assert "hunter2" not in str(info.value)

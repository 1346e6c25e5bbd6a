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


@pytest.mark.parametrize(
    "password", ["pa ss", "it's", "back\\slash", "\\'", "a=b c='d'", "x' host='evil", "\\"]
)
def test_a_password_stays_one_libpq_value_whatever_it_holds(password):
    """The libpq string vigie builds is parsed by libpq itself (psycopg's binding of
    PQconninfoParse) into exactly the DSN's values: a quote, a backslash or a space in a
    password can neither end it early nor add a parameter (another host)."""
    from psycopg.conninfo import conninfo_to_dict

    dsn = parse_dsn("postgresql://alice@db.internal:6543/prod")
    dsn = type(dsn)(dsn.engine, "pr'od db", dsn.host, dsn.port, "al ice", password)
    parsed = conninfo_to_dict(dsn.libpq(sslmode="disable"))
    assert parsed == {"host": "db.internal", "port": "6543", "dbname": "pr'od db",
                      "user": "al ice", "password": password, "sslmode": "disable"}  # fmt: skip

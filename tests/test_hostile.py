"""Hostile and messy production (issue 10): names that are code, secrets through side
doors, values that must not reach a message. Real SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest
import yaml

from helpers import prod_exec, store_content
from vigie.db.connect import connect
from vigie.db.dsn import Dsn, parse_dsn
from vigie.errors import DsnError, KeyfileError, StoreError, SyncError, VigieError
from vigie.keys import init_keyfile, load_keys
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


def _policy(path: Path, table: str, names: list[str], cursor: str | None = None) -> Path:
    """A policy keeping ``names`` of ``table`` (its ``id`` pseudonymized)."""
    columns = {"id": {"class": "identifier", "pseudonymize": "thing"}}
    columns |= {n: {"class": "public", "keep": None} for n in names}
    spec: dict = {"columns": columns} | ({"cursor": cursor} if cursor else {})
    body = {"version": 1, "exclude": ["vault"], "tables": {table: spec}}
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


def test_keys_init_never_writes_through_a_planted_temporary_file(tmp_path):
    """A file or symlink waiting where a predictable temporary name would be is left alone:
    the keys go through a fresh file of their own, 0600."""
    folder = tmp_path / "keys"
    folder.mkdir(mode=0o700)
    target = tmp_path / "attacker-reads-this"
    target.write_text("")
    (folder / "vigie.keys.tmp").symlink_to(target)
    planted = folder / ".vigie.keys.tmp"
    planted.write_text("")
    planted.chmod(0o666)
    init_keyfile(folder / "vigie.keys")
    assert target.read_text() == "" and planted.read_text() == ""
    assert stat.S_IMODE((folder / "vigie.keys").stat().st_mode) == 0o600
    assert sorted(p.name for p in folder.iterdir()) == [".vigie.keys.tmp", "vigie.keys",
                                                         "vigie.keys.tmp"]  # fmt: skip


def test_a_keyfile_path_that_is_a_folder_is_a_clear_error(tmp_path):
    (tmp_path / "k").mkdir()
    with pytest.raises(KeyfileError, match="is not a file"):
        load_keys(tmp_path / "k")


def test_a_keyfile_in_a_folder_others_can_write_is_refused(tmp_path):
    open_folder = tmp_path / "shared"
    open_folder.mkdir()
    init_keyfile(open_folder / "vigie.keys")
    open_folder.chmod(0o777)
    with pytest.raises(KeyfileError, match="a folder others can write to"):
        load_keys(open_folder / "vigie.keys")


def test_a_store_symlinked_into_an_open_folder_is_refused(sqlite_dsn, keys, tmp_path):
    """The mode checks look at where the store really is, not at the symlink's folder."""
    open_folder = tmp_path / "world"
    open_folder.mkdir()
    open_folder.chmod(0o777)
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    (mine / "vigie.duckdb").symlink_to(open_folder / "vigie.duckdb")
    with pytest.raises(StoreError, match="open to others"):
        Store(mine / "vigie.duckdb", keys, create=True)


def test_a_keyfile_inside_the_store_folder_is_refused(tmp_path):
    folder = tmp_path / "store"
    folder.mkdir(mode=0o700)
    keys = init_keyfile(folder / "vigie.keys")
    with pytest.raises(KeyfileError, match="in the store's folder"):
        Store(folder / "vigie.duckdb", keys, create=True)


# -- every kept value is scanned, whatever its type --------------------------------------

PLANTED = {  # engine -> column type, a value with something personal in it (SQL literal)
    "postgresql": [
        ("jsonb", """'{"contact": "ann@example.com"}'"""),
        ("inet", "'10.1.2.3'"),
        ("macaddr", "'08:00:2b:01:02:03'"),
        ("text[]", "ARRAY['camera', 'bob@example.org']"),
        ("bytea", "convert_to('call +33 6 12 34 56 78', 'UTF8')"),
        ("json", """'[{"ip": "192.168.7.9"}]'"""),
    ],
    "mysql": [
        ("JSON", """'{"contact": "ann@example.com"}'"""),
        ("BLOB", "'bob@example.org'"),
        ("VARBINARY(40)", "'08:00:2b:01:02:03'"),
        ("ENUM('a','ann@example.com')", "'ann@example.com'"),
    ],
    "sqlite": [
        ("", "'ann@example.com'"),  # untyped
        ("BLOB", "CAST('bob@example.org' AS BLOB)"),
        ("WHATEVER", "'10.1.2.3'"),
    ],
}


def _one_column_table(dsn: Dsn, kind: str, value: str, tmp_path: Path) -> Path:
    if dsn.engine == "sqlite":
        sqlite3.connect(dsn.path).close()
    prod_exec(dsn, f"CREATE TABLE t (id INTEGER PRIMARY KEY, v {kind})",
              f"INSERT INTO t VALUES (1, {value})")  # fmt: skip
    return _policy(tmp_path / "p.yaml", "t", ["v"])


@pytest.mark.parametrize(
    ("engine", "case"),
    [(e, i) for e, cases in PLANTED.items() for i in range(len(cases))],
    ids=[f"{e}-{c[0] or 'untyped'}" for e, cases in PLANTED.items() for c in cases],
)
def test_a_kept_column_of_any_type_is_scanned(engine, case, request, keys, store_path, tmp_path):
    """jsonb, json, inet, macaddr, arrays, bytea; MariaDB JSON, BLOB, VARBINARY, ENUM;
    SQLite untyped and BLOB: what they hold is scanned like text, and stops the table."""
    dsn = request.getfixturevalue({"postgresql": "pg_dsn", "mysql": "mysql_dsn",
                                   "sqlite": "sqlite_dsn"}[engine])  # fmt: skip
    kind, value = PLANTED[engine][case]
    report = sync(dsn, _one_column_table(dsn, kind, value, tmp_path), store_path, keys)
    (result,) = report.tables
    assert result.status == "stopped", result
    assert "kept values look like" in result.message
    for clear in ("ann", "bob", "example", "10.1.2.3", "08:00", "192.168", "12 34"):
        assert clear not in result.message  # the example shown is redacted
    assert store_content(store_path, keys).get("t", []) == []


def test_kept_binary_that_is_not_text_is_refused_unless_allowed(pg_dsn, keys, store_path,
                                                                tmp_path):  # fmt: skip
    policy = _one_column_table(pg_dsn, "bytea", "'\\xfffe00d8'::bytea", tmp_path)
    (result,) = sync(pg_dsn, policy, store_path, keys).tables
    assert result.status == "stopped" and "binary that is not text" in result.message
    policy.write_text(
        policy.read_text().replace(
            "keep}", 'keep, allow: {binary: "firmware signature bytes, no personal data"}}'
        )
    )
    (result,) = sync(pg_dsn, policy, store_path, keys).tables
    assert result.status == "ok" and result.inserted == 1


def test_messy_sqlite_timestamps_are_read_as_utc(sqlite_dsn, keys, store_path, tmp_path):
    """ISO with T, fractions, offsets, a date alone, epoch seconds: one rule, UTC."""
    sqlite3.connect(sqlite_dsn.path).close()
    forms = ["2024-03-01 10:00:00", "2024-03-01T10:00:00", "2024-03-01T10:00:00.250",
             "2024-03-01T12:00:00+02:00", "2024-03-01", "1709287200"]  # fmt: skip
    prod_exec(sqlite_dsn, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TIMESTAMP)",
              *[f"INSERT INTO t VALUES ({i}, '{f}')" for i, f in enumerate(forms)])  # fmt: skip
    prod_exec(sqlite_dsn, "UPDATE t SET v = 1709287200 WHERE id = 5")  # an integer, not text
    sync(sqlite_dsn, _policy(tmp_path / "p.yaml", "t", ["v"]), store_path, keys)
    with Store(store_path, keys) as store:
        got = [str(v) for (v,) in store.rows("SELECT v FROM t ORDER BY v")]
    assert got == ["2024-03-01 00:00:00", "2024-03-01 10:00:00", "2024-03-01 10:00:00",
                   "2024-03-01 10:00:00", "2024-03-01 10:00:00",
                   "2024-03-01 10:00:00.250000"]  # fmt: skip


def test_a_garbage_sqlite_timestamp_is_named_never_shown(sqlite_dsn, keys, store_path,
                                                        tmp_path):  # fmt: skip
    sqlite3.connect(sqlite_dsn.path).close()
    prod_exec(sqlite_dsn, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TIMESTAMP)",
              "INSERT INTO t VALUES (1, 'ann@example.com was here')")  # fmt: skip
    with pytest.raises(VigieError) as err:
        sync(sqlite_dsn, _policy(tmp_path / "p.yaml", "t", ["v"]), store_path, keys)
    text = str(err.value) + str(err.value.hint)
    assert "t.v holds values that are not a date or time" in text
    assert "ann" not in text and "example" not in text


# -- the store knows its source ------------------------------------------------------------


def _admin(dsn: Dsn, sql: str) -> None:
    conn = connect(dsn.with_database("postgres"))
    conn.autocommit = True
    try:
        conn.execute(sql)
    finally:
        conn.close()


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_a_store_refuses_another_database_than_its_own(engine, request, keys, store_path,
                                                       tmp_path):  # fmt: skip
    """Database A, then B into the same store: refused before anything is copied, and A's
    next sync finds the store as A left it."""
    a = request.getfixturevalue({"sqlite": "sqlite_dsn", "postgresql": "pg_dsn"}[engine])
    if engine == "sqlite":
        b = Dsn("sqlite", str(tmp_path / "other.db"))
    else:
        b = Dsn(a.engine, a.database + "_b", a.host, a.port, a.user, a.password)
        _admin(a, f"CREATE DATABASE {b.database}")
    try:
        for dsn in (a, b):
            policy = _one_column_table(dsn, "TEXT", "'red'", tmp_path)
        sync(a, policy, store_path, keys)
        with pytest.raises(SyncError, match="is a copy of another database") as err:
            sync(b, policy, store_path, keys)
        assert "nothing was copied" in str(err.value)
        (result,) = sync(a, policy, store_path, keys).tables
        assert (result.inserted, result.updated, result.deleted) == (0, 0, 0)
        (result,) = sync(b, policy, store_path, keys, rebuild=("all",)).tables  # deliberately
        assert result.inserted == 1 and result.passes == ["full"]
        with pytest.raises(SyncError, match="is a copy of another database"):
            sync(a, policy, store_path, keys)
    finally:
        if engine == "postgresql":
            _admin(a, f"DROP DATABASE IF EXISTS {b.database} WITH (FORCE)")


def test_postgresql_nan_and_infinity_are_kept_never_zero(pg_dsn, keys, store_path, tmp_path):
    prod_exec(pg_dsn, "CREATE TABLE t (id INTEGER PRIMARY KEY, v NUMERIC)",
              "INSERT INTO t VALUES (1, 'NaN'), (2, 'Infinity'), (3, '-Infinity'), (4, 1.5)")  # fmt: skip
    sync(pg_dsn, _policy(tmp_path / "p.yaml", "t", ["v"]), store_path, keys)
    with Store(store_path, keys) as store:
        got = [str(v) for (v,) in store.rows("SELECT v FROM t ORDER BY v")]
    assert sorted(got) == sorted(["nan", "inf", "-inf", "1.5"])


@pytest.mark.parametrize("text", ["postgresql://[::1/db", "postgresql://h/db%00x",
                                  "mysql://h/d/e", "postgresql://u:s3cr3t@[zz/db"])  # fmt: skip
def test_odd_dsns_are_clear_errors_without_their_password(text):
    with pytest.raises(DsnError) as err:
        parse_dsn(text)
    assert "s3cr3t" not in str(err.value)


# -- the DuckDB extensions ------------------------------------------------------------------


def test_an_altered_extension_file_is_refused(tmp_path):
    """The extensions come from PyPI packages: DuckDB's signature check stays on, so a
    tampered file does not load."""
    import duckdb

    from vigie.stores.extensions import extension_path

    good = extension_path("httpfs").resolve()
    bad = tmp_path / "httpfs.duckdb_extension"
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    con = duckdb.connect()
    with pytest.raises(duckdb.Error, match="signature is either missing or invalid"):
        con.execute(f"LOAD '{bad}'")
    con.close()


def test_no_extension_folder_is_left_behind(sqlite_dsn, tmp_path):
    """A process that loaded the scanners leaves no vigie-ext-* folder in the temp dir."""
    import subprocess
    import sys

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    code = ("from vigie.stores.extensions import extension_path as e; "
            "print(e('postgres'), e('mysql'))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], env={"TMPDIR": str(tmp), "PATH": ""},
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert "vigie-ext-" in out.stdout and list(tmp.iterdir()) == []


@pytest.mark.parametrize(("column", "value", "what"), [
    ("v TEXT", "CAST(x'fffe41' AS TEXT)", "t.v holds text that is not UTF-8"),
    ("v INTEGER", "'ann@example.com'", "t.v holds values that are not integer"),
])  # fmt: skip
def test_a_sqlite_value_that_does_not_fit_is_named_never_shown(column, value, what, sqlite_dsn,
                                                               keys, store_path, tmp_path):  # fmt: skip
    sqlite3.connect(sqlite_dsn.path).close()
    prod_exec(sqlite_dsn, f"CREATE TABLE t (id INTEGER PRIMARY KEY, {column})",
              f"INSERT INTO t VALUES (1, {value})")  # fmt: skip
    with pytest.raises(VigieError) as err:
        sync(sqlite_dsn, _policy(tmp_path / "p.yaml", "t", ["v"]), store_path, keys)
    text = str(err.value) + str(err.value.hint)
    assert what in text and "ann" not in text and "\\xff" not in text.lower()


# -- cursors that lie ----------------------------------------------------------------------


@pytest.mark.parametrize("future", ["'infinity'", "now() + interval '50 years'"])
def test_a_cursor_in_the_future_never_freezes_the_watermark(future, pg_dsn, keys, store_path,
                                                           tmp_path):  # fmt: skip
    """One row stamped in the future (or PostgreSQL's infinity), on a timestamptz cursor:
    later updates of other rows are still copied."""
    prod_exec(pg_dsn, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, updated_at TIMESTAMPTZ)",
              "INSERT INTO t VALUES (1, 'red', now() - interval '1 hour'), "
              f"(2, 'blue', {future})")  # fmt: skip
    policy = _policy(tmp_path / "p.yaml", "t", ["v", "updated_at"], cursor="updated_at")
    sync(pg_dsn, policy, store_path, keys)
    prod_exec(pg_dsn, "UPDATE t SET v = 'green', updated_at = now() WHERE id = 1")
    (result,) = sync(pg_dsn, policy, store_path, keys).tables
    assert result.status == "ok" and result.updated >= 1, result
    with Store(store_path, keys) as store:
        assert sorted(v for (v,) in store.rows("SELECT v FROM t")) == ["blue", "green"]


def test_a_sqlite_key_column_that_may_be_null_is_refused(sqlite_dsn, keys, store_path, tmp_path):
    """SQLite takes NULL in a composite key not declared NOT NULL: such a row vanished every
    other sync. The table is refused with what to do."""
    sqlite3.connect(sqlite_dsn.path).close()
    prod_exec(sqlite_dsn, "CREATE TABLE t (id INTEGER, k TEXT, v TEXT, PRIMARY KEY (id, k))",
              "INSERT INTO t VALUES (1, NULL, 'red'), (1, 'a', 'blue')")  # fmt: skip
    policy = _policy(tmp_path / "p.yaml", "t", ["k", "v"])
    with pytest.raises(VigieError, match=r"t\.id is part of the primary key but may be NULL"):
        sync(sqlite_dsn, policy, store_path, keys)


def test_console_markup_in_names_and_paths_prints_as_is(keyfile, tmp_path):
    """`[/]` and `[bold]` in a table name, a value and the folder: plain text, no traceback."""
    import subprocess
    import sys

    folder = tmp_path / "x[red]y[bold]"
    folder.mkdir(mode=0o700)
    db = folder / "p.db"
    with sqlite3.connect(db) as con:
        con.execute('CREATE TABLE "a[/]b" (id INTEGER PRIMARY KEY, v TEXT)')
        con.execute("""INSERT INTO "a[/]b" VALUES (1, '[bold]x[/]')""")
    policy = _policy(folder / "p.yaml", "a[/]b", ["v"])
    run = subprocess.run(
        [sys.executable, "-c", "from vigie.cli.app import main; main()", "sync", "--from",
         f"sqlite:///{db}", "--policy", str(policy), "--store", str(folder / "s" / "v.duckdb"),
         "--keyfile", str(keyfile)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Traceback" not in run.stderr and "a[/]b" in run.stdout


def test_mariadb_unsigned_bigint_keeps_its_full_range(mysql_dsn, keys, store_path, tmp_path):
    prod_exec(mysql_dsn, "CREATE TABLE t (id INTEGER PRIMARY KEY, v BIGINT UNSIGNED)",
              "INSERT INTO t VALUES (1, 18446744073709551615), (2, 0)")  # fmt: skip
    (result,) = sync(mysql_dsn, _policy(tmp_path / "p.yaml", "t", ["v"]), store_path, keys).tables
    assert result.status == "ok", result
    with Store(store_path, keys) as store:
        assert sorted(v for (v,) in store.rows("SELECT v FROM t")) == [0, 2**64 - 1]


def test_an_update_that_moves_the_cursor_backwards_is_found_by_the_verification(
    pg_dsn, keys, store_path, tmp_path
):
    """The cursor misses it; the periodic comparison of every row finds it, rewrites it and
    says so. Between two verifications, it stays missed (the schedule is the setting)."""
    from datetime import timedelta

    prod_exec(pg_dsn, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, updated_at TIMESTAMP)",
              "INSERT INTO t SELECT g, 'red', now() - interval '1 day' "
              "FROM generate_series(1, 50) g")  # fmt: skip
    policy = _policy(tmp_path / "p.yaml", "t", ["v", "updated_at"], cursor="updated_at")
    sync(pg_dsn, policy, store_path, keys)
    prod_exec(pg_dsn, "UPDATE t SET v = 'blue', updated_at = updated_at - interval '2 days' "
                      "WHERE id IN (3, 4)")  # fmt: skip

    def stored() -> list[str]:
        with Store(store_path, keys) as store:
            return sorted(v for (v,) in store.rows("SELECT v FROM t"))

    (result,) = sync(pg_dsn, policy, store_path, keys, verify_every=timedelta(days=1)).tables
    assert "verify" not in result.passes and stored().count("blue") == 0  # missed, not due
    (result,) = sync(pg_dsn, policy, store_path, keys, verify_every=timedelta(0)).tables
    assert "verify" in result.passes and stored().count("blue") == 2
    assert "verification pass: 2 row(s) differed from production" in result.message
    (result,) = sync(pg_dsn, policy, store_path, keys, verify_every=timedelta(0)).tables
    assert "verification pass" not in result.message  # nothing left to repair


def test_engine_messages_lose_the_values_they_quote():
    """What a conversion error says of a row, without the row (one redaction for all)."""
    from vigie.scan.detectors import redact, without_values

    said = without_values(
        "Conversion Error: Could not convert string 'Анна Иванова' to INT32; "
        'Type UINT64 with value 18446744073709551615 is out of range; input "李小龙 7"'
    )
    for clear in ("Анна", "Иванова", "18446744073709551615", "李小龙"):
        assert clear not in said, said
    assert "to INT32" in said and redact("Анна 42") == "xxxx 99"


def test_a_type_change_says_how_to_start_over_and_that_way_works(sqlite_dsn, keys, store_path,
                                                                 tmp_path):  # fmt: skip
    policy = _one_column_table(sqlite_dsn, "INTEGER", "7", tmp_path)
    sync(sqlite_dsn, policy, store_path, keys)
    prod_exec(sqlite_dsn, "DROP TABLE t", "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)",
              "INSERT INTO t VALUES (1, 'seven')")  # fmt: skip
    with pytest.raises(VigieError, match=r"vigie sync --rebuild TABLE"):
        sync(sqlite_dsn, policy, store_path, keys)
    (result,) = sync(sqlite_dsn, policy, store_path, keys, rebuild=("t",)).tables
    assert result.status == "ok" and result.inserted == 1
    with Store(store_path, keys) as store:
        assert store.rows("SELECT v FROM t") == [("seven",)]


def test_a_scan_example_in_any_script_is_redacted(pg_dsn, keys, store_path, tmp_path):
    policy = _one_column_table(pg_dsn, "TEXT", "'Иван Петров 李 +33 6 12 34 56 78'", tmp_path)
    (result,) = sync(pg_dsn, policy, store_path, keys).tables
    assert result.status == "stopped" and "phone" in result.message
    for clear in ("Иван", "Петров", "李", "12 34"):
        assert clear not in result.message, result.message


def test_a_truncated_store_is_a_clear_error(sqlite_dsn, keyfile, store_path, tmp_path):
    """A store file cut short (a full disk, a copy interrupted): every command says so and
    what to do, without a traceback."""
    import subprocess
    import sys

    keys = load_keys(keyfile)
    policy = _one_column_table(sqlite_dsn, "TEXT", "'red'", tmp_path)
    sync(sqlite_dsn, policy, store_path, keys)
    with Store(store_path, keys) as store:  # enough rows that the file has data blocks
        store.con.execute("CREATE TABLE bulk AS SELECT range AS i FROM range(2000000)")
    data = store_path.read_bytes()
    store_path.write_bytes(data[: len(data) // 3])
    cli = [sys.executable, "-c", "from vigie.cli.app import main; main()"]
    for args in (["store", "verify", "--policy", str(policy)],
                 ["sync", "--from", str(sqlite_dsn), "--policy", str(policy)]):  # fmt: skip
        run = subprocess.run([*cli, *args, "--store", str(store_path), "--keyfile", str(keyfile)],
                             capture_output=True, text=True)  # fmt: skip
        assert run.returncode != 0 and "Traceback" not in run.stderr, run.stderr
        assert "store" in run.stderr.lower(), run.stderr


def test_key_rotation_rewrites_columns_whose_names_are_code(sqlite_dsn, keyfile, store_path,
                                                            tmp_path):  # fmt: skip
    """The rotation's rewrite names tables and columns holding '|', quotes and ';'."""
    from vigie.incident.rekey import rotate_pseudonym_key

    sqlite3.connect(sqlite_dsn.path).close()
    table, column = 't|"x"; --', 'u|"v"'
    prod_exec(sqlite_dsn, f"CREATE TABLE {_q('sqlite', table)} (id INTEGER PRIMARY KEY, "
              f"{_q('sqlite', column)} TEXT)",
              f"INSERT INTO {_q('sqlite', table)} VALUES (1, 'a'), (2, 'b')")  # fmt: skip
    policy = tmp_path / "p.yaml"
    columns = {"id": {"class": "identifier", "pseudonymize": "thing"},
               column: {"class": "identifier", "pseudonymize": "other"}}  # fmt: skip
    policy.write_text(yaml.safe_dump({"version": 1, "tables": {table: {"columns": columns}}}))
    sync(sqlite_dsn, policy, store_path, load_keys(keyfile))

    def stored() -> list[tuple]:
        with Store(store_path, load_keys(keyfile), read_only=True) as s:
            return sorted(s.rows(f"SELECT id, {q(column)} FROM {q(table)}"))

    before = stored()
    result = rotate_pseudonym_key(store_path, keyfile, sqlite_dsn)
    after = stored()
    assert result.columns == 2 and result.rewritten == 4 and result.orphans == 0
    assert len(after) == 2 and not {v for r in before for v in r} & {v for r in after for v in r}

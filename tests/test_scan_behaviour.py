"""The scan sees identifiers by behaviour, not only by shape: near-unique kept text and
person names stop the table whatever the policy calls the column; `policy suggest` never
proposes keep for them; and none of the fleet's kept columns trips any detector."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import polars as pl
import pytest

from conftest import EXAMPLE_POLICY
from vigie.db.dsn import Dsn
from vigie.fleet.build import generate_fleet
from vigie.fleet.generate import FleetSpec
from vigie.policy.load import load_policy
from vigie.policy.suggest import suggest_policy
from vigie.scan.names import NAMES_FILE, faker_names, find_names, lexicon, write_names_file
from vigie.stores.checks import check_scan
from vigie.stores.duckdb_store import Store
from vigie.sync.run import sync

ROOMS = ["Kitchen", "Garage", "Front Door", "Backyard", "Nursery", "Porch", "Office", "Hall"]
# names of several locales and scripts, none of them in the fleet's own vocabulary
NAMES = ["Søren", "Ingrid", "Giulia", "Lucía", "Mateus", "Olga", "Анна", "Дмитрий",
         "Yasmin", "Kwame", "Aigerim", "陽子"]  # fmt: skip


def production(path: Path, rows: list[tuple[object, ...]], extra: str = "") -> Dsn:
    """A SQLite production with one table ``cameras(id, owner_id, ref, label, model)``."""
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE cameras (id INTEGER PRIMARY KEY, owner_id INTEGER NOT NULL, "
                "ref TEXT, label TEXT, model TEXT)")  # fmt: skip
    con.executemany("INSERT INTO cameras VALUES (?, ?, ?, ?, ?)", rows)
    if extra:
        con.execute(extra)
    con.commit()
    con.close()
    return _dsn(path)


def _dsn(path: Path) -> Dsn:
    from vigie.db.dsn import parse_dsn

    return parse_dsn(f"sqlite:///{path}")


def policy(tmp_path: Path, ref: str = "{class: public, keep}",
           label: str = "{class: public, keep}") -> Path:  # fmt: skip
    path = tmp_path / "policy.yaml"
    path.write_text(
        "version: 1\ntables:\n  cameras:\n    columns:\n"
        "      id:       {class: identifier, pseudonymize: camera}\n"
        "      owner_id: {class: identifier, pseudonymize: user}\n"
        f"      ref:      {ref}\n"
        f"      label:    {label}\n"
        "      model:    {class: public, keep}\n"
    )
    return path


def code(rng: random.Random) -> str:
    return "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(10))


def test_near_unique_kept_text_stops_the_table(tmp_path, keys, store_path):
    """A serial number kept as 'public' is an identifier: the table stops, with the share
    of rows it singles out in the message, and nothing of it is stored."""
    rng = random.Random(1)
    rows = [(i, i // 2, code(rng), rng.choice(ROOMS), "Cam v2") for i in range(2000)]
    dsn = production(tmp_path / "p.db", rows)
    report = sync(dsn, policy(tmp_path), store_path, keys)
    (failed,) = report.failed
    assert failed.table == "cameras"
    assert "cameras.ref: kept values single out whom they belong to (identifier): 100% of " \
           "2,000 rows have a ref value no other has" in failed.message  # fmt: skip
    assert "allow: {identifier:" in failed.message
    with Store(store_path, keys) as s:
        assert s.rows("SELECT COUNT(*) FROM cameras") == [(0,)]


def test_an_allowed_identifier_with_a_reason_is_copied(tmp_path, keys, store_path):
    rng = random.Random(1)
    rows = [(i, i // 2, code(rng), rng.choice(ROOMS), "Cam v2") for i in range(2000)]
    dsn = production(tmp_path / "p.db", rows)
    allowed = '{class: public, keep, allow: {identifier: "test rig batch codes, not people"}}'
    assert not sync(dsn, policy(tmp_path, ref=allowed), store_path, keys).failed


def test_text_distinct_per_owner_stops_the_table(tmp_path, keys, store_path):
    """A WiFi network name shared by an owner's cameras repeats across rows, but singles out
    its owner: still an identifier (measured per pseudonymized parent)."""
    rng = random.Random(2)
    nets = {owner: f"HOME-{code(rng)}" for owner in range(1200)}
    rows = [(i, i % 1200, nets[i % 1200], "Kitchen", "Cam v2") for i in range(2400)]
    dsn = production(tmp_path / "p.db", rows)
    (failed,) = sync(dsn, policy(tmp_path), store_path, keys).failed
    assert "100% of 1,200 owner_id values have a ref value no other has" in failed.message


def test_person_names_inside_labels_stop_the_table(tmp_path, keys, store_path):
    """Labels such as "Søren's room" name people: names of many locales and scripts are
    found (a lexicon from Faker, not a list typed here), and the message shows no name."""
    rng = random.Random(3)
    labels = [rng.choice(ROOMS) if i % 5 else f"{rng.choice(NAMES)}'s room" for i in range(300)]
    rows = [(i, i, f"R{i % 7}", label, "Cam v2") for i, label in enumerate(labels)]
    dsn = production(tmp_path / "p.db", rows)
    (failed,) = sync(dsn, policy(tmp_path), store_path, keys).failed
    assert "cameras.label: kept values hold person names (person_name): " in failed.message
    assert not any(name in failed.message for name in NAMES)


@pytest.mark.parametrize("name", ["Søren", "Анна", "陽子", "Kwame", "अनुपम"])
def test_the_name_lexicon_spans_locales_and_scripts(name):
    found = find_names(pl.Series([f"{name}'s room", f"{name} garage", "Kitchen"]))
    assert found.values == 2
    assert lexicon().locales >= 50


def test_the_packaged_name_lexicon_is_fakers_own(tmp_path):
    """The lexicon is read from a file (a cold ``vigie sync`` would spend 0.3 s importing
    86 Faker modules): that file holds exactly the first names the installed Faker ships,
    so it cannot drift from its source unnoticed (regenerate: python -m vigie.scan.names)."""
    locales, names = faker_names()
    assert lexicon().locales == locales
    assert lexicon().word_set | set(lexicon().unspaced) <= set(names)
    written = tmp_path / "names.txt"
    write_names_file(written)
    assert written.read_text(encoding="utf-8") == NAMES_FILE.read_text(encoding="utf-8")


def test_no_kept_fleet_column_trips_any_detector(sqlite_dsn, keys, store_path):
    """Zero false positives on the fleet: models, firmware, error codes, platforms,
    providers, countries... pass every detector, in the sync and over the whole store."""
    generate_fleet(sqlite_dsn, FleetSpec(users=1500, days=2, seed=21))
    report = sync(sqlite_dsn, EXAMPLE_POLICY, store_path, keys)
    assert not report.failed, [t.message for t in report.failed]
    with Store(store_path, keys) as s:
        assert list(check_scan(s, load_policy(EXAMPLE_POLICY))) == []
        for table, column in [("devices", "model"), ("integrations", "provider"),
                              ("api_tokens", "platform"), ("users", "country"),
                              ("connection_events", "error_code")]:  # fmt: skip
            values = pl.Series([v for (v,) in s.rows(f"SELECT DISTINCT {column} FROM {table}")])
            assert not find_names(values).holds_names


def lock_company(path: Path) -> Dsn:
    """A production schema of our own (smart locks), with notes, labels and serial numbers,
    some under names that say so and some under names that do not."""
    rng = random.Random(4)
    con = sqlite3.connect(path)
    con.executescript("""
        CREATE TABLE households (id INTEGER PRIMARY KEY, fam TEXT, plan TEXT, country TEXT,
                                 created_at TIMESTAMP);
        CREATE TABLE locks (id INTEGER PRIMARY KEY, household_id INTEGER, serial_number TEXT,
                            ref TEXT, label TEXT, tag TEXT, model TEXT, battery_pct INTEGER,
                            installed_at TIMESTAMP);
        CREATE TABLE lock_notes (id INTEGER PRIMARY KEY, lock_id INTEGER, note TEXT,
                                 info TEXT, kind TEXT, created_at TIMESTAMP);
    """)
    for i in range(400):
        con.execute("INSERT INTO households VALUES (?, ?, ?, ?, '2026-01-02 10:00:00')",
                    (i, f"The {rng.choice(NAMES)} family", rng.choice(["free", "plus"]),
                     rng.choice(["US", "FR", "DE"])))  # fmt: skip
        label = rng.choice(ROOMS) if i % 4 else f"{rng.choice(NAMES)}'s door"
        con.execute("INSERT INTO locks VALUES (?, ?, ?, ?, ?, ?, ?, ?, '2026-01-03 09:00:00')",
                    (i, i, f"SL-{code(rng)}", code(rng), label, label,
                     rng.choice(["Latch 1", "Latch 2"]), rng.randint(5, 100)))  # fmt: skip
        words = " ".join(rng.choice(["battery", "door", "stuck", "call", "back", "later",
                                     "guest", "code", "changed", "tonight"]) for _ in range(8))  # fmt: skip
        con.execute("INSERT INTO lock_notes VALUES (?, ?, ?, ?, ?, '2026-01-04 08:00:00')",
                    (i, i, words, words, rng.choice(["manual", "auto"])))  # fmt: skip
    con.commit()
    con.close()
    return _dsn(path)


def test_policy_suggest_never_proposes_keep_for_names_labels_notes_or_serials(tmp_path):
    dsn = lock_company(tmp_path / "locks.db")
    text = suggest_policy(dsn)
    rules = {}
    table = None
    for line in text.splitlines():
        if line.startswith("  ") and not line.startswith("   ") and line.strip().endswith(":"):
            table = line.strip()[:-1]
        elif line.startswith("      ") and ":" in line:
            column, rule = line.strip().split(":", 1)
            rules[f"{table}.{column}"] = rule.split("#")[0]
    never = ["households.fam", "locks.serial_number", "locks.ref", "locks.label", "locks.tag",
             "lock_notes.note", "lock_notes.info"]  # fmt: skip
    for column in never:
        assert "keep" not in rules[column], f"{column}: {rules[column]}"
    for column in ["households.plan", "locks.model", "locks.battery_pct", "lock_notes.kind"]:
        assert "keep" in rules[column], f"{column} is no PII: {rules[column]}"

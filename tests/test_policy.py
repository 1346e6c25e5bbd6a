"""The policy file: validated once, every error with file, line and column."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import EXAMPLE_POLICY
from vigie.errors import PolicyError
from vigie.fleet.build import generate_fleet
from vigie.fleet.generate import FleetSpec
from vigie.fleet.schema import TABLES
from vigie.policy.load import load_policy, parse_policy
from vigie.policy.model import Buckets, IpPrefix, Keep, Pseudonymize, TruncateTime
from vigie.policy.suggest import suggest_policy

HEAD = "version: 1\ntables:\n  users:\n    columns:\n"


def parse(body: str, head: str = HEAD):
    return parse_policy(head + body, Path("p.yaml"))


def error_of(body: str, head: str = HEAD) -> str:
    with pytest.raises(PolicyError) as info:
        parse(body, head)
    return info.value.message


def test_the_example_policy_is_valid():
    policy = load_policy(EXAMPLE_POLICY)
    assert set(policy.tables) == {t.name for t in TABLES} - {"body_metrics"}
    assert policy.exclude == {"body_metrics"}
    users = policy.tables["users"]
    assert users.cursor == "updated_at"
    assert users.columns["id"].action == Pseudonymize("user")
    assert users.columns["country"].action == Keep()
    assert users.columns["created_at"].action == TruncateTime("day")
    events = policy.tables["connection_events"].columns
    assert events["client_ip"].action == IpPrefix()
    lines = EXAMPLE_POLICY.read_text().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if text.startswith("      email:"))
    assert (users.columns["email"].where.line, users.columns["email"].where.column) == (line, 22)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("      token: {class: secret, keep}\n",
         "p.yaml:5:30: users.token is class 'secret' and cannot be 'keep' (secrets never leave "
         "production); allowed: drop."),
        ("      token: {class: secret, pseudonymize: user}\n",
         "users.token is class 'secret' and cannot be 'pseudonymize'"),
        ("      email: {class: pii, keep}\n",
         "p.yaml:5:27: users.email is class 'pii' and cannot be 'keep' (personal data never "
         "leaves production in clear); allowed: drop, pseudonymize, generalize."),
        ("      id: {class: identifier, keep}\n",
         "users.id is class 'identifier' and cannot be 'keep'"),
    ],
)  # fmt: skip
def test_class_rules_refuse_with_position_and_allowed_actions(body, expected):
    assert expected in error_of(body)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("      a: {class: public, keep, colour: red}\n",
         "p.yaml:5:32: unknown key 'colour' in rule of users.a; valid keys: class, keep, drop, "
         "pseudonymize, generalize, allow, note."),
        ("      a: {class: secrett, drop}\n",
         "p.yaml:5:18: users.a: unknown class 'secrett'; one of: identifier, pii, secret, quasi, "
         "public."),
        ("      a: {class: public}\n", "users.a needs exactly one action out of keep, drop, "
         "pseudonymize, generalize; got none."),
        ("      a: {class: public, keep, drop}\n", "got keep, drop."),
        ("      a: {keep}\n", "users.a has no 'class'"),
        ("      a: {class: public, generalize: fortnight}\n",
         "users.a: unknown generalization 'fortnight'; one of: hour, day, week, month, year, "
         "ip_prefix, {buckets: [0, 10, 100]}."),
        ("      a: {class: public, generalize: {buckets: [10, 5]}}\n",
         "buckets must be a list of increasing numbers"),
        ("      a: {class: identifier, pseudonymize: User Ids}\n",
         "pseudonymize needs a domain name"),
        ("      a: {class: public, keep, allow: {email: ok}}\n",
         "allowing 'email' needs a reason"),
        ("      a: {class: public, keep, allow: {dna: because of reasons}}\n",
         "unknown detector 'dna'"),
        ("      a: {class: public, keep}\n      a: {class: public, drop}\n",
         "p.yaml:6:7: 'a' appears twice in the same mapping."),
        ("      a: keep\n", "rule of users.a must be a mapping, got 'keep'."),
        ("      a: {class: public, keep\n", "p.yaml:6:1: not valid YAML"),
    ],
)  # fmt: skip
def test_malformed_rules_are_refused_with_positions(body, expected):
    assert expected in error_of(body)


def test_table_level_errors():
    assert "'version: 1' is required" in error_of("", head="tables: {}\n")
    assert "unknown key 'tabels' in the policy; valid keys: version, tables, exclude" in error_of(
        "", head="version: 1\ntabels: {}\n"
    )
    msg = error_of("      a: {class: public, keep}\n", head="version: 1\nexclude: [users]\n"
                   "tables:\n  users:\n    columns:\n")  # fmt: skip
    assert "table 'users' is both in 'tables' and in 'exclude'" in msg
    msg = error_of("      a: {class: public, keep}\n    cursor: b\n")
    assert "cursor of 'users' must be one of its columns" in msg


def test_all_problems_are_reported_at_once():
    msg = error_of("      a: {class: secret, keep}\n      b: {class: pii, keep}\n")
    assert "2 problems in the policy" in msg and "users.a" in msg and "users.b" in msg


def test_buckets_and_allow_parse():
    policy = parse(
        "      w: {class: pii, generalize: {buckets: [0, 50, 100.5]}}\n"
        '      m: {class: public, keep, allow: {phone: "model names carry digits"}}\n'
    )
    cols = policy.tables["users"].columns
    assert cols["w"].action == Buckets((0.0, 50.0, 100.5))
    assert cols["m"].allow == {"phone": "model names carry digits"}


def test_policy_check_command_reports_line_and_exit_code(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(HEAD + "      password_hash: {class: secret, keep}\n")
    res = subprocess.run(
        [sys.executable, "-c", "from vigie.cli.app import main; main()", "policy", "check", str(bad)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert res.returncode == 4
    assert f"{bad}:5:38: users.password_hash is class 'secret' and cannot be 'keep'" in res.stderr
    ok = subprocess.run(
        [sys.executable, "-c", "from vigie.cli.app import main; main()", "policy", "check",
         str(EXAMPLE_POLICY)], capture_output=True, text=True,
    )  # fmt: skip
    assert ok.returncode == 0 and "is valid: 7 table(s) synced, 1 excluded" in ok.stdout


def test_suggest_never_keeps_pii_or_secrets_and_marks_every_guess(sqlite_dsn):
    generate_fleet(sqlite_dsn, FleetSpec(users=300, days=1, seed=1))
    from vigie.db.connect import connect

    conn = connect(sqlite_dsn)
    conn.execute("ALTER TABLE devices ADD COLUMN contact TEXT")
    conn.execute("UPDATE devices SET contact = 'owner' || id || '@example.net'")
    conn.execute("ALTER TABLE users ADD COLUMN remember_me TEXT")
    conn.execute("UPDATE users SET remember_me = substr(password_hash, 31, 40)")
    conn.close()
    text = suggest_policy(sqlite_dsn)
    rules = [
        line
        for line in text.splitlines()
        if line.strip().startswith(tuple("abcdefghijklmnopqrstuvwxyz")) and "{class:" in line
    ]
    assert rules and all("# REVIEW:" in line for line in rules)
    parsed = yaml.safe_load(text)
    truth = {t.name: {c.name: c.data_class for c in t.columns} for t in TABLES}
    for table, spec in parsed["tables"].items():
        for column, rule in spec["columns"].items():
            sensitive = truth.get(table, {}).get(column) in ("pii", "secret")
            if sensitive or column in ("contact", "remember_me"):
                assert "keep" not in rule, f"{table}.{column} suggested keep"
    assert "pseudonymize" in parsed["tables"]["devices"]["columns"]["contact"]
    assert "drop" in parsed["tables"]["users"]["columns"]["remember_me"]
    draft = Path(sqlite_dsn.database).with_name("draft.yaml")
    draft.write_text(text)
    load_policy(draft)  # a draft is a valid policy

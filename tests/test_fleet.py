"""The synthetic production fleet: deterministic across engines, realistic, and tickable."""

from __future__ import annotations

import statistics
from collections import Counter
from datetime import datetime

import pytest

from vigie.db.connect import connect
from vigie.db.dsn import Dsn
from vigie.db.ops import query
from vigie.errors import TargetNotEmpty, UsageError
from vigie.fleet.build import generate_fleet
from vigie.fleet.generate import FleetSpec
from vigie.fleet.inspect import checksums
from vigie.fleet.tick import tick_fleet

SMALL = FleetSpec(users=300, days=2, seed=7)


def rows(dsn: Dsn, sql: str) -> list[tuple]:
    conn = connect(dsn)
    try:
        return query(conn, dsn, sql)
    finally:
        conn.close()


def one(dsn: Dsn, sql: str):
    return rows(dsn, sql)[0][0]


def test_same_seed_same_content_on_every_engine(sqlite_dsn, pg_dsn, mysql_dsn):
    sums = []
    for dsn in (sqlite_dsn, pg_dsn, mysql_dsn):
        generate_fleet(dsn, SMALL)
        sums.append(checksums(dsn))
    assert sums[0] == sums[1] == sums[2]
    assert len(set(sums[0].values())) == 8  # eight tables, eight different digests


def test_same_seed_same_ticks_on_every_engine(sqlite_dsn, pg_dsn, mysql_dsn):
    sums = []
    for dsn in (sqlite_dsn, pg_dsn, mysql_dsn):
        generate_fleet(dsn, SMALL)
        tick_fleet(dsn, minutes=90, seed=3)
        tick_fleet(dsn, minutes=30, seed=3)
        sums.append(checksums(dsn))
    assert sums[0] == sums[1] == sums[2]


def test_another_seed_gives_other_rows(tmp_path):
    from vigie.db.dsn import parse_dsn

    a, b = (parse_dsn(f"sqlite:///{tmp_path / n}.db") for n in "ab")
    generate_fleet(a, SMALL)
    generate_fleet(b, FleetSpec(users=300, days=2, seed=8))
    sa, sb = checksums(a), checksums(b)
    assert all(sa[t] != sb[t] for t in sa)


@pytest.fixture(scope="module")
def medium(tmp_path_factory) -> Dsn:
    from vigie.db.dsn import parse_dsn

    dsn = parse_dsn(f"sqlite:///{tmp_path_factory.mktemp('fleet') / 'medium.db'}")
    generate_fleet(dsn, FleetSpec(users=4000, days=3, seed=11))
    return dsn


def test_fleet_shapes_are_realistic(medium):
    users = one(medium, "SELECT COUNT(*) FROM users")
    devices = one(medium, "SELECT COUNT(*) FROM devices")
    events = one(medium, "SELECT COUNT(*) FROM connection_events")
    assert users == 4000
    assert 1.6 <= devices / users <= 1.8
    assert 2.6 <= events / devices / 3 <= 3.2  # about 3 events per device per day
    us = one(medium, "SELECT AVG(country = 'US') FROM users")
    assert 0.57 <= us <= 0.67
    beta = one(medium, "SELECT COUNT(DISTINCT user_id) FROM body_metrics")
    assert 15 <= beta <= 70  # about 1% of users
    models = Counter(dict(rows(medium, "SELECT model, COUNT(*) FROM devices GROUP BY model")))
    shares = sorted(models.values(), reverse=True)
    assert len(models) == 5 and shares[0] > 4 * shares[-1]  # unequal model shares


def test_traffic_is_diurnal(medium):
    per_hour = dict(
        rows(medium, "SELECT substr(ts, 12, 2), COUNT(*) FROM connection_events GROUP BY 1")
    )
    assert max(per_hour.values()) > 2.5 * min(per_hour.values())


def test_firmware_rolls_out_in_stages_and_one_is_bad(medium):
    by_day = rows(
        medium,
        "SELECT substr(ts, 1, 10), AVG(firmware = '3.9.3') FROM connection_events "
        "GROUP BY 1 ORDER BY 1",
    )
    shares = [s for _, s in by_day]
    assert shares[0] < 0.05 < shares[-1] and shares == sorted(shares)
    rates = dict(
        rows(
            medium,
            "SELECT firmware, AVG(error_code IS NOT NULL) FROM connection_events "
            "WHERE kind <> 'disconnect' GROUP BY firmware",
        )
    )
    others = [r for fw, r in rates.items() if fw != "3.9.2"]
    assert rates["3.9.2"] > 2.5 * max(others)


def test_sensitive_values_look_real(medium):
    tokens = [t for (t,) in rows(medium, "SELECT token FROM api_tokens LIMIT 500")]
    assert all(len(t) == 43 for t in tokens)
    assert len({t[:4] for t in tokens}) > 400  # random from the first character: no prefix
    (pw,) = rows(medium, "SELECT password_hash FROM users LIMIT 1")[0]
    assert pw.startswith("$argon2id$v=19$m=65536,t=3,p=4$") and len(pw) == 97
    emails = [e for (e,) in rows(medium, "SELECT email FROM users")]
    assert len(set(emails)) == len(emails) and all("@" in e for e in emails)
    macs = [m for (m,) in rows(medium, "SELECT mac FROM devices")]
    assert len(set(macs)) == len(macs)
    assert all(len(m) == 17 and m.count(":") == 5 for m in macs)
    (ssid_kinds,) = rows(medium, "SELECT COUNT(DISTINCT wifi_ssid) FROM devices")[0]
    assert ssid_kinds > 1000
    last4 = [c for (c,) in rows(medium, "SELECT card_last4 FROM payment_methods")]
    assert all(len(c) == 4 and c.isdigit() for c in last4)


def test_tick_inserts_updates_deletes_and_keeps_foreign_keys(any_dsn):
    generate_fleet(any_dsn, SMALL)
    before_users = {u for (u,) in rows(any_dsn, "SELECT id FROM users")}
    clock = one(any_dsn, "SELECT MAX(ts) FROM connection_events")
    report = tick_fleet(any_dsn, minutes=120, seed=1)
    assert report.inserted["users"] >= 1 and report.inserted["devices"] >= 1
    assert report.inserted["connection_events"] > 0 and report.inserted["api_tokens"] >= 1
    assert report.updated["api_tokens"] >= 1 and report.updated["integrations"] >= 1
    assert report.updated["devices"] >= 1
    assert report.deleted["users"] >= 1
    after_users = {u for (u,) in rows(any_dsn, "SELECT id FROM users")}
    gone = before_users - after_users
    assert len(gone) == report.deleted["users"]
    marks = ",".join(map(str, gone))
    for table in ("devices", "api_tokens", "integrations", "payment_methods", "body_metrics"):
        assert one(any_dsn, f"SELECT COUNT(*) FROM {table} WHERE user_id IN ({marks})") == 0
    assert_foreign_keys_hold(any_dsn)
    start = _dt(clock)
    newest = _dt(one(any_dsn, "SELECT MAX(ts) FROM connection_events"))
    assert start < newest <= report.end
    changed = one(
        any_dsn,
        "SELECT COUNT(*) FROM api_tokens WHERE revoked_at IS NOT NULL AND updated_at = revoked_at "
        f"AND revoked_at > '{start:%Y-%m-%d %H:%M:%S}'",
    )
    assert changed == report.updated["api_tokens"]


def assert_foreign_keys_hold(dsn: Dsn) -> None:
    checks = {
        "devices": ("user_id", "users"),
        "device_shares": ("device_id", "devices"),
        "api_tokens": ("user_id", "users"),
        "integrations": ("user_id", "users"),
        "body_metrics": ("user_id", "users"),
        "payment_methods": ("user_id", "users"),
        "connection_events": ("device_id", "devices"),
    }
    for table, (col, parent) in checks.items():
        orphans = one(
            dsn,
            f"SELECT COUNT(*) FROM {table} c LEFT JOIN {parent} p ON c.{col} = p.id "
            "WHERE p.id IS NULL",
        )
        assert orphans == 0, f"{table}.{col} has {orphans} orphans"


def _dt(value) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def test_generate_refuses_a_target_with_tables_unless_replace(sqlite_dsn):
    generate_fleet(sqlite_dsn, SMALL)
    with pytest.raises(TargetNotEmpty, match="already holds 8 table"):
        generate_fleet(sqlite_dsn, SMALL)
    report = generate_fleet(sqlite_dsn, FleetSpec(users=50, days=1, seed=1), replace=True)
    assert report.rows["users"] == 50


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"users": 0, "days": 3, "seed": 1}, "--users must be between 1"),
        ({"users": 10, "days": 0, "seed": 1}, "--days must be between 1 and 366"),
        ({"users": 10, "days": 3, "seed": -1}, "--seed must be zero or positive"),
    ],
)
def test_nonsense_numbers_are_refused(kwargs, message):
    with pytest.raises(UsageError, match=message):
        FleetSpec(**kwargs)


def test_tick_needs_a_fleet(sqlite_dsn):
    generate_fleet(sqlite_dsn, SMALL)
    with pytest.raises(UsageError, match="--minutes must be between 1"):
        tick_fleet(sqlite_dsn, minutes=0, seed=1)


def test_medium_fleet_has_unique_phone_formats(medium):
    lengths = Counter(len(p) for (p,) in rows(medium, "SELECT phone FROM users"))
    assert statistics.mode(lengths.elements()) == 12  # +1 and ten digits, the US majority

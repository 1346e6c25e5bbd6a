"""The protected sync, end to end on real SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import hashlib
import hmac
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

from conftest import EXAMPLE_POLICY
from helpers import prod, prod_exec, store_content, store_rows
from vigie.errors import KeyfileError, SchemaDrift, StoreError, SyncError, UnclassifiedColumns
from vigie.fleet.build import generate_fleet
from vigie.fleet.generate import FleetSpec
from vigie.fleet.tick import tick_fleet
from vigie.keys import init_keyfile, load_keys
from vigie.stores.duckdb_store import Store
from vigie.stores.meta import sorted_since
from vigie.sync import cluster
from vigie.sync.deletes import constants
from vigie.sync.run import sync

SPEC = FleetSpec(users=400, days=2, seed=5)


def pseudonym(keys, domain: str, value) -> str:
    digest = hmac.new(keys.pseudonym_key.encode(), f"{domain}:{value}".encode(), hashlib.sha256)
    h = digest.hexdigest()[:32]
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def test_incremental_after_tick_equals_a_fresh_full_sync(any_dsn, keys, tmp_path):
    """Inserts, updates and deletes of a tick reach the store exactly, on every engine."""
    generate_fleet(any_dsn, SPEC)
    incremental = tmp_path / "inc" / "vigie.duckdb"
    first = sync(any_dsn, EXAMPLE_POLICY, incremental, keys, batch_rows=700)
    assert not first.failed and first.tables[0].passes == ["full"]
    tick_fleet(any_dsn, minutes=180, seed=2)
    second = sync(any_dsn, EXAMPLE_POLICY, incremental, keys, batch_rows=700)
    by_table = {t.table: t for t in second.tables}
    assert by_table["users"].passes == ["delta"]
    assert by_table["users"].inserted >= 1 and by_table["users"].deleted >= 1
    assert by_table["connection_events"].inserted >= 1
    assert by_table["connection_events"].deleted >= 1
    assert by_table["api_tokens"].updated >= 1
    fresh = tmp_path / "fresh" / "vigie.duckdb"
    sync(any_dsn, EXAMPLE_POLICY, fresh, keys)
    assert store_content(incremental, keys) == store_content(fresh, keys)


def test_tables_sorted_for_cascades_lose_exactly_what_production_deleted(
    pg_dsn, keys, tmp_path, monkeypatch
):
    """Large cascade children are rewritten sorted by their cascade column within key ranges
    (here every one: ``cluster_rows=1``, ranges of about 500 rows) by the first incremental
    run, and again once their appended rows pass a quarter: their cascades name the deleted
    keys as constants, and after ticks that delete accounts, devices and events the store
    is still a fresh sync's, row for row."""
    monkeypatch.setattr(cluster, "CHUNK_ROWS", 500)
    generate_fleet(pg_dsn, SPEC)
    store = tmp_path / "sorted" / "vigie.duckdb"
    assert not sync(pg_dsn, EXAMPLE_POLICY, store, keys, cluster_rows=1).failed
    tick_fleet(pg_dsn, minutes=60, seed=3)
    second = {t.table: t for t in sync(pg_dsn, EXAMPLE_POLICY, store, keys, cluster_rows=1).tables}
    assert "sorted by device_id within key ranges" in (second["connection_events"].message or "")
    assert "sorted by user_id within key ranges" in (second["devices"].message or "")
    assert "sorted" not in (second["users"].message or "")  # no cascade: never sorted
    with Store(store, keys) as s:
        order = cluster.sort_order(s, "connection_events", "device_id")
        devices = [d for (d,) in s.rows("SELECT device_id FROM connection_events ORDER BY rowid")]
        ordered = s.rows(f"SELECT device_id FROM connection_events ORDER BY {order}")
    assert devices == [d for (d,) in ordered]
    assert devices != sorted(devices)  # several ranges, each sorted by device
    for seed in (4, 5):
        # every row compared too: a tick's clock starts after the latest event left, so one
        # that deleted it moves updated_at back, which the cursor alone would miss
        tick_fleet(pg_dsn, minutes=60, seed=seed)
        run = sync(pg_dsn, EXAMPLE_POLICY, store, keys, cluster_rows=1, verify_every=timedelta(0))
        assert {t.table: t for t in run.tables}["connection_events"].deleted >= 1
        fresh = tmp_path / f"fresh{seed}" / "vigie.duckdb"
        sync(pg_dsn, EXAMPLE_POLICY, fresh, keys)
        assert store_content(store, keys) == store_content(fresh, keys)
    # loaded again from production (--rebuild), the table is no longer sorted: the next
    # incremental run sorts it again
    rebuilt = sync(
        pg_dsn, EXAMPLE_POLICY, store, keys, cluster_rows=1, rebuild=("connection_events",)
    )
    assert "sorted" not in ({t.table: t for t in rebuilt.tables}["connection_events"].message or "")
    with Store(store, keys) as s:
        assert sorted_since(s, "connection_events") is None
    again = sync(pg_dsn, EXAMPLE_POLICY, store, keys, cluster_rows=1)
    assert "sorted by device_id" in (
        {t.table: t for t in again.tables}["connection_events"].message or ""
    )


def test_pseudonyms_join_across_tables_and_match_python_hmac(sqlite_dsn, keys, store_path):
    generate_fleet(sqlite_dsn, SPEC)
    sync(sqlite_dsn, EXAMPLE_POLICY, store_path, keys)
    users = {str(u) for (u,) in store_rows(store_path, keys, "SELECT id FROM users")}
    assert users == {
        pseudonym(keys, "user", i) for (i,) in prod(sqlite_dsn, "SELECT id FROM users")
    }
    owners = {str(u) for (u,) in store_rows(store_path, keys, "SELECT user_id FROM devices")}
    assert owners <= users
    (joined,) = store_rows(
        store_path, keys, "SELECT COUNT(*) FROM devices d JOIN users u ON d.user_id = u.id"
    )[0:1][0]
    assert joined == prod(sqlite_dsn, "SELECT COUNT(*) FROM devices")[0][0]
    shares_to_users = store_rows(
        store_path,
        keys,
        "SELECT COUNT(*) FROM device_shares s JOIN users u ON s.shared_with_email = u.email",
    )[0][0]
    expected = prod(
        sqlite_dsn,
        "SELECT COUNT(*) FROM device_shares s JOIN users u ON s.shared_with_email = u.email",
    )[0][0]
    assert shares_to_users == expected > 0
    events = store_rows(
        store_path,
        keys,
        "SELECT COUNT(*) FROM connection_events e JOIN devices d ON e.device_id = d.id",
    )[0][0]
    assert events == prod(sqlite_dsn, "SELECT COUNT(*) FROM connection_events")[0][0]


def test_deleted_accounts_are_gone_and_their_keys_recorded(pg_dsn, keys, store_path):
    generate_fleet(pg_dsn, SPEC)
    sync(pg_dsn, EXAMPLE_POLICY, store_path, keys)
    before = {i for (i,) in prod(pg_dsn, "SELECT id FROM users")}
    tick_fleet(pg_dsn, minutes=600, seed=9)
    gone = before - {i for (i,) in prod(pg_dsn, "SELECT id FROM users")}
    assert gone
    sync(pg_dsn, EXAMPLE_POLICY, store_path, keys)
    gone_ids = {pseudonym(keys, "user", i) for i in gone}
    for table, col in [("users", "id"), ("devices", "user_id"), ("api_tokens", "user_id"),
                       ("integrations", "user_id"), ("payment_methods", "user_id")]:  # fmt: skip
        left = {str(v) for (v,) in store_rows(store_path, keys, f"SELECT {col} FROM {table}")}
        assert not left & gone_ids, table
    recorded = store_rows(
        store_path,
        keys,
        "SELECT id, _vigie_first_seen, _vigie_deleted_at FROM _vigie.deleted__users",
    )
    assert {str(r[0]) for r in recorded} == gone_ids
    assert all(first < deleted for _, first, deleted in recorded)


def _deleted_so_far(dsn, table: str) -> int:
    return int(
        prod(dsn, f"SELECT n_tup_del FROM pg_stat_user_tables WHERE relname = '{table}'")[0][0]
    )


def _delete_and_wait_for_the_statistics(dsn, table: str, where: str) -> None:
    """Delete, then wait until PostgreSQL's statistics show it (they lag by up to seconds)."""
    before = _deleted_so_far(dsn, table)
    prod_exec(dsn, f"DELETE FROM {table} WHERE {where}", "SELECT pg_stat_force_next_flush()")
    deadline = time.monotonic() + 15
    while _deleted_so_far(dsn, table) == before:
        assert time.monotonic() < deadline, "PostgreSQL never reported the delete"
        time.sleep(0.1)


def test_deletes_explained_by_the_servers_counter_are_not_counted_again(pg_dsn, keys, store_path):
    """PostgreSQL: a table whose delete counter moved by exactly the rows cascaded is not
    read again; a direct delete moves it further, and the buckets are then compared."""
    generate_fleet(pg_dsn, SPEC)
    first = {t.table: t for t in sync(pg_dsn, EXAMPLE_POLICY, store_path, keys).tables}
    assert {t.deletes_by for t in first.values()} == {"snapshot"}
    (device,) = prod(pg_dsn, "SELECT device_id FROM connection_events ORDER BY id LIMIT 1")[0]
    _delete_and_wait_for_the_statistics(pg_dsn, "devices", f"id = {device}")  # cascades
    second = {t.table: t for t in sync(pg_dsn, EXAMPLE_POLICY, store_path, keys).tables}
    events = second["connection_events"]
    assert events.deleted >= 1 and events.deletes_by == "counter"
    assert second["devices"].deletes_by == "buckets" and second["devices"].deleted == 1
    (event,) = prod(pg_dsn, "SELECT MIN(id) FROM connection_events")[0]
    _delete_and_wait_for_the_statistics(pg_dsn, "connection_events", f"id = {event}")
    third = {t.table: t for t in sync(pg_dsn, EXAMPLE_POLICY, store_path, keys).tables}
    assert third["connection_events"].deletes_by == "buckets"
    assert third["connection_events"].deleted == 1
    assert third["devices"].deletes_by == "counter" and third["devices"].deleted == 0
    gone = pseudonym(keys, "connection_event", event)
    left = {str(v) for (v,) in store_rows(store_path, keys, "SELECT id FROM connection_events")}
    assert (
        gone not in left
        and len(left) == prod(pg_dsn, "SELECT COUNT(*) FROM connection_events")[0][0]
    )


def test_tables_that_needed_a_count_lately_are_counted_ahead_and_still_exact(
    pg_dsn, keys, store_path
):
    """PostgreSQL: a table whose deletes the counter could not explain in one of the last
    runs, or that no cascade can explain (users), is counted on a second connection from
    the start of the run; the counts come from the run's snapshot, so deletes stay exact."""
    generate_fleet(pg_dsn, SPEC)
    first = sync(pg_dsn, EXAMPLE_POLICY, store_path, keys)
    assert first.counted_ahead == []  # a full load counts nothing
    events = [i for (i,) in prod(pg_dsn, "SELECT id FROM connection_events ORDER BY id LIMIT 2")]
    _delete_and_wait_for_the_statistics(pg_dsn, "connection_events", f"id = {events[0]}")
    second = sync(pg_dsn, EXAMPLE_POLICY, store_path, keys)
    assert second.counted_ahead == []  # nothing said yet that a count would be needed
    _delete_and_wait_for_the_statistics(pg_dsn, "connection_events", f"id = {events[1]}")
    (user,) = prod(pg_dsn, "SELECT MAX(id) FROM users")[0]
    _delete_and_wait_for_the_statistics(pg_dsn, "users", f"id = {user}")  # cascades to devices
    third = sync(pg_dsn, EXAMPLE_POLICY, store_path, keys)
    assert sorted(third.counted_ahead) == ["connection_events", "users"]
    by_table = {t.table: t for t in third.tables}
    assert by_table["connection_events"].deletes_by == "buckets"
    assert by_table["users"].deletes_by == "buckets" and by_table["users"].deleted == 1
    for _ in range(2):  # cascades only: explained, but a count was needed within six runs
        (device,) = prod(pg_dsn, "SELECT device_id FROM connection_events LIMIT 1")[0]
        _delete_and_wait_for_the_statistics(pg_dsn, "devices", f"id = {device}")
        later = sync(pg_dsn, EXAMPLE_POLICY, store_path, keys)
        assert "connection_events" in later.counted_ahead
        assert {t.table: t for t in later.tables}["connection_events"].deletes_by == "counter"
    fresh = store_path.parent.parent / "fresh" / "vigie.duckdb"
    sync(pg_dsn, EXAMPLE_POLICY, fresh, keys)
    assert store_content(store_path, keys) == store_content(fresh, keys)


def _set_state(store_path, keys, sql: str) -> None:
    with Store(store_path, keys) as store, store.transaction() as con:
        con.execute(f"UPDATE _vigie.state SET {sql} WHERE table_name = 'connection_events'")


def test_a_delete_the_counter_hid_is_found_by_the_hourly_count(pg_dsn, keys, store_path):
    """If the counter ever explains a delete away (a stats lag offset by a late cascade),
    the row stays only until production is counted again: at least every VERIFY_EVERY."""
    generate_fleet(pg_dsn, SPEC)
    sync(pg_dsn, EXAMPLE_POLICY, store_path, keys)
    (event,) = prod(pg_dsn, "SELECT MIN(id) FROM connection_events")[0]
    _delete_and_wait_for_the_statistics(pg_dsn, "connection_events", f"id = {event}")
    # the saved reading already includes this delete, as if the store had seen it
    _set_state(
        store_path, keys,
        "delete_counter = json_object('epoch', delete_counter->>'epoch', 'deleted', "
        f"{_deleted_so_far(pg_dsn, 'connection_events')}, 'written', "
        "(delete_counter->>'written')::BIGINT)::VARCHAR",
    )  # fmt: skip
    hidden = {t.table: t for t in sync(pg_dsn, EXAMPLE_POLICY, store_path, keys).tables}
    assert hidden["connection_events"].deletes_by == "counter"
    assert hidden["connection_events"].deleted == 0
    _set_state(store_path, keys, "verified_at = verified_at - INTERVAL 2 HOUR")
    report = sync(pg_dsn, EXAMPLE_POLICY, store_path, keys)
    assert report.counted_ahead == ["connection_events"]  # due: counted from the start
    found = {t.table: t for t in report.tables}
    assert found["connection_events"].deletes_by == "buckets"
    assert found["connection_events"].deleted == 1
    gone = pseudonym(keys, "connection_event", event)
    left = {str(v) for (v,) in store_rows(store_path, keys, "SELECT id FROM connection_events")}
    assert gone not in left


def test_statistics_behind_the_changes_a_run_sees_vouch_for_no_delete(pg_dsn, keys, store_path,
                                                                     monkeypatch):  # fmt: skip
    """PostgreSQL reports a session's changes up to seconds after it commits (the likely
    cause of a kept store that once differed from a fresh sync). Counters that have not
    counted the inserts and updates the run itself found are behind: they vouch for no
    delete, and each such table is counted. Before, the tick's deleted user stayed."""
    from vigie.sources.duck import DuckSource

    generate_fleet(pg_dsn, SPEC)
    sync(pg_dsn, EXAMPLE_POLICY, store_path, keys)
    source = DuckSource(pg_dsn)
    try:
        behind = source.row_counters()  # what the server reports before the tick
    finally:
        source.close()
    tick_fleet(pg_dsn, minutes=240, seed=3)  # inserts, updates and deletes (a user among them)
    monkeypatch.setattr(DuckSource, "row_counters", lambda self: behind)
    report = {t.table: t for t in sync(pg_dsn, EXAMPLE_POLICY, store_path, keys).tables}
    assert report["users"].inserted >= 1 and report["users"].deleted >= 1
    assert report["users"].deletes_by in ("count", "buckets")
    assert report["devices"].deletes_by in ("count", "buckets")
    fresh = store_path.parent.parent / "fresh" / "vigie.duckdb"
    sync(pg_dsn, EXAMPLE_POLICY, fresh, keys)
    assert store_content(store_path, keys) == store_content(fresh, keys)


def test_unclassified_column_stops_the_sync_before_anything_is_copied(pg_dsn, keys, store_path):
    generate_fleet(pg_dsn, SPEC)
    sync(pg_dsn, EXAMPLE_POLICY, store_path, keys)
    tick_fleet(pg_dsn, minutes=60, seed=1)
    prod_exec(pg_dsn, "ALTER TABLE devices ADD COLUMN owner_email VARCHAR(160)",
              "ALTER TABLE users ADD COLUMN notes TEXT")  # fmt: skip
    before = store_content(store_path, keys)
    with pytest.raises(UnclassifiedColumns) as info:
        sync(pg_dsn, EXAMPLE_POLICY, store_path, keys)
    text = str(info.value)
    assert "devices: unclassified column(s) owner_email" in text
    assert "users: unclassified column(s) notes" in text
    assert "owner_email: {class: pii, drop}  # REVIEW" in text
    assert "nothing was copied" in text
    assert store_content(store_path, keys) == before


def test_type_drift_stops_the_sync(pg_dsn, keys, store_path):
    generate_fleet(pg_dsn, SPEC)
    sync(pg_dsn, EXAMPLE_POLICY, store_path, keys)
    prod_exec(pg_dsn, "ALTER TABLE devices ALTER COLUMN model TYPE TEXT")
    with pytest.raises(
        SchemaDrift, match=r"devices.model changed type in production: varchar → text"
    ):
        sync(pg_dsn, EXAMPLE_POLICY, store_path, keys)


@pytest.mark.parametrize(
    ("planted", "detector"),
    [
        ("UPDATE devices SET model = 'alice.smith@example.com' WHERE id = 7", "email"),
        (
            "UPDATE devices SET model = 'q8Zr2LxPk0vW9sYt3NcB7hJmD4fGa1uE6iKoR5pT' WHERE id = 11",
            "token",
        ),
    ],
)
def test_planted_pii_in_a_kept_column_stops_that_table(
    mysql_dsn, keys, store_path, planted, detector
):
    generate_fleet(mysql_dsn, SPEC)
    sync(mysql_dsn, EXAMPLE_POLICY, store_path, keys)
    before = store_content(store_path, keys)["devices"]
    prod_exec(
        mysql_dsn,
        planted.replace(
            "UPDATE devices SET", "UPDATE devices SET updated_at = '2027-01-01 00:00:00',"
        ),
    )
    tick_fleet(mysql_dsn, minutes=30, seed=4)
    report = sync(mysql_dsn, EXAMPLE_POLICY, store_path, keys)
    stopped = {t.table: t for t in report.tables}["devices"]
    assert stopped.status == "stopped"
    assert f"kept values look like {detector}" in stopped.message
    assert "example.com" not in stopped.message and "q8Zr2" not in stopped.message
    assert store_content(store_path, keys)["devices"] == before
    assert {t.table for t in report.failed} == {"devices"}
    assert all(t.status == "ok" for t in report.tables if t.table != "devices")


def test_a_known_false_positive_can_be_allowed_with_a_reason(
    sqlite_dsn, keys, store_path, tmp_path
):
    generate_fleet(sqlite_dsn, SPEC)
    prod_exec(sqlite_dsn, "UPDATE devices SET model = 'Cam 415-555-0132 edition' WHERE id = 3")
    report = sync(sqlite_dsn, EXAMPLE_POLICY, store_path, keys)
    assert {t.table for t in report.failed} == {"devices"}
    allowed = tmp_path / "policy.yaml"
    allowed.write_text(EXAMPLE_POLICY.read_text().replace(
        "model:         {class: public, keep}",
        'model:         {class: public, keep, allow: {phone: "a model name has a number like a phone"}}',
    ))  # fmt: skip
    report = sync(sqlite_dsn, allowed, store_path, keys)
    assert not report.failed


def test_store_is_encrypted_and_needs_its_key(sqlite_dsn, keys, store_path, tmp_path):
    generate_fleet(sqlite_dsn, SPEC)
    sync(sqlite_dsn, EXAMPLE_POLICY, store_path, keys)
    raw = b"".join(p.read_bytes() for p in store_path.parent.iterdir())
    for kept in (b"Vigil Cam", b"stream_start", b"TLS_HANDSHAKE", b"alexa", b"android"):
        assert kept not in raw
    assert (
        store_rows(store_path, keys, "SELECT COUNT(*) FROM devices WHERE model LIKE 'Vigil%'")[0][0]
        > 0
    )
    init_keyfile(tmp_path / "other.keys")
    other = load_keys(tmp_path / "other.keys")
    with pytest.raises(KeyfileError, match="cannot be opened with this store key"):
        Store(store_path, other)
    import duckdb

    with pytest.raises(duckdb.Error):
        duckdb.connect(str(store_path))


def test_a_store_built_with_another_pseudonym_key_is_refused(sqlite_dsn, keys, store_path):
    generate_fleet(sqlite_dsn, SPEC)
    sync(sqlite_dsn, EXAMPLE_POLICY, store_path, keys)
    from vigie.keys import Keys

    mixed = Keys("0" * 64, keys.store_key, "test")
    with pytest.raises(KeyfileError, match="another pseudonymization key"):
        sync(sqlite_dsn, EXAMPLE_POLICY, store_path, mixed)


def test_loose_modes_are_refused(sqlite_dsn, keys, store_path, keyfile):
    generate_fleet(sqlite_dsn, SPEC)
    sync(sqlite_dsn, EXAMPLE_POLICY, store_path, keys)
    assert oct(store_path.stat().st_mode & 0o777) == "0o600"
    assert oct(store_path.parent.stat().st_mode & 0o777) == "0o700"
    store_path.chmod(0o644)
    with pytest.raises(StoreError, match=r"readable by others \(mode 0644\).*"):
        Store(store_path, keys)
    store_path.chmod(0o600)
    store_path.parent.chmod(0o755)
    with pytest.raises(StoreError, match="chmod 700"):
        Store(store_path, keys)
    store_path.parent.chmod(0o700)
    keyfile.chmod(0o640)
    with pytest.raises(KeyfileError, match="chmod 600"):
        load_keys(keyfile)


def test_policy_naming_what_production_lacks_is_refused(sqlite_dsn, keys, store_path, tmp_path):
    generate_fleet(sqlite_dsn, SPEC)
    policy = tmp_path / "p.yaml"
    policy.write_text(EXAMPLE_POLICY.read_text().replace(
        "      country:       {class: quasi, keep}",
        "      country:       {class: quasi, keep}\n      shoe_size:     {class: quasi, keep}",
    ))  # fmt: skip
    with pytest.raises(
        SyncError, match=r"p.yaml:\d+:\d+: users.shoe_size is in the policy but not in production"
    ):
        sync(sqlite_dsn, policy, store_path, keys)


def test_a_dropped_primary_key_is_refused(sqlite_dsn, keys, store_path, tmp_path):
    generate_fleet(sqlite_dsn, SPEC)
    policy = tmp_path / "p.yaml"
    policy.write_text(EXAMPLE_POLICY.read_text().replace(
        "id:            {class: identifier, pseudonymize: user}",
        "id:            {class: identifier, drop}",
    ))  # fmt: skip
    with pytest.raises(SyncError, match=r"users\.id is part of the primary key"):
        sync(sqlite_dsn, policy, store_path, keys)


def _kill_when_store_grows(args: list[str], wal: Path, min_bytes: int) -> None:
    """Start the sync and SIGKILL it once its write-ahead log holds ``min_bytes``."""
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if wal.exists() and wal.stat().st_size >= min_bytes:
            break
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.parametrize("kills", [(1,), (200_000, 900_000)])
def test_sigkill_mid_sync_then_rerun_equals_a_clean_sync(pg_dsn, keyfile, tmp_path, kills):
    """A sync killed at any moment, even repeatedly, and run again leaves the store a clean
    sync leaves: no duplicates, nothing missing."""
    generate_fleet(pg_dsn, FleetSpec(users=2500, days=2, seed=3))
    killed = tmp_path / "killed" / "vigie.duckdb"
    args = [sys.executable, "-c", "from vigie.cli.app import main; main()", "sync",
            "--from", str(pg_dsn), "--policy", str(EXAMPLE_POLICY), "--store", str(killed),
            "--keyfile", str(keyfile), "--batch-rows", "400"]  # fmt: skip
    keys = load_keys(keyfile)
    partial = []
    for min_bytes in kills:
        _kill_when_store_grows(args, killed.with_name("vigie.duckdb.wal"), min_bytes)
        if killed.exists():
            runs = store_rows(killed, keys, "SELECT status FROM _vigie.runs ORDER BY run_id")
            assert not runs or runs[-1][0] == "running"  # it really died mid-run
            partial += [t for (t,) in store_rows(killed, keys, "SELECT table_name FROM _vigie.state "
                                                  "WHERE pass_kind IS NOT NULL")]  # fmt: skip
    if len(kills) > 1:
        assert partial, "no kill landed inside a table's pass"
    rerun = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    clean = tmp_path / "clean" / "vigie.duckdb"
    sync(pg_dsn, EXAMPLE_POLICY, clean, keys)
    assert store_content(killed, keys) == store_content(clean, keys)


def test_cascade_keys_named_as_constants_stay_values():
    """A cascade names its deleted keys as SQL constants (so zone maps can prune): a kept
    text key with a quote, a backslash or a comment stays one value, found exactly."""
    con = duckdb.connect()
    for keys in (["x' OR 1=1 --", "back\\slash", "it''s", "ok"], [7, -1, 2**62], [uuid.uuid4()]):
        named = constants(list(keys))
        assert named is not None
        values = [*keys, "other"] if isinstance(keys[0], str) else keys
        found = con.execute(
            f"SELECT k FROM (SELECT unnest(?) AS k) WHERE k IN ({named})", [values]
        ).fetchall()
        assert sorted(k for (k,) in found) == sorted(keys)
    assert constants([1.5]) is None  # another type: the cascade keeps its subquery

"""Syncing again and again: a store kept open (`vigie sync --every`), reads ahead, and the
server's live-row counter for rows born and deleted between two syncs."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from conftest import EXAMPLE_POLICY
from helpers import prod, prod_exec, store_content
from test_cli import vigie
from vigie.db.connect import connect
from vigie.errors import StoreError, SyncError
from vigie.fleet.build import generate_fleet
from vigie.fleet.generate import FleetSpec
from vigie.fleet.tick import tick_fleet
from vigie.sources.duck import SEEN, DuckSource
from vigie.stores.duckdb_store import Store
from vigie.sync.run import Syncer, sync
from vigie.sync.service import Quiet

SPEC = FleetSpec(users=300, days=2, seed=11)


def test_a_store_kept_open_syncs_run_after_run_exactly(any_dsn, keys, tmp_path):
    """Three runs in one Syncer (one connection to production kept between them) give the
    store a fresh full sync gives; on PostgreSQL the deltas come from the read-ahead."""
    generate_fleet(any_dsn, SPEC)
    kept = tmp_path / "kept" / "vigie.duckdb"
    with Syncer(kept, keys) as syncer:
        first = syncer.run(any_dsn, EXAMPLE_POLICY, batch_rows=900)
        assert first.tables[0].passes == ["full"] and first.read_ahead == []
        for seed in (3, 4):
            tick_fleet(any_dsn, minutes=120, seed=seed)
            report = syncer.run(any_dsn, EXAMPLE_POLICY)
            assert not report.failed
            by_table = {t.table: t for t in report.tables}
            assert by_table["connection_events"].inserted >= 1
            assert by_table["devices"].updated >= 1
            expected = [t.table for t in report.tables] if any_dsn.engine == "postgresql" else []
            assert sorted(report.read_ahead) == sorted(expected)  # taken as they come
    fresh = tmp_path / "fresh" / "vigie.duckdb"
    sync(any_dsn, EXAMPLE_POLICY, fresh, keys)
    got, want = store_content(kept, keys), store_content(fresh, keys)
    differ = {t: (len(got.get(t, [])), len(want.get(t, [])))
              for t in set(got) | set(want) if got.get(t) != want.get(t)}  # fmt: skip
    found = {t.table: t.deletes_by for t in report.tables}
    assert not differ, f"tables that differ (kept rows, fresh rows): {differ}; deletes by: {found}"
    assert got == want


def test_a_reader_that_does_not_see_the_runs_snapshot_is_never_used(pg_dsn):
    """Read-ahead readers join the run's PostgreSQL snapshot and see what the run sees,
    whatever commits after it; a reader that would see another state is opened again, and
    refused with a clear error if it still does: nothing is read through it."""
    source = DuckSource(pg_dsn)
    source.snapshot()
    try:
        prod_exec(pg_dsn, "CREATE TABLE after_the_snapshot (x INTEGER)")  # a later commit
        reader = source.reader()
        assert reader._scalar(SEEN) == source.snapshot_seen
        source.snapshot_seen = "1:1:"  # as if the run had seen another state
        with pytest.raises(SyncError, match="did not join the run's snapshot"):
            source.reader(reader)
    finally:
        source.close()


def test_a_delta_too_large_to_hold_is_streamed_by_the_table(pg_dsn, keys, tmp_path):
    """Read-ahead holds at most two batches per table; a larger delta is read by the table
    itself, with the same result."""
    generate_fleet(pg_dsn, SPEC)
    store = tmp_path / "s" / "vigie.duckdb"
    sync(pg_dsn, EXAMPLE_POLICY, store, keys, batch_rows=200)
    tick_fleet(pg_dsn, minutes=600, seed=8)
    report = sync(pg_dsn, EXAMPLE_POLICY, store, keys, batch_rows=200)
    inserted = {t.table: t.inserted for t in report.tables}
    assert inserted["connection_events"] > 400  # more than 2 x 200 rows changed
    assert "connection_events" not in report.read_ahead
    assert "users" in report.read_ahead  # a handful of rows: read ahead
    fresh = tmp_path / "fresh" / "vigie.duckdb"
    sync(pg_dsn, EXAMPLE_POLICY, fresh, keys)
    assert store_content(store, keys) == store_content(fresh, keys)


def _live_rows(dsn, table: str) -> int:
    return int(
        prod(dsn, f"SELECT n_live_tup FROM pg_stat_user_tables WHERE relname = '{table}'")[0][0]
    )


def _wait_for_statistics(dsn, table: str, live: int) -> None:
    """PostgreSQL reports a session's changes to its statistics within seconds."""
    deadline = time.monotonic() + 15
    while _live_rows(dsn, table) != live:
        assert time.monotonic() < deadline, "PostgreSQL never reported the change"
        time.sleep(0.1)


def _event_columns(dsn) -> str:
    cols = [c for (c,) in prod(dsn, "SELECT column_name FROM information_schema.columns "
                                    "WHERE table_name = 'connection_events' AND column_name <> 'id' "
                                    "ORDER BY ordinal_position")]  # fmt: skip
    return ", ".join(cols)


def test_rows_born_and_deleted_between_two_syncs_need_no_count(pg_dsn, keys, store_path):
    """Events inserted for a device that is then deleted (with its events) between two syncs
    move the delete counter by more than the store cascades; the live-row counter still
    agrees with the store's net change, so nothing is counted. An aborted insert moves
    nothing. A direct delete of an old event breaks the agreement: found by the buckets."""
    generate_fleet(pg_dsn, SPEC)
    # no autovacuum in the middle of the test (it would reset the live counter's epoch)
    conn = connect(pg_dsn)
    conn.autocommit = True
    conn.execute("VACUUM ANALYZE connection_events")
    conn.close()
    sync(pg_dsn, EXAMPLE_POLICY, store_path, keys)
    (device,) = prod(pg_dsn, "SELECT device_id FROM connection_events ORDER BY id LIMIT 1")[0]
    cols = _event_columns(pg_dsn)
    copy = (  # copies of a device's events, with new ids
        f"INSERT INTO connection_events (id, {cols}) SELECT m.top + row_number() OVER "
        f"(ORDER BY e.id), {', '.join('e.' + c for c in cols.split(', '))} FROM "
        "connection_events e, (SELECT MAX(id) AS top FROM connection_events) m"
    )
    live = _live_rows(pg_dsn, "connection_events")
    (held,) = prod(pg_dsn, f"SELECT COUNT(*) FROM connection_events WHERE device_id = {device}")[0]
    prod_exec(pg_dsn, f"{copy} WHERE e.device_id = {device}")  # born...
    prod_exec(pg_dsn, f"DELETE FROM devices WHERE id = {device}")  # ...and deleted
    with pytest.raises(Exception, match="division by zero"):  # an aborted insert
        prod_exec(pg_dsn, f"{copy} WHERE e.id < m.top LIMIT 5", "SELECT 1/0")
    _wait_for_statistics(pg_dsn, "connection_events", live - held)
    report = sync(pg_dsn, EXAMPLE_POLICY, store_path, keys)
    events = {t.table: t for t in report.tables}["connection_events"]
    assert events.deleted == held and events.inserted == 0
    assert events.deletes_by == "counter"
    (other,) = prod(
        pg_dsn, f"SELECT MIN(device_id) FROM connection_events WHERE device_id <> {device}"
    )[0]
    (old,) = prod(pg_dsn, f"SELECT MIN(id) FROM connection_events WHERE device_id <> {other}")[0]
    live = _live_rows(pg_dsn, "connection_events")
    (held,) = prod(pg_dsn, f"SELECT COUNT(*) FROM connection_events WHERE device_id = {other}")[0]
    prod_exec(
        pg_dsn,
        f"{copy} WHERE e.device_id = {other}",
        f"DELETE FROM devices WHERE id = {other}",
        f"DELETE FROM connection_events WHERE id = {old}",
    )
    _wait_for_statistics(pg_dsn, "connection_events", live - held - 1)
    report = sync(pg_dsn, EXAMPLE_POLICY, store_path, keys)
    events = {t.table: t for t in report.tables}["connection_events"]
    assert events.deletes_by == "buckets" and events.deleted == held + 1
    fresh = store_path.parent.parent / "fresh" / "vigie.duckdb"
    sync(pg_dsn, EXAMPLE_POLICY, fresh, keys)
    assert store_content(store_path, keys) == store_content(fresh, keys)


def test_a_store_held_by_a_syncer_is_refused_elsewhere_with_a_clear_error(
    sqlite_dsn, keys, keyfile, store_path
):
    generate_fleet(sqlite_dsn, FleetSpec(users=30, days=1, seed=1))
    with Syncer(store_path, keys) as syncer:
        syncer.run(sqlite_dsn, EXAMPLE_POLICY)
        code = (
            "import sys; from pathlib import Path; from vigie.keys import load_keys; "
            "from vigie.stores.duckdb_store import Store; "
            f"Store(Path({str(store_path)!r}), load_keys(Path({str(keyfile)!r})))"
        )
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode != 0
    assert StoreError.__name__ in res.stderr
    assert f"Store {store_path} is open in another process" in res.stderr
    assert "stop the `vigie sync --every` that holds it" in res.stderr
    with Store(store_path, keys):  # released once the syncer is closed
        pass


def test_sync_every_runs_again_and_stops_after_the_runs_asked(sqlite_dsn, keyfile, store_path):
    generate_fleet(sqlite_dsn, FleetSpec(users=30, days=1, seed=1))
    args = ["--from", str(sqlite_dsn), "--policy", str(EXAMPLE_POLICY), "--store",
            str(store_path), "--keyfile", str(keyfile)]  # fmt: skip
    res = vigie("sync", *args, "--every", "1s", "--runs", "2")
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("Sync run ") == 2
    assert "Sync run 1 " in res.stdout and "Sync run 2 " in res.stdout
    assert "Next sync in" in res.stdout


def test_sync_every_reports_a_failed_run_and_tries_again(sqlite_dsn, keyfile, store_path, tmp_path):
    """A run that fails for a reason of production (here, a column nobody classified) copies
    nothing, says why, and the loop goes on; the policy file is read again each run."""
    generate_fleet(sqlite_dsn, FleetSpec(users=30, days=1, seed=1))
    prod_exec(sqlite_dsn, "ALTER TABLE users ADD COLUMN nickname TEXT")
    args = ["--from", str(sqlite_dsn), "--policy", str(EXAMPLE_POLICY), "--store",
            str(store_path), "--keyfile", str(keyfile)]  # fmt: skip
    res = vigie("sync", *args, "--every", "1s", "--runs", "2")
    assert res.returncode == 0, res.stderr
    assert res.stderr.count("users: unclassified column(s) nickname") == 2  # each run says so
    assert "Sync run" not in res.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--every", "soon"], "--every: cannot read 'soon' as a duration."),
        (["--every", "0m"], "--every: cannot read '0m' as a duration."),
        (["--runs", "2"], "--runs needs --every and must be at least 1."),
    ],
)
def test_sync_every_refuses_nonsense(args, message, sqlite_dsn, keyfile, store_path):
    res = vigie("sync", "--from", str(sqlite_dsn), "--policy", str(EXAMPLE_POLICY),
                "--store", str(store_path), "--keyfile", str(keyfile), *args)  # fmt: skip
    assert res.returncode == 2
    assert message in res.stderr and "Traceback" not in res.stderr


def test_a_store_the_metrics_do_not_fit_is_synced_and_keeps_no_rollups(
    sqlite_dsn, keyfile, store_path, tmp_path
):
    """A policy that excludes a table the shipped metrics read: the sync succeeds, and the
    rollup refresh is skipped with the reason (the metrics check refuses, nothing runs)."""
    from vigie.keys import load_keys
    from vigie.sync.service import SyncService, SyncSettings

    generate_fleet(sqlite_dsn, FleetSpec(users=30, days=1, seed=1))
    text = EXAMPLE_POLICY.read_text().replace(
        "exclude: [body_metrics]", "exclude: [body_metrics, integrations]"
    )
    start = text.index("  integrations:\n")
    policy = tmp_path / "policy.yaml"
    policy.write_text(text[:start] + text[text.index("  payment_methods:\n") :])
    heard = []

    class Listener(Quiet):
        def rollups(self, rollups):
            heard.append(rollups)

    with SyncService(
        SyncSettings(sqlite_dsn, policy, store_path), load_keys(keyfile), Listener()
    ) as service:
        report = service.run_once()
    assert not report.failed
    (rollups,) = heard
    assert rollups.built == {}
    assert (
        "fact 'integrations' reads integrations, not a table of the store's replica"
        in rollups.skipped
    )

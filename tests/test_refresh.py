"""The KPI refresh by what changed: after any sequence of syncs, its rollups and patterns
are those a full rebuild gives, cell for cell (suppression flags included), and a crash
anywhere between a sync and a refresh is caught up by the next refresh."""

from __future__ import annotations

import hashlib
import shutil
import stat
from datetime import timedelta

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import EXAMPLE_POLICY
from helpers import prod, prod_exec, synced_fleet
from vigie.errors import UsageError
from vigie.fleet.tick import tick_fleet
from vigie.keys import init_keyfile
from vigie.kpi import maintain
from vigie.kpi import refresh as refresh_module
from vigie.kpi.delta import (
    SIGN,
    delta_sql,
    incremental_shape,
    keyed_ctes,
    keyed_fact,
    partners,
)
from vigie.kpi.engine import find_rollup
from vigie.kpi.fit import rollup_name
from vigie.kpi.load import load_metrics
from vigie.kpi.model import Fact, ShareWithin
from vigie.kpi.patterns import compute_pattern
from vigie.kpi.protect import ProtectionError
from vigie.kpi.query import KpiQuery, compile_query
from vigie.kpi.refresh import refresh
from vigie.kpi.state import plan_for
from vigie.policy.load import load_policy
from vigie.stores.checks import verify_store
from vigie.stores.duckdb_store import Store
from vigie.sync.run import sync

METRICS = load_metrics()


def reference(s: Store) -> tuple[dict[str, list[str]], dict[str, object]]:
    """Every rollup as the query compiler computes it from the tables, and every fact's
    pattern as computed from scratch (or the error it raises)."""
    rollups = {}
    for kpi in METRICS.kpis.values():
        for dims in kpi.fact.rollups:
            if isinstance(kpi.measure, ShareWithin) and kpi.measure.across not in dims:
                continue
            compiled = compile_query(METRICS, KpiQuery(kpi.name, dims, grain="day"))
            rollups[rollup_name(kpi.name, dims)] = sorted(
                map(repr, s.rows(compiled.sql, compiled.params))
            )
    patterns: dict[str, object] = {}
    for name, fact in METRICS.facts.items():
        try:
            patterns[name] = compute_pattern(s, METRICS, fact).suppressed
        except ProtectionError as exc:
            patterns[name] = exc.message
    return rollups, patterns


def kept(s: Store) -> tuple[dict[str, list[str]], dict[str, object]]:
    rollups = {
        name: sorted(map(repr, s.rows(f'SELECT * FROM _vigie_kpi."{name}"')))
        for name in reference_names()
    }
    patterns = {}
    for name in METRICS.facts:
        rows = s.rows(f'SELECT * FROM _vigie_kpi."pattern__{name}"')
        patterns[name] = {(g, p, d, v): r for g, p, d, v, r in rows}
    return rollups, patterns  # type: ignore[return-value]


def reference_names() -> list[str]:
    return [
        rollup_name(k.name, dims)
        for k in METRICS.kpis.values()
        for dims in k.fact.rollups
        if not (isinstance(k.measure, ShareWithin) and k.measure.across not in dims)
    ]


def refreshed_equals_rebuilt(store, keys) -> list:
    """Refresh; then the kept rollups and patterns must be the reference's."""
    with Store(store, keys) as s:
        done = refresh(s, METRICS)
        got, want = kept(s), reference(s)
    assert got[0] == want[0]
    for fact, pattern in want[1].items():
        if isinstance(pattern, str):  # the planner could not protect it: neither could we
            assert fact in {f.fact for f in done if f.error}, fact
        else:
            assert got[1][fact] == pattern, fact
    return done


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A small fleet synced and refreshed once (full)."""
    root = tmp_path_factory.mktemp("refresh")
    dsn, store, keys = synced_fleet(root, 600, 3, seed=31)
    with Store(store, keys) as s:
        done = refresh(s, METRICS)
    assert {f.mode for f in done} == {"full"}
    return root, dsn, store, keys


def _copy(base, into):
    """A private copy of the base fleet (production and store), the store told where its
    production now is."""
    from vigie.db.dsn import parse_dsn

    root, _, _, keys = base
    shutil.copytree(root, into)
    production = (into / "production.db").resolve()
    store = into / "store" / "vigie.duckdb"
    with Store(store, keys) as s:
        s.con.execute("UPDATE _vigie.meta SET value = ? WHERE key = 'source_identity'",
                      [f"sqlite:{production}"])  # fmt: skip
    return parse_dsn(f"sqlite:///{production}"), store, keys


@pytest.fixture
def fleet(base, tmp_path):
    return _copy(base, tmp_path / "f")


def _late_events(dsn, hours: int) -> None:
    """Events that land on an earlier day: copies of existing ones, ``hours`` back."""
    (top,) = prod(dsn, "SELECT MAX(id) FROM connection_events")[0]
    prod_exec(dsn, f"INSERT INTO connection_events (id, device_id, ts, kind, error_code, rtt_ms, "
                   f"client_ip, app_version, firmware) SELECT id + {top}, device_id, "
                   f"datetime(ts, '-{hours} hours'), kind, error_code, rtt_ms, client_ip, "
                   f"app_version, firmware FROM connection_events WHERE id % 97 = 0")  # fmt: skip


def _move_country(dsn, n: int) -> None:
    """Some users move country: every event of theirs changes cell, on every day."""
    prod_exec(dsn, f"UPDATE users SET country = 'IS', updated_at = datetime(updated_at, "
                   f"'+1 second') WHERE id % {n} = 0")  # fmt: skip


def _delete_accounts(dsn, n: int) -> None:
    """Accounts deleted with everything that hangs off them (as production does)."""
    gone = f"SELECT id FROM users WHERE id % {n} = 1"
    devices = f"SELECT id FROM devices WHERE user_id IN ({gone})"
    prod_exec(dsn, f"DELETE FROM connection_events WHERE device_id IN ({devices})",
              f"DELETE FROM device_shares WHERE device_id IN ({devices})",
              f"DELETE FROM integrations WHERE user_id IN ({gone})",
              f"DELETE FROM api_tokens WHERE user_id IN ({gone})",
              f"DELETE FROM payment_methods WHERE user_id IN ({gone})",
              f"DELETE FROM devices WHERE user_id IN ({gone})",
              f"DELETE FROM users WHERE id IN ({gone})")  # fmt: skip


def _drop_events(dsn, n: int) -> None:
    """Single events deleted, and others whose outcome is corrected (a failure becomes a
    success): a device's first success or last connection may be among them."""
    prod_exec(dsn, f"DELETE FROM connection_events WHERE id % {n} = 5",
              f"UPDATE connection_events SET error_code = NULL WHERE id % {n} = 2")  # fmt: skip


STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("tick"), st.integers(5, 240), st.integers(0, 10_000)),
        st.tuples(st.just("late"), st.integers(2, 60), st.just(0)),
        st.tuples(st.just("move"), st.integers(7, 40), st.just(0)),
        st.tuples(st.just("delete"), st.integers(15, 60), st.just(0)),
        st.tuples(st.just("drop"), st.integers(3, 40), st.just(0)),
    ),
    min_size=1,
    max_size=3,
)


@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(steps=STEPS)
def test_refresh_after_random_changes_equals_a_full_rebuild(base, tmp_path_factory, steps):
    """Inserts, updates, deletes of accounts with their devices and events, events landing
    on an earlier day, a dimension changing under old events: after each sync, the
    refreshed rollups and patterns are the full rebuild's, cell for cell; tables rewritten
    in cascade order by a sync (``vigie.sync.cluster``) included."""
    dsn, store, keys = _copy(base, tmp_path_factory.mktemp("steps") / "f")
    for kind, n, seed in steps:
        if kind == "tick":
            tick_fleet(dsn, minutes=n, seed=seed)
        elif kind == "late":
            _late_events(dsn, n)
        elif kind == "move":
            _move_country(dsn, n)
        elif kind == "drop":
            _drop_events(dsn, n)
        else:
            _delete_accounts(dsn, n)
        # every cascade child is large enough to be kept sorted by its cascade column
        sync(dsn, EXAMPLE_POLICY, store, keys, cluster_rows=1)
        done = refreshed_equals_rebuilt(store, keys)
        assert {f.fact: f.mode for f in done}["events"] == "incremental"


@pytest.mark.parametrize("dies_in", ["_check_quantiles", "_write_rollups"])
def test_a_crash_between_sync_and_refresh_is_caught_up(fleet, monkeypatch, dies_in):
    """Two syncs without a refresh, then a refresh that dies half-way: in the states'
    transaction (nothing of it stays), or between the states' commit and the rollups'
    (the states file and the store commit apart). Meanwhile no rollup passes for fresh,
    and the next refresh brings everything to the last run, as a full rebuild would."""
    dsn, store, keys = fleet
    for seed in (1, 2):
        tick_fleet(dsn, minutes=90, seed=seed)
        sync(dsn, EXAMPLE_POLICY, store, keys)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(f"vigie.kpi.refresh.{dies_in}", crash)
    with Store(store, keys) as s, pytest.raises(KeyboardInterrupt):
        refresh(s, METRICS)
    monkeypatch.undo()
    with Store(store, keys) as s:
        query = KpiQuery("connection_error_rate", ("firmware",), grain="day")
        assert find_rollup(s, METRICS, query) is None
    done = refreshed_equals_rebuilt(store, keys)
    events = next(f for f in done if f.fact == "events")
    assert events.mode == "incremental"
    if dies_in == "_check_quantiles":  # the states were not kept: the rows count now
        assert events.rows > 0
    else:  # the states were: their rollups are written again, whole, from them
        assert events.rows == 0 and events.days is None


def _state_file(store):
    return store.with_name(store.name + ".kpi-state")


def test_the_states_have_a_file_of_their_own_that_a_sync_leaves_alone(fleet):
    """The KPI states are in ``<store>.kpi-state``, 0600 and encrypted with the store's
    key, not in the store: a sync neither opens nor changes that file (so its checkpoint
    never walks the states, and a served copy of the store does not carry them), and the
    refresh after it brings them forward."""
    dsn, store, keys = fleet
    state = _state_file(store)
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    with pytest.raises(duckdb.Error, match=r"(?i)encrypt"):
        duckdb.connect(str(state), read_only=True)
    with Store(store, keys) as s:
        assert not s.rows("SELECT 1 FROM duckdb_tables() WHERE table_name LIKE 'state__%'")
    seen = (state.stat().st_mtime_ns, hashlib.sha256(state.read_bytes()).hexdigest())
    tick_fleet(dsn, minutes=60, seed=7)
    sync(dsn, EXAMPLE_POLICY, store, keys)
    assert (state.stat().st_mtime_ns, hashlib.sha256(state.read_bytes()).hexdigest()) == seen
    assert not state.with_name(state.name + ".wal").exists()
    done = refreshed_equals_rebuilt(store, keys)
    events = next(f for f in done if f.fact == "events")
    assert events.mode == "incremental" and events.rows > 0


def test_a_full_rebuild_starts_a_new_state_file(fleet):
    """``--full`` rebuilds every state: it writes them into a new file rather than beside
    the old ones, so the file does not keep the space of two sets of states (2.7 GB on the
    incident fleet), and a rebuild still equals what it replaced."""
    _, store, keys = fleet
    state = _state_file(store)
    before = state.stat()
    for _ in range(2):
        # a new file is named by a new token (not told by its inode number: the old file
        # is removed first, and the filesystem may give the new one the same number)
        token = _state_token(store, keys)
        with Store(store, keys) as s:
            assert {f.mode for f in refresh(s, METRICS, full=True)} == {"full"}
        assert _state_token(store, keys) not in (token, None)
    assert state.stat().st_size <= before.st_size * 1.1, (before.st_size, state.stat().st_size)
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    done = refreshed_equals_rebuilt(store, keys)
    assert {f.mode for f in done} <= {"incremental", "difference"}


def _state_token(store, keys):
    with Store(store, keys) as s:
        return s.kpi_state_token()


@pytest.mark.parametrize("swap", ["another store's", "under a rotated key", "restored"])
def test_states_that_are_not_this_stores_are_never_counted(fleet, tmp_path, swap):
    """States beside the store that were not built from its runs are not counted into its
    rollups: another store's (synced apart from the same production), states made under a
    store key since rotated, or the store restored from a copy older than its states. The
    refresh rebuilds in full; until then, store verify reports a file that is not the
    store's."""
    dsn, store, keys = fleet
    other = tmp_path / "other" / "vigie.duckdb"
    if swap == "another store's":
        sync(dsn, EXAMPLE_POLICY, other, keys)
        with Store(other, keys) as s:
            refresh(s, METRICS)
        shutil.copyfile(_state_file(other), _state_file(store))
    elif swap == "under a rotated key":
        rotated = init_keyfile(tmp_path / "rotated.keys")
        Store(other, rotated, create=True).close()
        with Store(other, rotated) as s:
            s.attach_kpi_state()
        shutil.copyfile(_state_file(other), _state_file(store))
    else:
        shutil.copyfile(store, tmp_path / "backup")
        tick_fleet(dsn, minutes=30, seed=9)
        sync(dsn, EXAMPLE_POLICY, store, keys)
        with Store(store, keys) as s:
            refresh(s, METRICS)
        shutil.copyfile(tmp_path / "backup", store)
    if swap != "restored":
        found = [f for f in verify_store(store, load_policy(EXAMPLE_POLICY), keys)
                 if str(_state_file(store)) in f.where]  # fmt: skip
        assert found and found[0].check in ("foreign", "encryption"), found
    tick_fleet(dsn, minutes=30, seed=8)
    sync(dsn, EXAMPLE_POLICY, store, keys)
    done = refreshed_equals_rebuilt(store, keys)
    assert {f.mode for f in done} == {"full"}
    assert not [f for f in verify_store(store, load_policy(EXAMPLE_POLICY), keys)
                if str(_state_file(store)) in f.where]  # fmt: skip


def test_full_rebuild_on_request_and_difference_for_facts_that_are_not_joins(fleet):
    dsn, store, keys = fleet
    tick_fleet(dsn, minutes=30, seed=3)
    sync(dsn, EXAMPLE_POLICY, store, keys)
    with Store(store, keys) as s:
        modes = {f.fact: (f.mode, f.why) for f in refresh(s, METRICS)}
        assert modes["events"] == ("incremental", "")
        # not a select-project-join (WITH, aggregates): evaluated whole, only the rows that
        # differ from the ones kept last time are counted in or out
        assert modes["activation_outcomes"] == ("difference", "")
        assert {f.mode for f in refresh(s, METRICS, full=True)} == {"full"}


def test_a_row_changed_only_where_the_fact_does_not_read_costs_nothing(fleet):
    """A device whose last connection time moved: the events fact reads its id, owner and
    model only, so its replacement cancels out and no event is read again."""
    dsn, store, keys = fleet
    prod_exec(dsn, "UPDATE devices SET last_seen_at = datetime(last_seen_at, '+1 minute'), "
                   "updated_at = datetime(updated_at, '+1 minute')")  # fmt: skip
    sync(dsn, EXAMPLE_POLICY, store, keys)
    with Store(store, keys) as s:
        (since,) = s.rows("SELECT MAX(run_id) - 1 FROM _vigie.runs")[0]
        fact = METRICS.facts["events"]
        shape = incremental_shape(fact)
        columns = {t: [c for (c,) in s.rows(
            "SELECT column_name FROM duckdb_columns() WHERE database_name = 'store' AND "
            "schema_name = 'main' AND table_name = ?", [t])] for t in shape.names}  # type: ignore[union-attr]  # fmt: skip
        sql = delta_sql(fact, shape, since, {"devices"}, columns)  # type: ignore[arg-type]
        assert s.rows(f"SELECT COUNT(*), COALESCE(SUM(abs({SIGN})), 0) FROM ({sql})")[0] == (0, 0)
        assert s.rows("SELECT COUNT(*) FROM _vigie.before__devices")[0][0] > 0
        done = {f.fact: f for f in refresh(s, METRICS)}
    assert done["events"].rows == 0 and done["events"].days == 0
    assert done["activations"].mode == "incremental"


def test_first_and_last_connections_are_merged_from_the_changed_events(fleet, monkeypatch):
    """A device's first success and last connection (MIN and MAX per device, kept between
    refreshes) take the changed events alone: events deleted one by one (a device's first
    success among them), failures corrected, accounts deleted whole. The kept groups are
    the queries' over the store, and only the groups whose extreme was lost are computed
    again from the table, not every device whose events changed."""
    dsn, store, keys = fleet
    tick_fleet(dsn, minutes=90, seed=5)
    _drop_events(dsn, 6)
    _delete_accounts(dsn, 40)
    sync(dsn, EXAMPLE_POLICY, store, keys)
    again: dict[str, int] = {}
    real = refresh_module._recompute

    def counted(s, plan, cte, table):  # type: ignore[no-untyped-def]
        again[cte.name] = s.rows("SELECT COUNT(*) FROM vigie_keys")[0][0]
        real(s, plan, cte, table)

    monkeypatch.setattr(refresh_module, "_recompute", counted)
    with Store(store, keys) as s:
        (touched,) = s.rows(
            "SELECT COUNT(DISTINCT device_id) FROM (SELECT device_id FROM connection_events "
            "WHERE _vigie_run = (SELECT MAX(run_id) FROM _vigie.runs) UNION ALL "
            "SELECT device_id FROM _vigie.before__connection_events)")[0]  # fmt: skip
        done = {f.fact: f.mode for f in refresh(s, METRICS)}
        assert done["activation_outcomes"] == "difference"
        for cte in keyed_ctes(METRICS.facts["activation_outcomes"]):
            kept = plan_for(METRICS, METRICS.facts["activation_outcomes"]).table(f"cte_{cte.name}")
            assert sorted(s.rows(f"SELECT * FROM {kept}")) == sorted(s.rows(cte.kept_sql))
    assert set(again) == {"first_ok", "last_seen"}
    assert 0 < again["first_ok"] < touched / 3 and again["last_seen"] < touched / 3


def test_terms_joining_every_event_to_deleted_accounts_are_skipped(fleet):
    """Deleted accounts change devices and users, but leave no event: the days kept per
    device say so, and the terms that would join every stored event to those devices and
    users are left out (only the events' own term remains). Still a full rebuild's answer."""
    dsn, store, keys = fleet
    _delete_accounts(dsn, 30)
    sync(dsn, EXAMPLE_POLICY, store, keys)
    fact = METRICS.facts["events"]
    shape = incremental_shape(fact)
    assert not isinstance(shape, str)
    with Store(store, keys) as s:
        s.attach_kpi_state()
        (since,) = s.rows(f"SELECT run_id FROM {refresh_module.STATES} WHERE fact = 'events'")[0]
        columns = {t: refresh_module._stored_columns(s, t) for t in shape.names}
        s.con.execute("BEGIN TRANSACTION")
        narrow = refresh_module._key_days(s, plan_for(METRICS, fact), since, set(shape.names))
        sql = delta_sql(fact, shape, since, set(shape.names), columns, narrow)
        s.con.execute("ROLLBACK")
        term = "(SELECT e.ts AS time"  # each term of the sum starts so
        assert sql is not None and sql.count(term) == 1
        whole = delta_sql(fact, shape, since, set(shape.names), columns)
        assert whole is not None and whole.count(term) == 3
    refreshed_equals_rebuilt(store, keys)


def test_people_of_deleted_accounts_are_not_read_again(fleet, monkeypatch):
    """The people who lost rows get their bits read again from the fact, unless they are
    gone from a table the fact joins them to inner: a deleted account has no row left, so
    after accounts deleted (and nothing else) the events fact reads nobody again. Which
    tables prove someone gone is derived from the fact's joins."""
    dsn, store, keys = fleet
    _delete_accounts(dsn, 30)
    sync(dsn, EXAMPLE_POLICY, store, keys)
    reread: list[str] = []
    real = refresh_module._run

    def recorded(s, plan, sql, params=None):  # type: ignore[no-untyped-def]
        if plan.fact.name == "events" and "TEMP TABLE vigie_redo" in sql:
            reread.append(sql)
        real(s, plan, sql, params)

    monkeypatch.setattr(refresh_module, "_run", recorded)
    done = refreshed_equals_rebuilt(store, keys)
    assert {f.fact: f.mode for f in done}["events"] == "incremental"
    assert reread and all(" WHERE false AND " in sql for sql in reread)
    facts = METRICS.facts
    assert partners(facts["events"], "user_id") == (("users", "id"),)
    assert partners(facts["events"], "device_id") == (("devices", "id"),)
    assert partners(facts["activations"], "device_id") == ()  # the devices table's own id
    assert partners(facts["activation_outcomes"], "user_id") == ()  # not a join: kept whole
    left = Fact("f", "SELECT e.ts AS time, d.user_id FROM connection_events e "
                "JOIN devices d ON d.id = e.device_id AND d.user_id = e.user_id",
                "time", "user_id", (), ((),))  # fmt: skip
    assert partners(left, "user_id") == (("connection_events", "user_id"),)


def test_a_fact_left_out_of_a_refresh_is_rebuilt_when_back(fleet):
    """A refresh whose metrics lack a fact trims the change log past that fact's state:
    when the fact comes back, it is rebuilt in full (its changes in between are gone from
    the log), never brought forward from an incomplete log."""
    from dataclasses import replace

    dsn, store, keys = fleet
    only_events = replace(METRICS, kpis={n: k for n, k in METRICS.kpis.items()
                                         if k.fact.name == "events"})  # fmt: skip
    for seed, metrics in ((4, only_events), (5, METRICS)):
        tick_fleet(dsn, minutes=60, seed=seed)
        sync(dsn, EXAMPLE_POLICY, store, keys)
        if metrics is only_events:
            with Store(store, keys) as s:
                assert [f.fact for f in refresh(s, metrics)] == ["events"]
    done = {f.fact: f for f in refreshed_equals_rebuilt(store, keys)}
    assert done["events"].mode == "incremental"
    assert done["activations"].mode == "full"
    assert "does not reach back" in done["activations"].why


@pytest.mark.parametrize(
    ("sql", "why"),
    [
        (
            "SELECT COUNT(*) AS n, e.ts AS time, d.user_id FROM connection_events e "
            "JOIN devices d ON d.id = e.device_id GROUP BY ALL",
            "it uses GROUP BY",
        ),
        (
            "SELECT e.ts AS time, d.user_id FROM connection_events e LEFT JOIN devices d "
            "ON d.id = e.device_id",
            "not an inner join",
        ),
        (
            "WITH x AS (SELECT * FROM devices) SELECT activated_at AS time, user_id FROM x",
            "it uses WITH",
        ),
        (
            "SELECT e.ts AS time, d.user_id FROM connection_events e JOIN devices d ON d.id = "
            "e.device_id WHERE e.device_id IN (SELECT id FROM devices)",
            "subquery",
        ),
        ("SELECT now() AS time, d.user_id FROM devices d", "changes by itself"),
    ],
)
def test_facts_that_are_not_select_project_join_are_named_and_rebuilt(sql, why):
    fact = Fact("x", sql, "time", "user_id", (), ())
    found = incremental_shape(fact)
    assert isinstance(found, str) and why in found


def test_a_tightened_policy_leaves_no_old_value_in_the_change_log(fleet, tmp_path):
    """The change log holds stored rows: when the policy stops copying a column, the log
    and the states built on it go with it (and the next refresh is a full one), so no
    copy of the removed values stays behind; store verify knows the log's tables."""
    dsn, store, keys = fleet
    _move_country(dsn, 5)  # rows replaced: their old countries are in the log
    sync(dsn, EXAMPLE_POLICY, store, keys)
    with Store(store, keys) as s:
        assert "country" in {c for (c,) in s.rows(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = 'before__users'")}  # fmt: skip
        assert s.rows("SELECT COUNT(*) FROM _vigie.before__users")[0][0] > 0
    policy = load_policy(EXAMPLE_POLICY)
    assert not [f for f in verify_store(store, policy, keys) if f.check == "foreign"]
    tightened = tmp_path / "policy.yaml"
    tightened.write_text(EXAMPLE_POLICY.read_text().replace(
        "country:       {class: quasi, keep}", "country:       {class: quasi, drop}"))  # fmt: skip
    sync(dsn, tightened, store, keys)
    with Store(store, keys) as s:
        left = s.rows("SELECT table_schema, table_name FROM information_schema.tables WHERE "
                      "table_name LIKE 'before__%' OR table_name LIKE 'state__%'")  # fmt: skip
    assert left == []
    assert not _state_file(store).exists()  # the states held the old countries too


def test_a_change_log_that_outgrew_its_table_is_foreign(fleet):
    """A log with a column its table no longer has would keep values the store does
    not: store verify reports it."""
    _, store, keys = fleet
    with Store(store, keys) as s:
        s.con.execute("ALTER TABLE _vigie.before__users ADD COLUMN password_hash VARCHAR")
    found = [f for f in verify_store(store, load_policy(EXAMPLE_POLICY), keys)
             if f.check == "foreign"]  # fmt: skip
    assert [f.where for f in found] == ["_vigie.before__users"]


def test_month_bits_cover_the_longest_month():
    """A month of the nested calendar has up to five ISO weeks: 35 days, in 62 bits."""
    from datetime import datetime

    from vigie.kpi import calendar

    for month in range(1, 13):
        start = calendar.first_week(datetime(2026, month, 1))
        end = calendar.first_week(calendar.next_month(datetime(2026, month, 1)))
        assert (end - start) in (timedelta(days=28), timedelta(days=35))
    assert maintain.until_mask(datetime(2026, 10, 1), datetime(2030, 1, 1)) == (1 << 62) - 1


def test_cli_refresh_says_how_each_fact_was_refreshed(fleet):
    from typer.testing import CliRunner

    from vigie.cli.app import app

    dsn, store, keys = fleet
    tick_fleet(dsn, minutes=20, seed=6)
    sync(dsn, EXAMPLE_POLICY, store, keys)
    keyfile = store.parent.parent / "keys"
    runner = CliRunner()
    args = ["kpi", "refresh", "--store", str(store), "--keyfile", str(keyfile)]
    res = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "events" in res.output and "incremental" in res.output and "difference" in res.output
    res = runner.invoke(app, [*args, "--full"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "asked for" in res.output and "incremental" not in res.output


def test_a_change_log_nobody_reads_does_not_grow_without_end(fleet):
    """Syncs without refreshes: once a log outgrows its table, the logs and states go
    and the next refresh is a full one (equal to the reference, like any other)."""
    dsn, store, keys = fleet
    for _ in range(3):
        prod_exec(dsn, "UPDATE devices SET last_seen_at = datetime(last_seen_at, '+1 minute'), "
                       "updated_at = (SELECT datetime(MAX(updated_at), '+1 minute') FROM "
                       "devices)")  # every device read again and replaced  # fmt: skip
        sync(dsn, EXAMPLE_POLICY, store, keys)
    with Store(store, keys) as s:
        assert not s.rows("SELECT 1 FROM duckdb_tables() WHERE table_name LIKE 'before__%'")
    done = {f.fact: f for f in refreshed_equals_rebuilt(store, keys)}
    assert done["events"].mode == "full"


@pytest.mark.parametrize("cast", ["DECIMAL(9,2)", "FLOAT"])
def test_a_quantile_the_states_cannot_keep_exactly_is_refused_by_name(fleet, tmp_path, cast):
    """Kept as counts per value and read back as DOUBLE, a quantile of a DECIMAL or FLOAT
    column would differ from the tables' answer: the refresh refuses, naming the column
    and the fix, and keeps nothing of the attempt."""
    _, store, keys = fleet
    path = tmp_path / "metrics.yaml"
    path.write_text(
        "version: 1\nfacts:\n  slow:\n    time: time\n    user: user_id\n"
        "    dimensions: [model]\n    rollups: [[]]\n    sql: |\n"
        f"      SELECT e.ts AS time, d.user_id, d.model, CAST(e.rtt_ms AS {cast}) AS rtt\n"
        "      FROM connection_events e JOIN devices d ON d.id = e.device_id\n"
        "kpis:\n  slow_p95:\n    description: p95.\n    fact: slow\n"
        "    measure: {quantile: rtt, p: 0.95}\n"
    )
    metrics = load_metrics(path)
    with Store(store, keys) as s, pytest.raises(UsageError) as info:
        refresh(s, metrics)
    assert "a quantile of 'rtt'" in info.value.message and "AS DOUBLE" in (info.value.hint or "")
    with Store(store, keys) as s:
        assert not s.rows("SELECT 1 FROM duckdb_tables() WHERE table_name LIKE 'state__slow%'")


def test_a_fact_that_fails_on_a_stored_value_never_shows_it(fleet, tmp_path):
    """The engine's message quotes the value it could not convert: the refresh names the
    fact and the problem, with the value redacted to its shape."""
    _, store, keys = fleet
    path = tmp_path / "metrics.yaml"
    path.write_text(
        "version: 1\nfacts:\n  odd:\n    time: time\n    user: user_id\n"
        "    dimensions: [model]\n    rollups: [[]]\n    sql: |\n"
        "      SELECT d.activated_at AS time, d.user_id, CAST(d.model AS INTEGER) AS model\n"
        "      FROM devices d\n"
        'kpis:\n  odd_count:\n    description: n.\n    fact: odd\n    measure: {count: "*"}\n'
    )
    with Store(store, keys) as s:
        models = [m for (m,) in s.rows("SELECT DISTINCT model FROM devices")]
        with pytest.raises(UsageError) as info:
            refresh(s, load_metrics(path))
    assert "Fact 'odd' cannot be refreshed" in info.value.message
    assert not [m for m in models if m in info.value.message]


def test_change_logs_ignore_case_as_the_engine_does(fleet):
    """DuckDB's names ignore case, so a fact may spell a table otherwise than the policy
    does: the log a refresh starts under one spelling is the one the sync writes under
    the other, and store verify knows it."""
    from vigie.stores.meta import change_log_from, log_replaced, start_change_log

    _, store, keys = fleet
    with Store(store, keys) as s:
        s.con.execute('CREATE TABLE "Cams" AS SELECT * FROM devices')
        with s.transaction() as con:
            start_change_log(con, "cams", 7)  # as a fact writes it
            log_replaced(con, "Cams", 'SELECT rowid FROM "Cams" LIMIT 3', 8)  # as the sync
        assert s.rows('SELECT COUNT(*) FROM _vigie."before__cams"')[0][0] == 3
        assert change_log_from(s, "CAMS") == 7
    found = [f.where for f in verify_store(store, load_policy(EXAMPLE_POLICY), keys)
             if f.check == "foreign" and "before" in f.where]  # fmt: skip
    assert found == []


def test_outcomes_are_evaluated_again_only_for_devices_that_may_have_changed(fleet, monkeypatch):
    """Activation outcomes is evaluated again for the devices whose rows, owner, first or
    last connection changed, and for those whose 7- or 30-day mark the data's end moved
    across (an event far ahead here), not for the whole fleet; still a full rebuild's."""
    dsn, store, keys = fleet
    tick_fleet(dsn, minutes=30, seed=11)
    ((end, ahead),) = prod(dsn, "SELECT datetime(MAX(ts)), (SELECT MIN(datetime(activated_at, "
                                "'+7 days')) FROM devices WHERE datetime(activated_at, '+7 days') > "
                                "(SELECT datetime(MAX(ts)) FROM connection_events)) "
                                "FROM connection_events")  # fmt: skip
    assert ahead is not None  # some device's 7-day mark lies ahead of the data
    (top,) = prod(dsn, "SELECT MAX(id) FROM connection_events")[0]
    prod_exec(dsn, f"INSERT INTO connection_events (id, device_id, ts, kind, error_code, rtt_ms, "
                   f"client_ip, app_version, firmware) SELECT {top} + 1, device_id, "
                   f"datetime('{ahead}', '+1 hour'), kind, error_code, rtt_ms, client_ip, "
                   f"app_version, firmware FROM connection_events WHERE id = {top}")  # fmt: skip
    sync(dsn, EXAMPLE_POLICY, store, keys)
    seen: dict[str, object] = {}
    real = refresh_module._run

    def recorded(s, plan, sql, params=None):  # type: ignore[no-untyped-def]
        real(s, plan, sql, params)
        if plan.fact.name == "activation_outcomes" and "TEMP TABLE vigie_now" in sql:
            seen["evaluated"] = s.rows("SELECT COUNT(*) FROM vigie_now")[0][0]
            seen["keys"] = {k for (k,) in s.rows("SELECT k FROM vigie_fk")}

    merged: list[bool] = []
    real_merge = refresh_module._merge_scalar

    def merge(*args):  # type: ignore[no-untyped-def]
        merged.append(real_merge(*args))
        return merged[-1]

    monkeypatch.setattr(refresh_module, "_run", recorded)
    monkeypatch.setattr(refresh_module, "_merge_scalar", merge)
    done = refreshed_equals_rebuilt(store, keys)
    assert {f.fact: f.mode for f in done}["activation_outcomes"] == "difference"
    assert merged == [True]  # the data's end: the latest of the new events, not a scan

    def crossed(start: str, stop: str) -> set[object]:
        with Store(store, keys) as s:
            return {k for (k,) in s.rows(
                "SELECT id FROM devices WHERE activated_at + INTERVAL 7 DAY > CAST(? AS "
                "TIMESTAMP) AND activated_at + INTERVAL 7 DAY <= CAST(? AS TIMESTAMP) + "
                "INTERVAL 1 HOUR", [start, stop])}  # fmt: skip

    with Store(store, keys) as s:
        (devices,) = s.rows("SELECT COUNT(*) FROM devices")[0]
    assert crossed(end, ahead) and crossed(end, ahead) <= seen["keys"]  # type: ignore[operator]
    assert 0 < seen["evaluated"] < devices / 2  # type: ignore[operator]
    # the latest event deleted: the data's end goes back, evaluated whole this time
    prod_exec(dsn, f"DELETE FROM connection_events WHERE id = {top} + 1")
    sync(dsn, EXAMPLE_POLICY, store, keys)
    refreshed_equals_rebuilt(store, keys)
    assert merged == [True, False]
    assert crossed(end, ahead) <= seen["keys"]  # type: ignore[operator]


def test_which_facts_are_evaluated_by_key_is_derived_from_their_sql():
    """A fact is evaluated again by key only when each of its rows comes from one row of
    its first table, and its one-row queries are only compared with that table's
    expressions; otherwise it is compared whole."""
    outcomes = keyed_fact(METRICS.facts["activation_outcomes"])
    assert outcomes is not None
    assert (outcomes.table, outcomes.column, outcomes.output) == ("devices", "id", "device_id")
    assert {(link.name, link.kept) for link in outcomes.links} == {
        ("users", False), ("first_ok", True), ("last_seen", True)}  # fmt: skip
    assert [b for s in outcomes.scalars for b in s.bounds] == [
        ("ts", "d.activated_at + INTERVAL '7' DAY"),
        ("ts", "d.activated_at + INTERVAL '30' DAY"),
    ]
    head = ("WITH x AS (SELECT MAX(ts) AS ts FROM connection_events), "
            "f AS (SELECT device_id, MIN(ts) AS ts FROM connection_events GROUP BY device_id) "
            "SELECT d.activated_at AS time, d.id AS device_id, d.user_id, ")  # fmt: skip
    tail = " FROM devices d JOIN users u ON u.id = d.user_id CROSS JOIN x "
    cases = {
        "x.ts - d.activated_at AS age": None,  # the scalar is not compared: every row moves
        "d.activated_at <= x.ts - INTERVAL 7 DAY AS old": None,  # compared, but inside
        "u.created_at <= x.ts AS old": None,  # compared with another table's column
        "d.activated_at <= x.ts AS old": "device_id",
    }
    for select, output in cases.items():
        found = keyed_fact(Fact("f", head + select + tail, "time", "user_id", (), ((),)))
        assert (found.output if found else None) == output, select
    right = Fact("f", head + "u.country" + tail.replace("JOIN users", "RIGHT JOIN users"),
                 "time", "user_id", (), ((),))  # fmt: skip
    assert keyed_fact(right) is None


def test_change_logs_keep_only_the_columns_the_facts_read(fleet):
    """A change log keeps what some fact's SQL names (and the runs), not every column: a
    cascade of deleted accounts then reads a few columns of the events, not all of them
    (each costs its whole length, cold). The rows it keeps still subtract exactly, store
    verify knows such a log, and a log that misses a column is made again."""
    from vigie.stores.meta import log_columns, start_change_log

    dsn, store, keys = fleet
    _delete_accounts(dsn, 9)
    sync(dsn, EXAMPLE_POLICY, store, keys)
    with Store(store, keys) as s:
        logged = log_columns(s.con, "connection_events")
        assert {"device_id", "ts", "kind", "_vigie_run"} <= set(logged)
        assert not {"client_ip", "_vigie_first_seen", "_vigie_bucket"} & set(logged)
        assert s.rows("SELECT COUNT(*) FROM _vigie.before__connection_events")[0][0] > 0
    done = {f.fact: f.mode for f in refreshed_equals_rebuilt(store, keys)}
    assert done["events"] != "full"
    with Store(store, keys) as s:
        assert log_columns(s.con, "connection_events") == logged  # kept as it was
        start_change_log(s.con, "connection_events", 99, frozenset({"client_ip"}))
        assert log_columns(s.con, "connection_events") == ["client_ip", "_vigie_run"]
    assert not [f for f in verify_store(store, load_policy(EXAMPLE_POLICY), keys)
                if f.check == "foreign"]  # fmt: skip

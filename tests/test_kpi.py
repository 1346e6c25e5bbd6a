"""KPIs: every shipped KPI against an independent computation on production, rollups equal
to raw answers, suppression that survives differencing, and clear errors."""

from __future__ import annotations

import statistics
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import prod, synced_fleet
from vigie.errors import PolicyError, UsageError
from vigie.fleet.generate import WINDOW_START
from vigie.kpi.engine import refresh_rollups, run_kpi
from vigie.kpi.load import load_metrics
from vigie.kpi.query import KpiQuery
from vigie.stores.duckdb_store import Store

START = datetime.fromtimestamp(WINDOW_START, UTC).replace(tzinfo=None)  # the fleet's window
END = START + timedelta(days=3)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """A 3000-user fleet synced into a store, with rollups; (production dsn, store, keys)."""
    dsn, store, keys = synced_fleet(tmp_path_factory.mktemp("kpi"), 3000, 3, seed=21)
    with Store(store, keys) as s:
        refresh_rollups(s, load_metrics())
    return dsn, store, keys


def answer(fleet, kpi, by=(), grain="day", where=(), start=START, end=END, rollups=True, k=None):
    _, store, keys = fleet
    metrics = load_metrics(min_users=k)
    with Store(store, keys) as s:
        return run_kpi(s, metrics, KpiQuery(kpi, tuple(by), tuple(where), start, end, grain),
                       use_rollups=rollups)  # fmt: skip


def shown(result) -> dict[tuple, float]:
    return {
        (c.period.date().isoformat(), *map(str, c.dims)): c.shown
        for c in result.cells
        if not c.is_total and c.shown is not None
    }


def close(got: dict, want: dict) -> None:
    assert got, "every cell was suppressed: nothing compared"
    for key, value in got.items():
        assert key in want, key
        assert value == pytest.approx(want[key], rel=1e-9, abs=1e-9), key


EVENTS = (
    "SELECT substr(e.ts, 1, 10) AS day, e.firmware, d.model, u.country, e.kind, e.error_code, "
    "e.rtt_ms, e.device_id FROM connection_events e JOIN devices d ON d.id = e.device_id "
    "JOIN users u ON u.id = d.user_id"
)


def test_connection_error_rate_by_firmware(fleet):
    want = {
        (day, fw): failed / attempts
        for day, fw, failed, attempts in prod(
            fleet[0],
            f"SELECT day, firmware, SUM(kind <> 'disconnect' AND error_code IS NOT NULL), "
            f"SUM(kind <> 'disconnect') FROM ({EVENTS}) GROUP BY 1, 2",
        )
    }
    close(shown(answer(fleet, "connection_error_rate", ["firmware"], rollups=False)), want)


def test_attempts_active_devices_and_error_share_by_model(fleet):
    rows = prod(fleet[0], f"SELECT day, model, COUNT(*) FILTER (WHERE kind <> 'disconnect'), "
                f"COUNT(DISTINCT device_id), COUNT(DISTINCT device_id) FILTER (WHERE "
                f"kind <> 'disconnect' AND error_code IS NOT NULL) FROM ({EVENTS}) GROUP BY 1, 2")  # fmt: skip
    close(shown(answer(fleet, "connection_attempts", ["model"], rollups=False)),
          {(d, m): a for d, m, a, _, _ in rows})  # fmt: skip
    close(shown(answer(fleet, "active_devices", ["model"], rollups=False)),
          {(d, m): n for d, m, _, n, _ in rows})  # fmt: skip
    close(shown(answer(fleet, "devices_with_errors_share", ["model"], rollups=False)),
          {(d, m): e / n for d, m, _, n, e in rows})  # fmt: skip


def test_rtt_quantiles_of_successful_attempts(fleet):
    values = defaultdict(list)
    for day, rtt in prod(fleet[0], f"SELECT day, rtt_ms FROM ({EVENTS}) WHERE kind <> "
                         "'disconnect' AND error_code IS NULL"):  # fmt: skip
        values[(day,)].append(rtt)
    median = {k: statistics.median(v) for k, v in values.items()}
    p95 = {k: statistics.quantiles(v, n=100, method="inclusive")[94] for k, v in values.items()}
    close(shown(answer(fleet, "rtt_median", rollups=False)), median)
    close(shown(answer(fleet, "rtt_p95", rollups=False)), p95)


def test_firmware_adoption_shares_sum_to_one(fleet):
    rows = prod(
        fleet[0], f"SELECT day, firmware, COUNT(DISTINCT device_id) FROM ({EVENTS}) GROUP BY 1, 2"
    )
    per_day = defaultdict(int)
    for day, _, n in rows:
        per_day[day] += n  # devices that upgraded mid-day count on both: share of the day's devices
    totals = dict(
        prod(fleet[0], f"SELECT day, COUNT(DISTINCT device_id) FROM ({EVENTS}) GROUP BY 1")
    )
    close(shown(answer(fleet, "firmware_adoption", ["firmware"], rollups=False)),
          {(d, fw): n / totals[d] for d, fw, n in rows})  # fmt: skip


def test_activation_kpis(fleet):
    dsn = fleet[0]
    start = datetime(2026, 9, 25)
    rows = prod(
        dsn,
        """
        WITH ok AS (SELECT device_id, MIN(ts) AS ts FROM connection_events
                    WHERE kind <> 'disconnect' AND error_code IS NULL GROUP BY device_id),
             last AS (SELECT device_id, MAX(ts) AS ts FROM connection_events GROUP BY device_id),
             data_end AS (SELECT MAX(ts) AS ts FROM connection_events)
        SELECT substr(d.activated_at, 1, 10), COUNT(*),
               SUM(COALESCE(ok.ts < datetime(d.activated_at, '+1 day'), 0)),
               SUM(datetime(d.activated_at, '+7 days') <= x.ts),
               SUM(datetime(d.activated_at, '+7 days') <= x.ts AND
                   COALESCE(last.ts >= datetime(d.activated_at, '+7 days'), 0))
        FROM devices d CROSS JOIN data_end x LEFT JOIN ok ON ok.device_id = d.id
        LEFT JOIN last ON last.device_id = d.id
        WHERE d.activated_at >= '2026-09-25' GROUP BY 1""",
    )
    close(shown(answer(fleet, "device_activations", start=start, rollups=False)),
          {(d,): n for d, n, *_ in rows})  # fmt: skip
    close(shown(answer(fleet, "activation_to_first_connection", start=start, rollups=False)),
          {(d,): ok / n for d, n, ok, *_ in rows})  # fmt: skip
    for days, start_, end_ in ((7, datetime(2026, 9, 1), datetime(2026, 9, 20)),
                               (30, datetime(2026, 8, 1), datetime(2026, 8, 25))):  # fmt: skip
        rows = prod(
            dsn,
            f"""
            WITH last AS (SELECT device_id, MAX(ts) AS ts FROM connection_events GROUP BY device_id)
            SELECT substr(d.activated_at, 1, 10), COUNT(*),
                   SUM(COALESCE(last.ts >= datetime(d.activated_at, '+{days} days'), 0))
            FROM devices d LEFT JOIN last ON last.device_id = d.id
            WHERE d.activated_at >= '{start_:%Y-%m-%d}' AND d.activated_at < '{end_:%Y-%m-%d}'
            GROUP BY 1""",
        )
        result = answer(fleet, f"retention_d{days}", start=start_, end=end_, rollups=False)
        close(shown(result), {(d,): a / n for d, n, a in rows})


def test_integrations_linked_by_provider(fleet):
    rows = prod(fleet[0], "SELECT substr(linked_at, 1, 10), provider, COUNT(*) FROM integrations "
                "WHERE linked_at >= '2026-08-01' GROUP BY 1, 2")  # fmt: skip
    result = answer(
        fleet, "integrations_linked", ["provider"], start=datetime(2026, 8, 1), rollups=False
    )
    close(shown(result), {(d, p): n for d, p, n in rows})


@pytest.mark.parametrize("kpi", sorted(load_metrics().kpis))
def test_rollups_answer_exactly_as_the_tables(fleet, kpi):
    metrics = load_metrics()
    start = datetime(2026, 9, 20)
    for dims in metrics.kpis[kpi].fact.rollups:
        if kpi == "firmware_adoption" and "firmware" not in dims:
            continue
        fast = answer(fleet, kpi, dims, start=start)
        slow = answer(fleet, kpi, dims, start=start, rollups=False)
        assert fast.rollup is not None and slow.rollup is None
        assert fast.cells == slow.cells
    dims = [
        d for d in metrics.kpis[kpi].fact.rollups if kpi != "firmware_adoption" or "firmware" in d
    ][-1]
    weekly = answer(fleet, kpi, dims, grain="week", start=datetime(2026, 9, 21), end=None)
    assert weekly.rollup is None  # other grains come from the tables


def _assert_safe(result, k):
    for c in result.cells:
        if not c.suppressed:
            assert c.users >= k, c


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    kpi=st.sampled_from(
        [
            "connection_attempts",
            "connection_error_rate",
            "active_devices",
            "rtt_median",
            "devices_with_errors_share",
        ]
    ),
    by=st.lists(
        st.sampled_from(["firmware", "model", "country", "kind", "error_code"]),
        max_size=1,
    ),
    grain=st.sampled_from(["hour", "day"]),
    k=st.integers(min_value=10, max_value=60),
)
def test_no_shown_cell_rests_on_fewer_than_k_users(fleet, kpi, by, grain, k):
    if grain == "hour":
        by = []  # hours show their total only
    result = answer(fleet, kpi, by, grain=grain, start=START, end=START + timedelta(days=2), k=k)
    _assert_safe(result, k)
    dsn = fleet[0]
    if kpi == "active_devices" and grain == "day" and by == ["country"]:  # independent users
        users = dict(prod(dsn, "SELECT substr(e.ts, 1, 10) || u.country, COUNT(DISTINCT u.id) FROM "
                          "connection_events e JOIN devices d ON d.id = e.device_id JOIN users u "
                          "ON u.id = d.user_id GROUP BY 1"))  # fmt: skip
        for c in result.cells:
            if not c.is_total and not c.suppressed:
                assert users[c.period.date().isoformat() + str(c.dims[0])] >= k


def test_a_suppressed_cell_cannot_be_recovered_from_the_total(fleet):
    """Differencing inside one answer: total minus the shown cells never isolates one
    hidden cell (the attacker in test_disclosure.py combines every answer)."""
    result = answer(fleet, "connection_attempts", ["country"], k=200)
    assert any(c.suppressed for c in result.cells)
    for period in {c.period for c in result.cells}:
        cells = [c for c in result.cells if c.period == period]
        total = next(c for c in cells if c.is_total)
        hidden = [c for c in cells if not c.is_total and c.suppressed]
        if total.suppressed or not hidden:
            continue
        assert len(hidden) >= 2


def test_a_narrow_filter_shows_its_cells_suppressed(fleet):
    """A filter is one cell of the dimension's table: small, it is suppressed like there."""
    result = answer(fleet, "connection_attempts", where=[("country", "JP")], k=200)
    by_country = answer(fleet, "connection_attempts", ["country"], k=200)
    jp = {c.period: c for c in by_country.cells if c.dims == ("JP",)}
    assert result.cells and all(c.suppressed == jp[c.period].suppressed for c in result.cells)
    assert all(c.suppressed for c in result.cells)
    assert answer(fleet, "connection_attempts", where=[("country", "US")]).cells[0].shown


def test_unknown_names_list_the_valid_choices(fleet):
    with pytest.raises(UsageError, match="Unknown KPI 'errors'") as info:
        answer(fleet, "errors")
    assert "connection_error_rate" in (info.value.hint or "")
    with pytest.raises(UsageError, match="has no dimension 'colour'") as info:
        answer(fleet, "connection_attempts", ["colour"])
    assert "firmware, model, country" in (info.value.hint or "")
    with pytest.raises(UsageError, match="Add --by firmware"):
        answer(fleet, "firmware_adoption")


def test_bad_metric_files_give_lines(tmp_path):
    bad = tmp_path / "m.yaml"
    bad.write_text("version: 1\nsettings: {min_users: 3}\nkpis:\n  x:\n    fact: nope\n"
                   "    measure: {count: '*'}\n  y:\n    description: d\n    fact: events\n"
                   "    measure: {median: rtt_ms}\n")  # fmt: skip
    with pytest.raises(PolicyError) as info:
        load_metrics(bad)
    text = info.value.message
    assert "m.yaml:2:23: min_users must be a whole number of at least 5" in text
    assert (
        "m.yaml:5:11: KPI 'x' needs a known fact; one of: activation_outcomes, activations, events, integrations"
        in text
    )
    assert "m.yaml:10:14: KPI 'y': unknown measure ['median']" in text
    with pytest.raises(PolicyError, match="min_users can only raise k: 2 is below the 10"):
        load_metrics(min_users=2)


def test_a_user_file_adds_a_kpi(fleet, tmp_path):
    extra = tmp_path / "m.yaml"
    extra.write_text("version: 1\nkpis:\n  stream_attempts:\n    description: Stream starts.\n"
                     "    fact: events\n    measure: {count: attempt, where: attempt}\n")  # fmt: skip
    metrics = load_metrics(extra)
    assert "stream_attempts" in metrics.kpis and "connection_error_rate" in metrics.kpis


def test_cli_show_and_chart(fleet, tmp_path):
    _, store, keys = fleet
    base = [sys.executable, "-c", "from vigie.cli.app import main; main()", "kpi"]
    args = [
        "--store",
        str(store),
        "--keyfile",
        keys.source,
        "--from",
        "2026-10-01",
        "--to",
        "2026-10-04",
    ]
    csv_out = subprocess.run([*base, "show", "connection_error_rate", *args, "--by", "firmware",
                              "--format", "csv"], capture_output=True, text=True)  # fmt: skip
    assert csv_out.returncode == 0, csv_out.stderr
    lines = csv_out.stdout.splitlines()
    assert lines[0] == "period,firmware,connection_error_rate" and len(lines) > 8
    png = tmp_path / "c.png"
    chart = subprocess.run([*base, "chart", "connection_error_rate", *args, "--by", "firmware",
                            "--out", str(png)], capture_output=True, text=True)  # fmt: skip
    assert chart.returncode == 0, chart.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    listed = subprocess.run([*base, "list"], capture_output=True, text=True)
    for name in load_metrics().kpis:
        assert name in listed.stdout

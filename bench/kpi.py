"""Benchmark the KPIs on the incident-sized store (issue 4).

    python bench/fleet_generate.py && python bench/sync.py   # once: the synced store
    python bench/kpi.py [--raw-runs 3] [--rollup-runs 20]

For each shipped KPI, over the whole window at day grain, by firmware and by model (by
provider and country for integrations): median and p95 latency with rollups and without;
for five KPIs also the same query hand-written in SQL on the store (with the same per-day
totals), measured in the same run. Also the time to rebuild all rollups. Targets: p95 under
50 ms with rollups; without, within 1.2x of the hand-written SQL. Results: bench/out/kpi.json
and a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import datetime
from pathlib import Path

from vigie.keys import load_keys
from vigie.kpi.engine import refresh_rollups, run_kpi
from vigie.kpi.load import load_metrics
from vigie.kpi.query import KpiQuery
from vigie.stores.duckdb_store import Store

OUT = Path(__file__).parent / "out"
START, END = datetime(2026, 10, 1), datetime(2026, 10, 6)
ACT_START = datetime(2024, 9, 1)
EVENTS = (
    "FROM connection_events e JOIN devices d ON d.id = e.device_id "
    "JOIN users u ON u.id = d.user_id WHERE e.ts >= '2026-10-01' AND e.ts < '2026-10-06'"
)
TOTALS = "GROUP BY GROUPING SETS ((p, dim), (p))"  # the per-day totals the KPIs show too
HAND = {  # (kpi, dimension) -> the same question, written by hand
    ("connection_error_rate", "firmware"): "SELECT date_trunc('day', e.ts) p, e.firmware AS dim, "
    "count(*) FILTER (WHERE e.kind <> 'disconnect' AND e.error_code IS NOT NULL)::DOUBLE / "
    "nullif(count(*) FILTER (WHERE e.kind <> 'disconnect'), 0), count(DISTINCT d.user_id) "
    f"FILTER (WHERE e.kind <> 'disconnect') {EVENTS} {TOTALS}",
    ("active_devices", "model"): "SELECT date_trunc('day', e.ts) p, d.model AS dim, "
    f"count(DISTINCT e.device_id), count(DISTINCT d.user_id) {EVENTS} {TOTALS}",
    ("rtt_p95", "firmware"): "SELECT date_trunc('day', e.ts) p, e.firmware AS dim, "
    "quantile_cont(e.rtt_ms, 0.95) FILTER (WHERE e.kind <> 'disconnect' AND e.error_code IS "
    "NULL), count(DISTINCT d.user_id) FILTER (WHERE e.kind <> 'disconnect' AND e.error_code "
    f"IS NULL) {EVENTS} {TOTALS}",
    ("device_activations", "model"): "SELECT date_trunc('day', d.activated_at) p, d.model AS dim, "
    "count(*), count(DISTINCT d.user_id) FROM devices d JOIN users u ON u.id = d.user_id "
    f"WHERE d.activated_at >= '2024-09-01' AND d.activated_at < '2026-10-06' {TOTALS}",
    (
        "integrations_linked",
        "provider",
    ): "SELECT date_trunc('day', i.linked_at) p, i.provider AS dim, "
    "count(*), count(DISTINCT i.user_id) FROM integrations i JOIN users u ON u.id = i.user_id "
    f"WHERE i.linked_at >= '2024-09-01' AND i.linked_at < '2026-10-06' {TOTALS}",
}


def timed(fn, runs: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - started)
    seconds.sort()
    p95 = seconds[min(len(seconds) - 1, round(0.95 * (len(seconds) - 1)))]
    return {"median_ms": statistics.median(seconds) * 1000, "p95_ms": p95 * 1000}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, default=OUT / "store" / "vigie.duckdb")
    ap.add_argument("--keyfile", type=Path, default=OUT / "bench.keys")
    ap.add_argument("--raw-runs", type=int, default=1)
    ap.add_argument("--rollup-runs", type=int, default=20)
    ap.add_argument("--no-refresh", action="store_true", help="Keep the rollups as they are.")
    args = ap.parse_args()
    metrics = load_metrics()
    results: dict[str, object] = {}
    with Store(args.store, load_keys(args.keyfile)) as store:
        if not args.no_refresh:
            started = time.perf_counter()
            built = refresh_rollups(store, metrics)
            results["rollup_refresh_seconds"] = round(time.perf_counter() - started, 1)
            patterns = {k: round(v, 1) for k, v in built.items() if k.startswith("pattern__")}
            results["pattern_seconds"] = patterns
            print(f"{len(built)} rollups and patterns rebuilt in "
                  f"{results['rollup_refresh_seconds']} s (patterns: {patterns})")  # fmt: skip
        rows = []
        for kpi in metrics.kpis.values():
            dims = ["provider"] if kpi.fact.name == "integrations" else ["firmware", "model"]
            if kpi.name == "firmware_adoption":
                dims = ["firmware"]
            start = START if kpi.fact.name == "events" else ACT_START
            for dim in dims:
                query = KpiQuery(kpi.name, (dim,), (), start, END, "day")
                fast = timed(lambda q=query: run_kpi(store, metrics, q), args.rollup_runs)
                slow = timed(lambda q=query: run_kpi(store, metrics, q, use_rollups=False),
                             args.raw_runs)  # fmt: skip
                hand_sql = HAND.get((kpi.name, dim))
                hand = timed(lambda s=hand_sql: store.rows(s), args.raw_runs) if hand_sql else None
                row = {"kpi": kpi.name, "by": dim, "rollup": fast, "tables": slow, "hand": hand}
                rows.append(row)
                ratio = f"{slow['median_ms'] / hand['median_ms']:.2f}" if hand else "-"
                print(f"{kpi.name:<32} by {dim:<9} rollup p50 {fast['median_ms']:7.1f} p95 "
                      f"{fast['p95_ms']:7.1f} ms | tables p50 {slow['median_ms']:8.0f} p95 "
                      f"{slow['p95_ms']:8.0f} ms | hand-written x{ratio}", flush=True)  # fmt: skip
        results["queries"] = rows
    OUT.mkdir(exist_ok=True)
    (OUT / "kpi.json").write_text(json.dumps(results, indent=2))
    worst = max(r["rollup"]["p95_ms"] for r in rows)  # type: ignore[index]
    print(f"worst p95 with rollups: {worst:.1f} ms (target < 50 ms)")


if __name__ == "__main__":
    main()

"""Benchmark the KPI refresh after a tick against a full rebuild (issue 16).

    python bench/fleet_generate.py [--users N --days D --dsn ...]   # once: production
    python bench/refresh.py [--dsn postgresql://.../vigie_bench] [--ticks 3] [--minutes 10]

In one run, on a store synced fresh from the DSN: a first incremental sync (which sorts
the large cascade children, once); the full rebuild of every rollup and pattern; then per
tick (production moved forward ``--minutes``), the sync in a cold process (``vigie sync
--no-rollups``, as a cron job runs it) and the refresh by what changed; then a full
rebuild of the same final state, whose rollups and patterns must equal the refreshed ones
cell for cell. Reports the refresh as a share of the full rebuild, and the cold sync as a
share of the full sync. Results: bench/out/refresh-<db>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from vigie.db.dsn import parse_dsn
from vigie.fleet.tick import tick_fleet
from vigie.keys import init_keyfile, load_keys
from vigie.kpi.load import load_metrics
from vigie.kpi.refresh import refresh
from vigie.stores.duckdb_store import Store

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
POLICY = ROOT / "examples" / "fleet-policy.yaml"
VIGIE = [str(Path(sys.executable).parent / "vigie")]


def cold_sync(dsn: str, store: Path, keyfile: Path) -> tuple[float, list[str]]:
    """A `vigie sync` in a process of its own: its seconds, and the tables it sorted."""
    started = time.perf_counter()
    done = subprocess.run(
        [*VIGIE, "sync", "--from", dsn, "--policy", str(POLICY), "--store", str(store),
         "--keyfile", str(keyfile), "--no-rollups"],
        check=True, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    seconds = time.perf_counter() - started
    return seconds, re.findall(r"note (\S+): sorted by", done.stdout)


def timed_refresh(store: Path, keyfile: Path, full: bool) -> dict[str, object]:
    metrics = load_metrics()
    started = time.perf_counter()
    with Store(store, load_keys(keyfile)) as s:
        facts = refresh(s, metrics, full=full)
    seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds, 2),
        "facts": {f.fact: {"mode": f.mode, "why": f.why, "rows": f.rows, "days": f.days,
                           "seconds": round(f.seconds, 2)} for f in facts},
    }  # fmt: skip


def snapshot(store: Path, keyfile: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every rollup and pattern table, sorted."""
    with Store(store, load_keys(keyfile)) as s:
        names = [n for (n,) in s.rows(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = 'store' AND "
            "schema_name = '_vigie_kpi' AND NOT starts_with(table_name, 'state__') AND "
            "table_name NOT IN ('registry', 'patterns')")]  # fmt: skip
        return {n: sorted(map(repr, s.rows(f'SELECT * FROM _vigie_kpi."{n}"'))) for n in names}  # type: ignore[misc]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/vigie_bench")
    ap.add_argument("--ticks", type=int, default=3)
    ap.add_argument("--minutes", type=int, default=10)
    ap.add_argument("--keep", action="store_true", help="keep the store (to measure on it)")
    args = ap.parse_args()
    name = parse_dsn(args.dsn).database
    work = OUT / f"refresh-{name}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    keyfile, store = work / "bench.keys", work / "store" / "vigie.duckdb"
    init_keyfile(keyfile)
    results: dict[str, object] = {"dsn": args.dsn}
    results["full_sync_s"] = round(cold_sync(args.dsn, store, keyfile)[0], 2)
    print(f"full sync (cold process): {results['full_sync_s']} s", flush=True)
    # the first incremental run sorts the large cascade children (vigie.sync.cluster)
    tick_fleet(parse_dsn(args.dsn), minutes=args.minutes, seed=999)
    first, sorted_tables = cold_sync(args.dsn, store, keyfile)
    results["first_incremental_sync"] = {"seconds": round(first, 2), "sorted": sorted_tables}
    print(f"first incremental sync: {first:.2f} s, sorted {sorted_tables}", flush=True)
    results["first_full_refresh"] = timed_refresh(store, keyfile, full=True)
    print(f"full rebuild: {results['first_full_refresh']['seconds']} s", flush=True)  # type: ignore[index]
    ticks = []
    for i in range(args.ticks):
        report = tick_fleet(parse_dsn(args.dsn), minutes=args.minutes, seed=1000 + i)
        sync_s, sorted_tables = cold_sync(args.dsn, store, keyfile)
        done = timed_refresh(store, keyfile, full=False)
        ticks.append({"tick": str(report), "sync_s": round(sync_s, 2), "sorted": sorted_tables,
                      "refresh": done})  # fmt: skip
        print(f"tick {i}: cold sync {sync_s:.2f} s, refresh {done['seconds']} s "
              f"{json.dumps(done['facts'])}", flush=True)  # fmt: skip
    results["ticks"] = ticks
    refreshed = snapshot(store, keyfile)
    results["final_full_refresh"] = timed_refresh(store, keyfile, full=True)
    rebuilt = snapshot(store, keyfile)
    differ = sorted(n for n in rebuilt if rebuilt[n] != refreshed.get(n))
    results["identical_to_full_rebuild"] = not differ and refreshed.keys() == rebuilt.keys()
    full = results["final_full_refresh"]["seconds"]  # type: ignore[index]
    shares = [t["refresh"]["seconds"] / full for t in ticks]  # type: ignore[index]
    syncs = [t["sync_s"] / results["full_sync_s"] for t in ticks]  # type: ignore[operator]
    results["refresh_share_of_full"] = [round(x, 4) for x in shares]
    results["cold_sync_share_of_full"] = [round(x, 4) for x in syncs]
    (OUT / f"refresh-{name}.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"full rebuild of the final state: {full} s; refresh after a tick: "
          f"{', '.join(f'{x:.1%}' for x in shares)} of it; cold incremental sync: "
          f"{', '.join(f'{x:.1%}' for x in syncs)} of the full sync; identical: "
          f"{results['identical_to_full_rebuild']} {differ or ''}")  # fmt: skip
    if not args.keep:
        shutil.rmtree(work / "store", ignore_errors=True)


if __name__ == "__main__":
    main()

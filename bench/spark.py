"""Benchmark the Spark engine against the DuckDB one on the same fleet (issue 17).

    python bench/fleet_generate.py --users 800000 --days 3 --dsn postgresql://.../vigie_800k_3d
    python bench/spark.py [--dsn postgresql://.../vigie_800k_3d] [--minutes 10]

In one run: a full DuckDB sync; full Spark syncs in ``local[1]`` and ``local[2]`` (each in a
process of its own, the session started before the clock: the JVM's start is reported
apart); then one tick of ``--minutes`` and the incremental sync on both engines (Spark in
``local[2]``); then the lake's tables are compared with the DuckDB store's, and the time a
KPI takes on one machine from each (the lake loaded with pyarrow into DuckDB) and on Spark
SQL over the lake (``vigie.spark.kpi``, ``local[2]``). Reports rows/s,
the speed-up from 1 to 2 cores, and a projection, from those figures, of the executors a
fleet with 1B events a day needs to sync within a 10-minute cadence.
Results: bench/out/spark-<db>.json.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
POLICY = ROOT / "examples" / "fleet-policy.yaml"
EVENTS_PER_DAY = 1_000_000_000
CADENCE_S = 600


def one_spark_sync(dsn: str, lake: str, keyfile: str, master: str) -> None:
    """Child process: start the session, then time one sync; prints JSON."""
    from vigie.db.dsn import parse_dsn
    from vigie.keys import load_keys
    from vigie.spark.session import spark_session
    from vigie.spark.sync import spark_sync
    from vigie.spark.target import SparkTarget

    target = SparkTarget(master)
    started = time.perf_counter()
    spark_session(target)
    session = time.perf_counter() - started
    started = time.perf_counter()
    report = spark_sync(parse_dsn(dsn), POLICY, Path(lake), load_keys(Path(keyfile)), target)
    seconds = time.perf_counter() - started
    tables = {
        t.table: {"inserted": t.inserted, "updated": t.updated, "deleted": t.deleted,
                  "seconds": round(t.seconds, 2), "passes": t.passes}
        for t in report.tables
    }  # fmt: skip
    print(json.dumps({"session_s": round(session, 2), "seconds": round(seconds, 2),
                      "rows": report.rows, "tables": tables}))  # fmt: skip


def spark_run(dsn: str, lake: Path, keyfile: Path, master: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, __file__, "--one", master, "--dsn", dsn, "--lake", str(lake),
         "--keyfile", str(keyfile)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    result["rows_per_s"] = round(int(result["rows"]) / float(result["seconds"]))  # type: ignore[call-overload]
    print(
        f"  spark {master}: {result['seconds']} s (+{result['session_s']} s session), "
        f"{result['rows_per_s']:,} rows/s",
        flush=True,
    )
    return result


def duck_run(dsn: str, store: Path, keyfile: Path) -> dict[str, object]:
    from vigie.db.dsn import parse_dsn
    from vigie.keys import load_keys
    from vigie.sync.run import sync

    started = time.perf_counter()
    report = sync(parse_dsn(dsn), POLICY, store, load_keys(keyfile))
    seconds = time.perf_counter() - started
    print(f"  duckdb: {seconds:.1f} s, {report.rows / seconds:,.0f} rows/s", flush=True)
    return {"seconds": round(seconds, 2), "rows": report.rows,
            "rows_per_s": round(report.rows / seconds)}  # fmt: skip


def compare(lake: Path, store: Path, keyfile: Path) -> dict[str, object]:
    """Tables equal (row counts and an order-free digest of every row), and a KPI's time."""
    from vigie.keys import load_keys
    from vigie.kpi.engine import default_range, run_kpi
    from vigie.kpi.load import load_metrics
    from vigie.kpi.query import KpiQuery
    from vigie.spark.lake import local_store
    from vigie.stores.duckdb_store import Store, q

    keys, metrics = load_keys(keyfile), load_metrics()

    def digests(s: Store) -> dict[str, tuple[object, ...]]:
        out = {}
        for t in s.table_names():
            cols = [c for (c,) in s.rows(
                "SELECT column_name FROM information_schema.columns WHERE table_catalog = "
                "'store' AND table_schema = 'main' AND table_name = ?", [t])
                if c not in ("_vigie_first_seen", "_vigie_run")]  # fmt: skip
            row = ", ".join(q(c) for c in sorted(cols))
            out[t] = s.rows(f"SELECT COUNT(*), SUM(hash(({row}))::HUGEINT) FROM {q(t)}")[0]
        return out

    query = KpiQuery("connection_error_rate", ("firmware",))
    started = time.perf_counter()
    with local_store(lake, keys) as s:
        loaded = time.perf_counter() - started
        lake_digests = digests(s)
        started = time.perf_counter()
        lake_cells = run_kpi(s, metrics, default_range(s, metrics, query)).cells
        lake_kpi = time.perf_counter() - started
    with Store(store, keys) as s:
        duck_digests = digests(s)
        started = time.perf_counter()
        duck_cells = run_kpi(s, metrics, default_range(s, metrics, query)).cells
        duck_kpi = time.perf_counter() - started
    spark = on_spark_sql(lake, keys, metrics, query)
    return {"tables_identical": lake_digests == duck_digests,
            "kpi_identical": lake_cells == duck_cells,
            "spark_sql_kpi_identical": spark.pop("cells") == duck_cells,
            "lake_load_s": round(loaded, 2), "lake_kpi_s": round(lake_kpi, 3),
            "duck_kpi_s": round(duck_kpi, 3), "spark_sql": spark}  # fmt: skip


def on_spark_sql(lake: Path, keys: Any, metrics: Any, query: Any) -> dict[str, object]:
    """The same KPI on Spark SQL (``local[2]``): the session's start, the lake's tables
    registered, the fact's pattern, then the answer; the cells, to compare."""
    from vigie.kpi.engine import range_ending
    from vigie.spark.kpi import LakeKpis
    from vigie.spark.session import spark_session
    from vigie.spark.target import SparkTarget

    started = time.perf_counter()
    spark = spark_session(SparkTarget("local[2]"))
    timings = {"session_s": time.perf_counter() - started}
    started = time.perf_counter()
    with LakeKpis(spark, lake, keys, metrics) as kpis:
        timings["register_s"] = time.perf_counter() - started
        query = range_ending(query, kpis.latest(query), kpis.horizon)
        started = time.perf_counter()
        kpis.pattern(metrics.kpis[query.kpi].fact.name)
        timings["pattern_s"] = time.perf_counter() - started
        started = time.perf_counter()
        cells = kpis.answer(query).cells
        timings["answer_s"] = time.perf_counter() - started
    print(f"  KPI on Spark SQL: {json.dumps({k: round(v, 2) for k, v in timings.items()})}")
    return {"cells": cells, **{k: round(v, 2) for k, v in timings.items()}}


def projection(one: dict[str, Any], two: dict[str, Any], inc: dict[str, Any],
               retained_days: int) -> dict[str, object]:  # fmt: skip
    """Cores for 1B events/day at a 10-minute cadence (within half of it, so a late tick
    catches up), from the measured figures, assuming each added core scales as the second
    did: (1) to mask and write a tick's new events, at the full sync's rate; (2) for the
    incremental run as built, whose event-table work follows the stored rows (``inc``: the
    measured incremental, over ``retained_days`` days of events)."""
    per_core = float(one["rows_per_s"])
    efficiency = float(two["rows_per_s"]) / (2 * per_core)
    per_tick = EVENTS_PER_DAY / (86_400 / CADENCE_S)
    ingest = per_tick / (per_core * efficiency * CADENCE_S / 2)
    events = inc["tables"]["connection_events"]
    stored = int(two["tables"]["connection_events"]["inserted"])
    stored_rate = stored / float(events["seconds"]) / 2  # stored rows per second per core
    stored_fleet = EVENTS_PER_DAY * retained_days
    scans = stored_fleet / (stored_rate * efficiency * CADENCE_S / 2)
    return {"events_per_tick": round(per_tick), "per_core_rows_per_s": round(per_core),
            "scaling_efficiency_2_cores": round(efficiency, 2),
            "ingest_cores": math.ceil(ingest),
            "incremental_stored_rows_per_s_per_core": round(stored_rate),
            "retained_days": retained_days,
            "incremental_as_built_cores": math.ceil(scans),
            "incremental_as_built_executors_of_2_cores": math.ceil(scans / 2),
            "note": "projected from one machine's figures, not measured"}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/vigie_800k_3d")
    ap.add_argument("--minutes", type=int, default=10)
    ap.add_argument("--retained-days", type=int, default=30, help="for the projection")
    ap.add_argument("--one")
    ap.add_argument("--lake")
    ap.add_argument("--keyfile")
    args = ap.parse_args()
    if args.one:
        one_spark_sync(args.dsn, args.lake, args.keyfile, args.one)
        return
    from vigie.db.dsn import parse_dsn
    from vigie.fleet.tick import tick_fleet
    from vigie.keys import init_keyfile

    work = Path(tempfile.mkdtemp(prefix="vigie-bench-spark-"))
    keyfile = work / "secrets" / "vigie.keys"
    init_keyfile(keyfile)
    store = work / "duck" / "vigie.duckdb"
    print(f"fleet {args.dsn}", flush=True)
    result: dict[str, object] = {"dsn": args.dsn, "full": {}}
    full: dict[str, object] = {"duckdb": duck_run(args.dsn, store, keyfile)}
    for master in ("local[1]", "local[2]"):
        lake = work / f"lake-{master[6]}"
        full[f"spark {master}"] = spark_run(args.dsn, lake, keyfile, master)
    result["full"] = full
    one, two = full["spark local[1]"], full["spark local[2]"]
    result["speedup_1_to_2_cores"] = round(float(one["seconds"]) / float(two["seconds"]), 2)  # type: ignore[index,arg-type]
    shutil.rmtree(work / "lake-1")
    tick_fleet(parse_dsn(args.dsn), minutes=args.minutes, seed=7)
    print(f"tick of {args.minutes} minutes", flush=True)
    result["incremental"] = {
        "duckdb": duck_run(args.dsn, store, keyfile),
        "spark local[2]": spark_run(args.dsn, work / "lake-2", keyfile, "local[2]"),
    }
    result["compare"] = compare(work / "lake-2", store, keyfile)
    inc = result["incremental"]["spark local[2]"]  # type: ignore[index]
    result["projection"] = projection(one, two, inc, args.retained_days)  # type: ignore[arg-type]
    OUT.mkdir(exist_ok=True)
    out = OUT / f"spark-{parse_dsn(args.dsn).database}.json"
    out.write_text(json.dumps(result, indent=1, default=str))
    print(json.dumps(result, indent=1, default=str))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Benchmark: generate the incident-sized fleet into PostgreSQL and report rows/s.

    python bench/fleet_generate.py [--users 2400000] [--days 3] [--dsn postgresql://...]

Creates (or replaces) the database named in the DSN. The result is kept: bench/sync.py
reads it. Target (issue 2): at least 300k rows/s overall on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import psycopg

from vigie.db.dsn import parse_dsn
from vigie.fleet.build import generate_fleet
from vigie.fleet.generate import FleetSpec

OUT = Path(__file__).parent / "out"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=2_400_000)
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/vigie_bench")
    args = ap.parse_args()
    dsn = parse_dsn(args.dsn)
    with psycopg.connect(dsn.with_database("postgres").libpq(), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {dsn.database} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {dsn.database}")

    seen: Counter[str] = Counter()
    first_write: dict[str, float] = {}
    started = time.perf_counter()

    def progress(table: str, rows: int) -> None:
        first_write.setdefault(table, time.perf_counter() - started)
        seen[table] += rows
        total = sum(seen.values())
        print(f"\r{total:>12,} rows  {total / (time.perf_counter() - started):>10,.0f} rows/s",
              end="", flush=True)  # fmt: skip

    report = generate_fleet(dsn, FleetSpec(args.users, args.days, args.seed), progress=progress)
    print()
    result = {
        "users": args.users,
        "days": args.days,
        "rows": report.rows,
        "total_rows": report.total_rows,
        "seconds": round(report.seconds, 1),
        "minutes": round(report.seconds / 60, 2),
        "rows_per_second": round(report.rows_per_second),
    }
    for table, rows in sorted(report.rows.items(), key=lambda kv: -kv[1]):
        print(f"{table:<18} {rows:>12,}")
    print(f"{'total':<18} {report.total_rows:>12,} rows in {report.seconds:,.1f} s "
          f"= {report.rows_per_second:,.0f} rows/s (target ≥ 300,000)")  # fmt: skip
    OUT.mkdir(exist_ok=True)
    (OUT / "fleet_generate.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Incident response on the incident-sized fleet: exposure report and notify list timed,
against the full protected sync they follow.

Reads the fleet bench/fleet_generate.py leaves in PostgreSQL (2.4M users; generate it
first), syncs it with the example policy into a fresh store (timed: the yardstick of key
rotation), ticks production and syncs again (so that the window holds updates and
deletions), then times over the whole window:
1. `build_report` (every readable column, rows present per table with deleted ones,
   distinct users and devices, the audit log's facts) and its Markdown;
2. `notify_list` (production's 2.4M user ids re-pseudonymized in bulk, joined with the
   window's pseudonyms, CSV written 0600).
Targets on this 2-core machine: report and notify list under 10 s each. Writes
bench/out/incident.json.

    .venv/bin/python bench/incident.py [--dsn postgresql://postgres@127.0.0.1:5432/vigie_bench]
    .venv/bin/python bench/incident.py --rekey-only   # then: key rotation on that store
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
POLICY = Path(__file__).resolve().parent.parent / "src" / "vigie" / "fleet" / "fleet-policy.yaml"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/vigie_bench")
    ap.add_argument("--work", default="/tmp/vigie-bench-incident")
    ap.add_argument("--tick-minutes", type=int, default=60)
    ap.add_argument(
        "--rekey-only",
        action="store_true",
        help="Only time the key rotation, on the store a full run left.",
    )
    args = ap.parse_args()

    from vigie.db.dsn import parse_dsn
    from vigie.fleet.tick import tick_fleet
    from vigie.incident.notify import notify_list
    from vigie.incident.render import to_markdown
    from vigie.incident.report import build_report
    from vigie.keys import init_keyfile, load_keys
    from vigie.stores.duckdb_store import Store
    from vigie.sync.run import sync

    dsn = parse_dsn(args.dsn)
    work = Path(args.work)
    if args.rekey_only:
        _rekey(dsn, work)
        return
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(mode=0o700, parents=True)
    init_keyfile(work / "keys")
    keys = load_keys(work / "keys")
    store = work / "store" / "vigie.duckdb"
    start = datetime.now(UTC) - timedelta(minutes=1)
    t = time.perf_counter()
    first = sync(dsn, POLICY, store, keys)
    full_sync = time.perf_counter() - t
    rows = sum(r.inserted for r in first.tables)
    print(f"full protected sync: {rows:,} rows in {full_sync:.1f} s", flush=True)
    tick = tick_fleet(dsn, minutes=args.tick_minutes, seed=5)
    t = time.perf_counter()
    sync(dsn, POLICY, store, keys)
    print(f"tick + incremental sync: {time.perf_counter() - t:.1f} s ({tick})", flush=True)
    end = datetime.now(UTC) + timedelta(minutes=1)

    result: dict[str, object] = {"full_sync_s": round(full_sync, 1), "rows_synced": rows}
    with Store(store, keys, read_only=True) as s:
        for attempt in range(3):
            t = time.perf_counter()
            report = build_report(s, start, end, None, str(store))
            text = to_markdown(report)
            result[f"report_s_{attempt + 1}"] = round(time.perf_counter() - t, 2)
        result["report_rows_present"] = sum(x.present for x in report.tables)
        result["report_users"] = report.users
        result["report_devices"] = report.devices
        out = work / "notify.csv"
        t = time.perf_counter()
        notified = notify_list(s, keys, dsn, start, end, out)
        result["notify_s"] = round(time.perf_counter() - t, 2)
        result["notify_users"] = notified.users
        result["notify_unmatched"] = notified.unmatched
        result["notify_csv_mb"] = round(out.stat().st_size / 1e6, 1)
    (work / "report.md").write_text(text)
    OUT.mkdir(exist_ok=True)
    (OUT / "incident.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


def _rekey(dsn: object, work: Path) -> None:
    """Rotate the pseudonymization key of the store a full run left; merges the figure
    into bench/out/incident.json."""
    from vigie.incident.rekey import rotate_pseudonym_key

    t = time.perf_counter()
    done = rotate_pseudonym_key(work / "store" / "vigie.duckdb", work / "keys", dsn)  # type: ignore[arg-type]
    seconds = time.perf_counter() - t
    out = OUT / "incident.json"
    result = json.loads(out.read_text()) if out.exists() else {}
    result.update(
        rekey_s=round(seconds, 1),
        rekey_pseudonyms=done.rewritten,
        rekey_orphans=done.orphans,
        rekey_columns=done.columns,
    )
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

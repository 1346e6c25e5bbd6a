"""How the detectors by behaviour judge the fleet's own text columns (issue 11).

    python bench/scan_precision.py [--dsn postgresql://postgres@127.0.0.1:5432/vigie_bench]

For every text column of production (the fleet), over all its distinct values: how many
bear a first name of the lexicon, how many different names, whether the column *holds
names* (the rule that stops a sync), and how much of it singles out rows or users
(near-unique). The kept columns of the example policy must trip nothing (false positives);
the PII columns the policy drops (names, nicknames, SSIDs, e-mails) show what the
detectors see where there is something to see. Results: bench/out/scan_precision.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import polars as pl

from vigie.db.connect import connect
from vigie.db.dsn import parse_dsn
from vigie.db.ops import query
from vigie.policy.load import load_policy
from vigie.policy.model import Keep
from vigie.scan.identifying import MIN_ENTITIES, SHARE
from vigie.scan.names import find_names

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
POLICY = ROOT / "examples" / "fleet-policy.yaml"
COLUMNS = {  # table -> (text columns, the column naming the row's user, or None)
    "users": (["country", "full_name", "email"], "id"),
    "devices": (["model", "firmware", "nickname", "wifi_ssid"], "user_id"),
    "api_tokens": (["platform"], "user_id"),
    "integrations": (["provider"], "user_id"),
    "payment_methods": (["card_brand"], "user_id"),
    "connection_events": (["firmware", "kind", "error_code", "app_version"], None),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/vigie_bench")
    args = ap.parse_args()
    dsn = parse_dsn(args.dsn)
    policy = load_policy(POLICY)
    conn = connect(dsn)
    rows = []
    try:
        for table, (columns, owner) in COLUMNS.items():
            for column in columns:
                started = time.perf_counter()
                values = pl.Series(
                    [v for (v,) in query(conn, dsn, f"SELECT DISTINCT {column} FROM {table}")]
                ).drop_nulls()
                names = find_names(values)
                singled = _singled(conn, dsn, table, column, owner)
                rule = policy.tables[table].columns[column]
                rows.append({
                    "column": f"{table}.{column}",
                    "kept": isinstance(rule.action, Keep),
                    "distinct": values.len(),
                    "bearing_a_name": names.values,
                    "names": names.names,
                    "holds_names": names.holds_names,
                    "singles_out": singled,
                    "seconds": round(time.perf_counter() - started, 2),
                })  # fmt: skip
    finally:
        conn.close()
    OUT.mkdir(exist_ok=True)
    (OUT / "scan_precision.json").write_text(json.dumps(rows, indent=2))
    print(f"{'column':<32} {'kept':>5} {'distinct':>10} {'w/ name':>8} {'names':>6} "
          f"{'holds':>6} {'singles out':>12}")  # fmt: skip
    for r in rows:
        print(f"{r['column']:<32} {r['kept']!s:>5} {r['distinct']:>10,} {r['bearing_a_name']:>8,} "
              f"{r['names']:>6,} {r['holds_names']!s:>6} {r['singles_out']:>12}")  # fmt: skip
    kept = [r for r in rows if r["kept"]]
    tripped = [r["column"] for r in kept if r["holds_names"] or r["singles_out"] >= SHARE]
    print(f"kept columns: {len(kept)}; tripping a detector by behaviour: {tripped or 'none'}")


def _singled(conn: object, dsn: object, table: str, column: str, owner: str | None) -> float:
    """The share of users (or of rows, without an owner column) that the column's value
    singles out, over the whole table (0 when it has too few values to identify)."""
    (distinct,) = query(conn, dsn, f"SELECT COUNT(DISTINCT {column}) FROM {table}")[0]  # type: ignore[arg-type]
    if distinct < SHARE * MIN_ENTITIES:
        return 0.0
    entity = owner or "id"
    singled, total = query(  # type: ignore[arg-type]
        conn, dsn,
        f"WITH o AS (SELECT {column}, COUNT(DISTINCT {entity}) AS owners, MIN({entity}) AS e "
        f"FROM {table} WHERE {column} IS NOT NULL GROUP BY {column}) "
        f"SELECT (SELECT COUNT(DISTINCT e) FROM o WHERE owners = 1), "
        f"(SELECT COUNT(DISTINCT {entity}) FROM {table} WHERE {column} IS NOT NULL)",
    )[0]  # fmt: skip
    return round(float(singled) / float(total), 3) if total else 0.0


if __name__ == "__main__":
    main()

"""Large cascade children kept in the order of the key they are deleted by, range by range.

The events of a deleted device lie in every row group of a table loaded in key (time)
order: the cascade that removes them reads the device column whole (37M events: 0.4-1 s in
a cold process, and the delete marks it leaves on every row group cost the checkpoint as
much). Sorted by that column, DuckDB's zone maps skip every block but the few holding the
deleted keys (the cascade names them as constants): measured 0.04 s instead of 0.34 s.
Sorted by it whole, though, the table loses its time order, and the KPI refresh, whose
reads of the changed days the zone maps on time used to narrow, got slower by as much
(1-2 s a tick). So the table is sorted within consecutive key ranges of about
``CHUNK_ROWS`` rows (for an append-only table, periods of time): a deleted device's rows
lie in one block or two per range, and a day's rows still lie in one range or two.

Not borne out later: with a tick's ~90 deleted devices, DuckDB turns the constants into a
hash join whose scan prunes by row group only, and on the incident fleet it still returned
30.3M of 37.9M events (docs/sync.md). What a rewrite surely does is drop the delete marks
of the rows gone since; whether that pays for it is to be measured again.

Runs append after the sorted part (new rows, and rows an update replaced): once what was
appended since the table was last sorted passes ``CLUSTER_SHARE`` of it, the run rewrites
it again, in its own transaction (a crash leaves the table as it was). A rewrite costs
about what loading the table costs, and it also drops the blocks of deleted rows. The
first load is not sorted (it stays as fast as a raw copy): the first incremental run sorts
it. A table below ``CLUSTER_ROWS`` is never sorted: its column is read in under 0.1 s.
"""

from __future__ import annotations

import time

from vigie.policy.compile import BUCKET_COLUMN
from vigie.stores.duckdb_store import Store, q
from vigie.stores.meta import META, record_sorted, sorted_since

CLUSTER_ROWS = 10_000_000  # smaller tables: a cascade reads their column whole, quickly
CLUSTER_SHARE = 0.25  # rewritten when more than this share was appended since sorted
CHUNK_ROWS = 8_000_000  # sorted within key ranges of about this many rows


def sort_order(store: Store, table: str, column: str) -> str:
    """The ``ORDER BY`` that sorts ``table`` by ``column`` within key ranges of about
    ``CHUNK_ROWS`` rows (as many key buckets as hold that many, on average)."""
    low, high, rows = store.rows(
        f"SELECT MIN({BUCKET_COLUMN}), MAX({BUCKET_COLUMN}), COUNT(*) FROM {q(table)}"
    )[0]
    span = int(high) - int(low) + 1 if rows else 1
    per_range = max(1, round(span * CHUNK_ROWS / max(int(rows), 1)))
    return f"{BUCKET_COLUMN} // {per_range}, {q(column)}"


def cluster_due(store: Store, table: str, column: str, min_rows: int) -> bool:
    """Whether ``table`` should be rewritten in ``column`` order at the end of this run:
    large enough, and either never sorted by ``column`` or grown by more than
    ``CLUSTER_SHARE`` since (rows the runs after it inserted or rewrote)."""
    (rows,) = store.rows(f"SELECT COUNT(*) FROM {q(table)}")[0]
    if rows < min_rows:
        return False
    found = sorted_since(store, table)
    if found is None or found[1] != column:
        return True
    since = found[0]
    (appended,) = store.rows(
        f"SELECT COALESCE(SUM(inserted + updated), 0) FROM {META}.table_runs "
        "WHERE table_name = ? AND run_id > ?",
        [table, since],
    )[0]
    return bool(int(appended) > CLUSTER_SHARE * rows)


def cluster(store: Store, table: str, column: str, run_id: int) -> float:
    """Rewrite ``table`` sorted by ``column`` within key ranges of about ``CHUNK_ROWS`` rows,
    in one transaction; returns the seconds."""
    started = time.perf_counter()
    sorted_name = q(f"{table}__vigie_sorted")
    order = sort_order(store, table, column)
    with store.transaction() as con:
        con.execute(f"CREATE TABLE {sorted_name} AS SELECT * FROM {q(table)} ORDER BY {order}")
        con.execute(f"DROP TABLE {q(table)}")
        con.execute(f"ALTER TABLE {sorted_name} RENAME TO {q(table)}")
        record_sorted(con, table, run_id, column)
    return time.perf_counter() - started

"""Production row counts for delete detection, read ahead on a second connection.

Counting production is the costliest read of an incremental sync, and it does not depend on
the store: where the source can join the run's snapshot from another connection
(PostgreSQL), the counts an incremental run will likely need (``sync.run._counts_needed``
chooses them) start at the beginning of the run and run on the server while the foreground
reads and merges; tables no cascade can explain (roots such as ``users``) get per-bucket
counts at once, since their totals will differ. A count nobody asked for ahead runs when it
is asked for, as everywhere on SQLite and MySQL.
"""

from __future__ import annotations

import json
from concurrent.futures import Future, ThreadPoolExecutor

from vigie.policy.compile import CompiledTable
from vigie.sources.base import DeleteCounter, Source, SourceTable


class ProductionCounts:
    """Row counts and per-bucket counts of production tables, computed ahead where possible."""

    def __init__(self, source: Source) -> None:
        self._source = source
        self._reader: Source | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._totals: dict[str, Future[int]] = {}
        self._buckets: dict[str, Future[dict[int, int]]] = {}

    def start(self, wanted: list[tuple[CompiledTable, bool]]) -> None:
        """Begin counting ``wanted`` tables (with per-bucket counts where the flag is set),
        one after the other on one extra connection sharing the snapshot."""
        if not wanted:
            return
        readers = self._source.readers(2)
        if len(readers) < 2:
            return  # the source cannot share its snapshot: count on demand
        reader = self._reader = readers[1]
        pool = self._pool = ThreadPoolExecutor(1, thread_name_prefix="vigie-count")
        for table, per_bucket in wanted:
            name = table.policy.name
            if per_bucket:
                self._buckets[name] = pool.submit(
                    reader.bucket_counts, table.source, table.bucket_width
                )
            else:
                self._totals[name] = pool.submit(reader.row_count, table.source)

    @property
    def ahead(self) -> list[str]:
        """The tables being counted ahead."""
        return [*self._totals, *self._buckets]

    def total(self, table: SourceTable, width: int) -> int:
        if table.name in self._buckets:
            return sum(self.buckets(table, width).values())
        future = self._totals.get(table.name)
        return future.result() if future else self._source.row_count(table)

    def buckets(self, table: SourceTable, width: int) -> dict[int, int]:
        future = self._buckets.get(table.name)
        return future.result() if future else self._source.bucket_counts(table, width)

    def close(self) -> None:
        if self._pool:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self._reader:
            self._reader.close()


def counter_delta(saved: str | None, now: DeleteCounter | None) -> int | None:
    """Rows production deleted since the ``saved`` reading (JSON, as the store keeps it),
    or None when there is no pair of readings from the same epoch to compare."""
    if now is None or not saved:
        return None
    before = json.loads(saved)
    return now.deleted - int(before["deleted"]) if before["epoch"] == now.epoch else None

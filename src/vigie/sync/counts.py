"""Production row counts for delete detection, computed ahead in the background.

Counting a large table is the costliest read of an incremental sync. Where the source can
join the run's snapshot from a second connection (PostgreSQL), every table's count runs
there while the tables are merged; elsewhere a count runs when it is asked for.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from vigie.sources.base import Source, SourceTable


class ProductionCounts:
    def __init__(self, source: Source, tables: list[SourceTable]) -> None:
        readers = source.readers(2)
        self._source = source
        self._counter = readers[1] if len(readers) > 1 else None
        self._pool = (
            ThreadPoolExecutor(1, thread_name_prefix="vigie-count") if self._counter else None
        )
        self._futures: dict[str, Future[int]] = {}
        if self._pool and self._counter:
            counter = self._counter
            for table in tables:  # one connection: the counts run one after the other
                self._futures[table.name] = self._pool.submit(counter.row_count, table)

    def count(self, table: SourceTable) -> int:
        future = self._futures.get(table.name)
        return future.result() if future else self._source.row_count(table)

    def close(self) -> None:
        if self._pool:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self._counter:
            self._counter.close()

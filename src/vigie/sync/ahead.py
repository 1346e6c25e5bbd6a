"""Production reads an incremental run will need, started at its beginning.

Reading production is most of an incremental sync's time, and none of it depends on the
store. Where the source can share the run's snapshot with other connections (PostgreSQL),
two workers, each with its own such connection (opened while the run plans, or kept from
the last run), take reads off one queue while the foreground merges and deletes:
- first every loaded table's *delta*, in sync order: the cursor's target and the rows
  whose cursor moved (``TableSync`` takes them instead of reading; a delta larger than
  ``2 * batch_rows`` rows is left for the table to stream itself);
- then the *counts* the delete check will likely need (``sync.run._counts_needed``
  chooses them): per-bucket counts for tables no cascade can explain (roots such as
  ``users``, whose totals will differ), then row counts.
What nobody asked for ahead is read when it is asked for, as everywhere on SQLite and MySQL.
Everything comes from the run's snapshot, so what is read ahead is exactly what the
foreground would have read.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import pyarrow as pa

from vigie.policy.compile import CompiledTable
from vigie.sources.base import CursorValue, Filter, KeyRange, Source, SourceTable
from vigie.sync.state import held_target

T = TypeVar("T")


@dataclass(frozen=True)
class Delta:
    """A table's changed rows, read ahead: the cursor's target and the batches."""

    where: Filter | None
    target: CursorValue | None
    batches: list[pa.Table]


class ReadAhead:
    """Row counts, per-bucket counts and deltas of production, read ahead where possible."""

    WORKERS = 2

    def __init__(
        self, source: Source, batch_rows: int = 500_000, spares: list[Source] | None = None
    ) -> None:
        self._source = source
        self._spares = list(spares or [])  # readers an earlier run kept (``close(keep=True)``)
        self._batch_rows = batch_rows
        self._readers: list[Source] = []
        self._threads: list[threading.Thread] = []
        self._tasks: queue.SimpleQueue[tuple[Future[Any], Callable[[Source], Any]] | None]
        self._tasks = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._totals: dict[str, Future[int]] = {}
        self._buckets: dict[str, Future[dict[int, int]]] = {}
        self._deltas: dict[str, Future[Delta | None]] = {}
        self.used: list[str] = []  # the tables whose delta the foreground took from here

    def open(self) -> None:
        """Start the workers, each opening its connection sharing the run's snapshot (or
        taking a spare) while the foreground plans. Nothing starts on a source that cannot
        share its snapshot."""
        if not self._source.shares_snapshot:
            return
        for i in range(self.WORKERS):
            spare = self._spares.pop() if self._spares else None
            worker = threading.Thread(
                target=self._work, args=(spare,), name=f"vigie-ahead-{i}", daemon=True
            )
            worker.start()
            self._threads.append(worker)

    def _work(self, spare: Source | None) -> None:
        """One worker: its own connection, then tasks off the shared queue, in order."""
        try:
            reader: Source | None = self._source.reader(spare)
            failure: BaseException | None = None
        except BaseException as exc:  # every task it takes then fails with this
            reader, failure = None, exc
        if reader is not None:
            with self._lock:
                self._readers.append(reader)
        while (item := self._tasks.get()) is not None:
            future, task = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                if reader is None:
                    assert failure is not None
                    raise failure
                future.set_result(task(reader))
            except BaseException as exc:
                future.set_exception(exc)

    def _submit(self, task: Callable[[Source], T]) -> Future[T]:
        future: Future[T] = Future()
        self._tasks.put((future, task))
        return future

    def start(
        self,
        counts: list[tuple[CompiledTable, bool]],
        deltas: list[tuple[CompiledTable, Filter | None]],
    ) -> None:
        """Queue the reads, for the workers to take in this order: ``deltas`` (in sync
        order: every table's passes can start early), then per-bucket counts, then row
        counts (each needed only when a table's deletes are checked)."""
        if not self._threads:
            return  # not opened: everything is read when it is asked for
        for table, where in deltas:
            self._deltas[table.policy.name] = self._submit(
                partial(self._read_delta, table=table, where=where)
            )
        for table, per_bucket in sorted(counts, key=lambda c: not c[1]):
            name = table.policy.name
            if per_bucket:
                self._buckets[name] = self._submit(partial(_bucket_counts, table))
            else:
                self._totals[name] = self._submit(partial(_row_count, table))

    def _read_delta(
        self, source: Source, table: CompiledTable, where: Filter | None
    ) -> Delta | None:
        cursor = table.policy.cursor
        target = held_target(source.max_value(table.source, cursor) if cursor else None)
        batches, rows = [], 0
        columns = list(table.read_columns)
        for batch in source.read(table.source, columns, where, KeyRange(), self._batch_rows):
            batches.append(batch)
            rows += batch.num_rows
            if rows > 2 * self._batch_rows:
                return None  # too large to hold: the table streams it itself
        return Delta(where, target, batches)

    @property
    def counted(self) -> list[str]:
        """The tables being counted ahead."""
        return [*self._totals, *self._buckets]

    def delta(self, table: SourceTable, where: Filter | None) -> Delta | None:
        """The rows of ``table`` matching ``where``, if they were read ahead."""
        future = self._deltas.pop(table.name, None)
        delta = future.result() if future else None
        if delta is None or delta.where != where:
            return None
        self.used.append(table.name)
        return delta

    def total(self, table: SourceTable, width: int) -> int:
        if table.name in self._buckets:
            return sum(self.buckets(table, width).values())
        future = self._totals.get(table.name)
        return future.result() if future else self._source.row_count(table)

    def buckets(self, table: SourceTable, width: int) -> dict[int, int]:
        future = self._buckets.get(table.name)
        return future.result() if future else self._source.bucket_counts(table, width)

    def ready(self, table: str, delta: bool) -> bool:
        """Whether the table's delta (or else its counts) can be taken without waiting for
        the workers (or are not read ahead at all)."""
        futures = [self._deltas.get(table)] if delta else [self._buckets.get(table),
                                                            self._totals.get(table)]  # fmt: skip
        return all(f is None or f.done() for f in futures)

    def close(self, keep: bool = False) -> list[Source]:
        """Stop reading ahead (what is queued is dropped; what runs is waited for); with
        ``keep``, end the readers' snapshots but return their connections, for the next
        run to reuse (``spares``), else close them."""
        while True:
            try:
                item = self._tasks.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[0].cancel()
        for _ in self._threads:
            self._tasks.put(None)
        for worker in self._threads:
            worker.join()
        readers, self._readers, self._spares = [*self._readers, *self._spares], [], []
        if keep:
            for reader in readers:
                reader.release()
            return readers
        for reader in readers:
            reader.close()
        return []


def _bucket_counts(table: CompiledTable, reader: Source) -> dict[int, int]:
    return reader.bucket_counts(table.source, table.bucket_width)


def _row_count(table: CompiledTable, reader: Source) -> int:
    return reader.row_count(table.source)

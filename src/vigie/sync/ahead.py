"""Production reads an incremental run will need, started at its beginning.

Reading production is most of an incremental sync's time, and none of it depends on the
store. Where the source can share the run's snapshot with other connections (PostgreSQL),
two extra connections work while the foreground merges and deletes in the store:
- *deltas*: for every loaded table, in sync order, the cursor's target and the rows whose
  cursor moved (``TableSync`` takes them instead of reading; a delta larger than
  ``2 * batch_rows`` rows is left for the table to stream itself);
- *counts*: the row counts the delete check will likely need (``sync.run._counts_needed``
  chooses them); tables no cascade can explain (roots such as ``users``) get per-bucket
  counts at once, since their totals will differ.
What nobody asked for ahead is read when it is asked for, as everywhere on SQLite and MySQL.
Both come from the run's snapshot, so what is read ahead is exactly what the foreground
would have read.
"""

from __future__ import annotations

import json
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa

from vigie.policy.compile import CompiledTable
from vigie.sources.base import CursorValue, Filter, KeyRange, RowCounters, Source, SourceTable


@dataclass(frozen=True)
class Delta:
    """A table's changed rows, read ahead: the cursor's target and the batches."""

    where: Filter | None
    target: CursorValue | None
    batches: list[pa.Table]


class ReadAhead:
    """Row counts, per-bucket counts and deltas of production, read ahead where possible."""

    def __init__(
        self, source: Source, batch_rows: int = 500_000, spares: list[Source] | None = None
    ) -> None:
        self._source = source
        self._spares = list(spares or [])  # readers an earlier run kept (``close(keep=True)``)
        self._batch_rows = batch_rows
        self._readers: list[Source] = []
        self._pools: list[ThreadPoolExecutor] = []
        self._totals: dict[str, Future[int]] = {}
        self._buckets: dict[str, Future[dict[int, int]]] = {}
        self._deltas: dict[str, Future[Delta | None]] = {}
        self.used: list[str] = []  # the tables whose delta the foreground took from here
        self._delta_pool: ThreadPoolExecutor | None = None
        self._count_pool: ThreadPoolExecutor | None = None
        self._delta_reader: Future[Source]
        self._count_reader: Future[Source]

    def open(self) -> None:
        """Open the two extra connections, in their own threads, while the foreground plans.
        Nothing opens on a source that cannot share its snapshot."""
        if self._source.shares_snapshot:
            self._delta_pool, self._delta_reader = self._connect("vigie-ahead-delta")
            self._count_pool, self._count_reader = self._connect("vigie-ahead-count")

    def start(
        self,
        counts: list[tuple[CompiledTable, bool]],
        deltas: list[tuple[CompiledTable, Filter | None]],
    ) -> None:
        """Begin reading ``deltas`` on one extra connection and counting ``counts`` (with
        per-bucket counts where the flag is set) on the other, each list in its order."""
        if self._delta_pool is None or self._count_pool is None:
            return  # not opened: everything is read when it is asked for
        for table, where in deltas:
            name = table.policy.name
            self._deltas[name] = self._delta_pool.submit(
                self._read_delta, self._delta_reader, table, where
            )
        reader = self._count_reader
        for table, per_bucket in counts:
            name = table.policy.name
            if per_bucket:
                self._buckets[name] = self._count_pool.submit(
                    lambda t: reader.result().bucket_counts(t.source, t.bucket_width), table
                )
            else:
                self._totals[name] = self._count_pool.submit(
                    lambda t: reader.result().row_count(t.source), table
                )

    def _connect(self, name: str) -> tuple[ThreadPoolExecutor, Future[Source]]:
        """A thread and its connection sharing the run's snapshot (opened in that thread,
        so the foreground does not wait for it)."""
        pool = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._pools.append(pool)
        spare = self._spares.pop() if self._spares else None

        def connect() -> Source:
            reader = self._source.reader(spare)
            self._readers.append(reader)
            return reader

        return pool, pool.submit(connect)

    def _read_delta(
        self, reader: Future[Source], table: CompiledTable, where: Filter | None
    ) -> Delta | None:
        source, cursor = reader.result(), table.policy.cursor
        target = source.max_value(table.source, cursor) if cursor else None
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

    def close(self, keep: bool = False) -> list[Source]:
        """Stop reading ahead; with ``keep``, end the readers' snapshots but return their
        connections, for the next run to reuse (``spares``), else close them."""
        for pool in self._pools:
            pool.shutdown(wait=True, cancel_futures=True)
        readers, self._readers = [*self._readers, *self._spares], []
        self._spares = []
        if keep:
            for reader in readers:
                reader.release()
            return readers
        for reader in readers:
            reader.close()
        return []


def counter_delta(saved: str | None, now: RowCounters | None) -> int | None:
    """Rows production deleted since the ``saved`` reading (JSON, as the store keeps it),
    or None when there is no pair of readings from the same epoch to compare."""
    if now is None or not saved:
        return None
    before = json.loads(saved)
    return now.deleted - int(before["deleted"]) if before["epoch"] == now.epoch else None


def live_delta(saved: str | None, now: RowCounters | None) -> int | None:
    """How far production's live row count moved since the ``saved`` reading, or None
    when the readings do not compare (another epoch, a vacuum or analyze in between)."""
    if now is None or now.live is None or not saved:
        return None
    before = json.loads(saved)
    if before.get("live_epoch") != now.live_epoch or before.get("live") is None:
        return None
    return now.live - int(before["live"])


def counters_json(counters: RowCounters | None) -> str | None:
    """A reading of the counters as the store keeps it (``state.delete_counter``)."""
    if counters is None:
        return None
    return json.dumps(
        {
            "epoch": counters.epoch,
            "deleted": counters.deleted,
            "live_epoch": counters.live_epoch,
            "live": counters.live,
        }
    )

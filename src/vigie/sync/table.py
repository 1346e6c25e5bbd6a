"""Sync one table: passes of masked, scanned batches, then delete reconciliation.

A *pass* reads production in primary-key order, in *chunks* (key ranges of buckets),
and writes each batch together with its chunk's checkpoint in one store transaction, so a
sync killed at any moment resumes where it stopped:
- ``full``: the first load; chunks are read by parallel readers sharing the snapshot
  (PostgreSQL) and appended; a resumed full pass first removes what the interrupted run
  left from the bucket each unfinished chunk stopped in, then reads on from there;
- ``delta``: rows whose cursor moved since the last sync (``updated_at >= watermark``,
  or ``id >=`` the watermark's bucket), merged by key; a resumed delta reads again.
Before its passes, a table the policy now copies more columns of than the store holds
has them *backfilled* from production (``backfill``), so no old row is left without.

Dependencies go one way: ``table`` → ``deletes`` → ``writer`` / ``batch`` → ``state``.
"""

from __future__ import annotations

import math
import queue
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa

from vigie.keys import Keys
from vigie.pipeline import fan_in, prefetch
from vigie.policy.compile import BUCKET_COLUMN, CompiledTable, Masked
from vigie.sources.base import CursorValue, Filter, KeyRange, RowCounters, Source
from vigie.stores.duckdb_store import Store, q
from vigie.stores.meta import META
from vigie.sync.ahead import Delta, ReadAhead
from vigie.sync.backfill import backfill
from vigie.sync.batch import mask_and_scan
from vigie.sync.deletes import Reconciler
from vigie.sync.state import (
    Chunk,
    Progress,
    TableResult,
    TableState,
    delta_filter,
    finish_pass,
    held_target,
    load_state,
    save_chunks,
    save_pass,
)
from vigie.sync.writer import TableWriter

PARALLEL_READERS = 2


class TableSync:
    def __init__(
        self,
        store: Store,
        source: Source,
        compiled: CompiledTable,
        keys: Keys,
        run_id: int,
        run_time: datetime,
        progress: Progress | None = None,
        batch_rows: int = 500_000,
        cascades: tuple[tuple[str, str, str], ...] = (),
        delete_counter: RowCounters | None = None,
        ahead: ReadAhead | None = None,
        fills: list[str] | None = None,
        verify_every: timedelta | None = None,
    ) -> None:
        self.store, self.source, self.c, self.keys = store, source, compiled, keys
        self.progress = progress or (lambda *_: None)
        self.batch_rows = batch_rows
        self.name = compiled.policy.name
        self.cursor = compiled.policy.cursor
        self.result = TableResult(self.name)
        self.width = compiled.bucket_width
        self.chunks: list[Chunk] = []
        self.cascades = cascades  # (column, parent table, parent key column)
        self.delete_counter = delete_counter  # read before the run's snapshot
        self.ahead = ahead or ReadAhead(source)  # production counts and deltas, maybe ahead
        self.writer = TableWriter(store, compiled, run_id, run_time, self.result)
        self.fresh = False  # loaded whole from this run's snapshot: no delete to look for
        self.fills = fills or []  # columns the stored table lacks (a changed policy)
        self.verify_every = verify_every  # how often every row is compared (None: never)
        self.run_time = run_time

    # -- entry -----------------------------------------------------------------------------

    def run(self) -> TableResult:
        """The table's passes, then its deletes (see ``run_passes`` and ``reconcile``)."""
        self.run_passes()
        return self.reconcile()

    def run_passes(self) -> None:
        """Bring the store up to this run's snapshot for every insert and update."""
        started = time.perf_counter()
        self.writer.ensure_table()
        self.result.backfilled = backfill(
            self.writer, self.source, self.keys, self.batch_rows, self.fills
        )
        state = load_state(self.store, self.name)
        if state.pass_kind is not None:
            self.run_pass(state, resumed=True)  # finish what an interrupted run began
        elif not state.loaded:
            self.start_pass("full", None)
            self.fresh = True  # the whole table from this run's snapshot, in one pass
            self._rows_checked()  # every row was just read: the next check is due later
        else:  # changed rows by cursor; without a cursor, every row, merged
            self.start_pass("delta", state.watermark if self.cursor else None)
            if self.cursor and self._verify_due():
                self.verify_rows()
        self.result.seconds += time.perf_counter() - started

    def _verify_due(self) -> bool:
        if self.verify_every is None:
            return False
        (checked,) = self.store.rows(
            f"SELECT rows_checked_at FROM {META}.state WHERE table_name = ?", [self.name]
        )[0]
        return checked is None or self.run_time - checked >= self.verify_every

    def _rows_checked(self) -> None:
        with self.store.transaction() as con:
            con.execute(f"UPDATE {META}.state SET rows_checked_at = ? WHERE table_name = ?",
                        [self.run_time, self.name])  # fmt: skip

    def verify_rows(self) -> None:
        """Compare every row with production, after the cursor's delta: a row whose update
        the cursor missed (moved backwards, or left as it was) differs and is rewritten.
        Periodic (``verify_every``), as it reads the whole table."""
        before = self.result.updated + self.result.inserted
        self.start_pass("verify", None)
        repaired = self.result.updated + self.result.inserted - before
        self._rows_checked()
        if repaired:
            note = (f"verification pass: {repaired:,} row(s) differed from production though "
                    "the cursor did not show it (an update that moved it backwards, or left "
                    "it); rewritten")  # fmt: skip
            self.result.message = "; ".join(filter(None, [self.result.message, note]))

    def reconcile(self) -> TableResult:
        """Remove what production deleted; needs this table's passes done, and its cascade
        parents reconciled in this run (their deleted keys)."""
        started = time.perf_counter()
        reconciler = Reconciler(
            self.writer, self.source, self.ahead, self.keys, self.cascades, self.batch_rows
        )
        reconciler.reconcile(self.delete_counter, self.fresh)
        self.result.seconds += time.perf_counter() - started
        return self.result

    # -- passes ----------------------------------------------------------------------------

    def start_pass(self, kind: str, start: CursorValue | None) -> None:
        ahead = self.ahead.delta(self.c.source, self.where(start)) if kind == "delta" else None
        if ahead is not None:
            target = ahead.target
        else:
            target = self.source.max_value(self.c.source, self.cursor) if self.cursor else None
            target = held_target(target)
        chunks = self.plan_chunks() if kind in ("full", "verify") else [Chunk()]
        with self.store.transaction() as con:
            save_pass(con, self.name, kind, start, self.bucket_floor(target), chunks)
        self.run_pass(load_state(self.store, self.name), resumed=False, ahead=ahead)

    def where(self, start: CursorValue | None) -> Filter | None:
        return delta_filter(self.cursor, start)

    def plan_chunks(self) -> list[Chunk]:
        """Key ranges (whole buckets) of about ``batch_rows`` rows each, by the table's
        estimated key density, so that a chunk is usually read and committed as one batch:
        the store then appends whole batches instead of a large one and a small remainder.
        At least PARALLEL_READERS chunks where the table allows it; the first and last are
        open-ended, so rows outside the planned span are read too."""
        span = self.source.key_span(self.c.source)
        if span is None:
            return [Chunk()]
        lo, hi = span[0] // self.width, span[1] // self.width + 1
        rows = self.source.estimate_rows(self.c.source) or (span[1] - span[0] + 1)
        keys_per_row = max(1.0, (span[1] - span[0] + 1) / max(rows, 1))
        chunks = max(PARALLEL_READERS, round(rows / self.batch_rows))
        buckets_per_chunk = round(self.batch_rows * keys_per_row / self.width)
        step = max(1, min(buckets_per_chunk, math.ceil((hi - lo) / chunks)))
        edges = list(range(lo, hi, step))[1:]
        bounds = [None, *edges], [*edges, None]
        return [Chunk(a, b) for a, b in zip(*bounds, strict=True)]

    def bucket_floor(self, value: CursorValue | None) -> CursorValue | None:
        """Integer watermarks are kept as the first key of their bucket (no raw keys)."""
        if isinstance(value, int):
            return (value // self.width) * self.width
        return value

    def run_pass(self, state: TableState, resumed: bool, ahead: Delta | None = None) -> None:
        kind = state.pass_kind
        assert kind is not None
        self.result.passes.append(kind + (" (resumed)" if resumed else ""))
        self.chunks = state.chunks
        pending = [i for i, c in enumerate(self.chunks) if not c.done]
        if kind == "full" and resumed:
            self.discard_partial(pending)
        where = self.where(state.pass_from)
        total = self.source.estimate_rows(self.c.source) if kind in ("full", "verify") else None
        self.writer.compare_all = kind == "verify"
        readers = [] if ahead else self.source.readers(PARALLEL_READERS if len(pending) > 1 else 1)
        work: queue.SimpleQueue[int] = queue.SimpleQueue()
        for i in pending:
            work.put(i)
        done = 0
        try:
            producers = [self.produce(r, work, where) for r in readers]
            if ahead:  # one open chunk (a delta pass), read ahead
                producers = [iter([*((0, b) for b in ahead.batches), (0, None)])]
            for index, masked in prefetch(self.prepare(fan_in(producers))):
                if masked is None:
                    self.finish_chunk(index)
                    continue
                done += self.write(masked, kind in ("delta", "verify"), index)
                self.progress(self.name, done, total)
        finally:
            for extra in readers[1:]:
                extra.close()
        with self.store.transaction() as con:
            finish_pass(con, self.name, kind == "full" or state.pass_target is not None,
                        state.pass_target)  # fmt: skip
        self.writer.compare_all = False
        if resumed and kind == "full" and self.cursor:
            # Production may have changed since the interrupted pass began: catch up.
            self.start_pass("delta", state.pass_target)

    def produce(
        self, reader: Source, work: queue.SimpleQueue[int], where: Filter | None
    ) -> Iterator[tuple[int, pa.Table | None]]:
        """Read chunks off ``work`` with one reader; ``(chunk, None)`` marks a chunk's end."""
        while True:
            try:
                index = work.get_nowait()
            except queue.Empty:
                return
            chunk = self.chunks[index]
            start = chunk.progress if chunk.progress is not None else chunk.lo
            keys = KeyRange(
                None if start is None else start * self.width,
                None if chunk.hi is None else chunk.hi * self.width,
            )
            columns = list(self.c.read_columns)
            # twice the planned chunk size: a chunk denser than estimated still comes whole
            for batch in reader.read(self.c.source, columns, where, keys, 2 * self.batch_rows):
                yield index, batch
            yield index, None

    def discard_partial(self, pending: list[int]) -> None:
        """A resumed full pass appends: drop what an interrupted run left in unfinished chunks
        (the bucket it stopped in may be partial) before reading them again."""
        with self.store.transaction() as con:
            for i in pending:
                chunk = self.chunks[i]
                start = chunk.progress if chunk.progress is not None else chunk.lo
                conds = [f"{BUCKET_COLUMN} >= {int(start)}"] if start is not None else []
                conds += [f"{BUCKET_COLUMN} < {int(chunk.hi)}"] if chunk.hi is not None else []
                where = " AND ".join(conds) or "true"
                con.execute(f"DELETE FROM {q(self.name)} WHERE {where}")

    def finish_chunk(self, index: int) -> None:
        self.chunks[index] = replace(self.chunks[index], done=True)
        with self.store.transaction() as con:
            save_chunks(con, self.name, self.chunks)

    def prepare(
        self, batches: Iterator[tuple[int, pa.Table | None]]
    ) -> Iterator[tuple[int, Masked | None]]:
        """Mask and scan each batch (run in its own thread, beside reading and writing)."""
        for index, batch in batches:
            yield index, None if batch is None else mask_and_scan(self.c, self.keys, batch)

    def write(self, masked: Masked, merge: bool, chunk: int) -> int:
        """Write one masked batch with its chunk's checkpoint, in one transaction."""

        def checkpoint(con: Any, last_bucket: int) -> None:
            self.chunks[chunk] = replace(self.chunks[chunk], progress=last_bucket)
            save_chunks(con, self.name, self.chunks)

        return self.writer.write(masked, merge, checkpoint)

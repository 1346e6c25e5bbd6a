"""Deletes: what production removed leaves the store too, with its keys kept for lineage.

The passes leave the store a superset of production (every insert and update applied), so
equal row counts mean equal key sets. When they differ, counts are compared per bucket
(4096 keys) and only the keys of differing buckets are read again, pseudonymized and
anti-joined. Children of deleted parents (ON DELETE CASCADE) go with them, by key.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pyarrow as pa

from vigie.db.quote import literal
from vigie.keys import Keys
from vigie.policy.compile import BUCKET_COLUMN, mask_keys
from vigie.sources.base import KeyRange, RowCounters, Source, bucketed
from vigie.stores.duckdb_store import q
from vigie.stores.meta import META, log_columns, log_found
from vigie.sync.ahead import ReadAhead
from vigie.sync.batch import mask_and_scan
from vigie.sync.writer import TableWriter, one

# Production's rows are counted at least this often, even when the delete counter explains
# every delete (see Reconciler.reconcile).
VERIFY_EVERY = timedelta(hours=1)
# How many runs' ways of finding deletes ``state.deletes_by`` remembers (most recent first).
HISTORY = 6
# Up to this many deleted parent keys, a cascade names them as constants (see ``constants``).
CONSTANT_KEYS = 2048


class Reconciler:
    """The delete half of a table sync: after its passes (through ``writer``), with the
    run's ``source`` and what it read ``ahead``."""

    def __init__(self, writer: TableWriter, source: Source, ahead: ReadAhead, keys: Keys,
                 cascades: tuple[tuple[str, str, str], ...], batch_rows: int) -> None:  # fmt: skip
        self.w, self.source, self.ahead, self.keys = writer, source, ahead, keys
        self.cascades, self.batch_rows = cascades, batch_rows
        self.name, self.store, self.c = writer.name, writer.store, writer.c
        self.result, self.width = writer.result, writer.c.bucket_width

    def reconcile(self, counter: RowCounters | None, fresh: bool) -> None:
        """Remove from the store what production deleted.

        After a fresh full load the store is the snapshot: nothing to compare. Where the
        server keeps row statistics (PostgreSQL), a table whose rows were counted within
        ``VERIFY_EVERY`` is not read again when either its delete counter moved by exactly
        the rows this run cascaded, or its live row count moved by exactly the rows this
        run added minus those it cascaded (rows inserted and deleted between two syncs,
        which the delete counter also counts, cancel out there). Otherwise row counts are
        compared: the passes leave the store a superset of production, so equal counts
        mean equal key sets; only unequal ones are compared per bucket.
        """
        saved, verified_at, recent = self.store.rows(
            f"SELECT delete_counter, verified_at, deletes_by FROM {META}.state "
            "WHERE table_name = ?",
            [self.name],
        )[0]
        cascaded = self.cascade()
        # Either every delete production counted since the last sync is one this run
        # cascaded, or production's net change in rows is the store's. A change the server
        # has not yet added to its statistics (each session reports within seconds) moves
        # them at the next sync, which then compares, unless, by coincidence, a change
        # reported late offsets one exactly: counting at least every VERIFY_EVERY bounds
        # how long such a delete could stay in the store. Statistics that have not counted
        # the inserts and updates this run saw are behind (the session that deleted often
        # wrote too): they vouch for nothing, and the table is counted. Under writes that
        # never pause, some change is nearly always unreported yet, and the table is counted.
        net = self.result.inserted - cascaded  # the store's rows: how many more than before
        explained = caught_up(saved, counter, self.result.inserted + self.result.updated) and (
            counter_delta(saved, counter) == cascaded or live_delta(saved, counter) == net
        )
        verified_lately = verified_at is not None and self.w.run_time - verified_at < VERIFY_EVERY
        if fresh or (explained and verified_lately):
            self.result.deletes_by = "snapshot" if fresh else "counter"
        else:
            self.result.deletes_by = "count"
            (stored,) = self.store.rows(f"SELECT COUNT(*) FROM {q(self.name)}")[0]
            if self.ahead.total(self.c.source, self.width) != stored:
                self.result.deletes_by = "buckets"
                self.compare_buckets()
        # what the history remembers: whether the counters sufficed (a count made only
        # because one was due, which agreed, does not make the next runs count ahead)
        sufficed = explained and self.result.deletes_by in ("counter", "count")
        self.save_counter(counter, recent, "counter" if sufficed else self.result.deletes_by)

    def save_counter(self, counter: RowCounters | None, recent: str | None, how: str) -> None:
        """Keep this reading of the counters, how deletes were found (``how``, after the
        ``recent`` ones), and, unless the counters alone explained them, that production
        was counted."""
        value = counters_json(counter)
        by = self.result.deletes_by
        history = ",".join([how, *(recent or "").split(",")][:HISTORY]).strip(",")
        with self.store.transaction() as con:
            con.execute(
                f"UPDATE {META}.state SET delete_counter = ?, deletes_by = ?, "
                "verified_at = CASE WHEN ? THEN verified_at ELSE ? END WHERE table_name = ?",
                [value, history, by == "counter", self.w.run_time, self.name],
            )

    def compare_buckets(self) -> None:
        """Compare row counts per bucket; re-read buckets the store lacks rows of (repair),
        and remove the store rows production no longer has from buckets that differ."""
        prod = self.ahead.buckets(self.c.source, self.width)
        store = dict(
            self.store.rows(
                f"SELECT {BUCKET_COLUMN}, COUNT(*) FROM {q(self.name)} GROUP BY {BUCKET_COLUMN}"
            )
        )
        differ = sorted(b for b in set(prod) | set(store) if prod.get(b, 0) != store.get(b, 0))
        missing = [b for b in differ if prod.get(b, 0) > store.get(b, 0)]
        if missing:
            self.result.message = (
                f"{len(missing)} key range(s) had rows production holds and the store did not "
                "(rows changed without moving their cursor?); they were repaired."
            )
            for b in missing:
                for batch in self.source.read(
                    self.c.source, list(self.c.read_columns), None,
                    KeyRange(b * self.width, (b + 1) * self.width), self.batch_rows,
                ):  # fmt: skip
                    self.w.write(mask_and_scan(self.c, self.keys, batch), merge=True)
        if differ:
            self.delete_gone(differ)

    def cascade(self) -> int:
        """Production deletes children with their parents (ON DELETE CASCADE): do the same
        with the parents this run found deleted, by their pseudonymized keys. Returns how
        many rows went."""
        before = self.result.deleted
        for column, parent, parent_column in self.cascades:
            deleted = (
                f"SELECT {q(parent_column)} FROM {META}.{q('deleted__' + parent)} "
                f"WHERE _vigie_run = {self.w.run_id}"
            )
            keys = self.store.rows(f"{deleted} LIMIT {CONSTANT_KEYS + 1}")
            if not keys:
                continue
            named = constants([k for (k,) in keys]) if len(keys) <= CONSTANT_KEYS else None
            self.tombstone(f"t.{q(column)} IN ({named or deleted})")
        return self.result.deleted - before

    def tombstone(self, condition: str) -> None:
        """Record, then delete, the store rows matching ``condition`` (alias ``t``): one
        scan finds them and reads what the delete history and the change log keep of them
        (rows a cascade deletes lie in every row group: each column read costs its whole
        length), the delete goes by row id."""
        names = [*self.c.key, "_vigie_first_seen"]
        with self.store.transaction() as con:
            logged = [c for c in log_columns(con, self.name) if c not in names]
            read = ", ".join(f"t.{q(c)}" for c in [*names, *logged])
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE vigie_gone AS SELECT t.rowid AS _rid, {read} "
                f"FROM {q(self.name)} t WHERE {condition}"
            )
            (n,) = one(con, "SELECT COUNT(*) FROM vigie_gone")
            if n:
                keys = ", ".join(q(k) for k in self.c.key)
                con.execute(
                    f"INSERT INTO {META}.{q('deleted__' + self.name)} SELECT {keys}, "
                    "_vigie_first_seen, ?, ? FROM vigie_gone",
                    [self.w.run_time, self.w.run_id],
                )
                log_found(con, self.name, "vigie_gone", self.w.run_id)
                con.execute(
                    f"DELETE FROM {q(self.name)} WHERE rowid IN (SELECT _rid FROM vigie_gone)"
                )
            con.execute("DROP TABLE vigie_gone")
        self.result.deleted += int(n)

    def delete_gone(self, buckets: list[int]) -> None:
        """Remove (and record) the store rows of ``buckets`` that production no longer has."""
        ranges = _ranges(buckets, self.width) if bucketed(self.c.source) else [KeyRange()]
        live = pa.concat_tables(
            [mask_keys(self.c, t) for t in self.source.keys_between(self.c.source, ranges)]
        )
        key_cols = ", ".join(
            f"{q(k)}::UUID AS {q(k)}" if k in self.c.pseudonym_columns else q(k) for k in self.c.key
        )
        on = " AND ".join(f"t.{q(k)} = l.{q(k)}" for k in self.c.key)
        in_buckets = f"t.{BUCKET_COLUMN} IN ({', '.join(str(b) for b in buckets)})"
        self.store.con.register("vigie_live", live)
        try:
            self.store.con.execute(
                f"CREATE OR REPLACE TEMP TABLE vigie_live_keys AS SELECT {key_cols} FROM vigie_live"
            )
            self.tombstone(
                f"{in_buckets} AND NOT EXISTS (SELECT 1 FROM vigie_live_keys l WHERE {on})"
            )
        finally:
            self.store.con.execute("DROP TABLE IF EXISTS vigie_live_keys")
            self.store.con.unregister("vigie_live")


def constants(keys: list[object]) -> str | None:
    """Keys as a list of SQL constants (UUID pseudonyms, integers or text), or None for
    another type. Named as constants, a cascade's keys let the scan skip the row groups
    whose zone maps hold none of them (DuckDB pushes them as an optional filter); as a
    subquery, every row group is read. With a tick's ~90 keys that still leaves about three
    quarters of a sorted table's groups (docs/sync.md measures the other forms)."""
    if all(isinstance(k, uuid.UUID) for k in keys):
        return ", ".join(f"'{k}'::UUID" for k in keys)
    if all(isinstance(k, int) and not isinstance(k, bool) for k in keys):
        return ", ".join(str(k) for k in keys)
    if all(isinstance(k, str) and "\x00" not in k for k in keys):
        return ", ".join(literal("duckdb", str(k)) for k in keys)
    return None


def counter_delta(saved: str | None, now: RowCounters | None) -> int | None:
    """Rows production deleted since the ``saved`` reading (JSON, as the store keeps it),
    or None when there is no pair of readings from the same epoch to compare."""
    if now is None or not saved:
        return None
    before = json.loads(saved)
    return now.deleted - int(before["deleted"]) if before["epoch"] == now.epoch else None


def caught_up(saved: str | None, now: RowCounters | None, seen: int) -> bool:
    """Whether production's statistics count at least the ``seen`` rows a run found
    inserted or changed since the ``saved`` reading (False when the readings do not
    compare): else some session has not reported its changes yet, its deletes included."""
    if now is None or now.written is None or not saved:
        return False
    before = json.loads(saved)
    if before["epoch"] != now.epoch or before.get("written") is None:
        return False
    return now.written - int(before["written"]) >= seen


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
            "written": counters.written,
        }
    )


def _ranges(buckets: list[int], width: int) -> list[KeyRange]:
    """Adjacent buckets merged into key ranges."""
    out: list[KeyRange] = []
    for b in buckets:
        if out and out[-1].stop == b * width:
            out[-1] = KeyRange(out[-1].start, (b + 1) * width)
        else:
            out.append(KeyRange(b * width, (b + 1) * width))
    return out

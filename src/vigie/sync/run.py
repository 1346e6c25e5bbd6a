"""`vigie sync`: one run over every table of the policy, inside one production snapshot."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from vigie.db.dsn import Dsn
from vigie.errors import ScanHit, SyncError, UsageError
from vigie.keys import Keys
from vigie.policy.compile import CompiledTable
from vigie.policy.hmac_engine import ENGINE, self_test
from vigie.policy.load import load_policy
from vigie.policy.model import Policy
from vigie.sources import open_source
from vigie.sources.base import Filter, RowCounters, Source
from vigie.stores.duckdb_store import Store, q
from vigie.stores.meta import (
    META,
    bound_change_logs,
    forget_sorted,
    record_policy,
    reset_changes,
)
from vigie.sync.ahead import ReadAhead
from vigie.sync.cluster import CLUSTER_ROWS, cluster, cluster_due
from vigie.sync.converge import PolicyChanges, apply_removals, mark_converged, plan_changes
from vigie.sync.deletes import VERIFY_EVERY, counter_delta
from vigie.sync.plan import Plan, make_plan
from vigie.sync.state import Progress, TableResult, delta_filter, watermark
from vigie.sync.table import TableSync

Announce = Callable[[PolicyChanges], None]


@dataclass
class SyncReport:
    run_id: int
    source: str
    store: Path
    started_at: datetime
    tables: list[TableResult] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)
    seconds: float = 0.0
    hmac_engine: str = ENGINE
    counted_ahead: list[str] = field(default_factory=list)  # production counts read ahead
    read_ahead: list[str] = field(default_factory=list)  # deltas read ahead (ReadAhead)
    changes: PolicyChanges = field(default_factory=PolicyChanges)  # converged to the policy
    converge_seconds: float = 0.0  # removing what the policy no longer copies

    @property
    def failed(self) -> list[TableResult]:
        return [t for t in self.tables if t.status != "ok"]

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)


VERIFY_ROWS_EVERY = timedelta(days=1)  # every row compared with production, per table


def sync(
    dsn: Dsn,
    policy_path: Path,
    store_path: Path,
    keys: Keys,
    *,
    progress: Progress | None = None,
    batch_rows: int = 500_000,
    announce: Announce | None = None,
    verify_every: timedelta | None = VERIFY_ROWS_EVERY,
    rebuild: tuple[str, ...] = (),
    cluster_rows: int = CLUSTER_ROWS,
) -> SyncReport:
    """Copy production into the store under the policy, in one run that opens and closes
    the store. Returns the per-table report; tables stopped by the content scan are marked
    failed there (the others go on). ``announce`` hears what converging the store to a
    changed policy will do, before it is done. Cascade children of ``cluster_rows`` rows
    or more are kept sorted by their cascade column (``vigie.sync.cluster``)."""
    started = time.perf_counter()
    with Syncer(store_path, keys, verify_every, cluster_rows) as syncer:
        report = syncer.run(dsn, policy_path, progress=progress, batch_rows=batch_rows,
                            announce=announce, rebuild=rebuild)  # fmt: skip
    report.seconds = time.perf_counter() - started  # opening and closing the store too
    return report


class Syncer:
    """A store kept open for one sync run after another (``vigie sync --every``).

    Each run is complete on its own (own snapshot, checkpointed into the store file at its
    end); what the store keeps open between runs is DuckDB's cache of the blocks it read
    and decrypted, which the next run's merges and cascades read again. The store file is
    locked while the syncer holds it."""

    def __init__(
        self,
        store_path: Path,
        keys: Keys,
        verify_every: timedelta | None = VERIFY_ROWS_EVERY,
        cluster_rows: int = CLUSTER_ROWS,
    ) -> None:
        self.store_path, self.keys = store_path, keys
        self.verify_every = verify_every  # how often each table's rows are all compared
        self.cluster_rows = cluster_rows  # cascade children this large are kept sorted
        self.store = Store(store_path, keys, create=True)
        self._source: Source | None = None  # kept between runs that succeed
        self._spares: list[Source] = []  # the read-ahead connections, likewise

    def __enter__(self) -> Syncer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._drop_source()
        finally:
            self.store.close()

    def _drop_source(self) -> None:
        spares, self._spares = self._spares, []
        for spare in spares:
            spare.close()
        if self._source is not None:
            source, self._source = self._source, None
            source.close()

    def run(
        self,
        dsn: Dsn,
        policy_path: Path,
        *,
        progress: Progress | None = None,
        batch_rows: int = 500_000,
        announce: Announce | None = None,
        rebuild: tuple[str, ...] = (),
    ) -> SyncReport:
        """One sync run; the policy file is read again each time. ``rebuild`` names tables
        (or ``all``) to forget first and load again from production."""
        started = time.perf_counter()
        policy = load_policy(policy_path)
        if rebuild:
            forget(self.store, rebuild)
        self_test(self.keys.pseudonym_key)
        if self._source is not None and self._source.dsn != dsn:
            self._drop_source()
        source = self._source = self._source or open_source(dsn)
        try:
            report = self._run(source, dsn, policy, progress, batch_rows, announce)
            source.release()  # the connection stays for the next run, not the snapshot
        except BaseException:
            self._drop_source()  # whatever went wrong, the next run connects afresh
            raise
        self.store.con.execute("CHECKPOINT")  # the run's changes into the store file
        report.seconds = time.perf_counter() - started
        return report

    def _run(self, source: Source, dsn: Dsn, policy: Policy, progress: Progress | None,
             batch_rows: int, announce: Announce | None) -> SyncReport:  # fmt: skip
        store, keys = self.store, self.keys
        counters = source.row_counters()  # before the snapshot (see Source)
        source.snapshot()
        check_source(store, source.identity(), dsn)
        ahead = ReadAhead(source, batch_rows, self._spares)
        self._spares, done = [], False
        try:
            ahead.open()
            plan = make_plan(policy, source, store, keys.pseudonym_key)
            changes = plan_changes(store, plan.tables, policy.exclude)
            if changes and announce is not None:
                announce(changes)
            now = datetime.now(UTC).replace(tzinfo=None)
            run_id = _begin_run(store, dsn, policy, now)
            converging = time.perf_counter()
            apply_removals(store, changes, plan.tables)  # before anything is copied
            mark_converged(store, run_id)
            converged = time.perf_counter() - converging
            ahead.start(_counts_needed(store, plan, counters), _deltas(store, plan))
            report = SyncReport(run_id, str(dsn), self.store_path, now, unlisted=plan.unlisted)
            report.changes, report.converge_seconds = changes, converged
            report.counted_ahead = ahead.counted
            tables = [
                TableSync(store, source, c, keys, run_id, now, progress, batch_rows,
                          plan.cascades.get(c.policy.name, ()), counters.get(c.policy.name),
                          ahead, changes.fills(c.policy.name), self.verify_every)
                for c in plan.tables
            ]  # fmt: skip
            report.tables = _run_tables(store, run_id, tables, ahead)
            report.read_ahead = ahead.used
            _keep_sorted(store, run_id, tables, self.cluster_rows)
            with store.transaction() as con:
                bound_change_logs(con)
            _end_run(store, run_id, report)
            done = True
        finally:
            self._spares = ahead.close(keep=done)
        return report


def _keep_sorted(store: Store, run_id: int, tables: list[TableSync], min_rows: int) -> None:
    """Sort again the large cascade children whose appended rows passed their share (see
    ``vigie.sync.cluster``); not a table this run loaded whole, nor one that stopped."""
    for table in tables:
        if not table.cascades or table.fresh or table.result.status != "ok":
            continue
        column = table.cascades[0][0]
        if cluster_due(store, table.name, column, min_rows):
            seconds = cluster(store, table.name, column, run_id)
            table.result.seconds += seconds
            note = f"sorted by {column} within key ranges ({seconds:.1f} s)"
            table.result.message = "; ".join(filter(None, [table.result.message, note]))
            _record_table(store, run_id, table.result)


def forget(store: Store, tables: tuple[str, ...]) -> None:
    """Drop ``tables`` from the store (``all``: every table, and the source it was tied to),
    so this run loads them again from production: the deliberate way to start over after a
    type change or a moved database. Their delete histories are kept (they happened)."""
    stored = store.table_names()
    names = stored if "all" in tables else list(tables)
    if unknown := [t for t in names if t not in stored]:
        raise UsageError(f"--rebuild {unknown[0]}: the store has no such table.",
                         hint=f"Its tables: {', '.join(stored) or 'none'}.")  # fmt: skip
    with store.transaction() as con:
        for table in names:
            con.execute(f"DROP TABLE {q(table)}")
            for meta in ("state", "columns"):
                con.execute(f"DELETE FROM {META}.{meta} WHERE table_name = ?", [table])
            forget_sorted(con, table)
        if "all" in tables:
            con.execute(f"DELETE FROM {META}.meta WHERE key = 'source_identity'")
        reset_changes(con)


def check_source(store: Store, identity: str, dsn: Dsn) -> None:
    """A store is a copy of one database: recorded at its first sync, refused after. Syncing
    database B into a store of A would leave A's rows as B's, and phantom deletes."""
    rows = store.rows(f"SELECT value FROM {META}.meta WHERE key = 'source_identity'")
    if not rows:
        store.con.execute(f"INSERT INTO {META}.meta VALUES ('source_identity', ?)", [identity])
        return
    if rows[0][0] != identity:
        raise SyncError(
            f"Store {store.path} is a copy of another database ({rows[0][0]}), not of {dsn} "
            f"({identity}); nothing was copied.",
            hint="Sync this database into a store of its own (another --store path). If the "
            "database was moved or restored and this store should follow it, start over with "
            "`vigie sync --rebuild all` (the store holds copies only).",
        )


def _run_tables(
    store: Store, run_id: int, tables: list[TableSync], ahead: ReadAhead
) -> list[TableResult]:
    """Every table's passes and deletes, each step as soon as it can go: a pass once its
    delta is read (ahead), a table's deletes once its passes are done, the tables it
    cascades from have had theirs and its production counts are read (ahead). Among the
    steps that can go, the first in sync order; when none can without waiting, the first
    that may (it then waits for what it needs). A content-scan hit stops only its table."""
    steps = [(t, "pass") for t in tables]
    names = {t.name for t in tables}
    done: set[str] = set()  # tables whose deletes are done (or that stopped)
    while steps:
        allowed = [s for s in steps if s[1] == "pass" or _parents(s[0]) & names <= done]
        table, kind = next((s for s in allowed if ahead.ready(s[0].name, s[1] == "pass")),
                           allowed[0])  # fmt: skip
        steps.remove((table, kind))
        try:
            if kind == "pass":
                table.run_passes()
                steps.append((table, "deletes"))
                steps.sort(key=lambda s: tables.index(s[0]))
                continue
            table.reconcile()
        except ScanHit as exc:
            table.result.status, table.result.message = "stopped", str(exc)
        done.add(table.name)
        _record_table(store, run_id, table.result)
    return [t.result for t in tables]


def _parents(table: TableSync) -> set[str]:
    return {parent for _, parent, _ in table.cascades}


def _deltas(store: Store, plan: Plan) -> list[tuple[CompiledTable, Filter | None]]:
    """The delta passes this run will make (loaded tables, no interrupted pass), in sync
    order, with the rows each reads (as ``TableSync.run_passes`` will ask for them)."""
    state = {
        name: (loaded, kind, watermark(wts, wint))
        for name, loaded, kind, wts, wint in store.rows(
            f"SELECT table_name, loaded, pass_kind, watermark_ts, watermark_int FROM {META}.state"
        )
    }
    out = []
    for table in plan.tables:
        loaded, kind, start = state.get(table.policy.name, (False, None, None))
        if loaded and kind is None:
            out.append((table, delta_filter(table.policy.cursor, start)))
    return out


def _counts_needed(
    store: Store, plan: Plan, counters: dict[str, RowCounters]
) -> list[tuple[CompiledTable, bool]]:
    """Tables an incremental run will likely count in production (see ``ReadAhead``):
    loaded, no interrupted pass, and either due for their periodic count (``VERIFY_EVERY``)
    or their delete counter moved and no cascade can explain it (roots: per-bucket counts,
    their totals will differ) or cascades did not explain it in one of the last runs
    (events born and deleted between two syncs happen in most, not all, of them)."""
    now = datetime.now(UTC).replace(tzinfo=None)
    wanted = []
    for name, loaded, pass_kind, saved, recent, verified in store.rows(
        f"SELECT table_name, loaded, pass_kind, delete_counter, deletes_by, verified_at "
        f"FROM {META}.state"
    ):
        table = next((t for t in plan.tables if t.policy.name == name), None)
        if table is None or not loaded or pass_kind is not None:
            continue
        moved = counter_delta(saved, counters.get(name)) != 0
        root = not plan.cascades.get(name)
        due = verified is None or now - verified >= VERIFY_EVERY
        counted = {"count", "buckets"} & set((recent or "").split(","))
        if due or (moved and (root or counted)):
            wanted.append((table, root and moved))
    order = [t.policy.name for t in plan.tables]  # counted in the order they are synced
    return sorted(wanted, key=lambda w: order.index(w[0].policy.name))


def _begin_run(store: Store, dsn: Dsn, policy: Policy, now: datetime) -> int:
    """A new run, with the policy it applies (text, and each column's class and action)."""
    with store.transaction() as con:
        run_id = int(store.rows(f"SELECT COALESCE(MAX(run_id), 0) FROM {META}.runs")[0][0]) + 1
        con.execute(
            f"INSERT INTO {META}.runs (run_id, started_at, finished_at, status, source, "
            "policy_sha256, message) VALUES (?, ?, NULL, 'running', ?, ?, NULL)",
            [run_id, now, str(dsn), policy.digest],
        )
        record_policy(con, run_id, policy, now)
    return run_id


def _record_table(store: Store, run_id: int, r: TableResult) -> None:
    with store.transaction() as con:
        con.execute(
            f"INSERT OR REPLACE INTO {META}.table_runs VALUES (?, ?, ?, ?, ?, ?, ?)",
            [run_id, r.table, r.inserted, r.updated, r.deleted, r.seconds, r.status],
        )


def _end_run(store: Store, run_id: int, report: SyncReport) -> None:
    status = "failed" if report.failed else "ok"
    message = "; ".join(f"{t.table}: stopped by the content scan" for t in report.failed)
    with store.transaction() as con:
        con.execute(
            f"UPDATE {META}.runs SET finished_at = ?, status = ?, message = ? WHERE run_id = ?",
            [datetime.now(UTC).replace(tzinfo=None), status, message or None, run_id],
        )


__all__ = ["SyncError", "SyncReport", "Syncer", "sync"]

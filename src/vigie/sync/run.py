"""`vigie sync`: one run over every table of the policy, inside one production snapshot."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from vigie.db.dsn import Dsn
from vigie.errors import ScanHit, SyncError
from vigie.keys import Keys
from vigie.policy.compile import CompiledTable
from vigie.policy.hmac_engine import ENGINE, self_test
from vigie.policy.load import load_policy
from vigie.sources import open_source
from vigie.sources.base import DeleteCounter
from vigie.stores.duckdb_store import META, Store
from vigie.sync.counts import ProductionCounts, counter_delta
from vigie.sync.deletes import VERIFY_EVERY
from vigie.sync.plan import Plan, make_plan
from vigie.sync.table import Progress, TableResult, TableSync


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

    @property
    def failed(self) -> list[TableResult]:
        return [t for t in self.tables if t.status != "ok"]

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)


def sync(
    dsn: Dsn,
    policy_path: Path,
    store_path: Path,
    keys: Keys,
    *,
    progress: Progress | None = None,
    batch_rows: int = 500_000,
) -> SyncReport:
    """Copy production into the store under the policy. Returns the per-table report;
    tables stopped by the content scan are marked failed there (the others go on)."""
    started = time.perf_counter()
    policy = load_policy(policy_path)
    self_test(keys.pseudonym_key)
    source = open_source(dsn)
    try:
        with Store(store_path, keys, create=True) as store:
            counters = source.delete_counters()  # before the snapshot (see Source)
            source.snapshot()
            plan = make_plan(policy, source, store, keys.pseudonym_key)
            counts = ProductionCounts(source)
            try:
                counts.start(_counts_needed(store, plan, counters))
                now = datetime.now(UTC).replace(tzinfo=None)
                run_id = _begin_run(store, dsn, policy.digest, now)
                report = SyncReport(run_id, str(dsn), store_path, now, unlisted=plan.unlisted)
                report.counted_ahead = counts.ahead
                for compiled in plan.tables:
                    name = compiled.policy.name
                    table = TableSync(
                        store, source, compiled, keys, run_id, now, progress, batch_rows,
                        plan.cascades.get(name, ()), counters.get(name), counts,
                    )  # fmt: skip
                    report.tables.append(_run_table(store, run_id, table))
                _end_run(store, run_id, report)
            finally:
                counts.close()
        # the time includes closing the store: DuckDB's checkpoint of this run's changes
        report.seconds = time.perf_counter() - started
        return report
    finally:
        source.close()


def _run_table(store: Store, run_id: int, table: TableSync) -> TableResult:
    """Sync one table and record its result; a content-scan hit stops only that table."""
    try:
        result = table.run()
    except ScanHit as exc:
        result = table.result
        result.status, result.message = "stopped", str(exc)
    _record_table(store, run_id, result)
    return result


def _counts_needed(
    store: Store, plan: Plan, counters: dict[str, DeleteCounter]
) -> list[tuple[CompiledTable, bool]]:
    """Tables an incremental run will likely count in production (see ``ProductionCounts``):
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


def _begin_run(store: Store, dsn: Dsn, digest: str, now: datetime) -> int:
    with store.transaction() as con:
        run_id = int(store.rows(f"SELECT COALESCE(MAX(run_id), 0) FROM {META}.runs")[0][0]) + 1
        con.execute(
            f"INSERT INTO {META}.runs VALUES (?, ?, NULL, 'running', ?, ?, NULL)",
            [run_id, now, str(dsn), digest],
        )
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


__all__ = ["SyncError", "SyncReport", "sync"]

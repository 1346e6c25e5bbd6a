"""The data process: owns the store, runs the scheduled sync, answers over a 0600 socket.

Reads never wait for a sync and never see half of one. The service answers from a
*snapshot*: a copy of the store file taken while no writer holds it (the copy is made under
the store's shared lock, so a ``vigie sync`` elsewhere cannot be writing), opened
read-only on a DuckDB whose external access is off and configuration locked. After each
sync and rollup refresh, a new snapshot is published and swapped in; queries in flight
finish on the old one, which is then closed and deleted. An answer is therefore the
pre-sync or the post-sync state, never a mix. The snapshot is encrypted with the store key,
0600 in the store's 0700 folder, like the store.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
import socketserver
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vigie.errors import (
    Forbidden,
    GuardClosed,
    NotFound,
    StoreError,
    Unavailable,
    UsageError,
    VigieError,
)
from vigie.guard.inside import Census
from vigie.guard.model import Result
from vigie.keys import Keys
from vigie.kpi.engine import ROLLUPS, KpiResult, default_range, has_registry, lock_down, run_kpi
from vigie.kpi.load import load_metrics
from vigie.kpi.model import Metrics
from vigie.kpi.parse import parse_query
from vigie.policy.load import parse_policy
from vigie.serve import protocol
from vigie.serve.sandbox import check_statement, run_statement
from vigie.stores.checks import verify_store
from vigie.stores.duckdb_store import Store
from vigie.sync.service import SyncService, SyncSettings

if TYPE_CHECKING:
    from vigie.guard.api import WebInfo
    from vigie.guard.runner import Guard
    from vigie.guard.service import GuardContext, PostureSource

DATA_OPS = {"kpis", "kpi", "sql", "status"}  # closed while the guard fails
WATCH_POLL = 0.05  # s: how fast the web process learns that cached answers no longer hold

log = logging.getLogger("vigie.data")


@dataclass(frozen=True)
class DataSettings:
    store: Path
    metrics: Path | None = None
    sync: SyncSettings | None = None
    every: float | None = None  # seconds between scheduled syncs (start to start)
    sql_timeout: float = 5.0
    sql_max_rows: int = 10_000
    watch: float = 2.0  # how often a store synced by someone else is looked at
    guard: GuardContext | None = None  # None: no guard (library use and tests of the core)


@dataclass
class Snapshot:
    """One published state of the store, open read-only and locked down."""

    generation: int
    path: Path
    store: Store
    published_at: datetime
    tables: frozenset[str]
    census: Census | None = None
    users: int = 0
    retired: bool = False
    cache: OrderedDict[str, Any] = field(default_factory=OrderedDict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def close(self) -> None:
        self.store.close()
        _remove_snapshot_files(self.path)


@dataclass
class SyncState:
    running: bool = False
    last_started: datetime | None = None
    last_finished: datetime | None = None
    last_error: str | None = None
    next_at: datetime | None = None
    runs: int = 0


class DataService:
    """The store's owner while vigie serves. ``serve_forever`` blocks until ``stop``."""

    def __init__(self, settings: DataSettings, keys: Keys) -> None:
        self.settings, self.keys = settings, keys
        self.metrics: Metrics = load_metrics(settings.metrics)
        self.socket = protocol.socket_path(settings.store)
        self._swap = threading.Lock()
        self._write = threading.Lock()  # the primary store: one sync, publish or verify
        self._current: Snapshot | None = None
        self._generation = 0
        self._stamp: tuple[int, ...] | None = None
        self._refused: tuple[int, ...] | None = None  # a stamp whose snapshot the guard refused
        self._synced = False  # the next publish follows our own sync (its values were scanned)
        self.guard: Guard | None = None
        self.guard_ready = threading.Event()
        self._posture: PostureSource | None = None
        self._origin: Any = None
        if settings.guard is not None:
            self._make_guard(settings.guard)
        self.sync_state = SyncState()
        self.stop_event = threading.Event()
        self._server: socketserver.ThreadingUnixStreamServer | None = None
        self.ops: dict[str, Callable[[dict[str, Any]], Any]] = {
            "ping": lambda _: {"generation": self._generation},
            "kpis": self.op_kpis,
            "kpi": self.op_kpi,
            "sql": self.op_sql,
            "status": self.op_status,
            "verify": self.op_verify,
            "guard": self.op_guard,
            "health": self.op_health,
            "posture": self.op_posture,
            "incident": self.op_incident,
        }

    # -- snapshots -------------------------------------------------------------------

    def _primary_stamp(self) -> tuple[int, ...]:
        out: list[int] = []
        for p in (
            self.settings.store,
            self.settings.store.with_name(self.settings.store.name + ".wal"),
        ):
            st = p.stat() if p.exists() else None
            out += [st.st_mtime_ns, st.st_size, st.st_ino] if st else [0, 0, 0]
        return tuple(out)

    def publish(self) -> Snapshot | None:
        """Copy the primary store under its shared lock and serve the copy from now on,
        unless the guard finds it unfit (then it is deleted unserved, and None returned)."""
        primary = self.settings.store
        with self._write:
            self._generation += 1
            target = primary.with_name(f"{primary.name}.served-{self._generation}")
            with Store(primary, self.keys, read_only=True):  # no writer while we copy
                stamp = self._primary_stamp()
                _copy(primary, target)
                wal = primary.with_name(primary.name + ".wal")
                if wal.exists():
                    _copy(wal, target.with_name(target.name + ".wal"))
            try:
                store = Store(target, self.keys, read_only=True)
            except BaseException:
                _remove_snapshot_files(target)
                raise
            try:
                tables = frozenset(store.table_names())
                fit, census = self._inspect(store)
                if not fit:  # the guard refused it: never served
                    store.close()
                    _remove_snapshot_files(target)
                    self._refused = stamp
                    return None
                lock_down(store)
            except BaseException:
                store.close()
                _remove_snapshot_files(target)
                raise
            snap = Snapshot(self._generation, target, store, datetime.now(UTC), tables, census)
            self._stamp, self._refused = stamp, None
        with self._swap:
            old, self._current = self._current, snap
            if old is not None:
                old.retired = True
                if old.users == 0:
                    old.close()
        log.info("snapshot %d published", snap.generation)
        return snap

    def _inspect(self, store: Store) -> tuple[bool, Census | None]:
        """The guard's look at a snapshot before it is served: whether it may be, and its
        census (row counts) for the next one. Values are scanned unless our own sync just
        wrote them (it scanned them) with no one else writing in between."""
        if self.guard is None:
            return True, None
        from vigie.guard import inside
        from vigie.guard.service import recorded_policy

        scan, self._synced = not self._synced, False
        before = self._current.census if self._current is not None else None
        results, census = inside.snapshot(store, recorded_policy(store), before, scan)
        self.guard.set("store.snapshot", results)
        return all(r.ok for r in results), census

    def _make_guard(self, ctx: GuardContext) -> None:
        from vigie.audit.log import AuditLog
        from vigie.guard.alerts import Alerter
        from vigie.guard.netns import Origin
        from vigie.guard.runner import Guard
        from vigie.guard.service import PostureSource, build_checks, status_path

        self._posture = PostureSource(ctx, self._recorded_policy)
        self._origin = Origin(ctx.namespace)
        audit = AuditLog(ctx.audit_log)
        self.guard = Guard(build_checks(ctx, self._origin, self._posture),
                           Alerter(ctx.config.alert_urls), audit,
                           status_path(self.settings.store))  # fmt: skip

    def _recorded_policy(self) -> Any:
        from vigie.guard.service import recorded_policy

        with self.view() as (_, view):
            return recorded_policy(view)

    def start_guard(self, web: WebInfo | None) -> None:
        """The guard's first round (data stays closed until it ends), then its loop."""
        if self.guard is None or self.settings.guard is None:
            self.guard_ready.set()
            return
        from vigie.guard.service import web_checks

        if web is not None:
            assert self._posture is not None
            self._posture.web = web
            for check in web_checks(self.settings.guard, web, self._origin):
                self.guard.checks[check.name] = check
        self.guard.run_due(force=True)
        self.guard_ready.set()
        threading.Thread(target=self.guard.loop, args=(self.stop_event,), name="vigie-guard",
                         daemon=True).start()  # fmt: skip

    def closed_because(self) -> list[Result] | None:
        """None when data may be served; else what the guard found (empty: not ready)."""
        if self.guard is None:
            return None
        if not self.guard_ready.is_set():
            return []
        return self.guard.failing() or None

    @contextmanager
    def reading(self) -> Iterator[Snapshot]:
        with self._swap:
            snap = self._current
            if snap is None:
                raise Unavailable("The store has no published snapshot yet.", hint="Retry shortly.")
            snap.users += 1
        try:
            yield snap
        finally:
            with self._swap:
                snap.users -= 1
                if snap.retired and snap.users == 0:
                    snap.close()

    @contextmanager
    def view(self) -> Iterator[tuple[Snapshot, Store]]:
        with self.reading() as snap:
            view = snap.store.cursor_view()
            try:
                yield snap, view
            finally:
                view.con.close()

    # -- ops -------------------------------------------------------------------------

    def op_kpis(self, _: dict[str, Any]) -> Any:
        return {
            "k": self.metrics.min_users,
            "kpis": [
                {"name": k.name, "description": k.description, "fact": k.fact.name,
                 "dimensions": list(k.fact.dimensions),
                 "integer": k.integer}
                for k in self.metrics.kpis.values()
            ],
        }  # fmt: skip

    def op_kpi(self, args: dict[str, Any]) -> Any:
        name = _text(args, "name", 100)
        if name not in self.metrics.kpis:
            raise NotFound(f"No KPI named '{name}'.", hint="GET /api/kpis lists them.")
        where = args.get("where") or []
        if not isinstance(where, list) or len(where) > 4:
            raise UsageError("where takes at most 4 DIM=VALUE items.")
        query = parse_query(name, _text(args, "by", 200), _opt(args, "from"), _opt(args, "to"),
                            _text(args, "grain", 10) or "day",
                            [str(w)[:200] for w in where])  # fmt: skip
        key = repr(query)
        with self.reading() as snap:
            with snap.lock:
                if key in snap.cache:
                    snap.cache.move_to_end(key)
                    return snap.cache[key]
            view = snap.store.cursor_view()
            try:
                result = run_kpi(view, self.metrics, default_range(view, self.metrics, query))
            finally:
                view.con.close()
            body = result_json(result, self.metrics, snap.generation)
            answer = RawJson(json.dumps(body, separators=(",", ":"), default=str).encode(),
                             len(body["cells"]))  # fmt: skip
            with snap.lock:  # answers are the snapshot's: the same until the next one
                snap.cache[key] = answer
                if len(snap.cache) > 512:
                    snap.cache.popitem(last=False)
            return answer

    def op_sql(self, args: dict[str, Any]) -> Any:
        sql = _text(args, "sql", 20_000)
        max_rows = args.get("max_rows") or self.settings.sql_max_rows
        if not isinstance(max_rows, int) or not 1 <= max_rows <= 100_000:
            raise UsageError("max_rows must be an integer from 1 to 100000.")
        timeout = self.settings.sql_timeout
        with self.view() as (snap, view):
            check_statement(sql, set(snap.tables))
            answer = run_statement(view.con, sql, max_rows=max_rows, timeout=timeout)
        return {"columns": answer.columns, "rows": answer.rows, "truncated": answer.truncated,
                "max_rows": max_rows, "generation": snap.generation}  # fmt: skip

    def op_status(self, _: dict[str, Any]) -> Any:
        with self.view() as (snap, view):
            runs = view.rows(
                "SELECT run_id, started_at, finished_at, status, message FROM _vigie.runs "
                "ORDER BY run_id DESC LIMIT 10"
            )
            rollups = view.rows(
                f"SELECT name, run_id, built_at FROM {ROLLUPS}.registry ORDER BY name"
            ) if has_registry(view) else []  # fmt: skip
        s = self.sync_state
        return {
            "snapshot": {"generation": snap.generation, "published_at": snap.published_at},
            "runs": [dict(zip(("run_id", "started_at", "finished_at", "status", "message"), r,
                              strict=True)) for r in runs],
            "rollups": [{"name": n, "run_id": r, "built_at": b} for n, r, b in rollups],
            "sync": {"scheduled": self.settings.every, "running": s.running,
                     "last_started": s.last_started, "last_finished": s.last_finished,
                     "last_error": s.last_error, "next_at": s.next_at, "runs": s.runs},
        }  # fmt: skip

    def op_verify(self, args: dict[str, Any]) -> Any:
        policy = parse_policy(
            _text(args, "policy_text", 1_000_000), Path(_text(args, "policy_name", 500))
        )
        with self._write:
            found = verify_store(self.settings.store, policy, self.keys)
        return [
            {"check": f.check, "where": f.where, "problem": f.problem, "fix": f.fix} for f in found
        ]

    def op_guard(self, args: dict[str, Any]) -> Any:
        if self.guard is None:
            raise NotFound("This server runs without a guard.")
        if args.get("run"):
            self.guard.run_due(force=True)
        return self.guard.status()

    def op_health(self, _: dict[str, Any]) -> Any:
        """For /healthz (public): open or closed, and the names of the failing checks."""
        closed = self.closed_because()
        if closed is None:
            return {"status": "ok"}
        names = sorted({r.key.split("[")[0] for r in closed}) or ["guard starting"]
        return {"status": "closed", "failing": names}

    def op_posture(self, _: dict[str, Any]) -> Any:
        if self._posture is None:
            raise NotFound("This server runs without a guard.")
        return self._posture.current()

    def op_incident(self, args: dict[str, Any]) -> Any:
        """The exposure report of a window, from the served snapshot and the audit log
        (for responders; the guard's closing of the data does not apply: it is how an
        incident is answered)."""
        from vigie.incident.render import RENDER
        from vigie.incident.report import build_report

        start, end = _window(_text(args, "from", 40), _text(args, "to", 40))
        fmt = _text(args, "format", 10) or "json"
        if fmt not in RENDER:
            raise UsageError("format must be md, json or html.")
        audit = self.settings.guard.audit_log if self.settings.guard else None
        with self.view() as (_, view):
            report = build_report(view, start, end, audit, str(self.settings.store))
        if fmt == "json":
            return {"report": report.to_json()}
        return {"text": RENDER[fmt](report)}

    # -- the sync schedule -----------------------------------------------------------

    def sync_once(self) -> None:
        assert self.settings.sync is not None
        s = self.sync_state
        if (lowered := self._unapproved()) is not None:
            s.last_error = f"sync skipped: {lowered}"
            log.warning("sync skipped: %s", lowered)
            return
        if self._written_since_published():
            self.publish()  # written behind our back: the guard looks now, not after a sync
        s.running, s.last_started = True, datetime.now(UTC)
        untouched = self._primary_stamp() == self._stamp  # nobody wrote since we published
        try:
            with self._write, SyncService(self.settings.sync, self.keys) as service:
                report = service.run_once()
            s.last_error = "; ".join(f.message for f in report.failed) or None
        except VigieError as exc:
            s.last_error = exc.message
            log.warning("sync failed: %s", exc.message)
        finally:
            s.running, s.last_finished, s.runs = False, datetime.now(UTC), s.runs + 1
        self._synced = untouched  # else the store was changed behind our back: scan it all
        self.publish()

    def _written_since_published(self) -> bool:
        """Whether, under a guard, a store we published was changed by someone else since
        (not a store yet to be made by the first sync, nor one never published)."""
        if self.guard is None or self._stamp is None or not self.settings.store.exists():
            return False
        return self._primary_stamp() not in (self._stamp, self._refused)

    def _unapproved(self) -> str | None:
        """Why the policy in force may not be synced (lowered without approval), or None."""
        if self.settings.guard is None or self._posture is None:
            return None
        from vigie.guard.service import posture_verdict

        verdict = posture_verdict(self.settings.guard, self._posture)
        return verdict.result.reason if verdict.lowered else None

    def _schedule(self, first_wait: float) -> None:
        """Scheduled syncs (start to start), and between them, every ``watch`` seconds, a
        look for a store changed by someone else: a `vigie sync` elsewhere, or a write
        behind vigie's back, which the guard then inspects before it is served."""
        every = self.settings.every if self.settings.sync is not None else None
        next_sync = time.monotonic() + first_wait if every else None
        while True:
            if next_sync is not None:
                left = max(0.0, next_sync - time.monotonic())
                self.sync_state.next_at = datetime.now(UTC) + timedelta(seconds=left)
            wait = self.settings.watch if next_sync is None else min(self.settings.watch, left)
            if self.stop_event.wait(wait):
                return
            try:
                if next_sync is not None and every and time.monotonic() >= next_sync:
                    next_sync = time.monotonic() + every
                    self.sync_once()
                elif self._primary_stamp() not in (self._stamp, self._refused):
                    self.publish()  # someone else synced the store, or wrote behind our back
            except VigieError as exc:
                log.warning("could not publish a snapshot: %s", exc.message)

    # -- the socket ------------------------------------------------------------------

    def handle(self, line: bytes) -> bytes:
        try:
            try:
                request = json.loads(line)
            except ValueError:
                raise UsageError("A request must be one JSON object per line.") from None
            op = request.get("op") if isinstance(request, dict) else None
            if op not in self.ops:
                raise Forbidden(f"The data service has no op '{str(op)[:40]}'.")
            args = request.get("args") or {}
            if not isinstance(args, dict):
                raise UsageError("args must be an object.")
            if op in DATA_OPS and (closed := self.closed_because()) is not None:
                raise GuardClosed(closed)
            result = self.ops[op](args)
            if isinstance(result, RawJson):  # encoded once per snapshot, sent as is
                return protocol.raw_line(result.body, result.rows)
            return protocol.encode({"ok": True, "result": result})
        except VigieError as exc:
            return protocol.encode({"ok": False, "error": protocol.error_to_wire(exc)})
        except Exception:  # never a traceback to the client; the operator's log has it
            log.exception("internal error in the data service")
            return protocol.encode({"ok": False, "error": {
                "kind": "internal", "message": "The data service failed on this request.",
                "hint": "The service's log has the details."}})  # fmt: skip

    def serving_state(self) -> str | None:
        """What KPI answers depend on: the snapshot's generation while data may be served,
        None while the guard keeps it closed (or no snapshot is published)."""
        with self._swap:
            snap = self._current
        if snap is None or self.closed_because() is not None:
            return None
        return f"g{snap.generation}"

    def watch(self, out: Any) -> None:
        """Stream ``serving_state`` to the web process: one line at once, one at every change
        (looked at every ``WATCH_POLL`` s) and a heartbeat every second. The web process
        keeps KPI answers only while the line it last read says they hold."""
        last, beat = b"", 0.0
        while not self.stop_event.is_set():
            state = self.serving_state()
            line = protocol.encode({"state": state})
            if line != last or time.monotonic() - beat >= 1.0:
                try:
                    out.write(line)
                    out.flush()
                except OSError:
                    return
                last, beat = line, time.monotonic()
            self.stop_event.wait(WATCH_POLL)

    def start(self) -> None:
        """Publish the first snapshot (after a first sync when one is scheduled or the
        store does not exist yet), then listen on the socket and start the schedule: the
        socket exists only once there is something to answer from."""
        os.umask(0o077)
        if self.socket.exists():
            if protocol.running(self.settings.store):
                raise StoreError(f"A data service already runs for {self.settings.store}.",
                                 hint="Stop the other `vigie serve` first.")  # fmt: skip
            self.socket.unlink()
        remove_stale_snapshots(self.settings.store)
        sync, every = self.settings.sync, self.settings.every
        if sync is not None and (every or not self.settings.store.exists()):
            self.sync_once()
        else:
            self.publish()
        service = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                while line := self.rfile.readline(protocol.MAX_LINE):
                    if line.strip() == protocol.WATCH:
                        service.watch(self.wfile)
                        return
                    self.wfile.write(service.handle(line))
                    self.wfile.flush()

        self._server = _SocketServer(str(self.socket), Handler)
        self.socket.chmod(0o600)
        threading.Thread(
            target=self._server.serve_forever, name="vigie-socket", daemon=True
        ).start()
        threading.Thread(target=self._schedule, args=(every or self.settings.watch,),
                         name="vigie-schedule", daemon=True).start()  # fmt: skip

    def stop(self) -> None:
        self.stop_event.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self.guard is not None:
            if self.guard.alerter is not None:
                self.guard.alerter.close()
            if self.guard.audit is not None:
                self.guard.audit.close()
        if self._origin is not None:
            self._origin.close()
        self.socket.unlink(missing_ok=True)
        with self._write, self._swap:
            if self._current is not None:
                self._current.retired = True
                if self._current.users == 0:
                    self._current.close()
                self._current = None


@dataclass(frozen=True)
class RawJson:
    """An op's result already encoded as JSON (a cached KPI answer), and its rows."""

    body: bytes
    rows: int


class _SocketServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    # socketserver's default backlog of 5 refused some of the web process's pooled
    # connections when a burst opened them at once (a 503 under load)
    request_queue_size = 128


def result_json(result: KpiResult, metrics: Metrics, generation: int) -> dict[str, Any]:
    q = result.query
    kpi = metrics.kpis[q.kpi]
    return {
        "kpi": q.kpi, "description": kpi.description, "k": result.k, "grain": q.grain,
        "by": list(q.by), "where": [list(w) for w in q.where],
        "from": q.start, "to": q.end, "until": result.until,
        "integer": kpi.integer,
        "rollup": result.rollup, "seconds": result.seconds, "generation": generation,
        "cells": [
            {"period": c.period.isoformat(sep=" ")[: 16 if q.grain == "hour" else 10],
             "dims": [None if d is None else str(d) for d in c.dims] if not c.is_total else [],
             "total": c.is_total, "value": c.shown, "suppressed": c.suppressed}
            for c in result.cells
        ],
    }  # fmt: skip


def _copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + ".partial")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with src.open("rb") as fin, os.fdopen(fd, "wb") as fout:
        shutil.copyfileobj(fin, fout, 16 << 20)
        fout.flush()
    tmp.replace(dst)


def _text(args: dict[str, Any], name: str, limit: int) -> str:
    value = args.get(name) or ""
    if not isinstance(value, str) or len(value) > limit:
        raise UsageError(f"{name} must be text of at most {limit} characters.")
    return value


def _window(start: str, end: str) -> tuple[datetime, datetime]:
    try:
        t1, t2 = (datetime.fromisoformat(t.replace("Z", "+00:00")) for t in (start, end))
    except ValueError:
        raise UsageError("from and to must be ISO dates or times (UTC).") from None
    t1, t2 = (t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo else t for t in (t1, t2))
    if t2 <= t1:
        raise UsageError("to must come after from.")
    return t1, t2


def _opt(args: dict[str, Any], name: str) -> str | None:
    return _text(args, name, 40) or None


def _remove_snapshot_files(path: Path) -> None:
    for p in (path, path.with_name(path.name + ".wal"), path.with_name(path.name + ".partial")):
        p.unlink(missing_ok=True)
    shutil.rmtree(path.with_name(path.name + ".tmp"), ignore_errors=True)


def remove_stale_snapshots(store: Path) -> None:
    """Snapshots left by a server that was killed: stale copies of the store (they may hold
    what a tightened policy has since removed), deleted before serving."""
    for path in store.parent.glob(glob.escape(store.name) + ".served-*"):
        if path.is_dir():  # a snapshot's spill folder
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

"""The sync as a service: a run, then the KPI rollups; or runs on a schedule.

The CLI (``vigie sync``) and, next, the server host this; they only render what it
reports (``Listener``). Retry rules of ``run_every``: a run that fails for a reason of
production or of the policy (server down, unclassified column, drift, content-scan hit)
copies nothing more and is reported; the next run tries again, with the policy file read
again. Store and key errors stop the loop (``VigieError.transient`` is not enough here: a
policy error is fixed by a person between two runs, so it is retried too).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Protocol

from vigie.db.dsn import Dsn
from vigie.errors import ConnectionFailed, PolicyError, SyncError, UsageError, VigieError
from vigie.keys import Keys
from vigie.kpi.engine import refresh_rollups
from vigie.kpi.load import MetricsError, load_metrics
from vigie.kpi.protect import ProtectionError
from vigie.sync.converge import PolicyChanges
from vigie.sync.run import VERIFY_ROWS_EVERY, Syncer, SyncReport
from vigie.sync.state import Progress

RETRIED = (ConnectionFailed, PolicyError, SyncError)


@dataclass(frozen=True)
class Rollups:
    """What the rollup refresh after a run did: built (name → seconds) or why not."""

    built: dict[str, float]
    seconds: float
    skipped: str | None = None


class Listener(Protocol):
    """What a host shows of the service's work."""

    def progress(self) -> AbstractContextManager[Progress | None]: ...
    def changes(self, changes: PolicyChanges) -> None: ...
    def report(self, report: SyncReport) -> None: ...
    def rollups(self, rollups: Rollups) -> None: ...
    def failed(self, error: VigieError) -> None: ...
    def waiting(self, seconds: float) -> None: ...


class Quiet:
    """A listener that shows nothing (tests, hosts that read the reports)."""

    def progress(self) -> AbstractContextManager[Progress | None]:
        return nullcontext()

    def changes(self, changes: PolicyChanges) -> None:
        return None

    def report(self, report: SyncReport) -> None:
        return None

    def rollups(self, rollups: Rollups) -> None:
        return None

    def failed(self, error: VigieError) -> None:
        return None

    def waiting(self, seconds: float) -> None:
        return None


@dataclass(frozen=True)
class SyncSettings:
    dsn: Dsn
    policy: Path
    store: Path
    batch_rows: int = 500_000
    metrics: Path | None = None
    rollups: bool = True
    verify_every: timedelta | None = VERIFY_ROWS_EVERY  # see ``TableSync.verify_rows``
    rebuild: tuple[str, ...] = ()  # tables (or "all") loaded again by the first run


class SyncService:
    """One store, kept open across runs (``Syncer``), synced from one production."""

    def __init__(self, settings: SyncSettings, keys: Keys, listener: Listener | None = None):
        if settings.batch_rows < 1:
            raise UsageError(f"--batch-rows must be at least 1, got {settings.batch_rows}.")
        self.settings, self.keys = settings, keys
        self.listener: Listener = listener or Quiet()
        self.syncer = Syncer(settings.store, keys, settings.verify_every)
        self._rebuild = settings.rebuild

    def __enter__(self) -> SyncService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.syncer.close()

    def run_once(self) -> SyncReport:
        """One sync run, then (when it stopped no table) the KPI rollups."""
        s = self.settings
        with self.listener.progress() as progress:
            report = self.syncer.run(
                s.dsn, s.policy, progress=progress, batch_rows=s.batch_rows,
                announce=self.listener.changes, rebuild=self._rebuild,
            )  # fmt: skip
        self._rebuild = ()  # the first run only
        self.listener.report(report)
        if s.rollups and not report.failed:
            self.listener.rollups(self.refresh_rollups())
        return report

    def refresh_rollups(self) -> Rollups:
        """Rebuild the KPI rollups; a store the metrics do not fit keeps none."""
        started = time.perf_counter()
        try:
            built = refresh_rollups(self.syncer.store, load_metrics(self.settings.metrics))
        except (UsageError, MetricsError, ProtectionError) as exc:
            # the metrics do not fit this store, or no pattern protects it: the data is
            # synced; KPIs are answered from the tables, or refused (fail closed)
            return Rollups({}, time.perf_counter() - started, exc.message)
        return Rollups(built, time.perf_counter() - started)

    def run_every(
        self, interval: float, runs: int | None = None, stop: threading.Event | None = None
    ) -> Iterator[SyncReport | VigieError]:
        """Run after run, one every ``interval`` seconds (start to start), until ``runs``
        are done or ``stop`` is set (the current run finishes first). Yields each run's
        report, or the error of a run that failed and will be retried."""
        stop = stop or threading.Event()
        done = 0
        while not stop.is_set():
            started = time.monotonic()
            try:
                report = self.run_once()
                for failed in report.failed:
                    self.listener.failed(SyncError(failed.message))
                yield report
            except RETRIED as exc:
                self.listener.failed(exc)
                yield exc
            done += 1
            if runs is not None and done >= runs:
                return
            wait = max(0.0, interval - (time.monotonic() - started))
            self.listener.waiting(wait)
            stop.wait(wait)

"""The guard loop: runs each check when it is due, keeps the last results, and on a change
of verdict alerts and writes the audit log. ``failing()`` is what the data service asks
before answering anything: any FAIL or UNKNOWN closes the data routes."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vigie.audit.log import AuditLog
from vigie.errors import AuditError, VigieError
from vigie.guard.alerts import Alerter
from vigie.guard.model import Result, unknown

log = logging.getLogger("vigie.guard")


@dataclass(frozen=True)
class Check:
    name: str
    every: float  # seconds
    run: Callable[[], list[Result]]


class Guard:
    def __init__(
        self,
        checks: list[Check],
        alerter: Alerter | None = None,
        audit: AuditLog | None = None,
        status_file: Path | None = None,
    ) -> None:
        self.checks = {c.name: c for c in checks}
        self.alerter, self.audit, self.status_file = alerter, audit, status_file
        self._results: dict[str, list[Result]] = {}
        self._due: dict[str, float] = {}
        self._lock = threading.Lock()
        self._failing_keys: set[str] = set()
        self.since: datetime | None = None  # when the current FAIL started

    # -- results ---------------------------------------------------------------------

    def results(self) -> list[Result]:
        with self._lock:
            return [r for rs in self._results.values() for r in rs]

    def failing(self) -> list[Result]:
        return [r for r in self.results() if not r.ok]

    def set(self, name: str, results: list[Result]) -> None:
        """Record a check's results (from the loop, or from a snapshot about to be served)."""
        with self._lock:
            self._results[name] = results
        self._after_change()

    def run_check(self, check: Check) -> list[Result]:
        started = time.monotonic()
        try:
            results = check.run()
        except VigieError as exc:
            results = [unknown(check.name, exc.message, exc.hint or "See the guard's log.")]
        except Exception as exc:
            log.exception("guard check %s failed", check.name)
            results = [
                unknown(
                    check.name,
                    f"the check itself failed: {type(exc).__name__}",
                    "See the guard's log.",
                )
            ]
        spent = round(time.monotonic() - started, 3)
        return [r if r.seconds else _with_seconds(r, spent) for r in results]

    def run_due(self, force: bool = False) -> None:
        now = time.monotonic()
        for check in list(self.checks.values()):
            if force or now >= self._due.get(check.name, 0.0):
                self._due[check.name] = now + check.every
                self.set(check.name, self.run_check(check))

    def loop(self, stop: threading.Event, tick: float = 0.25) -> None:
        while not stop.is_set():
            self.run_due()
            stop.wait(tick)

    # -- transitions -----------------------------------------------------------------

    def _after_change(self) -> None:
        failing = self.failing()
        keys = {r.key for r in failing}
        with self._lock:
            new, was = keys - self._failing_keys, self._failing_keys
            self._failing_keys = keys
        if new:
            self.since = self.since or datetime.now(UTC)
            fresh = [r for r in failing if r.key in new]
            self._event("guard.fail", fresh)
        elif was and not keys:
            self.since = None
            self._event("guard.pass", [])
        self._write_status()

    def _event(self, what: str, results: list[Result]) -> None:
        if what == "guard.fail":
            title = f"vigie guard: FAIL ({', '.join(r.key for r in results)}): data closed"
            body = "\n".join(f"{r.status} {r.key}: {r.reason} → {r.fix}" for r in results)
        else:
            title, body = "vigie guard: every check passes again", "Serving resumed."
        log.warning("%s", title)
        if self.alerter is not None:
            self.alerter.send(title, body)
        if self.audit is not None:
            try:
                self.audit.append(
                    actor="vigie-guard",
                    role="guard",
                    method="GUARD",
                    path=what,
                    route=None,
                    params={"checks": [r.key for r in results]},
                    status=503 if results else 200,
                    rows=None,
                    kind="unavailable" if results else None,
                    reason="; ".join(r.reason for r in results)[:1000] or None,
                    client=None,
                )
            except AuditError as exc:
                log.error("the guard could not write the audit log: %s", exc.message)

    def status(self) -> dict[str, Any]:
        results = self.results()
        return {
            "ok": all(r.ok for r in results) and bool(results),
            "failing_since": self.since.isoformat() if self.since else None,
            "checks": [r.to_json() for r in sorted(results, key=lambda r: r.key)],
        }

    def _write_status(self) -> None:
        if self.status_file is None:
            return
        self.status_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.status_file.with_name(f".{self.status_file.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(self.status(), fh, default=str)
        tmp.replace(self.status_file)


def _with_seconds(r: Result, seconds: float) -> Result:
    from dataclasses import replace

    return replace(r, seconds=seconds)

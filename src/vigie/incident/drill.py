"""`vigie incident drill`: the whole story on a scratch copy, so a responder rehearses it.

A small fleet in SQLite is synced into a scratch store; an admin approves the posture; the
data service and its guard start; protection is lowered (the store made readable by
others); the guard catches it and closes the data; protection is restored; then the
exposure report for that window, the notify list, and the rotation playbook run for real
on the scratch production. Every stage is timed; nothing outside the scratch folder is
touched.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any


@dataclass
class Timeline:
    stages: list[tuple[str, float, str]] = field(default_factory=list)

    def run(self, name: str, fn: Callable[[], Any], note: Callable[[Any], str] = str) -> Any:
        started = time.monotonic()
        value = fn()
        self.stages.append((name, time.monotonic() - started, note(value) if value else ""))
        return value


def run_drill(
    workdir: Path,
    playbook: Path,
    policy: Path,
    users: int = 2000,
    on_stage: Callable[[str], None] = lambda _: None,
) -> tuple[Timeline, dict[str, Path]]:
    from vigie.access.decide import Role
    from vigie.access.keys import AccessFile, parse_duration
    from vigie.audit.log import AuditLog
    from vigie.db.dsn import parse_dsn
    from vigie.fleet.build import generate_fleet
    from vigie.fleet.generate import FleetSpec
    from vigie.guard.approvals import approvals_path, approve
    from vigie.guard.config import GuardConfig
    from vigie.guard.service import GuardContext, PostureSource, recorded_from_file
    from vigie.incident.notify import notify_list
    from vigie.incident.render import to_markdown
    from vigie.incident.report import build_report
    from vigie.incident.rotate import Rotation, load_playbook, state_path
    from vigie.keys import init_keyfile, load_keys
    from vigie.serve.data import DataService, DataSettings
    from vigie.stores.duckdb_store import Store
    from vigie.sync.run import sync

    workdir.mkdir(mode=0o700, parents=True, exist_ok=False)
    t = Timeline()
    dsn = parse_dsn(f"sqlite:///{workdir / 'production.db'}")
    store = workdir / "store" / "vigie.duckdb"
    audit_log = store.parent / "audit" / "audit.log"
    on_stage("a scratch fleet and its store")
    t.run(
        "generate a scratch fleet",
        lambda: generate_fleet(dsn, FleetSpec(users=users, days=2, seed=7)).total_rows,
        lambda n: f"{n:,} rows",
    )
    init_keyfile(workdir / "keys")
    keys = load_keys(workdir / "keys")
    t.run(
        "protected sync",
        lambda: sync(dsn, policy, store, keys),
        lambda r: f"{len(r.tables)} tables",
    )
    access = AccessFile(store.parent / "access.json")
    admin = access.create("drill-admin", Role.ADMIN, parse_duration("1d"))
    ctx = GuardContext(
        store, keys, access.path, audit_log, GuardConfig(local_every=1.0), namespace=False
    )
    posture = PostureSource(ctx, lambda: recorded_from_file(ctx)).current()
    approve(approvals_path(store), access, admin, posture)
    AuditLog(audit_log).close()
    service = DataService(DataSettings(store, guard=ctx), keys)
    on_stage("the data service and its guard")

    def start() -> None:
        service.start()
        service.start_guard(None)

    t.run("serve with the guard (first round)", start)
    assert service.guard is not None
    files = {"report": workdir / "report.md", "notify": workdir / "notify.csv"}
    try:
        on_stage("protection lowered: the store made readable by others")
        opened = datetime.now(UTC) - timedelta(seconds=1)
        store.chmod(0o644)
        t.run(
            "the guard catches it and closes the data",
            lambda: _until(lambda: service.closed_because()),
            lambda r: r[0].key,
        )
        store.chmod(0o600)
        t.run(
            "protection restored, the guard reopens",
            lambda: _until(lambda: service.closed_because() is None) and "open",
        )
        closed = datetime.now(UTC) + timedelta(seconds=1)
    finally:
        service.stop()
    on_stage("the report, the notify list, the playbook")
    with Store(store, keys, read_only=True) as s:
        report = t.run(
            "exposure report",
            lambda: build_report(s, opened, closed, audit_log, str(store)),
            lambda r: f"{sum(x.present for x in r.tables):,} rows, {r.users:,} users",
        )
        files["report"].write_text(to_markdown(report))
        t.run(
            "notify list",
            lambda: notify_list(s, keys, dsn, opened, closed, files["notify"]),
            lambda r: f"{r.users:,} users",
        )
    log = AuditLog(audit_log)
    try:
        rotation = Rotation(
            load_playbook(playbook), dsn, access, state_path(store), log, store, workdir / "keys"
        )
        t.run(
            "rotation playbook (executed)",
            lambda: rotation.run(execute=True),
            lambda rs: ", ".join(f"{r.step} {r.changed:,}" for r in rs),
        )
    finally:
        log.close()
    from vigie.incident.rekey import rotate_pseudonym_key

    t.run(
        "rotate the pseudonymization key",
        lambda: rotate_pseudonym_key(store, workdir / "keys", dsn),
        lambda r: f"{r.rewritten:,} pseudonyms rewritten",
    )
    return t, files


def _until(condition: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError("the drill waited 30 s for the guard")

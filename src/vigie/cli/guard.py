"""`vigie guard check|run|status|approve`."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from vigie.cli.render import Table, console
from vigie.errors import GuardClosed, UsageError

app = typer.Typer(help="The guard: posture checks, outside-in probes, approvals.")

StoreOpt = Annotated[Path, typer.Option("--store", help="The store file.")]
PolicyOpt = Annotated[
    Path | None, typer.Option(help="The policy in force (default: the store's recorded one).")
]
KeyfileOpt = Annotated[Path | None, typer.Option(help="Keyfile (else VIGIE_KEYFILE, ...).")]
ConfigOpt = Annotated[
    Path | None, typer.Option(help="Guard settings (default: guard.yaml beside the store).")
]
NamespaceOpt = Annotated[
    bool, typer.Option(help="Probe from a network namespace of the guard's own (needs root).")
]


def _context(
    store: Path,
    policy: Path | None,
    keyfile: Path | None,
    config: Path | None,
    namespace: bool = True,
) -> Any:
    from vigie.cli.serve import default_access, default_audit, default_guard_config
    from vigie.guard.config import load_config
    from vigie.guard.service import GuardContext
    from vigie.keys import load_keys

    cfg = load_config(config or default_guard_config(store))
    return GuardContext(
        store,
        load_keys(keyfile),
        default_access(store),
        default_audit(store),
        cfg,
        policy,
        namespace=namespace,
    )


def _local_guard(ctx: Any, *, alerts: bool = False) -> Any:
    from vigie.audit.log import AuditLog
    from vigie.guard.alerts import Alerter
    from vigie.guard.netns import Origin
    from vigie.guard.runner import Guard
    from vigie.guard.service import (
        PostureSource,
        build_checks,
        recorded_from_file,
        status_path,
        store_check,
    )

    source = PostureSource(ctx, lambda: recorded_from_file(ctx))
    origin = Origin(ctx.namespace)
    checks = [store_check(ctx, source), *build_checks(ctx, origin, source)]
    if not alerts:
        return Guard(checks, status_file=status_path(ctx.store)), origin
    audit = AuditLog(ctx.audit_log) if ctx.audit_log.parent.exists() else None
    return Guard(checks, Alerter(ctx.config.alert_urls), audit, status_path(ctx.store)), origin


@app.command("check")
def check(
    store: StoreOpt,
    policy: PolicyOpt = None,
    keyfile: KeyfileOpt = None,
    guard_config: ConfigOpt = None,
    namespace: NamespaceOpt = True,
) -> None:
    """Run every check once; exit 0 only if all pass (for cron and CI). Asks the running
    `vigie serve` when there is one."""
    from vigie.serve.protocol import ask, running, socket_path

    if running(store):
        status = ask(socket_path(store), "guard", {"run": True})
    else:
        guard, origin = _local_guard(_context(store, policy, keyfile, guard_config, namespace))
        try:
            guard.run_due(force=True)
        finally:
            origin.close()
        status = guard.status()
    render(status)
    _exit_on_fail(status)


def _exit_on_fail(status: dict[str, Any]) -> None:
    bad = [c for c in status["checks"] if c["status"] != "PASS"]
    if bad:
        from vigie.guard.model import Result, Status

        raise GuardClosed(
            [
                Result(c["check"], Status(c["status"]), c["reason"], c["fix"], c["target"])
                for c in bad
            ]
        )


@app.command("run")
def run(
    store: StoreOpt,
    policy: PolicyOpt = None,
    keyfile: KeyfileOpt = None,
    guard_config: ConfigOpt = None,
    namespace: NamespaceOpt = True,
) -> None:
    """The guard loop for a store that is not served: alerts and audit entries on every
    change of verdict; Ctrl-C stops it."""
    ctx = _context(store, policy, keyfile, guard_config, namespace)
    guard, origin = _local_guard(ctx, alerts=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    console.print(
        f"vigie guard watches {store} (local checks every {ctx.config.local_every:g}s, "
        f"probes every {ctx.config.probe_every:g}s; Ctrl-C stops)."
    )
    shown: str | None = None
    try:
        while not stop.is_set():
            guard.run_due()
            failing = sorted(r.key for r in guard.failing())
            now = "PASS" if not failing else "FAIL " + ", ".join(failing)
            if now != shown:
                console.print(f"[{'green' if not failing else 'red'}]{now}[/]", highlight=False)
                shown = now
            stop.wait(0.25)
    finally:
        origin.close()
        if guard.alerter is not None:
            guard.alerter.close()


@app.command("status")
def status(store: StoreOpt) -> None:
    """Each check, its last result and when: from the running server or `vigie guard run`."""
    import json

    from vigie.guard.service import status_path
    from vigie.serve.protocol import ask, running, socket_path

    if running(store):
        answer = ask(socket_path(store), "guard")
    elif status_path(store).exists():
        answer = json.loads(status_path(store).read_text())
        console.print(f"(from {status_path(store)}: no server runs for this store)")
    else:
        raise UsageError(
            f"No guard has run for {store}.", hint="Run `vigie guard check` or `vigie serve`."
        )
    render(answer)
    _exit_on_fail(answer)


@app.command("approve")
def approve(
    store: StoreOpt,
    policy: PolicyOpt = None,
    keyfile: KeyfileOpt = None,
    guard_config: ConfigOpt = None,
) -> None:
    """Sign the security posture in force with your admin key (VIGIE_ADMIN_KEY, or asked).
    A posture that lowers security needs two different admins."""
    from vigie.access.keys import AccessFile
    from vigie.audit.log import AuditLog
    from vigie.cli.serve import default_access, default_audit
    from vigie.guard.approvals import approvals_path
    from vigie.guard.approvals import approve as sign_posture
    from vigie.serve.protocol import ask, running, socket_path

    key = os.environ.get("VIGIE_ADMIN_KEY") or typer.prompt("Admin API key", hide_input=True)
    if running(store):
        posture = ask(socket_path(store), "posture")
    else:
        from vigie.guard.service import PostureSource, recorded_from_file

        ctx = _context(store, policy, keyfile, guard_config)
        posture = PostureSource(ctx, lambda: recorded_from_file(ctx)).current()
    outcome = sign_posture(approvals_path(store), AccessFile(default_access(store)), key, posture)
    for change in outcome.changes:
        mark = "[red]lowers[/]" if change.lowers else "ok"
        console.print(f"  {mark} {change}", highlight=False)
    audit = AuditLog(default_audit(store))
    try:
        audit.append(
            actor=outcome.signers[-1] if outcome.signers else None,
            role="admin",
            method="CLI",
            path="guard.approve",
            route=None,
            params={"changes": [str(c) for c in outcome.changes][:50]},
            status=200,
            rows=None,
            kind=None,
            reason="approved" if outcome.approved else "pending",
            client=None,
        )
    finally:
        audit.close()
    if outcome.approved:
        console.print(f"Approved by {', '.join(outcome.signers)}: this posture is the baseline.")
    else:
        console.print(
            f"Recorded ({', '.join(outcome.signers)}); it lowers security, so "
            f"{outcome.needed} different admins must approve it."
        )


def render(status: dict[str, Any]) -> None:
    table = Table(title="vigie guard")
    for col in ("check", "target", "status", "reason", "fix", "at"):
        table.add_column(col, overflow="fold")
    colour = {"PASS": "green", "FAIL": "red", "UNKNOWN": "yellow"}
    for c in status["checks"]:
        table.add_row(
            c["check"],
            c["target"],
            Text(c["status"], style=colour[c["status"]]),
            c["reason"],
            c["fix"],
            str(c["at"])[11:19],
        )
    console.print(table)

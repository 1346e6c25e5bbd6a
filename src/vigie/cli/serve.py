"""`vigie serve`, `vigie access ...` and `vigie audit verify`."""

from __future__ import annotations

import signal
import subprocess
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from vigie.access.decide import Role
from vigie.cli.render import Table, console
from vigie.errors import AuditError, Unavailable, UsageError

if TYPE_CHECKING:
    from vigie.access.keys import AccessFile

access_app = typer.Typer(help="API keys and roles for `vigie serve` (hashed, expiring).")
audit_app = typer.Typer(help="The audit log of `vigie serve`.")

StoreOpt = Annotated[Path, typer.Option("--store", help="The store file.")]
AccessOpt = Annotated[
    Path | None, typer.Option("--access", help="Access file (default: beside the store).")
]


def default_access(store: Path) -> Path:
    return store.parent / "access.json"


def default_audit(store: Path) -> Path:
    return store.parent / "audit" / "audit.log"


def default_guard_config(store: Path) -> Path | None:
    path = store.parent / "guard.yaml"
    return path if path.exists() else None


def _access(store: Path | None, access: Path | None) -> AccessFile:
    from vigie.access.keys import AccessFile

    if access is None and store is None:
        raise UsageError("Give --store (the access file is beside it) or --access FILE.")
    return AccessFile(access or default_access(store))  # type: ignore[arg-type]


def serve(
    store: StoreOpt,
    keyfile: Annotated[Path | None, typer.Option(help="Keyfile (else VIGIE_KEYFILE, ...).")] = None,
    sync_from: Annotated[str | None, typer.Option("--sync-from", help="Production DSN.")] = None,
    policy: Annotated[Path | None, typer.Option(help="The policy (with --sync-from).")] = None,
    every: Annotated[
        str | None, typer.Option(help="Sync every DURATION (with --sync-from).")
    ] = None,
    host: Annotated[
        str, typer.Option(help="Address to bind; not loopback needs TLS.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8321,
    tls_cert: Annotated[Path | None, typer.Option(help="TLS certificate (PEM).")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="TLS private key (PEM).")] = None,
    access: AccessOpt = None,
    audit_log: Annotated[
        Path | None, typer.Option(help="Audit log (default: beside the store).")
    ] = None,
    metrics: Annotated[Path | None, typer.Option(help="The operator's metrics file.")] = None,
    guard_config: Annotated[
        Path | None,
        typer.Option(help="The guard's settings (default: guard.yaml beside the store)."),
    ] = None,
) -> None:
    """Serve the store: API, dashboard, scheduled sync, the guard; the web process holds no key."""
    from vigie.cli.sync import parse_interval
    from vigie.db.dsn import parse_dsn
    from vigie.guard.api import WebInfo
    from vigie.guard.config import load_config
    from vigie.guard.service import GuardContext
    from vigie.keys import load_keys
    from vigie.serve.data import DataService, DataSettings
    from vigie.serve.launch import WebLaunch, check_bind, start_web, wait_ready
    from vigie.serve.protocol import socket_path
    from vigie.sync.service import SyncSettings

    check_bind(host, tls_cert, tls_key)
    config = load_config(guard_config or default_guard_config(store))
    if (sync_from is None) != (policy is None) or (every and not sync_from):
        raise UsageError("--sync-from and --policy go together; --every needs them.")
    sync = (
        SyncSettings(parse_dsn(sync_from), policy, store, metrics=metrics)
        if sync_from and policy
        else None
    )
    interval = parse_interval(every) if every else None
    launch = WebLaunch(
        socket_path(store),
        access or default_access(store),
        audit_log or default_audit(store),
        host,
        port,
        tls_cert,
        tls_key,
    )
    for folder in (store.parent, launch.audit_log.parent):  # 0700, the store's included
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    web = start_web(launch)  # before any key is read: the child never had one
    service = None
    try:
        keys = load_keys(keyfile)
        guard = GuardContext(store, keys, launch.access, launch.audit_log, config, policy, metrics)
        service = DataService(DataSettings(store, metrics, sync, interval, guard=guard), keys)
        service.start()
        wait_ready(launch, web)
        service.start_guard(WebInfo(web.pid, host, port, tls_cert is not None))
        console.print(f"vigie serves {store} at [bold]{launch.url}[/] (Ctrl-C stops it).")
        _wait_for_signal(web)
    finally:
        web.terminate()
        try:
            web.wait(10)
        except subprocess.TimeoutExpired:
            web.kill()
        if service is not None:
            service.stop()


def _wait_for_signal(web: subprocess.Popen[bytes]) -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        if web.poll() is not None:
            raise Unavailable(
                f"The web process stopped (status {web.returncode}).",
                hint="Its message is above; vigie serve stops with it.",
            )


@access_app.command("create")
def access_create(
    role: Annotated[str, typer.Option(help="analyst, engineer, responder or admin.")],
    name: Annotated[str, typer.Option(help="Who or what holds the key.")],
    expires: Annotated[str, typer.Option(help="Lifetime: 12h, 30d, 2w (at most 366d).")] = "30d",
    store: Annotated[Path | None, typer.Option(help="The store (access file beside it).")] = None,
    access: AccessOpt = None,
) -> None:
    """Create an API key; it is printed once and only its hash is kept."""
    from vigie.access.keys import parse_duration

    try:
        r = Role(role)
    except ValueError:
        raise UsageError(
            f"--role {role!r} is not a role.", hint="analyst, engineer, responder or admin."
        ) from None
    key = _access(store, access).create(name, r, parse_duration(expires))
    console.print(f"Key for [bold]{name}[/] ({r}); shown once, keep it secret:", highlight=False)
    typer.echo(key)


@access_app.command("list")
def access_list(
    store: Annotated[Path | None, typer.Option(help="The store.")] = None, access: AccessOpt = None
) -> None:
    """List the keys: name, role, expiry, status (never a key)."""
    from datetime import UTC, datetime

    file = _access(store, access)
    table = Table(title=f"API keys in {file.path}")
    for col in ("name", "role", "key id", "created", "expires", "status"):
        table.add_column(col)
    now = datetime.now(UTC)
    for e in file.entries():
        table.add_row(
            e.name,
            str(e.role),
            e.key_id,
            f"{e.created_at:%Y-%m-%d %H:%M}",
            f"{e.expires_at:%Y-%m-%d %H:%M}",
            e.status(now),
        )
    console.print(table)


@access_app.command("revoke")
def access_revoke(
    name: str,
    store: Annotated[Path | None, typer.Option(help="The store.")] = None,
    access: AccessOpt = None,
) -> None:
    """Revoke a key now (a running server refuses it at the next request)."""
    entry = _access(store, access).revoke(name)
    console.print(f"Key {entry.name} revoked at {entry.revoked_at:%Y-%m-%d %H:%M:%S}Z.")


@audit_app.command("verify")
def audit_verify(
    log: Annotated[Path | None, typer.Option("--log", help="The audit log.")] = None,
    store: Annotated[Path | None, typer.Option(help="The store (log beside it).")] = None,
) -> None:
    """Check the audit chain: modified, inserted, deleted, reordered entries, a cut tail."""
    from vigie.audit.log import read_entries, verify

    if log is None and store is None:
        raise UsageError("Give --log FILE or --store (the log is beside it).")
    path = log or default_audit(store)  # type: ignore[arg-type]
    problems = verify(path)
    for p in problems:
        where = f"line {p.line}: " if p.line else ""
        console.print(f"[red]{p.kind}[/]: {where}{p.detail}", highlight=False)
    if problems:
        raise AuditError(
            f"{len(problems)} problem(s) in the audit log {path}.",
            hint="Keep the file as evidence; the lines above say where.",
        )
    console.print(f"{path}: {len(read_entries(path))} entries, chain and head verify.")

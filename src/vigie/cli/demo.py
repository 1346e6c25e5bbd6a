"""`vigie demo`: the README's first command, on embedded defaults (no server needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vigie.cli.render import console, fleet_summary, generate_progress

FLEET_POLICY = Path(__file__).resolve().parent.parent / "fleet" / "fleet-policy.yaml"


def demo(
    workdir: Annotated[Path, typer.Option(help="Where the demo keeps its files.")] = Path("demo"),
    users: Annotated[int, typer.Option(help="Users in the demo fleet.")] = 10_000,
    days: Annotated[int, typer.Option(help="Days of traffic in the demo fleet.")] = 3,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
    serve: Annotated[
        bool, typer.Option(help="End by serving the dashboard (Ctrl-C stops).")
    ] = True,
    port: Annotated[int, typer.Option(help="Port of the dashboard.")] = 8321,
) -> None:
    """Generate a demo fleet into SQLite, sync it into an encrypted store, show two KPIs,
    then serve the dashboard with a fresh analyst key."""
    from vigie.cli.kpi import render_result
    from vigie.cli.sync import Console
    from vigie.db.dsn import parse_dsn
    from vigie.fleet.build import generate_fleet
    from vigie.fleet.generate import FleetSpec
    from vigie.fleet.inspect import summarize
    from vigie.keys import init_keyfile, load_keys
    from vigie.kpi.chart import write_chart
    from vigie.kpi.engine import default_range, run_kpi
    from vigie.kpi.load import load_metrics
    from vigie.kpi.query import KpiQuery
    from vigie.stores.duckdb_store import Store
    from vigie.sync.service import SyncService, SyncSettings

    dsn = parse_dsn(f"sqlite:///{workdir / 'production.db'}")
    console.rule("[bold]1. Production: a synthetic camera fleet in SQLite")
    with generate_progress() as (on_estimate, on_rows):
        report = generate_fleet(
            dsn,
            FleetSpec(users=users, days=days, seed=seed),
            replace=True,
            progress=on_rows,
            on_estimate=on_estimate,
        )
    console.print(f"{report.total_rows:,} rows in {dsn} ({report.seconds:.1f} s).")
    fleet_summary(summarize(dsn))

    console.rule("[bold]2. Protected sync into the analytics store")
    keyfile = workdir / "keys" / "vigie.keys"
    if not keyfile.exists():
        keyfile.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        init_keyfile(keyfile)
        console.print(f"New keyfile {keyfile} (0600): keep it apart from the store.")
    console.print(f"Policy: {FLEET_POLICY} (default deny; secrets dropped, PII pseudonymized)")
    store = workdir / "store" / "vigie.duckdb"
    keys = load_keys(keyfile)
    with SyncService(SyncSettings(dsn, FLEET_POLICY, store), keys, Console(keys.source)) as sync:
        sync.run_once()

    console.rule("[bold]3. KPIs from the store (cells under k users suppressed)")
    metrics = load_metrics()
    with Store(store, keys) as s:
        for name, by in (("connection_error_rate", ("firmware",)), ("device_activations", ())):
            query = default_range(s, metrics, KpiQuery(name, by))
            render_result(run_kpi(s, metrics, query), metrics.kpis[name], "table")
        errors = run_kpi(
            s, metrics, default_range(s, metrics, KpiQuery("connection_error_rate", ("firmware",)))
        )
    chart = write_chart(errors, metrics.kpis["connection_error_rate"].description,
                        workdir / "charts" / "connection_error_rate_by_firmware.png")  # fmt: skip
    console.print(f"Chart: {chart}")
    if serve:
        _serve(store, keyfile, port)


def _approve_posture(store: Path, keyfile: Path, access: object, admin_key: str) -> None:
    """The guard serves nothing until an admin approved the security posture: the demo's
    admin approves it the first time (later, a lowering needs two admins)."""
    from vigie.access.keys import AccessFile
    from vigie.errors import Forbidden, UsageError
    from vigie.guard.approvals import approvals_path, approve
    from vigie.guard.config import load_config
    from vigie.guard.service import (
        GuardContext,
        PostureSource,
        posture_check,
        recorded_from_file,
    )
    from vigie.keys import load_keys

    assert isinstance(access, AccessFile)
    ctx = GuardContext(store, load_keys(keyfile), access.path,
                       store.parent / "audit" / "audit.log", load_config(None))  # fmt: skip
    source = PostureSource(ctx, lambda: recorded_from_file(ctx))
    if posture_check(ctx, source)[0].ok:  # a baseline from an earlier run holds
        return
    posture = source.current()
    try:
        approve(approvals_path(store), access, admin_key, posture)
        console.print("The guard's security posture is approved (by the demo's admin).")
    except UsageError:
        pass  # already the baseline
    except Forbidden as exc:
        console.print(f"[yellow]{exc.message}[/] The guard keeps the data closed until two "
                      "admins approve (`vigie guard approve`).")  # fmt: skip


def _serve(store: Path, keyfile: Path, port: int) -> None:
    from datetime import UTC, datetime

    from vigie.access.decide import Role
    from vigie.access.keys import AccessFile, parse_duration
    from vigie.cli.serve import default_access
    from vigie.cli.serve import serve as serve_store

    console.rule(
        "[bold]4. The dashboard (API keys, roles, audit log; the web process holds no key)"
    )
    stamp = f"{datetime.now(UTC):%Y%m%d-%H%M%S}"
    access = AccessFile(default_access(store))
    admin = access.create(f"demo-admin-{stamp}", Role.ADMIN, parse_duration("1d"))
    _approve_posture(store, keyfile, access, admin)
    name = f"demo-analyst-{stamp}"
    key = access.create(name, Role.ANALYST, parse_duration("1d"))
    console.print(f"Admin key demo-admin-{stamp} (the guard's checks; shown once):")
    typer.echo(admin)
    console.print(f"Analyst key [bold]{name}[/] (valid 1 day, shown once; paste it at the login):")
    typer.echo(key)
    console.print(f"Open [bold]http://127.0.0.1:{port}/[/] (Ctrl-C stops the server).")
    serve_store(store=store, keyfile=keyfile, port=port)

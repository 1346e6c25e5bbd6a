"""`vigie demo`: the README's first command, on embedded defaults (no server needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vigie.cli.render import console, fleet_summary, generate_progress
from vigie.db.dsn import parse_dsn
from vigie.fleet.build import generate_fleet
from vigie.fleet.generate import FleetSpec
from vigie.fleet.inspect import summarize


def demo(
    workdir: Annotated[Path, typer.Option(help="Where the demo keeps its files.")] = Path("demo"),
    users: Annotated[int, typer.Option(help="Users in the demo fleet.")] = 10_000,
    days: Annotated[int, typer.Option(help="Days of traffic in the demo fleet.")] = 3,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
) -> None:
    """Generate a small demo fleet into SQLite and show what production holds."""
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
    console.print(
        "Secrets never leave production; PII leaves only pseudonymized; "
        "quasi-identifiers only generalized."
    )

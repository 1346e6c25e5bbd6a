"""`vigie fleet ...`: generate, tick and inspect the synthetic production fleet."""

from __future__ import annotations

from typing import Annotated

import typer

from vigie.cli.render import console, fleet_summary, generate_progress, tick_table

app = typer.Typer(help="Generate, move forward and inspect the synthetic production fleet.")

Dsn = Annotated[str, typer.Option("--to", help="Production database, e.g. sqlite:///prod.db")]
Seed = Annotated[int, typer.Option(help="Random seed: the same seed gives the same rows.")]


@app.command()
def generate(
    to: Dsn,
    users: Annotated[int, typer.Option(help="Number of user accounts.")] = 10_000,
    days: Annotated[int, typer.Option(help="Days of connection traffic.")] = 3,
    seed: Seed = 42,
    replace: Annotated[bool, typer.Option(help="Drop existing fleet tables first.")] = False,
) -> None:
    """Generate a deterministic production fleet into DSN (SQLite, PostgreSQL, MySQL)."""
    from vigie.db.dsn import parse_dsn
    from vigie.fleet.build import generate_fleet
    from vigie.fleet.generate import FleetSpec
    from vigie.fleet.inspect import summarize

    dsn = parse_dsn(to)
    spec = FleetSpec(users=users, days=days, seed=seed)
    with generate_progress() as (on_estimate, on_rows):
        report = generate_fleet(
            dsn, spec, replace=replace, progress=on_rows, on_estimate=on_estimate
        )
    console.print(
        f"Wrote {report.total_rows:,} rows to {dsn} in {report.seconds:.1f} s "
        f"({report.rows_per_second:,.0f} rows/s)."
    )
    fleet_summary(summarize(dsn))


@app.command()
def tick(
    to: Dsn,
    minutes: Annotated[int, typer.Option(help="How far to move production forward.")] = 10,
    seed: Seed = 42,
) -> None:
    """Move production forward: sign-ups, traffic, upgrades, deletions, revocations."""
    from vigie.db.dsn import parse_dsn
    from vigie.fleet.tick import tick_fleet

    report = tick_fleet(parse_dsn(to), minutes=minutes, seed=seed)
    tick_table(report)


@app.command()
def show(to: Dsn) -> None:
    """Print what the fleet holds: tables, rows, columns carrying PII or secrets."""
    from vigie.db.dsn import parse_dsn
    from vigie.fleet.inspect import summarize

    fleet_summary(summarize(parse_dsn(to)))


@app.command()
def checksum(to: Dsn) -> None:
    """Print an engine-neutral SHA-256 of each fleet table (same content, same digest)."""
    from vigie.db.dsn import parse_dsn
    from vigie.fleet.inspect import checksums

    for table, digest in checksums(parse_dsn(to)).items():
        typer.echo(f"{table}\t{digest}")

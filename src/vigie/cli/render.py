"""Rich rendering shared by the CLI commands."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from vigie.fleet.inspect import TableSummary
from vigie.fleet.tick import TickReport

console = Console(highlight=False)


@contextmanager
def generate_progress() -> Iterator[tuple[Callable[[int], None], Callable[[str, int], None]]]:
    """A progress bar over estimated rows; yields (on_estimate, on_rows) callbacks."""
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    task = progress.add_task("generating", total=None, rate="", start=False)

    def on_estimate(total: int) -> None:  # the target is reachable: show the bar from now
        progress.start()
        progress.start_task(task)
        progress.update(task, total=total)

    def on_rows(table: str, rows: int) -> None:
        progress.advance(task, rows)
        elapsed = progress.tasks[task].elapsed or 0.0
        done = progress.tasks[task].completed
        rate = f"{done / elapsed:,.0f} rows/s" if elapsed else ""
        progress.update(task, description=f"writing {table}", rate=rate)

    try:
        yield on_estimate, on_rows
        progress.update(task, description="done", total=progress.tasks[task].completed)
    finally:
        progress.stop()


def fleet_summary(tables: list[TableSummary]) -> None:
    table = Table(title="Production fleet", title_justify="left")
    table.add_column("table")
    table.add_column("rows", justify="right")
    table.add_column("secrets", style="red")
    table.add_column("PII", style="yellow")
    table.add_column("quasi-identifiers", style="cyan")
    for t in tables:
        table.add_row(
            t.name,
            f"{t.rows:,}",
            ", ".join(t.sensitive["secret"]),
            ", ".join(t.sensitive["pii"]),
            ", ".join(t.sensitive["quasi"]),
        )
    console.print(table)


def tick_table(report: TickReport) -> None:
    table = Table(title=f"Tick {report.start:%Y-%m-%d %H:%M} → {report.end:%H:%M}")
    table.add_column("table")
    for col in ("inserted", "updated", "deleted"):
        table.add_column(col, justify="right")
    names = sorted({*report.inserted, *report.updated, *report.deleted})
    for name in names:
        table.add_row(
            name,
            f"{report.inserted.get(name, 0):,}",
            f"{report.updated.get(name, 0):,}",
            f"{report.deleted.get(name, 0):,}",
        )
    console.print(table)

"""Rich rendering shared by the CLI commands."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table as RichTable
from rich.text import Text

from vigie.errors import VigieError

if TYPE_CHECKING:
    from vigie.fleet.inspect import TableSummary
    from vigie.fleet.tick import TickReport
    from vigie.policy.model import Policy
    from vigie.stores.checks import Finding
    from vigie.sync.converge import PolicyChanges
    from vigie.sync.run import SyncReport

console = Console(highlight=False, soft_wrap=True)  # long paths stay whole (and greppable)
err = Console(stderr=True, highlight=False)


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


class Table(RichTable):
    """A rich table whose text is data, never markup: a name or value holding ``[/]`` or
    ``[bold]`` (production's, a path's) prints as it is. Styled cells are ``Text``."""

    def __init__(self, *args: Any, title: str | None = None, **kw: Any) -> None:
        super().__init__(*args, title=None if title is None else escape(title), **kw)

    def add_row(self, *cells: Any, **kw: Any) -> None:
        super().add_row(*(escape(c) if isinstance(c, str) else c for c in cells), **kw)


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


def policy_table(policy: Policy) -> None:
    """What leaves production, table by table."""
    table = Table(title=f"Policy {policy.path}", title_justify="left")
    for col in ("table", "cursor", "kept", "pseudonymized", "generalized", "dropped"):
        table.add_column(col)
    for t in policy.tables.values():
        by: dict[str, list[str]] = {"keep": [], "pseudonymize": [], "generalize": [], "drop": []}
        for rule in t.columns.values():
            by[rule.action.name].append(rule.column)
        table.add_row(
            t.name,
            t.cursor or "(full compare)",
            ", ".join(by["keep"]),
            ", ".join(by["pseudonymize"]),
            ", ".join(by["generalize"]),
            ", ".join(by["drop"]),
        )
    console.print(table)
    if policy.exclude:
        console.print(f"Excluded on purpose: {escape(', '.join(sorted(policy.exclude)))}")


def print_error(exc: VigieError) -> None:
    """A domain error as the user sees it: the message, then what to do next."""
    err.print(f"[bold red]Error:[/] {escape(exc.message)}", soft_wrap=True)
    if exc.hint:
        err.print(f"  [yellow]→[/] {escape(exc.hint)}", soft_wrap=True)


@contextmanager
def sync_progress() -> Iterator[Callable[[str, int, int | None], None]]:
    """One bar per table, with rows/s."""
    progress = Progress(
        TextColumn("[bold]{task.description:<18}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=console,
    )
    tasks: dict[str, TaskID] = {}

    def update(table: str, done: int, total: int | None) -> None:
        if table not in tasks:
            tasks[table] = progress.add_task(table, total=total, rate="")
        task = tasks[table]
        elapsed = progress.tasks[task].elapsed or 0.0
        rate = f"{done / elapsed:,.0f} rows/s" if elapsed > 0 else ""
        progress.update(task, completed=done, total=max(total or 0, done) or None, rate=rate)

    with progress:
        yield update


def policy_changes(changes: PolicyChanges) -> None:
    """What converging the store to a changed policy will do, before it is done."""
    console.print("[bold]The policy changed; the store converges to it first:[/]")
    for line in changes.lines():
        console.print(f"  {escape(line)}")


def findings(path: object, found: list[Finding]) -> None:
    """`vigie store verify`: one finding per line, then the verdict."""
    for f in found:
        console.print(f"[red]FAIL[/] {escape(str(f))}")
    if found:
        console.print(
            f"[red]Store {escape(str(path))} does not conform: {len(found)} finding(s).[/]"
        )
    else:
        console.print(f"[green]Store {escape(str(path))} conforms to the policy.[/]")


def sync_summary(report: SyncReport, keys_source: str) -> None:
    table = Table(title=f"Sync run {report.run_id} → {report.store}", title_justify="left")
    for col in ("table", "passes", "inserted", "updated", "deleted", "rows/s", "status"):
        table.add_column(
            col, justify="right" if col in ("inserted", "updated", "deleted", "rows/s") else "left"
        )
    for t in report.tables:
        rate = f"{t.rows / t.seconds:,.0f}" if t.seconds and t.rows else ""
        status = Text(t.status, style="green" if t.status == "ok" else "red")
        passes = [f"backfill ({len(t.backfilled)} col.)"] if t.backfilled else []
        table.add_row(t.table, ", ".join(passes + t.passes), f"{t.inserted:,}", f"{t.updated:,}",
                      f"{t.deleted:,}", rate, status)  # fmt: skip
    console.print(table)
    console.print(
        f"{report.rows:,} rows in {report.seconds:.1f} s from {report.source}; keys from "
        f"{keys_source}; pseudonyms by {report.hmac_engine}."
    )
    if report.changes.removes:
        console.print(
            f"Converged to the policy in {report.converge_seconds:.1f} s (removals and the "
            "store's fresh file; backfills are in their tables' time)."
        )
    for t in report.tables:
        if t.message and t.status == "ok":
            console.print(f"[yellow]note[/] {escape(t.table)}: {escape(t.message)}")
    if report.unlisted:
        console.print(
            f"[yellow]note[/] production tables neither in the policy nor excluded (not read): "
            f"{', '.join(report.unlisted)}"
        )

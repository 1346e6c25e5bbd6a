"""`vigie sync`: copy production into the protected store."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from vigie.cli.render import console, sync_progress, sync_summary
from vigie.db.dsn import parse_dsn
from vigie.errors import SyncError, UsageError
from vigie.keys import Keys, load_keys
from vigie.kpi.engine import refresh_rollups
from vigie.kpi.load import load_metrics
from vigie.stores.duckdb_store import Store
from vigie.sync.run import SyncReport, sync

Keyfile = Annotated[
    Path | None, typer.Option(help="Keyfile (else VIGIE_KEYFILE, else VIGIE_*_KEY variables).")
]


def sync_command(
    from_: Annotated[str, typer.Option("--from", help="Production DSN.")],
    policy: Annotated[Path, typer.Option(help="The policy file.")],
    store: Annotated[Path, typer.Option(help="The store file, e.g. store/vigie.duckdb.")],
    keyfile: Keyfile = None,
    batch_rows: Annotated[
        int, typer.Option(help="Rows per batch (memory vs. overhead).")
    ] = 500_000,
    metrics: Annotated[Path | None, typer.Option(help="Metrics file for the rollups.")] = None,
    rollups: Annotated[
        bool, typer.Option(help="Rebuild the KPI rollups after the sync (else: vigie kpi refresh).")
    ] = True,
) -> None:
    """Copy production into the encrypted store under the policy (incremental after the first)."""
    if batch_rows < 1:
        raise UsageError(f"--batch-rows must be at least 1, got {batch_rows}.")
    report = run_sync(from_, policy, store, keyfile, batch_rows, metrics, rollups)
    if report.failed:
        raise SyncError(
            "\n".join(t.message for t in report.failed),
            hint="The other tables were synced; fix the rule and run `vigie sync` again.",
        )


def run_sync(
    from_: str,
    policy: Path,
    store: Path,
    keyfile: Path | None,
    batch_rows: int = 500_000,
    metrics: Path | None = None,
    rollups: bool = True,
) -> SyncReport:
    keys = load_keys(keyfile)
    with sync_progress() as progress:
        report = sync(
            parse_dsn(from_), policy, store, keys, progress=progress, batch_rows=batch_rows
        )
    sync_summary(report, keys.source)
    if rollups and not report.failed:
        refresh(store, keys, metrics)
    return report


def refresh(store: Path, keys: Keys, metrics: Path | None) -> None:
    """Rebuild the KPI rollups after a sync; a store the metrics do not fit keeps none."""
    started = time.perf_counter()
    try:
        with Store(store, keys) as s:
            built = refresh_rollups(s, load_metrics(metrics))
    except UsageError as exc:
        console.print(f"[yellow]note[/] KPI rollups not refreshed: {exc.message}")
        return
    console.print(f"{len(built)} KPI rollups refreshed in {time.perf_counter() - started:.1f} s.")


__all__ = ["console", "sync_command"]

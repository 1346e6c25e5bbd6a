"""`vigie sync`: copy production into the protected store."""

from __future__ import annotations

import re
import signal
import threading
import time
from pathlib import Path
from typing import Annotated

import typer

from vigie.cli.render import console, print_error, sync_progress, sync_summary
from vigie.db.dsn import Dsn, parse_dsn
from vigie.errors import ConnectionFailed, PolicyError, SyncError, UsageError
from vigie.keys import load_keys
from vigie.kpi.engine import refresh_rollups
from vigie.kpi.load import load_metrics
from vigie.stores.duckdb_store import Store
from vigie.sync.run import Syncer, SyncReport, sync

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
    every: Annotated[
        str | None,
        typer.Option(
            help="Sync again every DURATION (30s, 10m, 1h) until stopped, keeping the store "
            "open (and locked) between runs, so each run starts with what the last one read."
        ),
    ] = None,
    runs: Annotated[
        int | None, typer.Option(help="With --every: stop after this many runs.")
    ] = None,
) -> None:
    """Copy production into the encrypted store under the policy (incremental after the first)."""
    if batch_rows < 1:
        raise UsageError(f"--batch-rows must be at least 1, got {batch_rows}.")
    if runs is not None and (runs < 1 or every is None):
        raise UsageError("--runs needs --every and must be at least 1.")
    if every is not None:
        interval = parse_interval(every)
        with Syncer(store, load_keys(keyfile)) as syncer:
            sync_every(
                syncer, parse_dsn(from_), policy, interval, runs, batch_rows, metrics, rollups
            )
        return
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
        with Store(store, keys) as s:
            refresh(s, metrics)
    return report


def sync_every(syncer: Syncer, dsn: Dsn, policy: Path, interval: float, runs: int | None,
               batch_rows: int, metrics: Path | None, rollups: bool) -> None:  # fmt: skip
    """Run after run, one every ``interval`` seconds (start to start), until ``runs`` are
    done, Ctrl-C or SIGTERM (which lets the current run finish). A run that fails for a
    reason of production or of the policy (server down, unclassified column, drift, content
    scan hit) copies nothing more and is reported; the next run tries again, with the
    policy file read again. Store and key errors stop the loop."""
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        done = 0
        while not stop.is_set():
            started = time.monotonic()
            try:
                with sync_progress() as progress:
                    report = syncer.run(dsn, policy, progress=progress, batch_rows=batch_rows)
                sync_summary(report, syncer.keys.source)
                for failed in report.failed:
                    print_error(SyncError(failed.message))
                if rollups and not report.failed:
                    refresh(syncer.store, metrics)
            except (ConnectionFailed, PolicyError, SyncError) as exc:
                print_error(exc)
            done += 1
            if runs is not None and done >= runs:
                break
            wait = max(0.0, interval - (time.monotonic() - started))
            console.print(f"Next sync in {wait:.0f} s (Ctrl-C or SIGTERM to stop).")
            stop.wait(wait)
    finally:
        signal.signal(signal.SIGTERM, previous)


def parse_interval(text: str) -> float:
    """``30s``, ``10m``, ``1h`` (or plain seconds) as seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not match or float(match[1]) <= 0:
        raise UsageError(
            f"--every: cannot read {text!r} as a duration.",
            hint="Give a positive number with s, m or h, e.g. --every 10m.",
        )
    return float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[match[2]]


def refresh(store: Store, metrics: Path | None) -> None:
    """Rebuild the KPI rollups after a sync; a store the metrics do not fit keeps none."""
    started = time.perf_counter()
    try:
        built = refresh_rollups(store, load_metrics(metrics))
    except UsageError as exc:
        console.print(f"[yellow]note[/] KPI rollups not refreshed: {exc.message}")
        return
    console.print(f"{len(built)} KPI rollups refreshed in {time.perf_counter() - started:.1f} s.")


__all__ = ["console", "sync_command"]

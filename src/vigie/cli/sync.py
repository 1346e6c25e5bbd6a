"""`vigie sync`: copy production into the protected store (``vigie.sync.service``)."""

from __future__ import annotations

import re
import signal
import threading
from contextlib import AbstractContextManager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from vigie.cli.render import console, policy_changes, print_error, sync_progress, sync_summary
from vigie.errors import SyncError, UsageError, VigieError

if TYPE_CHECKING:
    from vigie.sync.converge import PolicyChanges
    from vigie.sync.run import SyncReport
    from vigie.sync.service import Rollups
    from vigie.sync.state import Progress

Keyfile = Annotated[
    Path | None, typer.Option(help="Keyfile (else VIGIE_KEYFILE, else VIGIE_*_KEY variables).")
]


class Console:
    """The service's work, shown on the terminal."""

    def __init__(self, keys_source: str) -> None:
        self.keys_source = keys_source

    def progress(self) -> AbstractContextManager[Progress | None]:
        return sync_progress()

    def changes(self, changes: PolicyChanges) -> None:
        policy_changes(changes)

    def report(self, report: SyncReport) -> None:
        sync_summary(report, self.keys_source)

    def rollups(self, rollups: Rollups) -> None:
        if rollups.skipped:
            console.print(f"[yellow]note[/] KPI rollups not refreshed: {rollups.skipped}")
        else:
            n, seconds = len(rollups.built), rollups.seconds
            console.print(f"{n} KPI rollups refreshed in {seconds:.1f} s.")

    def failed(self, error: VigieError) -> None:
        print_error(error)

    def waiting(self, seconds: float) -> None:
        console.print(f"Next sync in {seconds:.0f} s (Ctrl-C or SIGTERM to stop).")


def sync_command(
    from_: Annotated[str, typer.Option("--from", help="Production DSN.")],
    policy: Annotated[Path, typer.Option(help="The policy file.")],
    store: Annotated[
        Path,
        typer.Option(
            "--store",
            "--to",
            help="The store: a DuckDB file (store/vigie.duckdb), or with --engine spark a folder.",
        ),
    ],
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
    verify_every: Annotated[
        str,
        typer.Option(
            help="Compare every row of each table with production this often (1h, 24h, 7d; "
            "off): finds updates the cursor missed and rewrites them. Reads whole tables."
        ),
    ] = "24h",
    engine: Annotated[
        str, typer.Option(help="duckdb (one machine, one file) or spark (a Parquet dataset).")
    ] = "duckdb",
    master: Annotated[
        str | None, typer.Option(help="With --engine spark: the Spark master (local[2]).")
    ] = None,
    remote: Annotated[
        str | None, typer.Option(help="With --engine spark: a Spark Connect URL (sc://host:port).")
    ] = None,
    rebuild: Annotated[
        list[str] | None,
        typer.Option(
            help="Forget TABLE in the store and load it again from production (repeatable; "
            "'all': every table, and the database the store was tied to). The deliberate way "
            "to start over after a type change or a moved database."
        ),
    ] = None,
) -> None:
    """Copy production into the encrypted store under the policy (incremental after the first).

    After a policy change, the store first converges to the new policy: what it no longer
    copies is removed (and the store rewritten into a fresh file), what it now copies is
    backfilled; the plan is printed before anything changes."""
    from vigie.db.dsn import parse_dsn
    from vigie.keys import load_keys
    from vigie.spark.target import check_engine_args
    from vigie.sync.service import SyncService, SyncSettings

    target = check_engine_args(engine, master, remote)
    if target is not None:
        _spark_sync(from_, policy, store, keyfile, batch_rows, target,
                    bool(every or rebuild or metrics))  # fmt: skip
        return
    if runs is not None and (runs < 1 or every is None):
        raise UsageError("--runs needs --every and must be at least 1.")
    interval = parse_interval(every) if every is not None else None
    keys = load_keys(keyfile)
    check = None if verify_every == "off" else timedelta(seconds=parse_span(verify_every))
    settings = SyncSettings(parse_dsn(from_), policy, store, batch_rows, metrics, rollups, check,
                            tuple(rebuild or ()))  # fmt: skip
    with SyncService(settings, keys, Console(keys.source)) as service:
        if interval is None:
            report = service.run_once()
            if report.failed:
                raise SyncError(
                    "\n".join(t.message for t in report.failed),
                    hint="The other tables were synced; fix the rule and run `vigie sync` again.",
                )
            return
        stop = threading.Event()
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            for _ in service.run_every(interval, runs, stop):
                pass
        finally:
            signal.signal(signal.SIGTERM, previous)


def _spark_sync(from_: str, policy: Path, store: Path, keyfile: Path | None, batch_rows: int,
                target: object, extra: bool) -> None:  # fmt: skip
    """``--engine spark``: one run into a lake (``vigie.spark.sync``)."""
    from vigie.db.dsn import parse_dsn
    from vigie.keys import load_keys
    from vigie.spark.sync import spark_sync

    if extra:
        raise UsageError(
            "--every, --rebuild and --metrics are not supported with --engine spark.",
            hint="Schedule `vigie sync --engine spark` from cron or your scheduler.",
        )
    keys = load_keys(keyfile)
    with sync_progress() as progress:
        report = spark_sync(parse_dsn(from_), policy, store, keys, target,  # type: ignore[arg-type]
                            progress=progress, batch_rows=batch_rows)  # fmt: skip
    sync_summary(report, keys.source)
    if report.failed:
        raise SyncError(
            "\n".join(t.message for t in report.failed),
            hint="The other tables were synced; fix the rule and run it again.",
        )


def parse_span(text: str) -> float:
    """``--verify-every``: ``30m``, ``24h``, ``7d`` as seconds (0 checks at every run)."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", text)
    if not match:
        raise UsageError(f"--verify-every: cannot read {text!r} as a duration.",
                         hint="Give e.g. 24h or 7d, or off.")  # fmt: skip
    return float(match[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]


def parse_interval(text: str) -> float:
    """``30s``, ``10m``, ``1h`` (or plain seconds) as seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not match or float(match[1]) <= 0:
        raise UsageError(
            f"--every: cannot read {text!r} as a duration.",
            hint="Give a positive number with s, m or h, e.g. --every 10m.",
        )
    return float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[match[2]]


__all__ = ["console", "sync_command"]

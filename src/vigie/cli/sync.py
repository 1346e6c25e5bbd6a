"""`vigie sync`: copy production into the protected store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vigie.cli.render import console, sync_progress, sync_summary
from vigie.db.dsn import parse_dsn
from vigie.errors import SyncError, UsageError
from vigie.keys import load_keys
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
) -> None:
    """Copy production into the encrypted store under the policy (incremental after the first)."""
    if batch_rows < 1:
        raise UsageError(f"--batch-rows must be at least 1, got {batch_rows}.")
    report = run_sync(from_, policy, store, keyfile, batch_rows)
    if report.failed:
        raise SyncError(
            "\n".join(t.message for t in report.failed),
            hint="The other tables were synced; fix the rule and run `vigie sync` again.",
        )


def run_sync(
    from_: str, policy: Path, store: Path, keyfile: Path | None, batch_rows: int = 500_000
) -> SyncReport:
    keys = load_keys(keyfile)
    with sync_progress() as progress:
        report = sync(
            parse_dsn(from_), policy, store, keys, progress=progress, batch_rows=batch_rows
        )
    sync_summary(report, keys.source)
    return report


__all__ = ["console", "sync_command"]

"""`vigie sync`: copy production into the protected store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vigie.cli.render import console, sync_progress, sync_summary
from vigie.db.dsn import parse_dsn
from vigie.errors import SyncError
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
) -> None:
    """Copy production into the encrypted store under the policy (incremental after the first)."""
    report = run_sync(from_, policy, store, keyfile)
    if report.failed:
        raise SyncError(
            "\n".join(t.message for t in report.failed),
            hint="The other tables were synced; fix the rule and run `vigie sync` again.",
        )


def run_sync(from_: str, policy: Path, store: Path, keyfile: Path | None) -> SyncReport:
    keys = load_keys(keyfile)
    with sync_progress() as progress:
        report = sync(parse_dsn(from_), policy, store, keys, progress=progress)
    sync_summary(report, keys.source)
    return report


__all__ = ["console", "sync_command"]

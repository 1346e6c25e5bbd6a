"""`vigie policy ...`: check a policy file, or draft one from production."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vigie.cli.render import console, policy_table

app = typer.Typer(help="Check a policy file, or draft one from production.")


@app.command()
def check(file: Annotated[Path, typer.Argument(help="The policy file (YAML).")]) -> None:
    """Validate a policy and explain what it lets leave production."""
    from vigie.policy.load import load_policy

    policy = load_policy(file)
    policy_table(policy)
    console.print(f"[green]✓[/] {file} is valid: {len(policy.tables)} table(s) synced, "
                  f"{len(policy.exclude)} excluded.")  # fmt: skip


@app.command()
def suggest(
    from_: Annotated[str, typer.Option("--from", help="Production DSN to introspect.")],
    out: Annotated[Path | None, typer.Option(help="Write the draft here (else stdout).")] = None,
) -> None:
    """Draft a policy: every column classified by name and sampled values, marked REVIEW."""
    from vigie.db.dsn import parse_dsn
    from vigie.policy.suggest import suggest_policy

    text = suggest_policy(parse_dsn(from_))
    if out is None:
        typer.echo(text, nl=False)
        return
    if out.exists():
        raise typer.BadParameter(f"{out} exists; refusing to overwrite a policy.")
    out.write_text(text)
    console.print(f"Draft policy written to {out}: review every line marked REVIEW.")

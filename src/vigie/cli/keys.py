"""`vigie keys ...`: create the keyfile (pseudonymization and store keys)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vigie.cli.render import console

app = typer.Typer(help="Create and inspect the keyfile.")


@app.command()
def init(
    keyfile: Annotated[Path, typer.Option(help="Where to write the keyfile (mode 0600).")],
    force: Annotated[bool, typer.Option(help="Replace an existing keyfile.")] = False,
) -> None:
    """Write a new keyfile with random keys. Keep it out of the store and out of git."""
    from vigie.keys import init_keyfile

    keys = init_keyfile(keyfile, force=force)
    console.print(
        f"Keyfile {keyfile} written (0600): pseudonym key id {keys.pseudonym_key_id}, "
        f"store key id {keys.store_key_id}. Back it up: without it the store cannot be read."
    )

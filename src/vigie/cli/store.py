"""`vigie store ...`: check the store against the policy in force."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vigie.cli.render import findings
from vigie.errors import StoreNonConforming

app = typer.Typer(help="Check the analytics store.")


@app.command()
def verify(
    store: Annotated[Path, typer.Option(help="The store file.")],
    policy: Annotated[Path, typer.Option(help="The policy in force.")],
    keyfile: Annotated[
        Path | None, typer.Option(help="Keyfile (else VIGIE_KEYFILE, else VIGIE_*_KEY variables).")
    ] = None,
) -> None:
    """Check that the store conforms to the policy: tables, columns and actions, types, file
    modes, encryption, key ids, tables vigie did not make, and every kept text column
    scanned whole. One finding per line; exit status 7 when there is any."""
    from vigie.keys import load_keys
    from vigie.policy.load import load_policy
    from vigie.serve.protocol import ask, running, socket_path
    from vigie.stores.checks import Finding, verify_store

    if running(store):  # vigie serve holds the store: its data service runs the checks
        load_policy(policy)  # errors with file:line here, not there
        answer = ask(socket_path(store), "verify",
                     {"policy_text": policy.read_text(), "policy_name": str(policy)})  # fmt: skip
        found = [Finding(**f) for f in answer]
    else:
        found = verify_store(store, load_policy(policy), load_keys(keyfile))
    findings(store, found)
    if found:
        raise StoreNonConforming(
            f"{len(found)} finding(s) in {store}.", hint="Fix each as its line says."
        )

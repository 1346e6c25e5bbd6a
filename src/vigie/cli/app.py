"""The root `vigie` command; translates domain errors into messages and exit codes once."""

from __future__ import annotations

import sys

import typer

from vigie import __version__
from vigie.cli import demo, fleet, guard, incident, keys, kpi, policy, serve, store
from vigie.cli.render import print_error
from vigie.cli.sync import sync_command
from vigie.errors import VigieError

app = typer.Typer(
    name="vigie",
    help="A privacy-safe analytics replica for a connected-device fleet.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(fleet.app, name="fleet")
app.add_typer(policy.app, name="policy")
app.add_typer(keys.app, name="keys")
app.add_typer(kpi.app, name="kpi")
app.add_typer(store.app, name="store")
app.add_typer(serve.access_app, name="access")
app.add_typer(serve.audit_app, name="audit")
app.add_typer(guard.app, name="guard")
app.add_typer(incident.app, name="incident")
app.command("sync")(sync_command)
app.command("serve")(serve.serve)
app.command("demo")(demo.demo)


@app.command("version")
def version() -> None:
    """Print the vigie version."""
    typer.echo(__version__)


def main() -> None:
    """Console entry point: run the app, render VigieError as a message, never a traceback."""
    try:
        app()
    except VigieError as exc:
        print_error(exc)
        sys.exit(exc.exit_code)

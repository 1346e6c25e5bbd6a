"""The root `vigie` command; translates domain errors into messages and exit codes once."""

from __future__ import annotations

import sys

import typer

from vigie import __version__
from vigie.cli import demo, fleet, guard, incident, keys, kpi, policy, serve, store
from vigie.cli.render import print_error
from vigie.cli.sync import sync_command
from vigie.errors import StoreError, VigieError

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
    except Exception as exc:
        engine = _engine_error(exc)
        if engine is None:
            raise
        print_error(engine)
        sys.exit(engine.exit_code)


def _engine_error(exc: Exception) -> VigieError | None:
    """A DuckDB error that reached the edge (a truncated or damaged store file, a disk
    that failed) as a vigie error, without the values its message may quote."""
    import duckdb

    if not isinstance(exc, duckdb.Error):
        return None
    from vigie.scan.detectors import without_values

    first = without_values(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return StoreError(
        f"The store could not be read or written: {first}",
        hint="The store file may be truncated or damaged (a full disk, a copy cut short): "
        "check it with `vigie store verify`, restore it from a backup, or start over with "
        "`vigie sync --rebuild all` (it holds copies only).",
    )

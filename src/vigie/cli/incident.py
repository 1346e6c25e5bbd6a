"""`vigie incident report|notify-list|rotate`."""

from __future__ import annotations

import getpass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from vigie.cli.render import Table, console
from vigie.errors import UsageError

app = typer.Typer(help="Incident response: the exposure report, the notify list, rotations.")

StoreOpt = Annotated[Path, typer.Option("--store", help="The store file.")]
FromOpt = Annotated[str, typer.Option("--from", help="Start of the exposure window (ISO, UTC).")]
ToOpt = Annotated[str, typer.Option("--to", help="End of the window, exclusive (ISO, UTC).")]
KeyfileOpt = Annotated[Path | None, typer.Option(help="Keyfile (else VIGIE_KEYFILE, ...).")]


def parse_time(text: str, what: str) -> datetime:
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{what} '{text}' is not a date or time.",
            hint="Use ISO: 2019-12-04 or 2019-12-04T09:30:00Z (UTC).",
        ) from None
    return t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo else t


def window(start: str, end: str) -> tuple[datetime, datetime]:
    t1, t2 = parse_time(start, "--from"), parse_time(end, "--to")
    if t2 <= t1:
        raise UsageError(f"--to ({t2}) must come after --from ({t1}).")
    return t1, t2


@app.command("report")
def report(
    store: StoreOpt,
    start: FromOpt,
    end: ToOpt,
    format: Annotated[str, typer.Option(help="md, json or html.")] = "md",
    out: Annotated[
        Path | None, typer.Option(help="Write to FILE (0600) instead of the screen.")
    ] = None,
    keyfile: KeyfileOpt = None,
) -> None:
    """What was readable in the store between --from and --to, whose, what the audit log
    and the guard saw, and the rotations to run."""
    from vigie.incident.render import RENDER
    from vigie.serve.protocol import ask, running, socket_path

    if format not in RENDER:
        raise UsageError(f"--format {format!r}: use md, json or html.")
    t1, t2 = window(start, end)
    if running(store):
        text = ask(
            socket_path(store),
            "incident",
            {"from": t1.isoformat(), "to": t2.isoformat(), "format": format},
        )["text"]
    else:
        text = _local_report(store, t1, t2, format, keyfile)
    if out is None:
        typer.echo(text)
    else:
        _write_private(out, text)
        console.print(f"Report written to {out} (0600).")


def _local_report(
    store: Path, t1: datetime, t2: datetime, format: str, keyfile: Path | None
) -> str:
    from vigie.cli.serve import default_audit
    from vigie.incident.render import RENDER
    from vigie.incident.report import build_report
    from vigie.keys import load_keys
    from vigie.spark.lake import reading

    with reading(store, load_keys(keyfile)) as s:  # a DuckDB store, or a Spark-built lake
        built = build_report(s, t1, t2, default_audit(store), str(store))
    return RENDER[format](built)


def _write_private(path: Path, text: str) -> None:
    import os

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


@app.command("notify-list")
def notify_list(
    store: StoreOpt,
    start: FromOpt,
    end: ToOpt,
    production: Annotated[str, typer.Option(help="Production DSN (read access).")],
    out: Annotated[Path, typer.Option(help="The CSV to write (0600; never overwritten).")],
    users_table: Annotated[str, typer.Option(help="Production's users table.")] = "users",
    id_column: Annotated[str, typer.Option(help="Its id column (pseudonymized as 'user').")] = "id",
    email_column: Annotated[str, typer.Option(help="Its e-mail column.")] = "email",
    keyfile: KeyfileOpt = None,
) -> None:
    """The production users whose data was in the store in the window, with e-mail and what
    was readable: pseudonyms recomputed from production's ids (CLI only, never over HTTP)."""
    from vigie.db.dsn import parse_dsn
    from vigie.incident.notify import notify_list as build
    from vigie.keys import load_keys
    from vigie.spark.lake import reading

    t1, t2 = window(start, end)
    keys = load_keys(keyfile)
    with reading(store, keys) as s:  # a DuckDB store, or a Spark-built lake
        result = build(
            s,
            keys,
            parse_dsn(production),
            t1,
            t2,
            out,
            users_table=users_table,
            id_column=id_column,
            email_column=email_column,
        )
    _audit(
        store,
        "incident.notify-list",
        result.users,
        {"from": t1.isoformat(), "to": t2.isoformat(), "out": str(out)},
    )
    console.print(
        f"{result.users:,} users written to {out} (0600) in {result.seconds} s; "
        f"{result.affected:,} pseudonymous users were in the window, "
        f"{result.unmatched:,} of them no longer in production."
    )


def _audit(store: Path, path: str, rows: int, params: dict[str, str]) -> None:
    from vigie.audit.log import AuditLog
    from vigie.cli.serve import default_audit

    log = AuditLog(default_audit(store))
    try:
        log.append(
            actor=f"cli:{getpass.getuser()}",
            role="responder",
            method="CLI",
            path=path,
            route=None,
            params=params,
            status=200,
            rows=rows,
            kind=None,
            reason=None,
            client=None,
        )
    finally:
        log.close()


@app.command("rotate")
def rotate(
    playbook: Annotated[Path, typer.Option(help="The playbook (YAML).")],
    store: StoreOpt,
    production: Annotated[str | None, typer.Option(help="Production DSN.")] = None,
    execute: Annotated[
        bool, typer.Option("--execute", help="Change things (else dry run).")
    ] = False,
    keyfile: Annotated[
        Path | None, typer.Option(help="The keyfile (rotate-pseudonym-key rewrites it).")
    ] = None,
) -> None:
    """Run a rotation playbook: dry run by default (what each step would change, with
    counts); --execute runs each step (production steps in one transaction each)."""
    from vigie.access.keys import AccessFile
    from vigie.audit.log import AuditLog
    from vigie.cli.serve import default_access, default_audit
    from vigie.db.dsn import parse_dsn
    from vigie.incident.rotate import Rotation, load_playbook, state_path

    steps = load_playbook(playbook)
    audit = AuditLog(default_audit(store)) if execute else None
    try:
        rotation = Rotation(
            steps,
            parse_dsn(production) if production else None,
            AccessFile(default_access(store)),
            state_path(store),
            audit,
            store,
            keyfile,
        )
        results = rotation.run(execute)
    finally:
        if audit is not None:
            audit.close()
    table = Table(title=f"{'Rotation' if execute else 'Dry run (nothing changed)'}: {playbook}")
    for col in ("step", "what", "pending" if not execute else "changed", "seconds", "note"):
        table.add_column(col)
    for r in results:
        n = r.changed if execute else r.pending
        table.add_row(r.step, r.what, f"{n:,}", f"{r.seconds:.2f}", r.note)
    console.print(table)


FLEET_PLAYBOOK = Path(__file__).resolve().parent.parent / "fleet" / "fleet-playbook.yaml"


@app.command("drill")
def drill(
    workdir: Annotated[Path, typer.Option(help="A new scratch folder for the drill.")] = Path(
        "drill"
    ),
    users: Annotated[int, typer.Option(help="Users in the scratch fleet.")] = 2000,
) -> None:
    """Rehearse an incident on a scratch copy: lower a protection, let the guard catch it,
    write the report and the notify list, run the playbook; prints the timeline."""
    from vigie.cli.demo import FLEET_POLICY
    from vigie.incident.drill import run_drill

    if workdir.exists():
        raise UsageError(
            f"{workdir} exists; the drill starts from a new scratch folder.",
            hint="Remove it, or give another --workdir.",
        )
    timeline, files = run_drill(
        workdir, FLEET_PLAYBOOK, FLEET_POLICY, users, on_stage=lambda s: console.rule(f"[bold]{s}")
    )
    table = Table(title=f"Incident drill in {workdir}")
    for col in ("stage", "seconds", "result"):
        table.add_column(col)
    for name, seconds, note in timeline.stages:
        table.add_row(name, f"{seconds:.2f}", note)
    console.print(table)
    console.print(f"Report: {files['report']}  Notify list: {files['notify']} (0600)")

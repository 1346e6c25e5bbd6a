"""`vigie kpi ...`: list, show and chart the declared KPIs (small cells suppressed)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from vigie.cli.render import Table, console
from vigie.errors import UsageError
from vigie.spark.target import SparkTarget, check_engine_args

if TYPE_CHECKING:
    from vigie.keys import Keys
    from vigie.kpi.engine import KpiResult
    from vigie.kpi.model import Kpi, Metrics
    from vigie.kpi.query import KpiQuery

app = typer.Typer(help="Declared KPIs over the store, with small-cell suppression.")

StoreOpt = Annotated[
    Path, typer.Option("--store", help="The store file (or a folder built by --engine spark).")
]
KeyfileOpt = Annotated[Path | None, typer.Option(help="Keyfile (else VIGIE_KEYFILE, ...).")]
MetricsOpt = Annotated[Path | None, typer.Option(help="A metrics file adding to the shipped one.")]
By = Annotated[str, typer.Option("--by", help="One dimension (answers show one at a time).")]
From = Annotated[
    str | None,
    typer.Option("--from", help="First period (YYYY-MM-DD[ HH:00]): the start of a whole period."),
]
To = Annotated[str | None, typer.Option("--to", help="End, exclusive: the start of a period.")]
GrainOpt = Annotated[
    str, typer.Option(help="hour (totals only), day, week (ISO) or month (of ISO weeks).")
]
Where = Annotated[
    list[str] | None, typer.Option("--where", help="DIM=VALUE: one cell of that dimension.")
]
Engine = Annotated[
    str,
    typer.Option(help="duckdb (this machine: a store, or a lake loaded here) or spark (a "
                 "lake's KPIs computed on Spark SQL: --master or --remote)."),
]  # fmt: skip
Master = Annotated[str | None, typer.Option(help="With --engine spark: the master (local[2]).")]
Remote = Annotated[
    str | None, typer.Option(help="With --engine spark: a Spark Connect URL (sc://host:port).")
]
MinUsers = Annotated[
    int | None,
    typer.Option(help="Raise k, the users a cell needs; it can only raise it (10 shipped)."),
]


@app.command("list")
def list_kpis(metrics: MetricsOpt = None) -> None:
    """List the KPIs with their one-line definitions."""
    from vigie.kpi.load import load_metrics

    m = load_metrics(metrics)
    table = Table(title=f"KPIs (cells under {m.min_users} users are suppressed)")
    table.add_column("kpi", no_wrap=True)
    for col in ("fact", "dimensions", "definition"):
        table.add_column(col)
    for kpi in m.kpis.values():
        table.add_row(kpi.name, kpi.fact.name, ", ".join(kpi.fact.dimensions), kpi.description)
    console.print(table)


def _query(name: str, by: str, from_: str | None, to: str | None, grain: str,
           where: list[str] | None) -> KpiQuery:  # fmt: skip
    from vigie.kpi.parse import parse_query

    return parse_query(name, by, from_, to, grain, where or [])


def _run(store: Path, keyfile: Path | None, metrics: Metrics, query: KpiQuery,
         target: SparkTarget | None = None) -> KpiResult:  # fmt: skip
    """The query on the store opened read-only and locked down (no file, no setting); or,
    while `vigie serve` holds the store, asked of its data service; or, with a Spark
    ``target``, on Spark SQL over a lake."""
    from vigie.keys import load_keys
    from vigie.kpi.engine import default_range, lock_down, run_kpi
    from vigie.serve.client import query_json, result_from_json
    from vigie.serve.protocol import ask, running, socket_path
    from vigie.spark.lake import reading

    if target is not None:
        return _on_spark(store, load_keys(keyfile), metrics, query, target)
    if running(store):
        if metrics.sources[1:] or metrics.min_users != metrics.base_min_users:
            raise UsageError(
                "vigie serve holds this store and answers with its own metrics and k.",
                hint="Drop --metrics/--min-users, or stop the server.",
            )
        return result_from_json(ask(socket_path(store), "kpi", query_json(query)), metrics)
    with reading(store, load_keys(keyfile)) as s:  # a DuckDB store, or a Spark-built lake
        lock_down(s)
        return run_kpi(s, metrics, default_range(s, metrics, query))


def _on_spark(store: Path, keys: Keys, metrics: Metrics, query: KpiQuery,
              target: SparkTarget) -> KpiResult:  # fmt: skip
    from vigie.kpi.engine import range_ending
    from vigie.spark.kpi import LakeKpis
    from vigie.spark.lake import is_lake
    from vigie.spark.session import spark_session

    if not is_lake(store):
        raise UsageError(
            f"{store} is not a lake: --engine spark computes the KPIs of a folder built by "
            "`vigie sync --engine spark`.",
            hint="Drop --engine spark to read a DuckDB store here.",
        )
    with (
        console.status(f"Computing on Spark ({target.name})..."),
        LakeKpis(spark_session(target), store, keys, metrics) as lake_kpis,
    ):
        query = range_ending(query, lake_kpis.latest(query), lake_kpis.horizon)
        return lake_kpis.answer(query)


@app.command()
def show(
    name: str,
    store: StoreOpt,
    keyfile: KeyfileOpt = None,
    by: By = "",
    from_: From = None,
    to: To = None,
    grain: GrainOpt = "day",
    where: Where = None,
    format: Annotated[str, typer.Option(help="table, csv or json.")] = "table",
    metrics: MetricsOpt = None,
    min_users: MinUsers = None,
    engine: Engine = "duckdb",
    master: Master = None,
    remote: Remote = None,
) -> None:
    """Show a KPI by dimensions over time (default: the last 7 days of data)."""
    from vigie.kpi.load import load_metrics

    if format not in ("table", "csv", "json"):
        raise UsageError(f"--format must be table, csv or json, got '{format}'.")
    m = load_metrics(metrics, min_users=min_users)
    target = check_engine_args(engine, master, remote)
    result = _run(store, keyfile, m, _query(name, by, from_, to, grain, where), target)
    render_result(result, m.kpis[name], format)


@app.command()
def chart(
    name: str,
    store: StoreOpt,
    out: Annotated[Path, typer.Option(help="PNG or SVG file to write.")],
    keyfile: KeyfileOpt = None,
    by: By = "",
    from_: From = None,
    to: To = None,
    grain: GrainOpt = "day",
    where: Where = None,
    metrics: MetricsOpt = None,
    min_users: MinUsers = None,
    engine: Engine = "duckdb",
    master: Master = None,
    remote: Remote = None,
) -> None:
    """Write a line chart of a KPI over time, one line per dimension value."""
    from vigie.kpi.chart import write_chart
    from vigie.kpi.load import load_metrics

    m = load_metrics(metrics, min_users=min_users)
    target = check_engine_args(engine, master, remote)
    result = _run(store, keyfile, m, _query(name, by, from_, to, grain, where), target)
    console.print(f"Chart written to {write_chart(result, m.kpis[name].description, out)}")


@app.command()
def refresh(
    store: StoreOpt,
    keyfile: KeyfileOpt = None,
    metrics: MetricsOpt = None,
    full: Annotated[
        bool, typer.Option("--full", help="Rebuild every rollup and pattern from scratch.")
    ] = False,
) -> None:
    """Bring the daily rollups and suppression patterns up to the store's last sync, by
    what the syncs since changed (vigie sync does it after each run)."""
    from vigie.keys import load_keys
    from vigie.kpi.load import load_metrics
    from vigie.kpi.refresh import refresh as refresh_facts
    from vigie.stores.duckdb_store import Store

    m = load_metrics(metrics)
    with Store(store, load_keys(keyfile)) as s:
        done = refresh_facts(s, m, full=full)
    table = Table("fact", "refresh", "rows", "days", "seconds", "why full")
    for f in done:
        days = "all" if f.days is None else str(f.days)
        table.add_row(f.fact, f.mode, f"{f.rows:,}", days, f"{f.seconds:.2f}", f.why)
    console.print(table)
    console.print(f"{len(done)} facts refreshed in {sum(f.seconds for f in done):.1f} s.")
    for f in done:
        if f.error:
            console.print(f"[yellow]note[/] no pattern protects fact {escape(f.fact)}: its "
                          f"answers are refused. {escape(f.error)}")  # fmt: skip


def render_result(result: KpiResult, kpi: Kpi, format: str) -> None:
    dims = list(result.query.by)
    rows = [
        [c.period.isoformat(sep=" ")[: 16 if result.query.grain == "hour" else 10]]
        + [("(all)" if c.is_total else ("" if d is None else str(d))) for d in c.dims]
        + [None if c.shown is None else round(c.shown, 6)]
        for c in result.cells
    ]
    if format == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(["period", *dims, result.query.kpi])
        writer.writerows([[("" if v is None else v) for v in r] for r in rows])  # suppressed: empty
        return
    if format == "json":
        keys = ["period", *dims, "value"]
        out = [dict(zip(keys, r, strict=True)) | {"suppressed": c.suppressed}
               for r, c in zip(rows, result.cells, strict=True)]  # fmt: skip
        typer.echo(json.dumps({"kpi": result.query.kpi, "k": result.k, "cells": out}, indent=2))
        return
    source = "daily rollup" if result.rollup else "store tables"
    caption = f"from {source} in {result.seconds * 1000:.0f} ms; <{result.k}: suppressed"
    if result.until is not None and result.query.end == result.until:
        caption += f"; periods from {result.until:%Y-%m-%d %H:%M} on are not over: not shown"
    table = Table(title=f"{result.query.kpi}: {kpi.description}")
    for col in ["period", *dims, "value"]:
        table.add_column(col, justify="right" if col == "value" else "left")
    for r, c in zip(rows, result.cells, strict=True):
        value = f"<{result.k}" if c.suppressed else _fmt(r[-1], kpi.integer)
        style = "bold" if c.is_total else None
        table.add_row(*[str(v) for v in r[:-1]], value, style=style)
    console.print(table)
    console.print(f"[dim]{caption}[/]")


def _fmt(value: object, integer: bool = False) -> str:
    if value is None:
        return "-"
    assert isinstance(value, float)
    if integer:
        return f"{value:,.0f}"
    return f"{value:.4f}" if abs(value) < 1 else f"{value:,.1f}"

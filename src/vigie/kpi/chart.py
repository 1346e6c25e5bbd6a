"""Charts of KPI results: a line per dimension value over time; suppressed cells are gaps."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.dates as mdates
import matplotlib.pyplot as plt

from vigie.errors import UsageError
from vigie.kpi.engine import KpiResult

FORMATS = (".png", ".svg")


def write_chart(result: KpiResult, description: str, out: Path) -> Path:
    if out.suffix.lower() not in FORMATS:
        raise UsageError(f"Chart file {out} must end in .png or .svg.")
    series: dict[str, list[tuple[object, float]]] = {}
    for cell in result.cells:
        if cell.is_total and result.query.by:
            continue
        label = " / ".join(str(d) for d in cell.dims) or result.query.kpi
        value = cell.shown
        series.setdefault(label, []).append((cell.period, float("nan") if value is None else value))
    fig, ax = plt.subplots(figsize=(10, 5), dpi=110)
    for label, points in sorted(series.items()):
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.6, label=label)
    by = f" by {', '.join(result.query.by)}" if result.query.by else ""
    ax.set_title(f"{result.query.kpi}{by}, per {result.query.grain}", loc="left", fontsize=12)
    ax.set_xlabel(description, fontsize=9, color="#555555")
    ax.grid(alpha=0.3)
    locator = mdates.AutoDateLocator(minticks=3, maxticks=10)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    if len(series) > 1:
        ax.legend(fontsize=8, frameon=False, loc="best")
    note = f"cells resting on fewer than {result.k} users are suppressed (gaps)"
    fig.text(0.99, 0.01, note, ha="right", fontsize=7, color="#777777")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, bbox_inches="tight")
    plt.close(fig)
    return out

"""The CLI's side of a running data service: a KPI query to JSON and its answer back."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from vigie.kpi.engine import KpiResult
from vigie.kpi.model import Metrics
from vigie.kpi.query import KpiQuery
from vigie.kpi.suppress import Cell


def query_json(query: KpiQuery) -> dict[str, Any]:
    return {
        "name": query.kpi,
        "by": ",".join(query.by),
        "from": query.start.isoformat(sep=" ") if query.start else None,
        "to": query.end.isoformat(sep=" ") if query.end else None,
        "grain": query.grain,
        "where": [f"{d}={v}" for d, v in query.where],
    }


def result_from_json(answer: dict[str, Any], metrics: Metrics) -> KpiResult:
    """The service's answer as the CLI renders it (suppressed cells carry no value)."""
    by = tuple(answer["by"])
    query = KpiQuery(answer["kpi"], by, tuple((d, v) for d, v in answer["where"]),
                     _time(answer["from"]), _time(answer["to"]), answer["grain"])  # fmt: skip
    cells = [
        Cell(datetime.fromisoformat(c["period"]),
             tuple(c["dims"]) if not c["total"] else (None,) * len(by),
             c["total"], c["value"], 0, c["suppressed"])
        for c in answer["cells"]
    ]  # fmt: skip
    return KpiResult(query, cells, answer["k"], answer["rollup"], answer["seconds"],
                     _time(answer["until"]))  # fmt: skip


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None

"""A KPI question from text (CLI options, API query parameters) to a typed ``KpiQuery``."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from vigie.errors import UsageError
from vigie.kpi.query import KpiQuery

GRAINS = ("hour", "day", "week", "month")


def parse_query(
    name: str,
    by: str = "",
    start: str | None = None,
    end: str | None = None,
    grain: str = "day",
    where: Iterable[str] = (),
) -> KpiQuery:
    """Validate the shape of each part once; the compiler checks names against the metrics."""
    if grain not in GRAINS:
        raise UsageError(f"grain must be hour, day, week or month, got '{grain[:40]}'.")
    pairs = []
    for item in where:
        dim, sep, value = item.partition("=")
        if not sep or not dim.strip():
            raise UsageError(f"where takes DIM=VALUE, got '{item[:80]}'.")
        pairs.append((dim.strip(), value.strip()))
    dims = tuple(d.strip() for d in by.split(",") if d.strip())
    return KpiQuery(name, dims, tuple(pairs), parse_time(start, "from"), parse_time(end, "to"),
                    grain)  # type: ignore[arg-type]  # fmt: skip


def parse_time(text: str | None, option: str) -> datetime | None:
    """A naive UTC time from ``YYYY-MM-DD[ HH:MM]``; a time zone is refused (the store is UTC)."""
    if text is None or text == "":
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{option} '{text[:40]}' is not a date (YYYY-MM-DD[ HH:MM]).") from None
    if value.tzinfo is not None:
        raise UsageError(
            f"{option} '{text[:40]}' has a time zone.", hint="Give UTC times without an offset."
        )
    return value

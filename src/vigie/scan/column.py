"""Every detector over one kept text column: by shape (``detectors``), person names
(``names``) and identifiers by behaviour (``identifying``).

``scan_batch_column`` judges one batch of a sync; ``scan_whole_column`` judges a whole
store table (``vigie store verify``), its statistics computed by the caller's engine.
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

from vigie.scan.detectors import Hit, redact, scan_column
from vigie.scan.identifying import Singling, measurable, singling
from vigie.scan.names import find_names

BEHAVIOUR = ("person_name", "identifier")
ALL_DETECTORS = ("email", "phone", "mac", "ip", "card", "token", *BEHAVIOUR)
OPAQUE = "binary"  # not a detector: allowing it keeps binary values no detector can read
ALLOWABLE = (*ALL_DETECTORS, OPAQUE)


def name_hit(column: str, distinct: pl.Series) -> Hit | None:
    found = find_names(distinct)
    if not found.holds_names:
        return None
    detail = (
        f"{found.names} different first names in {found.share:.0%} of its "
        f"{found.distinct:,} distinct values"
    )
    return Hit(column, "person_name", redact(found.example), found.values, detail)


def describe(hit: Hit, scope: str = "") -> str:
    """What a hit says about the kept values, without any of them (examples are redacted)."""
    scope = f" {scope}" if scope else ""
    if hit.detector == "identifier":
        return f"kept values single out whom they belong to (identifier): {hit.detail}{scope}"
    if hit.detector == "person_name":
        return (
            f"kept values hold person names (person_name): {hit.detail}{scope}, "
            f"e.g. '{hit.example}'"
        )
    return (
        f"kept values look like {hit.detector} ({hit.count} distinct value(s){scope}, "
        f"e.g. '{hit.example}')"
    )


def identifier_hit(column: str, found: Singling | None) -> Hit | None:
    if found is None or not found.identifies:
        return None
    return Hit(column, "identifier", "", found.singled, found.describe(column))


def scan_batch_column(
    column: str,
    values: Callable[[], pl.Series],
    distinct: pl.Series,
    entities: Callable[[], dict[str, pl.Series]],
    allowed: set[str],
    behaviour: bool = True,
) -> list[Hit]:
    """Hits of one batch's kept column: ``distinct`` (its distinct values), ``values()``
    (every row) and ``entities()`` (the rows' parents, as pseudonyms, aligned with the
    values), the last two asked for only when the column has values enough to identify."""

    def measure() -> Singling | None:
        return singling(values(), entities) if measurable(distinct.len()) else None

    hits = scan_column(column, distinct, allowed)
    if behaviour:
        hits += _behaviour(column, distinct, allowed, measure)
    return hits


def scan_whole_column(
    column: str, distinct: pl.Series, worst: Singling | None, allowed: set[str]
) -> list[Hit]:
    """Hits of a whole stored column: its ``distinct`` values, and the ``worst`` singling
    out measured over the table (None: not measurable)."""
    return scan_column(column, distinct, allowed) + _behaviour(
        column, distinct, allowed, lambda: worst
    )


def _behaviour(
    column: str, distinct: pl.Series, allowed: set[str], measure: Callable[[], Singling | None]
) -> list[Hit]:
    hits = []
    if "person_name" not in allowed and (hit := name_hit(column, distinct)):
        hits.append(hit)
    if "identifier" not in allowed and (hit := identifier_hit(column, measure())):
        hits.append(hit)
    return hits

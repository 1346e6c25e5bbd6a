"""Identifiers by behaviour: kept text whose values single out the rows or their owners.

A serial number, a WiFi network name, a free-text note or a label is an identifier
whatever the policy calls it: most of its values belong to one row, or to one parent
(one user, one device), and so point at that row or parent. For each *entity* (the row
itself, and each pseudonymized column of the table: the user, the device...) the rule
counts the entities singled out: those having a value that no other entity has. When at
least ``SHARE`` of the entities are singled out, out of at least ``MIN_ENTITIES``, the
column identifies them.

Categories (a model, a firmware, a country, an error code) have few values, each shared
by many entities, and never come near: a column with fewer distinct values than
``SHARE * MIN_ENTITIES`` is not even measured. Fewer than ``MIN_ENTITIES`` entities (a
small incremental batch) are too few to judge: ``vigie store verify`` judges the whole
table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

SHARE = 0.5
MIN_ENTITIES = 1000


@dataclass(frozen=True)
class Singling:
    entity: str  # "row", or the pseudonymized column that names the parent
    singled: int  # entities having a value no other entity has
    entities: int  # entities with a value

    @property
    def share(self) -> float:
        return self.singled / self.entities if self.entities else 0.0

    @property
    def identifies(self) -> bool:
        return self.entities >= MIN_ENTITIES and self.share >= SHARE

    def describe(self, column: str) -> str:
        who = "rows" if self.entity == "row" else f"{self.entity} values"
        return (
            f"{self.share:.0%} of {self.entities:,} {who} have a {column} value no other has "
            f"(near-unique: {SHARE:.0%} or more singles out whom it belongs to)"
        )


def measurable(distinct_values: int) -> bool:
    """Whether a column with this many distinct values could identify anything."""
    return distinct_values >= SHARE * MIN_ENTITIES


def singling(values: pl.Series, entities: Callable[[], dict[str, pl.Series]]) -> Singling | None:
    """The worst singling-out of ``values`` (one batch) over the row and each entity column
    (``entities()``, aligned with ``values``), or None when the column cannot identify
    anything here."""
    present = values.is_not_null()
    kept = values.filter(present)
    if kept.len() < MIN_ENTITIES or not measurable(kept.n_unique()):
        return None  # before the entities are asked for: most columns stop here
    counts = kept.value_counts(name="n")
    worst = Singling("row", int((counts["n"] == 1).sum()), kept.len())
    for name, column in entities().items():
        frame = pl.DataFrame({"v": kept, "e": column.filter(present)}).drop_nulls()
        owners = frame.group_by("v").agg(
            pl.col("e").n_unique().alias("owners"), pl.col("e").first()
        )
        singled = owners.filter(pl.col("owners") == 1)["e"].n_unique()
        found = Singling(name, singled, frame["e"].n_unique())
        if found.entities >= MIN_ENTITIES and found.share > worst.share:
            worst = found
    return worst

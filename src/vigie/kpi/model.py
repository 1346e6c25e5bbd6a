"""Metrics as typed, frozen objects: facts (SQL over the store) and the KPIs declared on them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Grain = Literal["hour", "day", "week", "month"]
GRAINS: tuple[Grain, ...] = ("hour", "day", "week", "month")
MIN_USERS_FLOOR = 5
DEFAULT_MIN_USERS = 10


@dataclass(frozen=True)
class Fact:
    name: str
    sql: str
    time: str
    user: str
    dimensions: tuple[str, ...]
    rollups: tuple[tuple[str, ...], ...]
    description: str = ""
    where: str = ""  # file:line:column of its SQL, for errors


@dataclass(frozen=True)
class Count:
    column: str | None  # None: every row; else a boolean column
    where: str | None = None


@dataclass(frozen=True)
class CountDistinct:
    column: str
    where: str | None = None


@dataclass(frozen=True)
class Sum:
    column: str
    where: str | None = None


@dataclass(frozen=True)
class Avg:
    column: str
    where: str | None = None


@dataclass(frozen=True)
class Quantile:
    column: str
    p: float
    where: str | None = None


Simple = Count | CountDistinct | Sum | Avg | Quantile


@dataclass(frozen=True)
class Ratio:
    numerator: Simple
    denominator: Simple


@dataclass(frozen=True)
class ShareWithin:
    """A measure per cell over the same measure for all values of ``across``."""

    measure: Simple
    across: str


Measure = Simple | Ratio | ShareWithin


@dataclass(frozen=True)
class Kpi:
    name: str
    description: str
    fact: Fact
    measure: Measure
    population: str | None = None  # boolean column: the rows the KPI is about

    @property
    def integer(self) -> bool:
        """Whether its values are counts (shown as integers)."""
        return isinstance(self.measure, Count | CountDistinct)


@dataclass(frozen=True)
class Metrics:
    facts: dict[str, Fact]
    kpis: dict[str, Kpi]
    min_users: int
    sources: tuple[str, ...]  # the files read, in order
    base_min_users: int = 0  # k of the files, before a caller raised it (0: min_users)

    @property
    def ks(self) -> tuple[int, ...]:
        """The k's a pattern is built for, smallest first: a raised k only adds
        suppressions to the files' pattern (``kpi.protect``)."""
        return tuple(sorted({self.base_min_users or self.min_users, self.min_users}))

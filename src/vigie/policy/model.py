"""The policy as typed, frozen objects: what may leave production, column by column."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

DataClass = Literal["identifier", "pii", "secret", "quasi", "public"]
ActionName = Literal["keep", "drop", "pseudonymize", "generalize"]
TimeGrain = Literal["hour", "day", "week", "month", "year"]

DATA_CLASSES: tuple[DataClass, ...] = ("identifier", "pii", "secret", "quasi", "public")
ACTIONS: tuple[ActionName, ...] = ("keep", "drop", "pseudonymize", "generalize")
TIME_GRAINS: tuple[TimeGrain, ...] = ("hour", "day", "week", "month", "year")
ALLOWED_ACTIONS: dict[DataClass, tuple[ActionName, ...]] = {
    "secret": ("drop",),
    "identifier": ("drop", "pseudonymize"),
    "pii": ("drop", "pseudonymize", "generalize"),
    "quasi": ("keep", "drop", "pseudonymize", "generalize"),
    "public": ("keep", "drop", "pseudonymize", "generalize"),
}
WHY_NOT: dict[DataClass, str] = {
    "secret": "secrets never leave production",
    "identifier": "a raw identifier lets anyone join the store back to production",
    "pii": "personal data never leaves production in clear",
    "quasi": "",
    "public": "",
}


@dataclass(frozen=True)
class Where:
    """A place in the policy file, for error messages."""

    file: str
    line: int  # 1-based
    column: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Keep:
    name: Literal["keep"] = "keep"


@dataclass(frozen=True)
class Drop:
    name: Literal["drop"] = "drop"


@dataclass(frozen=True)
class Pseudonymize:
    """Keyed HMAC-SHA256 of (domain, value): equal values in one domain, equal pseudonyms."""

    domain: str
    name: Literal["pseudonymize"] = "pseudonymize"


@dataclass(frozen=True)
class TruncateTime:
    grain: TimeGrain
    name: Literal["generalize"] = "generalize"

    def describe(self) -> str:
        return f"generalize: {self.grain}"


@dataclass(frozen=True)
class IpPrefix:
    """IPv4 to its /24, IPv6 to its /48."""

    name: Literal["generalize"] = "generalize"

    def describe(self) -> str:
        return "generalize: ip_prefix"


@dataclass(frozen=True)
class Buckets:
    """Numbers to the lower edge of their bucket (values below the first edge: the first)."""

    edges: tuple[float, ...]
    name: Literal["generalize"] = "generalize"

    def describe(self) -> str:
        return f"generalize: buckets {list(self.edges)}"


Generalize = TruncateTime | IpPrefix | Buckets
Action = Keep | Drop | Pseudonymize | Generalize


@dataclass(frozen=True)
class ColumnRule:
    table: str
    column: str
    data_class: DataClass
    action: Action
    where: Where
    allow: dict[str, str] = field(default_factory=dict)  # detector -> reason

    @property
    def qualified(self) -> str:
        return f"{self.table}.{self.column}"

    @property
    def leaves_production(self) -> bool:
        return not isinstance(self.action, Drop)


@dataclass(frozen=True)
class TablePolicy:
    name: str
    columns: dict[str, ColumnRule]
    where: Where
    cursor: str | None = None  # updated_at-like column or growing key; None: full compare

    @property
    def copied(self) -> list[ColumnRule]:
        return [r for r in self.columns.values() if r.leaves_production]


@dataclass(frozen=True)
class Policy:
    path: Path
    tables: dict[str, TablePolicy]
    exclude: frozenset[str]
    digest: str  # sha256 of the policy file's bytes, recorded with each sync run
    text: str = field(default="", repr=False)  # the file's text, kept in the store's lineage

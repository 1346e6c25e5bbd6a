"""What a production source offers the sync: schema, snapshot reads as Arrow, key counts.

Sources are read-only. Every read of one sync run happens inside one snapshot
(``snapshot()``), so the tables copied fit together as they were at one moment.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

import pyarrow as pa

from vigie.db.dsn import Dsn

Kind = Literal["integer", "float", "decimal", "text", "timestamp", "date", "boolean", "other"]


@dataclass(frozen=True)
class SourceColumn:
    name: str
    kind: Kind
    raw_type: str  # as the engine names it, e.g. "character varying(160)"
    nullable: bool


@dataclass(frozen=True)
class SourceTable:
    name: str
    columns: tuple[SourceColumn, ...]
    primary_key: tuple[str, ...]

    def column(self, name: str) -> SourceColumn:
        return next(c for c in self.columns if c.name == name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


CursorValue = int | datetime


@dataclass(frozen=True)
class Filter:
    """Rows whose ``column`` is >= ``value`` (updated_at-like) or > ``value`` (growing key)."""

    column: str
    value: CursorValue
    inclusive: bool


@dataclass(frozen=True)
class ForeignKey:
    column: str
    parent: str
    parent_column: str
    on_delete: str  # CASCADE, RESTRICT, NO ACTION, SET NULL...


@dataclass(frozen=True)
class KeyRange:
    """First key column in [start, stop); ``None`` leaves that side open."""

    start: int | None = None
    stop: int | None = None


@dataclass(frozen=True)
class RowCounters:
    """The server's running row statistics of a table (PostgreSQL's ``pg_stat_user_tables``).

    ``deleted`` (``n_tup_del``) counts every row deleted since ``epoch``, which names the
    database, the table's file, the server start and the last statistics reset: counters
    from different epochs do not compare. ``live`` (``n_live_tup``) moves by committed
    inserts minus committed deletes (rows inserted and deleted between two readings cancel
    out, aborted inserts do not count); vacuum and analyze overwrite it, so its epoch
    ``live_epoch`` also names how many of those ran. ``written`` (``n_tup_ins +
    n_tup_upd``, same epoch as ``deleted``) tells whether the statistics have caught up
    with the changes a run saw: a session reports them up to seconds after it commits."""

    epoch: str
    deleted: int
    live_epoch: str = ""
    live: int | None = None
    written: int | None = None


def bucketed(table: SourceTable) -> bool:
    """Whether rows are bucketed by their first key column (an integer)."""
    return bool(table.primary_key) and table.column(table.primary_key[0]).kind == "integer"


class Source(Protocol):
    dsn: Dsn

    def table_names(self) -> list[str]: ...
    def identity(self) -> str:
        """What tells this database from another one: PostgreSQL's system identifier and
        database oid, MySQL's server and schema, SQLite's file (its real path)."""

    def describe(self, table: str) -> SourceTable: ...
    def snapshot(self) -> None:
        """Start the read-only snapshot that every following read uses."""

    def release(self) -> None:
        """End the snapshot."""

    def close(self) -> None: ...
    def max_value(self, table: SourceTable, column: str) -> CursorValue | None: ...
    def estimate_rows(self, table: SourceTable) -> int | None: ...
    def key_span(self, table: SourceTable) -> tuple[int, int] | None:
        """Smallest and largest value of the first key column (bucketed tables), or None."""

    @property
    def shares_snapshot(self) -> bool:
        """Whether ``readers`` can give other connections reading this very snapshot."""

    def readers(self, n: int) -> list[Source]:
        """Up to ``n`` sources reading the same snapshot in parallel (this one first)."""

    def reader(self, spare: Source | None = None) -> Source:
        """One more connection reading this snapshot (where ``shares_snapshot``); ``spare``,
        such a reader of an earlier snapshot, is reused rather than connecting again."""

    def read(
        self,
        table: SourceTable,
        columns: list[str],
        where: Filter | None,
        keys: KeyRange | None,
        batch_rows: int,
    ) -> Iterator[pa.Table]:
        """Rows in primary-key order, in Arrow batches of at most ``batch_rows``."""

    def bucket_counts(self, table: SourceTable, width: int) -> dict[int, int]:
        """Row count per range of ``width`` values of the first key column (0: all rows)."""

    def row_count(self, table: SourceTable) -> int: ...
    def row_counters(self) -> dict[str, RowCounters]:
        """The server's running row statistics per table, where it keeps them.
        Read before ``snapshot()``: a delete between the two then shows at the next sync."""

    def foreign_keys(self, table: SourceTable) -> list[ForeignKey]:
        """Single-column foreign keys of ``table``, with their ON DELETE rule."""

    def keys_between(self, table: SourceTable, ranges: list[KeyRange]) -> Iterator[pa.Table]:
        """The primary keys of the rows whose first key column falls in ``ranges``."""

    def sample(self, table: SourceTable, rows: int) -> pa.Table: ...

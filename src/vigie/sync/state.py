"""A table's sync state in the store: its result in this run, its checkpoints, its watermark.

Integer watermarks and checkpoints are kept as key *buckets* (multiples of the bucket
width), so no raw key value of production is ever stored.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from vigie.sources.base import CursorValue, Filter
from vigie.stores.duckdb_store import Store
from vigie.stores.meta import META

Progress = Callable[[str, int, int | None], None]  # table, rows done in this pass, total


@dataclass
class TableResult:
    table: str
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    seconds: float = 0.0
    status: str = "ok"
    message: str = ""
    # how deletes were found: snapshot (fresh full load), counter (the server's delete
    # counter moved by exactly the rows cascaded), count (equal row counts), buckets
    deletes_by: str = ""
    passes: list[str] = field(default_factory=list)
    backfilled: list[str] = field(default_factory=list)  # columns the policy change added

    @property
    def rows(self) -> int:
        return self.inserted + self.updated


@dataclass(frozen=True)
class Chunk:
    """A key range of a pass, in buckets ([lo, hi), None: open), and how far it got."""

    lo: int | None = None
    hi: int | None = None
    progress: int | None = None  # bucket of the last row written
    done: bool = False


@dataclass
class TableState:
    loaded: bool = False
    watermark: CursorValue | None = None
    pass_kind: str | None = None
    pass_from: CursorValue | None = None
    pass_target: CursorValue | None = None
    chunks: list[Chunk] = field(default_factory=list)


def load_state(store: Store, table: str) -> TableState:
    row = store.rows(
        f"SELECT loaded, watermark_ts, watermark_int, pass_kind, pass_from_ts, "
        f"pass_from_int, pass_target_ts, pass_target_int, chunks "
        f"FROM {META}.state WHERE table_name = ?",
        [table],
    )
    if not row:
        return TableState()
    loaded, wts, wint, kind, fts, fint, tts, tint, chunks = row[0]
    parsed = [Chunk(**c) for c in json.loads(chunks)] if chunks else []
    return TableState(
        bool(loaded), watermark(wts, wint), kind, watermark(fts, fint), watermark(tts, tint),
        parsed,
    )  # fmt: skip


def save_pass(con: Any, table: str, kind: str | None, start: CursorValue | None,
              target: CursorValue | None, chunks: list[Chunk] | None) -> None:  # fmt: skip
    con.execute(
        f"UPDATE {META}.state SET pass_kind = ?, pass_from_ts = ?, pass_from_int = ?, "
        "pass_target_ts = ?, pass_target_int = ?, chunks = ? WHERE table_name = ?",
        [kind, *split(start), *split(target), chunks_json(chunks), table],
    )


def save_chunks(con: Any, table: str, chunks: list[Chunk]) -> None:
    con.execute(
        f"UPDATE {META}.state SET chunks = ? WHERE table_name = ?", [chunks_json(chunks), table]
    )


def finish_pass(con: Any, table: str, loaded: bool, target: CursorValue | None) -> None:
    """The pass is done: the table is loaded up to ``target`` (when ``loaded``)."""
    if loaded:
        con.execute(
            f"UPDATE {META}.state SET loaded = true, watermark_ts = ?, watermark_int = ? "
            "WHERE table_name = ?",
            [*split(target), table],
        )
    save_pass(con, table, None, None, None, None)


def chunks_json(chunks: list[Chunk] | None) -> str | None:
    return None if chunks is None else json.dumps([asdict(c) for c in chunks])


def watermark(ts: datetime | None, num: int | None) -> CursorValue | None:
    """A cursor value as the state table keeps it (a timestamp or an integer column)."""
    return ts if ts is not None else num


def held_target(value: CursorValue | None) -> CursorValue | None:
    """A timestamp watermark never moves past now (UTC; a naive cursor is taken as UTC):
    one row with a cursor in the future, or PostgreSQL's ``infinity``, would otherwise
    freeze it, and no later change would be copied. Rows ahead of now are read again at
    each sync until their time comes."""
    if not isinstance(value, datetime):
        return value
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return min(value, datetime.now(UTC).replace(tzinfo=None))


def delta_filter(cursor: str | None, start: CursorValue | None) -> Filter | None:
    """The rows a pass from ``start`` reads: those whose cursor is at or past it (all rows
    of a table without a cursor, or before any watermark)."""
    return Filter(cursor, start, inclusive=True) if start is not None and cursor else None


def split(value: CursorValue | None) -> tuple[datetime | None, int | None]:
    if isinstance(value, datetime):
        return value, None
    return None, value

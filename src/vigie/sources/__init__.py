"""Read-only production sources: schema introspection, snapshot reads as Arrow batches."""

from __future__ import annotations

from vigie.db.dsn import Dsn
from vigie.sources.base import Source


def open_source(dsn: Dsn) -> Source:
    """A source for ``dsn``: SQLite through the standard library, the servers through DuckDB."""
    if dsn.engine == "sqlite":
        from vigie.sources.sqlite import SQLiteSource

        return SQLiteSource(dsn)
    from vigie.sources.duck import DuckSource

    return DuckSource(dsn)

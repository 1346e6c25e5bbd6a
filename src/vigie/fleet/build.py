"""`vigie fleet generate`: write a generated fleet into a production database."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from vigie.db.connect import connect, list_tables
from vigie.db.dsn import Dsn
from vigie.errors import TargetNotEmpty
from vigie.fleet.generate import FleetGenerator, FleetSpec
from vigie.fleet.schema import TABLES, TABLES_BY_NAME
from vigie.fleet.writers import writer_for
from vigie.pipeline import prefetch

Progress = Callable[[str, int], None]  # (table, rows just written)


@dataclass(frozen=True)
class FleetReport:
    """What a generate run wrote."""

    dsn: str
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    @property
    def rows_per_second(self) -> float:
        return self.total_rows / self.seconds if self.seconds else 0.0


def generate_fleet(
    dsn: Dsn,
    spec: FleetSpec,
    *,
    replace: bool = False,
    progress: Progress | None = None,
    on_estimate: Callable[[int], None] | None = None,
) -> FleetReport:
    """Generate the fleet for ``spec`` into ``dsn``; refuse a non-empty target unless replacing."""
    started = time.perf_counter()
    conn = connect(dsn, create=True)
    try:
        existing = list_tables(conn, dsn)
        if existing and not replace:
            shown = ", ".join(existing[:8]) + (" ..." if len(existing) > 8 else "")
            raise TargetNotEmpty(
                f"{dsn} already holds {len(existing)} table(s): {shown}.",
                hint="Use another database, or add --replace to drop the fleet's tables first.",
            )
        writer = writer_for(dsn, conn)
        writer.create(TABLES, [t for t in existing if t in TABLES_BY_NAME] if replace else [])
        generator = FleetGenerator(spec)
        if on_estimate:
            on_estimate(generator.estimated_rows())
        rows: Counter[str] = Counter()
        for name, data in prefetch(generator.chunks(), depth=3):
            writer.write(TABLES_BY_NAME[name], data)
            rows[name] += data.num_rows
            if progress:
                progress(name, data.num_rows)
        writer.finish(TABLES)
    finally:
        conn.close()
    return FleetReport(str(dsn), dict(rows), time.perf_counter() - started)

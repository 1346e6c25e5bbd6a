"""`vigie policy suggest`: a draft policy from production's schema and a sample of values.

Every rule is a guess and says so (``# REVIEW: why``); the safe action is preselected, and
a column whose sampled values look like PII or a secret is never suggested ``keep``.
"""

from __future__ import annotations

import polars as pl

from vigie.db.dsn import Dsn
from vigie.policy.classify import guess
from vigie.sources import open_source
from vigie.sources.base import SourceTable

HEADER = """\
# Draft vigie policy for {dsn}, written by `vigie policy suggest`.
# Every rule below is a GUESS marked REVIEW: read each one, fix it, delete the marks,
# and have the result reviewed like code. Check it with `vigie policy check FILE`.
#   classes: identifier, pii, secret, quasi, public
#   actions: keep | drop | pseudonymize: <domain>
#            | generalize: hour|day|week|month|year|ip_prefix|{{buckets: [...]}}
version: 1
exclude: []
tables:
"""


def suggest_policy(dsn: Dsn, sample_rows: int = 500) -> str:
    """The draft policy as YAML text."""
    source = open_source(dsn)
    try:
        source.snapshot()
        parts = [HEADER.format(dsn=dsn)]
        for name in source.table_names():
            table = source.describe(name)
            parts.append(_table_block(table, _sample(source.sample(table, sample_rows))))
        return "".join(parts)
    finally:
        source.close()


def _sample(table: object) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def _table_block(table: SourceTable, sample: pl.DataFrame) -> str:
    lines = [f"  {table.name}:"]
    cursor = _cursor(table)
    if cursor:
        lines.append(f"    cursor: {cursor}   # REVIEW: finds the rows changed since a sync")
    lines.append("    columns:")
    width = max(len(c.name) for c in table.columns) + 1
    for col in table.columns:
        values = sample[col.name] if col.name in sample.columns else None
        g = guess(table.name, col, values)
        rule = f"{{class: {g.data_class}, {g.action}}}"
        lines.append(f"      {col.name + ':':<{width}} {rule:<44} # REVIEW: {g.why}")
    return "\n".join(lines) + "\n\n"


def _cursor(table: SourceTable) -> str | None:
    for name in ("updated_at", "modified_at", "last_modified"):
        if name in table.names and table.column(name).kind == "timestamp":
            return name
    return None

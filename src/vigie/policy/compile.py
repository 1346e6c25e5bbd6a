"""Compile column rules into vectorized operations over Arrow batches.

Pseudonyms come from ``hmac_engine`` (C/OpenSSL over Arrow buffers); generalizations are
Polars expressions. No Python code runs per value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import polars as pl
import pyarrow as pa

from vigie.errors import PolicyError
from vigie.policy.hmac_engine import pseudonyms
from vigie.policy.model import (
    Buckets,
    ColumnRule,
    Drop,
    IpPrefix,
    Keep,
    Pseudonymize,
    TablePolicy,
    TruncateTime,
)
from vigie.sources.base import SourceTable

BUCKET_COLUMN = "_vigie_bucket"
_TRUNCATE = {"hour": "1h", "day": "1d", "week": "1w", "month": "1mo", "year": "1y"}
_NEEDS: dict[type, tuple[str, ...]] = {
    TruncateTime: ("timestamp", "date"),
    IpPrefix: ("text",),
    Buckets: ("integer", "float", "decimal"),
}


@dataclass(frozen=True)
class OutColumn:
    name: str
    expr: pl.Expr | None  # None for pseudonyms
    domain: str | None = None  # the pseudonym domain

    @property
    def pseudonym(self) -> bool:
        return self.domain is not None


@dataclass(frozen=True)
class CompiledTable:
    policy: TablePolicy
    source: SourceTable
    columns: tuple[OutColumn, ...]
    read_columns: tuple[str, ...]  # what is read from production: copied columns only
    key: tuple[str, ...]  # primary key columns, as stored
    bucket_width: int
    secret: str = field(repr=False, default="")  # the pseudonymization key

    @property
    def pseudonym_columns(self) -> set[str]:
        return {c.name for c in self.columns if c.pseudonym}

    @property
    def kept_text(self) -> list[str]:
        """Kept text columns: what the content scan reads."""
        return [
            name
            for name, rule in self.policy.columns.items()
            if isinstance(rule.action, Keep) and self.source.column(name).kind == "text"
        ]


def compile_table(policy: TablePolicy, source: SourceTable, key: str) -> CompiledTable:
    """Check each rule fits its column's type and prepare its operation."""
    out = []
    for name, rule in policy.columns.items():
        if isinstance(rule.action, Drop):
            continue
        kind = source.column(name).kind
        _check_fits(rule, kind, source.column(name).raw_type)
        if isinstance(rule.action, Pseudonymize):
            out.append(OutColumn(name, None, rule.action.domain))
        else:
            out.append(OutColumn(name, _expr(rule, kind).alias(name)))
    read = tuple(dict.fromkeys([c.name for c in out] + list(source.primary_key)))
    width = 4096
    return CompiledTable(policy, source, tuple(out), read, source.primary_key, width, key)


def _check_fits(rule: ColumnRule, kind: str, raw_type: str) -> None:
    needs = _NEEDS.get(type(rule.action))
    if needs and kind not in needs:
        describe = rule.action.describe()  # type: ignore[union-attr]
        raise PolicyError(
            f"{rule.where}: {rule.qualified}: '{describe}' needs a {' or '.join(needs)} column, "
            f"but production has {raw_type}.",
            hint="Choose a generalization that fits the column's type, or drop it.",
        )


def _expr(rule: ColumnRule, kind: str) -> pl.Expr:
    col = pl.col(rule.column)
    action = rule.action
    if isinstance(action, Keep):
        return col
    if isinstance(action, TruncateTime):
        return col.dt.truncate(_TRUNCATE[action.grain])
    if isinstance(action, IpPrefix):
        return col.map_batches(ip_prefix, return_dtype=pl.String)
    if isinstance(action, Buckets):
        return buckets(col, action.edges)
    raise AssertionError(f"unhandled action {action}")


_V4 = r"^(\d{1,3}\.\d{1,3}\.\d{1,3})\.\d{1,3}$"


def ip_prefix(values: pl.Series) -> pl.Series:
    """IPv4 to ``a.b.c.0/24``, IPv6 to its first three groups ``/48``; anything else: null.
    One regex pass over all values; the IPv6 work only on the values holding a colon."""
    v4 = values.str.replace(_V4, "${1}.0/24")
    out = pl.select(pl.when(v4 != values).then(v4)).to_series()
    has_colon = values.str.contains(":", literal=True).fill_null(False)
    if has_colon.any():
        where = has_colon.arg_true()
        six = pl.DataFrame({"ip": values.gather(where)}).select(_ip6_prefix(pl.col("ip")))
        out = out.scatter(where, six.to_series())
    return out.alias(values.name)


def _ip6_prefix(col: pl.Expr) -> pl.Expr:
    lower = col.str.to_lowercase()
    parts = lower.str.split("::")
    head = parts.list.first().str.split(":").list.eval(pl.element().filter(pl.element() != ""))
    tail = parts.list.get(1, null_on_oob=True).fill_null("").str.split(":")
    tail = tail.list.eval(pl.element().filter(pl.element() != ""))
    zeros = (8 - head.list.len() - tail.list.len()).clip(lower_bound=0)
    groups = pl.concat_list([head, pl.lit("0").repeat_by(zeros), tail]).list.head(3)
    is_v6 = lower.str.contains(r"^[0-9a-f:]+$") & (parts.list.len() <= 2)
    v6 = pl.concat_str([groups.list.join(":"), pl.lit("::/48")])
    return pl.when(is_v6).then(v6).otherwise(pl.lit(None, pl.String))


def buckets(col: pl.Expr, edges: tuple[float, ...]) -> pl.Expr:
    """The lower edge of each value's bucket; values under the first edge get the first."""
    out: Any = pl.when(col.is_null()).then(pl.lit(None, pl.Float64))
    for edge in reversed(edges[1:]):
        out = out.when(col >= edge).then(pl.lit(edge))
    return cast(pl.Expr, out.otherwise(pl.lit(edges[0]))).cast(pl.Float64)


@dataclass(frozen=True)
class Masked:
    """A masked batch: ``arrow`` is what the store receives; ``frame`` holds the
    non-pseudonym columns (for the content scan) and the reconcile bucket."""

    arrow: pa.Table
    frame: pl.DataFrame


def mask(
    compiled: CompiledTable, batch: pa.Table, columns: list[OutColumn] | None = None
) -> Masked:
    """Apply the compiled rules to one Arrow batch (optionally only ``columns``)."""
    wanted = list(compiled.columns) if columns is None else columns
    plain = [c for c in wanted if c.expr is not None]
    frame = _frame(batch).select([c.expr for c in plain] + [_bucket(compiled)])
    arrays: dict[str, Any] = {}
    plain_arrow = frame.to_arrow()
    for c in wanted:
        if c.domain is not None:
            arrays[c.name] = pseudonyms(batch.column(c.name), c.domain, compiled.secret)
        else:
            arrays[c.name] = plain_arrow.column(c.name)
    arrays[BUCKET_COLUMN] = plain_arrow.column(BUCKET_COLUMN)
    return Masked(pa.table(arrays), frame)


def mask_keys(compiled: CompiledTable, batch: pa.Table) -> pa.Table:
    """Only the primary key columns, masked as they are stored."""
    keys = [c for c in compiled.columns if c.name in compiled.key]
    return mask(compiled, batch, keys).arrow.drop_columns([BUCKET_COLUMN])


def _bucket(compiled: CompiledTable) -> pl.Expr:
    first = compiled.key[0] if compiled.key else None
    if first and compiled.source.column(first).kind == "integer":
        return (pl.col(first) // compiled.bucket_width).cast(pl.Int64).alias(BUCKET_COLUMN)
    return pl.lit(0, pl.Int64).alias(BUCKET_COLUMN)


def _frame(batch: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(batch)
    assert isinstance(frame, pl.DataFrame)
    return frame

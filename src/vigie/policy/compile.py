"""Compile column rules into vectorized Polars expressions over Arrow batches.

Pseudonyms are HMAC-SHA256 under the pseudonymization key of ``"<domain>:<value>"``
(integers in decimal, text as is, timestamps ISO), cut to 128 bits and stored as UUID.
polars-hash computes the HMAC in Rust over whole batches; ``self_test`` checks it bit for
bit against Python's ``hmac`` before anything is written.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any, cast

import polars as pl
import polars_hash  # noqa: F401  (registers the .chash namespace)

from vigie.errors import PolicyError, SyncError
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
    expr: pl.Expr
    pseudonym: bool


@dataclass(frozen=True)
class CompiledTable:
    policy: TablePolicy
    source: SourceTable
    columns: tuple[OutColumn, ...]
    read_columns: tuple[str, ...]  # what is read from production: copied columns only
    key: tuple[str, ...]  # primary key columns, as stored
    bucket_width: int

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


def pseudonym_expr(column: pl.Expr, domain: str, key: str, kind: str) -> pl.Expr:
    if kind == "timestamp":
        text = column.dt.to_string("%Y-%m-%dT%H:%M:%S%.f")
    else:
        text = column.cast(pl.String)
    message = pl.concat_str([pl.lit(f"{domain}:"), text])
    digest: pl.Expr = message.chash.hmac_sha256(key=key)  # type: ignore[attr-defined]
    return digest.str.slice(0, 32)


def pseudonym_reference(value: str, domain: str, key: str) -> str:
    """The pseudonym of one canonical value, by Python's ``hmac`` (for checks and tests)."""
    digest = hmac.new(key.encode(), f"{domain}:{value}".encode(), hashlib.sha256).hexdigest()
    return digest[:32]


def self_test(key: str) -> None:
    """Check the vectorized HMAC against Python's ``hmac`` bit for bit, or refuse to run."""
    values = ["1", "42", "2400000", "alice@example.com", "Zoë", ""]
    got = pl.DataFrame({"v": values}).select(pseudonym_expr(pl.col("v"), "t", key, "text"))
    want = [pseudonym_reference(v, "t", key) for v in values]
    if got.to_series().to_list() != want:
        raise SyncError(
            "The vectorized HMAC does not match Python's hmac; refusing to pseudonymize.",
            hint="Reinstall polars-hash at a supported version (see pyproject.toml).",
        )


def compile_table(policy: TablePolicy, source: SourceTable, key: str) -> CompiledTable:
    out = []
    for name, rule in policy.columns.items():
        if isinstance(rule.action, Drop):
            continue
        kind = source.column(name).kind
        _check_fits(rule, kind, source.column(name).raw_type)
        out.append(
            OutColumn(
                name, _expr(rule, kind, key).alias(name), isinstance(rule.action, Pseudonymize)
            )
        )
    read = tuple(dict.fromkeys([c.name for c in out] + list(source.primary_key)))
    width = 4096
    return CompiledTable(policy, source, tuple(out), read, source.primary_key, width)


def _check_fits(rule: ColumnRule, kind: str, raw_type: str) -> None:
    needs = _NEEDS.get(type(rule.action))
    if needs and kind not in needs:
        describe = rule.action.describe()  # type: ignore[union-attr]
        raise PolicyError(
            f"{rule.where}: {rule.qualified}: '{describe}' needs a {' or '.join(needs)} column, "
            f"but production has {raw_type}.",
            hint="Choose a generalization that fits the column's type, or drop it.",
        )


def _expr(rule: ColumnRule, kind: str, key: str) -> pl.Expr:
    col = pl.col(rule.column)
    action = rule.action
    if isinstance(action, Keep):
        return col
    if isinstance(action, Pseudonymize):
        return pseudonym_expr(col, action.domain, key, kind)
    if isinstance(action, TruncateTime):
        return col.dt.truncate(_TRUNCATE[action.grain])
    if isinstance(action, IpPrefix):
        return ip_prefix(col)
    if isinstance(action, Buckets):
        return buckets(col, action.edges)
    raise AssertionError(f"unhandled action {action}")


def ip_prefix(col: pl.Expr) -> pl.Expr:
    """IPv4 to ``a.b.c.0/24``, IPv6 to its first three groups ``/48``; anything else: null."""
    v4 = col.str.replace(r"^(\d{1,3}\.\d{1,3}\.\d{1,3})\.\d{1,3}$", "${1}.0/24")
    is_v4 = col.str.contains(r"^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}$")
    lower = col.str.to_lowercase()
    parts = lower.str.split("::")
    head = parts.list.first().str.split(":").list.eval(pl.element().filter(pl.element() != ""))
    tail = parts.list.get(1, null_on_oob=True).fill_null("").str.split(":")
    tail = tail.list.eval(pl.element().filter(pl.element() != ""))
    zeros = (8 - head.list.len() - tail.list.len()).clip(lower_bound=0)
    filler = pl.lit("0").repeat_by(zeros)
    groups = pl.concat_list([head, filler, tail]).list.head(3)
    is_v6 = lower.str.contains(r"^[0-9a-f:]+$") & lower.str.contains(":") & (parts.list.len() <= 2)
    v6 = pl.concat_str([groups.list.join(":"), pl.lit("::/48")])
    return pl.when(is_v4).then(v4).when(is_v6).then(v6).otherwise(pl.lit(None, pl.String))


def buckets(col: pl.Expr, edges: tuple[float, ...]) -> pl.Expr:
    """The lower edge of each value's bucket; values under the first edge get the first."""
    out: Any = pl.when(col.is_null()).then(pl.lit(None, pl.Float64))
    for edge in reversed(edges[1:]):
        out = out.when(col >= edge).then(pl.lit(edge))
    return cast(pl.Expr, out.otherwise(pl.lit(edges[0]))).cast(pl.Float64)


def mask(compiled: CompiledTable, batch: pl.DataFrame) -> pl.DataFrame:
    """Apply the compiled rules to one batch; adds the reconcile bucket of each row."""
    first = compiled.key[0] if compiled.key else None
    if first and compiled.source.column(first).kind == "integer":
        bucket = (pl.col(first) // compiled.bucket_width).cast(pl.Int64)
    else:
        bucket = pl.lit(0, pl.Int64)
    return batch.select([c.expr for c in compiled.columns] + [bucket.alias(BUCKET_COLUMN)])


def mask_keys(compiled: CompiledTable, batch: pl.DataFrame) -> pl.DataFrame:
    """Only the primary key columns, masked as they are stored."""
    return batch.select([c.expr for c in compiled.columns if c.name in compiled.key])

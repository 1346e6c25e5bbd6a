"""Compile column rules into vectorized operations over Arrow batches.

Kept columns pass through untouched (zero copy); pseudonyms come from ``hmac_engine``
(C/OpenSSL over Arrow buffers); generalizations from ``generalize``. No Python code runs
per value.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from vigie.errors import PolicyError
from vigie.policy.generalize import generalize
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
_NEEDS: dict[type, tuple[str, ...]] = {
    TruncateTime: ("timestamp", "date"),
    IpPrefix: ("text",),
    Buckets: ("integer", "float", "decimal"),
}


@dataclass(frozen=True)
class OutColumn:
    name: str
    rule: ColumnRule

    @property
    def domain(self) -> str | None:
        """The pseudonym domain, for pseudonymized columns."""
        return self.rule.action.domain if isinstance(self.rule.action, Pseudonymize) else None

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
    def kept(self) -> list[str]:
        """Kept columns: what the content scan reads (those of them that can hold text)."""
        return [name for name, rule in self.policy.columns.items() if isinstance(rule.action, Keep)]


def compile_table(policy: TablePolicy, source: SourceTable, key: str) -> CompiledTable:
    """Check each rule fits its column's type and prepare its operation."""
    out = []
    for name, rule in policy.columns.items():
        if isinstance(rule.action, Drop):
            continue
        kind = source.column(name).kind
        _check_fits(rule, kind, source.column(name).raw_type)
        out.append(OutColumn(name, rule))
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


@dataclass(frozen=True)
class Masked:
    """A masked batch: what the store receives, with each row's reconcile bucket."""

    arrow: pa.Table
    buckets: np.ndarray

    @property
    def rows(self) -> int:
        return int(self.arrow.num_rows)


def mask(
    compiled: CompiledTable, batch: pa.Table, columns: list[OutColumn] | None = None
) -> Masked:
    """Apply the compiled rules to one Arrow batch (optionally only ``columns``)."""
    arrays: dict[str, pa.Array | pa.ChunkedArray] = {}
    for c in compiled.columns if columns is None else columns:
        values = batch.column(c.name)
        action = c.rule.action
        if isinstance(action, Pseudonymize):
            arrays[c.name] = pseudonyms(values, action.domain, compiled.secret)
        elif isinstance(action, Keep):
            arrays[c.name] = values
        else:
            arrays[c.name] = generalize(values.combine_chunks(), action)  # type: ignore[arg-type]
    buckets = _buckets(compiled, batch)
    arrays[BUCKET_COLUMN] = pa.array(buckets)
    return Masked(pa.table(arrays), buckets)


def mask_keys(compiled: CompiledTable, batch: pa.Table) -> pa.Table:
    """Only the primary key columns, masked as they are stored."""
    keys = [c for c in compiled.columns if c.name in compiled.key]
    return mask(compiled, batch, keys).arrow.drop_columns([BUCKET_COLUMN])


def _buckets(compiled: CompiledTable, batch: pa.Table) -> np.ndarray:
    first = compiled.key[0] if compiled.key else None
    if first and compiled.source.column(first).kind == "integer":
        keys = batch.column(first).to_numpy()
        return np.asarray(keys // compiled.bucket_width, dtype=np.int64)
    return np.zeros(batch.num_rows, dtype=np.int64)

"""A production batch made ready for the store: masked by the policy, then scanned.

The content scan reads every kept column of the masked batch that can hold text, flattened
to its text (what the store would receive): its distinct values by shape (e-mails, phones,
MACs, IPs, cards, tokens) and for person names, and the whole column for near-unique values
that single out rows or their owners (``vigie.scan.column``). Binary that is not text is
refused unless allowed. A hit stops the table before anything of the batch is written.
"""

from __future__ import annotations

from functools import partial

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from vigie.errors import ScanHit, SyncError
from vigie.keys import Keys
from vigie.policy.compile import CompiledTable, Masked, OutColumn, mask
from vigie.policy.model import ColumnRule
from vigie.scan.column import OPAQUE, describe, scan_batch_column
from vigie.scan.detectors import Hit, without_values
from vigie.scan.flatten import flatten

# Detectors by behaviour (names, near-unique values) can be switched off for benchmarks.
BEHAVIOUR_DETECTORS = True


def mask_and_scan(
    compiled: CompiledTable, keys: Keys, batch: pa.Table, columns: list[OutColumn] | None = None
) -> Masked:
    """Mask ``batch`` (optionally only ``columns``), then scan what would be kept."""
    try:
        masked = mask(compiled, batch, columns)
    except Exception as exc:
        raise SyncError(
            f"Masking {compiled.policy.name} failed: "
            f"{without_values(keys.scrub(str(exc)).splitlines()[0])}"
        ) from None
    scan(compiled, masked.arrow)
    return masked


def scan(compiled: CompiledTable, masked: pa.Table) -> None:
    """Content scan of every kept column present in ``masked`` that can hold text, flattened
    to its text (``vigie.scan.flatten``)."""

    def entities() -> dict[str, pl.Series]:  # built only for a column worth measuring
        return {
            name: pl.Series(name, masked.column(name))
            for name in sorted(compiled.pseudonym_columns)
            if name in masked.column_names
        }

    for column in compiled.kept:
        if column not in masked.column_names:
            continue
        rule = compiled.policy.columns[column]
        flat = flatten(masked.column(column))
        if flat.opaque and OPAQUE not in rule.allow:
            raise opaque_hit(compiled.policy.name, rule)
        if len(flat.text) == 0:
            continue
        kept = flat.text
        distinct = pl.Series(column, pc.unique(kept))
        hits = scan_batch_column(
            column, partial(pl.Series, column, kept), distinct,
            entities, set(rule.allow), BEHAVIOUR_DETECTORS and flat.aligned,
        )  # fmt: skip
        if hits:
            raise scan_hit(compiled.policy.name, rule, hits[0], "in this batch")


def opaque_hit(table: str, rule: ColumnRule) -> ScanHit:
    """The error that stops ``table`` for kept binary values that are not text."""
    return ScanHit(
        f"{table}.{rule.column}: kept values are binary that is not text (or of a type with no "
        "text form): no detector can tell what they hold; nothing of the batch was loaded and "
        f"{table} stopped.",
        hint=f"Drop or pseudonymize the column at {rule.where}; if you know what it holds and "
        f'it may leave production, add allow: {{{OPAQUE}: "<why>"}} to that rule.',
    )


def scan_hit(table: str, rule: ColumnRule, hit: Hit, scope: str) -> ScanHit:
    """The error that stops ``table`` for ``hit`` (no production value in it: examples are
    redacted)."""
    return ScanHit(
        f"{table}.{rule.column}: {describe(hit, scope)}; nothing of the batch was loaded and "
        f"{table} stopped.",
        hint=f"If the column holds personal data, change its rule at {rule.where} (drop or "
        f'pseudonymize). If it is a false positive, add allow: {{{hit.detector}: "<why>"}} '
        "to that rule.",
    )

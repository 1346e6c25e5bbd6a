"""What runs on Spark's executors: vigie's own masks and content scan over Arrow batches.

The same functions as the DuckDB path (``vigie.sync.batch.mask_and_scan``) mask and scan
each batch, so a pseudonym, a generalization or a scan decision never depends on the
engine. The executors receive the pseudonym key only (never the store key), inside the
task's closure: it is not part of any SQL plan, so the Spark UI and event logs do not show
it. A vigie error raised on an executor crosses to the driver as marked JSON
(``raise_marked``), and is raised again there as the same error (``reraise``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc

from vigie.errors import ScanHit, SyncError, VigieError
from vigie.keys import Keys
from vigie.policy.compile import BUCKET_COLUMN, CompiledTable, mask_keys
from vigie.scan.detectors import without_values
from vigie.sync.batch import mask_and_scan

DAY_COLUMN = "vigie_day"  # the day partition (Hive-style directories; not a stored column)
RUN_COLUMN = "_vigie_run"
FIRST_SEEN = "_vigie_first_seen"  # when the row was first copied (incident response reads it)
LINEAGE = (BUCKET_COLUMN, RUN_COLUMN, FIRST_SEEN, DAY_COLUMN)
_MARK = "VIGIE-ERROR:"
_ARROW = {
    "UUID": pa.binary(),
    "BIGINT": pa.int64(),
    "UBIGINT": pa.decimal128(20, 0),
    "DOUBLE": pa.float64(),
    "VARCHAR": pa.string(),
    "TIMESTAMP": pa.timestamp("us"),
    "DATE": pa.date32(),
    "BOOLEAN": pa.bool_(),
}


def arrow_type(store_type: str) -> pa.DataType:
    """The dataset's Arrow type for a store type (pseudonyms: 16-byte binary; Spark has no
    UUID)."""
    return _ARROW[store_type]


def _executor_keys(pseudonym_key: str) -> Keys:
    return Keys(pseudonym_key, pseudonym_key, "spark executor")


def _cast(table: pa.Table, schema: pa.Schema) -> list[pa.Array]:
    out = []
    for field in schema:
        arr = table.column(field.name).combine_chunks()
        if isinstance(arr, pa.ExtensionArray):
            arr = arr.storage
        out.append(arr if arr.type == field.type else pc.cast(arr, field.type))
    return out


def masked_batches(
    compiled: CompiledTable,
    pseudonym_key: str,
    run_id: int,
    run_time: datetime,
    schema: pa.Schema,
    day_of: str | None,
    batch_rows: int,
    batches: Iterator[pa.RecordBatch],
) -> Iterator[pa.RecordBatch]:
    """Production batches masked and scanned, typed as ``schema`` (+ bucket, run, first seen
    at ``run_time``, and the day partition when ``day_of`` names its column)."""
    keys = _executor_keys(pseudonym_key)
    data = pa.schema([f for f in schema if f.name not in LINEAGE])
    try:
        for table in _grouped(batches, batch_rows):
            masked = mask_and_scan(compiled, keys, table).arrow
            arrays = _cast(masked, data)
            arrays.append(masked.column(BUCKET_COLUMN).combine_chunks())
            arrays.append(pa.repeat(pa.scalar(run_id, pa.int32()), masked.num_rows))
            arrays.append(pa.repeat(pa.scalar(run_time, pa.timestamp("us")), masked.num_rows))
            if day_of is not None:
                arrays.append(pc.cast(masked.column(day_of), pa.date32()).combine_chunks())
            out = pa.Table.from_arrays(arrays, schema=schema)
            yield from out.to_batches(max_chunksize=100_000)
    except Exception as exc:
        raise_marked(_redacted(exc, compiled, keys))


def masked_keys(
    compiled: CompiledTable, pseudonym_key: str, schema: pa.Schema,
    batches: Iterator[pa.RecordBatch],
) -> Iterator[pa.RecordBatch]:  # fmt: skip
    """Production primary keys, masked as they are stored."""
    try:
        for batch in batches:
            table = pa.Table.from_batches([batch])
            keys = mask_keys(compiled, table)
            yield from pa.Table.from_arrays(_cast(keys, schema), schema=schema).to_batches()
    except Exception as exc:
        raise_marked(_redacted(exc, compiled, _executor_keys(pseudonym_key)))


def _grouped(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """Batches gathered to about ``rows`` rows: the scan judges batches of the DuckDB
    path's size (its behaviour detectors measure a batch)."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        pending.append(batch)
        count += batch.num_rows
        if count >= rows:
            yield pa.Table.from_batches(pending)
            pending, count = [], 0
    if pending:
        yield pa.Table.from_batches(pending)


def _redacted(exc: Exception, compiled: CompiledTable, keys: Keys) -> VigieError:
    """A vigie error as is; any other (an Arrow cast quoting a value...) as a SyncError
    without values or keys: Spark logs what a task raises, and the driver shows it."""
    if isinstance(exc, VigieError):
        return exc
    first = (keys.scrub(str(exc)).splitlines() or [""])[0]
    return SyncError(
        f"{compiled.policy.name}: masking on Spark failed ({type(exc).__name__}): "
        f"{without_values(first)}",
        hint="Check the table's column types in production against its policy rules.",
    )


def raise_marked(exc: VigieError) -> None:
    payload = {"type": type(exc).__name__, "message": exc.message, "hint": exc.hint}
    raise RuntimeError(_MARK + json.dumps(payload) + _MARK) from None


def reraise(exc: BaseException) -> None:
    """Raise again, as itself, a vigie error that crossed from an executor; else nothing."""
    found = re.search(re.escape(_MARK) + r"(\{.*?\})" + re.escape(_MARK), str(exc), re.S)
    if not found:
        return
    payload = json.loads(found[1])
    kind = {"ScanHit": ScanHit}.get(payload["type"], SyncError)
    raise kind(payload["message"], hint=payload["hint"]) from None

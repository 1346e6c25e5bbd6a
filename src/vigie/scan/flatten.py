"""Every kept value as text the detectors can read, whatever its type.

Strings pass as they are; binary is decoded where it is UTF-8 text and is *opaque* where it
is not; lists, structs and maps are flattened to their leaves; dictionaries to their
values; any other type (network addresses, JSON, enums, UUIDs, intervals...) is cast to its
text form. Numbers, times and booleans hold no text and are not scanned. All of it on
Arrow arrays, no Python loop per value.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

NO_TEXT = (pa.types.is_integer, pa.types.is_floating, pa.types.is_decimal, pa.types.is_boolean,
           pa.types.is_timestamp, pa.types.is_date, pa.types.is_time,
           pa.types.is_null)  # fmt: skip


@dataclass(frozen=True)
class Flat:
    """The text of a kept column: ``text`` (one string per leaf value), whether it is one
    value per row (``aligned``: the behaviour detectors need that), and whether some
    values are binary that is not text (``opaque``: nothing can be said of them)."""

    text: pa.Array
    aligned: bool
    opaque: bool


def holds_text(kind: pa.DataType) -> bool:
    return not any(test(kind) for test in NO_TEXT)


def flatten(values: pa.Array | pa.ChunkedArray) -> Flat:
    array = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    return _flat(array, aligned=True)


def _flat(array: pa.Array, aligned: bool) -> Flat:
    t = array.type
    if isinstance(t, pa.ExtensionType):
        return _flat(array.storage, aligned)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return Flat(array.cast(pa.string()), aligned, False)
    if pa.types.is_dictionary(t):
        return _flat(array.dictionary_decode(), aligned)
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return _binary(array, aligned)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _flat(pc.list_flatten(array), False)
    if pa.types.is_map(t):
        keys, items = _flat(array.keys, False), _flat(array.items, False)
        return _join([keys, items])
    if pa.types.is_struct(t):
        return _join([_flat(array.field(i), False) for i in range(t.num_fields)])
    if not holds_text(t):
        return Flat(pa.array([], pa.string()), aligned, False)
    try:
        return Flat(array.cast(pa.string()), aligned, False)
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):  # no text form: refused as opaque
        return Flat(pa.array([], pa.string()), aligned, array.null_count < len(array))


def _binary(array: pa.Array, aligned: bool) -> Flat:
    """UTF-8 values decoded (DuckDB's ``try(decode())``: invalid ones become NULL, per
    value); opaque if any non-NULL value is not UTF-8."""
    raw = array if pa.types.is_binary(array.type) else array.cast(pa.binary())
    try:  # all of it UTF-8: the common case, checked by Arrow alone
        return Flat(raw.cast(pa.string()), aligned, False)
    except pa.ArrowInvalid:
        pass
    con = duckdb.connect()
    try:
        con.register("vigie_raw", pa.table({"b": raw}))
        (text,) = con.execute("SELECT try(decode(b)) AS t FROM vigie_raw").to_arrow_table()
    finally:
        con.close()
    decoded = text.combine_chunks().cast(pa.string())
    opaque = raw.null_count != decoded.null_count
    return Flat(decoded, aligned and not opaque, opaque)


def _join(parts: list[Flat]) -> Flat:
    text = pa.concat_arrays([p.text for p in parts]) if parts else pa.array([], pa.string())
    return Flat(text, False, any(p.opaque for p in parts))

"""Generalizations over Arrow arrays: time truncation, IP prefixes, number buckets.

IP prefixes (IPv4 /24, IPv6 /48) are cut in C (``vigie._hmac.ip_prefix``) in one pass
over the Arrow buffers; without the C extension, Polars string operations do the same. A
value that is not an address becomes null: generalization never lets an unexpected value
through.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from vigie.policy.model import Buckets, Generalize, IpPrefix, TruncateTime

try:
    from vigie import _hmac  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - depends on the build environment
    _hmac = None

_TRUNCATE = {"hour": "1h", "day": "1d", "week": "1w", "month": "1mo", "year": "1y"}
_V4 = r"^(\d{1,3}\.\d{1,3}\.\d{1,3})\.\d{1,3}$"


def generalize(values: pa.Array, how: Generalize) -> pa.Array:
    if isinstance(how, IpPrefix):
        return ip_prefix(values)
    series = _series(values)
    if isinstance(how, TruncateTime):
        return series.dt.truncate(_TRUNCATE[how.grain]).to_arrow()
    assert isinstance(how, Buckets)
    return pl.select(buckets(pl.lit(series), how.edges)).to_series().to_arrow()


def ip_prefix(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """IPv4 to ``a.b.c.0/24``, IPv6 to its first three groups ``/48``; anything else: null."""
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = pc.cast(arr, pa.large_string())
    if _hmac is None:  # pragma: no cover - without the C extension
        return _ip_prefix_polars(arr)
    wide = pa.types.is_large_string(arr.type)
    width, n, first = (8 if wide else 4), len(arr), arr.offset
    offsets = memoryview(arr.buffers()[1])[width * first : width * (first + n + 1)]
    data = arr.buffers()[2]
    out_offsets, out_data, valid = _hmac.ip_prefix(offsets, memoryview(data) if data else b"", wide)
    ok = np.frombuffer(valid, dtype=np.bool_)
    nulls = None if ok.all() else pa.py_buffer(np.packbits(ok, bitorder="little"))
    return pa.StringArray.from_buffers(
        n, pa.py_buffer(out_offsets), pa.py_buffer(out_data), nulls, int(n - ok.sum())
    )


def _ip_prefix_polars(arr: pa.Array) -> pa.Array:  # pragma: no cover - fallback
    series = _series(arr)
    v4 = series.str.replace(_V4, "${1}.0/24")
    frame = pl.DataFrame({"ip": series, "v4": v4}).select(
        pl.when(pl.col("v4") != pl.col("ip"))
        .then(pl.col("v4"))
        .otherwise(_ip6_prefix(pl.col("ip")))
    )
    return frame.to_series().to_arrow().cast(pa.string())


def _ip6_prefix(col: pl.Expr) -> pl.Expr:
    lower = col.str.to_lowercase()
    parts = lower.str.split("::")
    head = parts.list.first().str.split(":").list.eval(pl.element().filter(pl.element() != ""))
    tail = parts.list.get(1, null_on_oob=True).fill_null("").str.split(":")
    tail = tail.list.eval(pl.element().filter(pl.element() != ""))
    written = head.list.len().cast(pl.Int64) + tail.list.len().cast(pl.Int64)
    zeros = (8 - written).clip(lower_bound=0)
    groups = pl.concat_list([head, pl.lit("0").repeat_by(zeros), tail]).list.head(3)
    is_v6 = lower.str.contains(r"^[0-9a-f]{0,4}(:[0-9a-f]{0,4}){2,7}$") & (parts.list.len() <= 2)
    v6 = pl.concat_str([groups.list.join(":"), pl.lit("::/48")])
    return pl.when(is_v6).then(v6).otherwise(pl.lit(None, pl.String))


def buckets(col: pl.Expr, edges: tuple[float, ...]) -> pl.Expr:
    """The lower edge of each value's bucket; values under the first edge get the first."""
    out: Any = pl.when(col.is_null()).then(pl.lit(None, pl.Float64))
    for edge in reversed(edges[1:]):
        out = out.when(col >= edge).then(pl.lit(edge))
    return cast(pl.Expr, out.otherwise(pl.lit(edges[0]))).cast(pl.Float64)


def _series(values: pa.Array) -> pl.Series:
    series = pl.from_arrow(values)
    assert isinstance(series, pl.Series)
    return series

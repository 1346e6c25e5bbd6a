"""Pseudonyms of whole Arrow arrays: HMAC-SHA256 of ``"<domain>:<value>"``, first 128 bits,
as Arrow UUIDs (DuckDB stores them as its UUID type).

Two engines compute them, both checked bit for bit against Python's ``hmac`` before any
sync writes a row (``self_test``):
- ``openssl``: vigie's C extension (``vigie._hmac``), key pads hashed once, two SHA-256
  compressions per value, GIL released, the array split over the cores;
- ``polars-hash``: the Rust plugin, used only where the C extension could not be built
  (no compiler or OpenSSL headers at install time). The sync summary names the engine.

Canonical text of a value: integers in decimal, text as is, timestamps as
``YYYY-MM-DDTHH:MM:SS.ffffff``, other types as Arrow casts them to text.
"""

from __future__ import annotations

import hashlib
import hmac
from concurrent.futures import ThreadPoolExecutor

import polars as pl
import polars_hash  # noqa: F401  (registers the .chash namespace)
import pyarrow as pa
import pyarrow.compute as pc

from vigie.errors import SyncError

try:
    from vigie import _hmac  # type: ignore[attr-defined]

    ENGINE = "openssl"
except ImportError:  # pragma: no cover - depends on the build environment
    _hmac = None
    ENGINE = "polars-hash"

_PARALLEL_MIN = 100_000
_pool = ThreadPoolExecutor(2, thread_name_prefix="vigie-hmac")


def reference(value: str, domain: str, key: str) -> bytes:
    """One pseudonym by Python's ``hmac``: the yardstick for both engines."""
    return hmac.new(key.encode(), f"{domain}:{value}".encode(), hashlib.sha256).digest()[:16]


def canonical(arr: pa.Array) -> pa.Array:
    """The array as int64 (integers) or text, the input of the HMAC."""
    t = arr.type
    if pa.types.is_integer(t):
        return pc.cast(arr, pa.int64())
    if pa.types.is_timestamp(t):
        return pc.strftime(pc.cast(arr, pa.timestamp("us")), "%Y-%m-%dT%H:%M:%S")
    if pa.types.is_large_string(t) or pa.types.is_string(t):
        return arr
    return pc.cast(arr, pa.large_string())


def pseudonyms(arr: pa.Array | pa.ChunkedArray, domain: str, key: str) -> pa.Array:
    """Pseudonyms of every value of ``arr`` (nulls stay null), as an Arrow UUID array."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    values = canonical(arr)
    if _hmac is not None:
        digests = _openssl(values, f"{domain}:".encode(), key.encode())
    else:
        digests = _polars(values, domain, key)
    if arr.null_count:
        digests = pc.if_else(pc.is_null(arr), pa.scalar(None, pa.binary(16)), digests)
    return pa.ExtensionArray.from_storage(pa.uuid(), digests)


def _openssl(values: pa.Array, prefix: bytes, key: bytes) -> pa.Array:
    n = len(values)
    out = bytearray(16 * n)
    view = memoryview(out)
    halves = [(0, n // 2), (n // 2, n)] if n >= _PARALLEL_MIN else [(0, n)]
    jobs = [
        _pool.submit(_hash_slice, values.slice(a, b - a), prefix, key, view[16 * a : 16 * b])
        for a, b in halves
    ]
    for job in jobs:
        job.result()
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), n, [None, pa.py_buffer(out)])


def _hash_slice(values: pa.Array, prefix: bytes, key: bytes, out: memoryview) -> None:
    assert _hmac is not None
    n, first = len(values), values.offset
    if n == 0:
        return
    if pa.types.is_int64(values.type):
        data = memoryview(values.buffers()[1])[8 * first : 8 * (first + n)]
        _hmac.hmac16_int64(key, prefix, data, out)
        return
    wide = pa.types.is_large_string(values.type)
    width = 8 if wide else 4
    offsets = memoryview(values.buffers()[1])[width * first : width * (first + n + 1)]
    data = values.buffers()[2]
    _hmac.hmac16_utf8(key, prefix, offsets, memoryview(data) if data else b"", wide, out)


def _polars(values: pa.Array, domain: str, key: str) -> pa.Array:
    series = pl.from_arrow(values)
    assert isinstance(series, pl.Series)
    message = pl.concat_str([pl.lit(f"{domain}:"), pl.col("v").cast(pl.String)])
    hexed = pl.DataFrame({"v": series}).select(
        message.chash.hmac_sha256(key=key).str.slice(0, 32).str.decode("hex")  # type: ignore[attr-defined]
    )
    binary = hexed.to_series().to_arrow()
    return pc.cast(binary, pa.binary(16))


def self_test(key: str) -> None:
    """Check the engine against Python's ``hmac`` bit for bit, or refuse to pseudonymize."""
    texts = ["", "alice@example.com", "Zoë", "x" * 200]
    ints = [0, 1, -7, 42, 2_400_000, 2**62]
    got = pseudonyms(pa.array(texts), "t", key).storage.to_pylist()
    got += pseudonyms(pa.array(ints, pa.int64()), "t", key).storage.to_pylist()
    want = [reference(v, "t", key) for v in texts] + [reference(str(v), "t", key) for v in ints]
    if got != want:
        raise SyncError(
            f"The {ENGINE} HMAC engine does not match Python's hmac; refusing to pseudonymize.",
            hint="Reinstall vigie (pip install --force-reinstall -e .) and run the tests.",
        )

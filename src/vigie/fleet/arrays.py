"""Vectorized builders of Arrow string columns (no Python loop per value)."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

BASE64URL = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
BASE64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
HEX_OCTETS = pa.array([f"{i:02X}" for i in range(256)])
UPPER = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def rng_for(seed: int, stream: str, chunk: int = 0) -> np.random.Generator:
    """An independent, deterministic random stream for (seed, stream name, chunk)."""
    return np.random.default_rng([seed, zlib.crc32(stream.encode()), chunk])


def choice(rng: np.random.Generator, weights: Sequence[float], n: int) -> np.ndarray:
    """``n`` indices drawn with the given (normalized here) weights."""
    w = np.asarray(weights, dtype=np.float64)
    return np.asarray(rng.choice(len(w), size=n, p=w / w.sum()))


def random_chars(rng: np.random.Generator, n: int, length: int, alphabet: bytes) -> pa.Array:
    """``n`` random strings of ``length`` characters from ``alphabet``."""
    table = np.frombuffer(alphabet, dtype=np.uint8)
    idx = rng.integers(0, len(table), size=n * length)
    data = table[idx].tobytes()
    offsets = np.arange(0, (n + 1) * length, length, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets.tobytes()), pa.py_buffer(data))


def digits(rng: np.random.Generator, n: int, k: int) -> pa.Array:
    """``n`` random strings of ``k`` decimal digits."""
    return random_chars(rng, n, k, b"0123456789")


def take(vocab: Sequence[str] | pa.Array, idx: np.ndarray) -> pa.Array:
    values = vocab if isinstance(vocab, pa.Array) else pa.array(list(vocab), pa.string())
    return values.take(pa.array(idx))


def concat(*parts: pa.Array | str) -> pa.Array:
    """Element-wise string concatenation of arrays and literals."""
    return pc.binary_join_element_wise(*parts, "")


def lower(arr: pa.Array) -> pa.Array:
    return pc.utf8_lower(arr)


def int_str(values: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(values), pa.string())


def hex_join(octets: Sequence[np.ndarray], sep: str) -> pa.Array:
    """Join per-octet arrays (0–255) as upper-case hex with ``sep``."""
    return pc.binary_join_element_wise(*[take(HEX_OCTETS, o) for o in octets], sep)


def timestamps(seconds: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
    """Epoch seconds as an Arrow timestamp column; ``mask`` marks nulls."""
    return pa.array(seconds.astype("datetime64[s]"), pa.timestamp("s"), mask=mask)


def select(cond_index: np.ndarray, options: Sequence[pa.Array]) -> pa.Array:
    """Pick, row by row, the value of ``options[cond_index[row]]``."""
    out = options[0]
    for i, opt in enumerate(options[1:], start=1):
        out = pc.if_else(pa.array(cond_index == i), opt, out)
    return out

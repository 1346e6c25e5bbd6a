"""Masks: bit-for-bit HMAC pseudonyms, generalizations, on whole Polars batches."""

from __future__ import annotations

import ipaddress
from datetime import datetime

import polars as pl
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from vigie.policy.generalize import _ip_prefix_polars, buckets, ip_prefix
from vigie.policy.hmac_engine import pseudonyms, reference, self_test

KEY = "5f" * 32


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(min_size=0, max_size=60), min_size=1, max_size=50))
def test_text_pseudonyms_match_python_hmac_bit_for_bit(values):
    got = pseudonyms(pa.array(values), "email", KEY).storage.to_pylist()
    assert got == [reference(v, "email", KEY) for v in values]
    large = pseudonyms(pa.array(values, pa.large_string()), "email", KEY).storage.to_pylist()
    assert large == got


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), min_size=1, max_size=50))
def test_integer_pseudonyms_match_python_hmac_bit_for_bit(values):
    got = pseudonyms(pa.array(values, pa.int64()), "user", KEY).storage.to_pylist()
    assert got == [reference(str(v), "user", KEY) for v in values]


def test_slices_and_nulls_and_big_arrays_keep_their_place():
    values = pa.array([None if i % 7 == 0 else i for i in range(250_000)], pa.int64())
    got = pseudonyms(values.slice(3, 200_003), "device", KEY)
    assert got.type == pa.uuid() and len(got) == 200_003
    for i in (0, 4, 100_000, 200_002):
        raw = values[3 + i].as_py()
        want = None if raw is None else reference(str(raw), "device", KEY)
        assert got.storage[i].as_py() == want


def test_domains_and_keys_separate_pseudonyms():
    v = pa.array([42], pa.int64())
    user = pseudonyms(v, "user", KEY).storage[0].as_py()
    device = pseudonyms(v, "device", KEY).storage[0].as_py()
    other_key = pseudonyms(v, "user", "a0" * 32).storage[0].as_py()
    assert len({user, device, other_key}) == 3


def test_self_test_passes_with_the_installed_hmac():
    self_test(KEY)


def test_ip_prefix_generalizes_v4_and_v6_and_nulls_garbage():
    values = ["76.63.132.231", "10.0.0.1", "2601:ab:cd00::1", "2601:0db8:85a3:0000:0000:8a2e:0370:7334",
              "::1", "fe80::", "not an ip", "bob@example.com", "1.2.3", None]  # fmt: skip
    got = ip_prefix(pa.array(values, pa.string())).to_pylist()
    assert ip_prefix(pa.array(values, pa.large_string()).slice(1)).to_pylist() == got[1:]
    assert got == [
        "76.63.132.0/24", "10.0.0.0/24", "2601:ab:cd00::/48", "2601:0db8:85a3::/48",
        "0:0:0::/48", "fe80:0:0::/48", None, None, None, None,
    ]  # fmt: skip


def _prefix48(text: str) -> str | None:
    """The reference: Python's parser decides validity; the first three groups as written."""
    if "." in text or "%" in text:
        return None
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return None
    head, _, tail = text.lower().partition("::")
    left = [g for g in head.split(":") if g]
    right = [g for g in tail.split(":") if g]
    return ":".join((left + ["0"] * (8 - len(left) - len(right)) + right)[:3]) + "::/48"


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.integers(0, 2**128 - 1).map(lambda v: str(ipaddress.IPv6Address(v))),
            st.integers(0, 2**128 - 1).map(lambda v: ipaddress.IPv6Address(v).exploded.upper()),
            st.text(alphabet="0123456789abcdefABCDEF:.", max_size=45),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_ipv6_prefix_matches_pythons_parser(values):
    six = [v for v in values if ":" in v]
    assert ip_prefix(pa.array(six, pa.string())).to_pylist() == [_prefix48(v) for v in six]
    valid = [v for v in values if _prefix48(v) is not None]
    assert _ip_prefix_polars(pa.array(valid, pa.string())).to_pylist() == [
        _prefix48(v) for v in valid
    ]


def test_buckets_and_time_truncation():
    got = (
        pl.DataFrame({"w": [3.0, 50.0, 72.5, 140.0, None]})
        .select(buckets(pl.col("w"), (0.0, 50.0, 100.0)))
        .to_series()
        .to_list()
    )
    assert got == [0.0, 50.0, 50.0, 100.0, None]
    ts = pl.DataFrame({"t": [datetime(2026, 10, 3, 17, 45, 12)]})
    assert ts.select(pl.col("t").dt.truncate("1d")).item() == datetime(2026, 10, 3)

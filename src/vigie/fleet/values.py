"""Vectorized builders of realistic personal values: e-mails, phones, IPs, MACs, SSIDs."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vigie.fleet import vocab as V
from vigie.fleet.arrays import (
    UPPER,
    choice,
    concat,
    digits,
    hex_join,
    int_str,
    lower,
    random_chars,
    select,
    take,
)


def emails(
    rng: np.random.Generator, ids: np.ndarray, first: np.ndarray, last: np.ndarray
) -> pa.Array:
    """Unique, realistic addresses: the number is a bijection of the id (below 10^7)."""
    n = len(ids)
    f = take([x[1] for x in V.FIRST_NAMES], first)
    la = take([x[1] for x in V.LAST_NAMES], last)
    num = int_str((ids * 7919) % 10_000_000)
    initial = pc.utf8_slice_codeunits(f, 0, 1)
    local = select(
        choice(rng, [0.45, 0.30, 0.25], n),
        [concat(f, ".", la, num), concat(initial, la, num), concat(f, "_", num)],
    )
    domain = take([d[0] for d in V.EMAIL_DOMAINS], choice(rng, [d[1] for d in V.EMAIL_DOMAINS], n))
    return lower(concat(local, "@", domain))


def external_emails(rng: np.random.Generator, first: np.ndarray, last: np.ndarray) -> pa.Array:
    """Addresses of people without an account (a dot before the number: never a user's)."""
    f = take([x[1] for x in V.FIRST_NAMES], first)
    la = take([x[1] for x in V.LAST_NAMES], last)
    num = int_str(np.arange(len(first)) * 31 + rng.integers(0, 31, len(first)))
    return lower(concat(f, ".", la, ".", num, "@gmail.com"))


def phones(rng: np.random.Generator, country: np.ndarray) -> pa.Array:
    n = len(country)
    prefix = take([c[2] for c in V.COUNTRIES], country)
    widths = np.array([c[3] for c in V.COUNTRIES])[country]
    options = {k: digits(rng, n, k) for k in sorted(set(widths.tolist()))}
    keys = sorted(options)
    national = select(np.searchsorted(keys, widths), [options[k] for k in keys])
    return concat(prefix, national)


def ips(rng: np.random.Generator, n: int, v6_share: float) -> pa.Array:
    """Public-looking IPv4 addresses, and IPv6 ones in a /32 of a large ISP."""
    first = rng.choice(np.array([24, 45, 66, 68, 71, 73, 76, 98, 99, 104, 107, 142, 174, 203]), n)
    octets = [int_str(first)] + [int_str(rng.integers(0, 256, n)) for _ in range(3)]
    v4 = pc.binary_join_element_wise(*octets, ".")
    groups = [pc.utf8_lower(hex_join([rng.integers(0, 256, n)], "")) for _ in range(4)]
    v6 = concat("2601:", groups[0], groups[1], ":", groups[2], "00:", groups[3], "::1")
    return pc.if_else(pa.array(rng.random(n) < v6_share), v6, v4)


def macs(model: np.ndarray, ids: np.ndarray) -> pa.Array:
    """Vendor prefix per model, then a permutation of the device id (unique below 2^24)."""
    p = (ids * 2654435761) % (1 << 24)
    tail = hex_join([(p >> 16) & 255, (p >> 8) & 255, p & 255], ":")
    return concat(take([x.oui for x in V.MODELS], model), ":", tail)


def ssids(rng: np.random.Generator, first: pa.Array, last: pa.Array) -> pa.Array:
    n = len(first)
    fill = {
        "{last}": last,
        "{first}": first,
        "{d1}": digits(rng, n, 1),
        "{d2}": digits(rng, n, 2),
        "{d3}": digits(rng, n, 3),
        "{d5}": digits(rng, n, 5),
        "{L3}": random_chars(rng, n, 3, UPPER),
        "{h2}": random_chars(rng, n, 2, b"0123456789ABCDEF"),
        "{h4}": random_chars(rng, n, 4, b"0123456789ABCDEF"),
    }
    built = [_fill_template(t, fill) for t in V.SSID_TEMPLATES]
    return select(rng.integers(0, len(built), n), built)


def _fill_template(template: str, fill: dict[str, pa.Array]) -> pa.Array:
    parts: list[pa.Array | str] = []
    rest = template
    while "{" in rest:
        head, _, tail = rest.partition("{")
        name, _, rest = tail.partition("}")
        if head:
            parts.append(head)
        parts.append(fill["{" + name + "}"])
    if rest:
        parts.append(rest)
    return concat(*parts)


def postcodes(rng: np.random.Generator, country: np.ndarray) -> pa.Array:
    n = len(country)
    codes = [c[0] for c in V.COUNTRIES]
    ca_style = concat(
        random_chars(rng, n, 1, UPPER), digits(rng, n, 1), random_chars(rng, n, 1, UPPER), " ",
        digits(rng, n, 1), random_chars(rng, n, 1, UPPER), digits(rng, n, 1),
    )  # fmt: skip
    style = np.where(
        np.isin(country, [codes.index("CA"), codes.index("GB")]),
        1,
        np.where(np.isin(country, [codes.index("AU"), codes.index("NL")]), 2, 0),
    )
    return select(style, [digits(rng, n, 5), ca_style, digits(rng, n, 4)])

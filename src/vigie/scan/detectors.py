"""Detectors of PII and secrets in kept text values, run on whole batches.

Each kept text column is scanned once per batch, on its distinct values, with Rust regexes
(Polars). Token-like strings are found by shape: length, alphabet and character variety
(a cheap stand-in for entropy); fixed-length random columns show up by their statistics.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_HEX2 = r"[0-9A-Fa-f]{2}"
PATTERNS: dict[str, str] = {
    "email": r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}",
    "phone": r"(?:^|[^\d.\w])(?:\+\d[\d \-]{7,16}\d|\(?\d{3}\)?[ .\-]\d{3}[ .\-]\d{4})(?:$|[^\d.])",
    "mac": rf"(?:^|[^0-9A-Fa-f])(?:{_HEX2}[:\-]){{5}}{_HEX2}(?:$|[^0-9A-Fa-f])",
    "ip": rf"(?:^|[^\d.]){_OCTET}(?:\.{_OCTET}){{3}}(?:$|[^\d.])"
    r"|(?:^|[^0-9A-Fa-f:])(?:[0-9A-Fa-f]{1,4}:){5,7}[0-9A-Fa-f]{1,4}"
    r"|[0-9A-Fa-f]{1,4}:(?:[0-9A-Fa-f]{1,4}:)*:(?:[0-9A-Fa-f]{1,4})?",
    "card": r"(?:^|\D)(?:\d[ \-]?){12,18}\d(?:$|\D)",
}
DETECTORS = (*PATTERNS, "token")
_TOKEN_ALPHABET = r"^[A-Za-z0-9_\-+/=.~]+$"  # noqa: S105 (a pattern, not a secret)


@dataclass(frozen=True)
class Hit:
    column: str
    detector: str
    example: str  # redacted
    count: int  # distinct values that matched in the batch
    detail: str = ""  # for detectors by behaviour: what was measured


def redact(value: str, limit: int = 40) -> str:
    """The shape of a value with its content removed: every letter of any script x, every
    digit 9, other characters kept."""
    shape = re.sub(r"[^\W\d_]", "x", re.sub(r"\d", "9", value))
    return shape if len(shape) <= limit else shape[:limit] + f"…({len(value)} chars)"


_QUOTED = re.compile(r"'[^'\n]*'|\"[^\"\n]*\"")
_VALUE = re.compile(r"\b(value|string|input)(\s*[:=]?\s*)(?!')(\S*\d\S*)")  # unquoted, with digits


def without_values(message: str) -> str:
    """An engine's message with the values it quotes replaced by their redacted shape:
    what it says of a row (a conversion that failed) without the row's content."""
    masked = _QUOTED.sub(lambda m: m[0][0] + redact(m[0][1:-1]) + m[0][0], message)
    return _VALUE.sub(lambda m: m[1] + m[2] + redact(m[3]), masked)


def luhn_ok(text: str) -> bool:
    digits = [int(c) for c in text if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _token_mask(values: pl.Series) -> pl.Series:
    """Values holding a run of 20+ token characters that looks random: mixed classes and
    many distinct characters (base64/base64url secrets), or 32+ hex digits (digests).
    Runs are looked for inside values too: ``salt$hash`` or ``Bearer <token>``."""
    runs = values.str.extract_all(r"[A-Za-z0-9_\-+/~]{20,}")
    frame = pl.DataFrame({"i": range(values.len()), "run": runs}).explode("run")
    s = frame["run"]
    variety = s.str.split("").list.n_unique() / s.str.len_chars()
    digit, lower, upper = (s.str.contains(p) for p in (r"\d", r"[a-z]", r"[A-Z]"))
    both_cases = digit & lower & upper & (variety >= 0.45)
    one_case = digit & (lower | upper) & (variety >= 0.55) & (s.str.len_chars() >= 24)
    hex_digest = s.str.contains(r"^[0-9a-fA-F]{32,}$")
    hit = (both_cases | one_case | hex_digest).fill_null(False)
    flagged = frame.filter(hit)["i"].unique()
    return pl.Series(range(values.len())).is_in(flagged.implode())


def _fixed_length_random(values: pl.Series) -> bool:
    """A column of same-length, symbol-free, high-variety strings: generated secrets."""
    lengths = values.str.len_chars()
    if values.len() < 50 or lengths.n_unique() > 2 or int(lengths.min() or 0) < 16:  # type: ignore[arg-type]
        return False
    no_space = values.str.contains(_TOKEN_ALPHABET).mean() or 0.0
    variety = (values.str.split("").list.n_unique() / lengths).mean() or 0.0
    return float(no_space) > 0.95 and float(variety) > 0.35  # type: ignore[arg-type]


def _contains(pattern: str) -> Callable[[pl.Series], pl.Series]:
    return lambda s: s.str.contains(pattern)


def scan_column(name: str, values: pl.Series, allowed: set[str]) -> list[Hit]:
    """Run every detector not allowed for this column over its distinct values."""
    distinct = values.drop_nulls().unique()
    if distinct.len() == 0:
        return []
    hits = []
    checks: dict[str, Callable[[pl.Series], pl.Series]] = {
        name_: _contains(pattern) for name_, pattern in PATTERNS.items()
    }
    checks["token"] = _token_mask
    for detector, check in checks.items():
        if detector in allowed:
            continue
        matched = distinct.filter(check(distinct))
        if detector == "card":
            matched = matched.filter(matched.map_elements(luhn_ok, return_dtype=pl.Boolean))
        if matched.len():
            hits.append(Hit(name, detector, redact(str(matched[0])), matched.len()))
    token_hit = any(h.detector == "token" for h in hits)
    if "token" not in allowed and not token_hit and _fixed_length_random(distinct):
        hits.append(Hit(name, "token", redact(str(distinct[0])), distinct.len()))
    return hits

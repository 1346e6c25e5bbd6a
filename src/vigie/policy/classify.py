"""Guess a column's data class and safe action from its name and a sample of its values.

Used by ``vigie policy suggest`` and by the snippets that default deny prints. Guesses are
only drafts: every one is marked for review, and a value that looks like PII or a secret
never gets ``keep``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import polars as pl

from vigie.policy.model import DataClass
from vigie.scan.column import name_hit
from vigie.scan.detectors import scan_column
from vigie.sources.base import SourceColumn

_SECRET = re.compile(
    r"pass(word|wd)?|hash|token|secret|api_?key|access_?key|private|salt|otp|cvv|cvc|"
    r"card_?(number|no|last4)|last_?4|iban|ssn|session"
)
_PII = re.compile(
    r"e_?mail|phone|mobile|(^|_)name$|full_?name|first_?name|last_?name|nickname|address|"
    r"street|ssid|(^|_)mac($|_)|(^|_)ip($|_)|birth|dob|(^|_)lat|(^|_)lon|lng|gps|location|"
    r"height|weight|bone|health|gender|passport|licen[cs]e|serial|label|note|comment|"
    r"descr|memo|message|remark|(^|_)text$|title|alias|caption|wifi|network|household|"
    r"owner|contact|(^|_)bio$|about"
)
# In a sample, a text column whose values are mostly distinct is an identifier or free
# text; one whose values read like sentences is free text. Neither is ever suggested keep.
_SAMPLE_DISTINCT = 0.5
_SAMPLE_MIN = 20
_FREE_TEXT_CHARS = 24
_QUASI = re.compile(r"zip|postal|postcode|country|city|region|birth_?year|(^|_)age$|locale")
_IDENT = re.compile(r"(^|_)(id|uuid|guid)$")


@dataclass(frozen=True)
class Guess:
    data_class: DataClass
    action: str  # as written in YAML, e.g. "drop", "pseudonymize: user"
    why: str


def domain_for(table: str, column: str) -> str:
    """``users.id`` and ``devices.user_id`` both map to domain ``user``."""
    base = table if column in ("id", "uuid", "guid") else re.sub(r"_(id|uuid|guid)$", "", column)
    base = re.sub(r"[^a-z0-9_]", "_", base.lower())
    if base.endswith("ies"):
        return base[:-3] + "y"
    return base[:-1] if base.endswith("s") and not base.endswith("ss") else base


def guess(table: str, col: SourceColumn, sample: pl.Series | None = None) -> Guess:
    name = col.name.lower()
    hits = []
    text = (
        sample.cast(pl.String).drop_nulls() if sample is not None and col.kind == "text" else None
    )
    if text is not None:
        hits = scan_column(col.name, text, set())
        if (found := name_hit(col.name, text.unique())) is not None:
            hits.append(found)
    if _SECRET.search(name) or any(h.detector in ("token", "card") for h in hits):
        why = f"values look like {hits[0].detector}s" if hits else "name suggests a secret"
        return Guess("secret", "drop", why)
    if _IDENT.search(name):
        return Guess("identifier", f"pseudonymize: {domain_for(table, name)}", "name is a key")
    if hits:
        detector = hits[0].detector
        if detector == "ip":
            return Guess("pii", "generalize: ip_prefix", "values look like IP addresses")
        if detector == "email":
            return Guess("pii", "pseudonymize: email", "values look like e-mail addresses")
        if detector == "person_name":
            return Guess("pii", "drop", f"values hold person names ({hits[0].detail})")
        return Guess("pii", "drop", f"values look like {detector} values")
    if _PII.search(name):
        if re.search(r"(^|_)ip($|_)", name):
            return Guess("pii", "generalize: ip_prefix", "name suggests an IP address")
        return Guess("pii", "drop", "name suggests personal data")
    if text is not None and (reason := _identifying(text)):
        return Guess("pii", "drop", reason)
    if _QUASI.search(name):
        keepable = col.kind == "text" and name.startswith(("country", "locale"))
        return Guess("quasi", "keep" if keepable else "drop", "name suggests a quasi-identifier")
    if col.kind == "other":
        return Guess("pii", "drop", f"unknown type {col.raw_type}: dropped until reviewed")
    return Guess("public", "keep", "no sign of personal data in name or values")


def _identifying(values: pl.Series) -> str | None:
    """Why sampled text values identify someone or are free text, if they do."""
    if values.len() < _SAMPLE_MIN:
        return None
    share = values.n_unique() / values.len()
    if share >= _SAMPLE_DISTINCT:
        return f"values nearly all distinct ({share:.0%} in the sample): an identifier or free text"
    long_text = values.str.len_chars().mean() or 0
    spaced = values.str.contains(" ").mean() or 0
    if float(long_text) >= _FREE_TEXT_CHARS and float(spaced) >= 0.3:  # type: ignore[arg-type]
        return "values read like free text"
    return None

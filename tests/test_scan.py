"""Detectors of PII and secrets in kept values: real hits, no noise on ordinary values."""

from __future__ import annotations

import polars as pl
import pytest

from vigie.scan.detectors import luhn_ok, redact, scan_column


def detectors(values: list[str], allowed: set[str] | None = None) -> set[str]:
    return {h.detector for h in scan_column("c", pl.Series(values), allowed or set())}


@pytest.mark.parametrize(
    ("value", "detector"),
    [
        ("alice.smith42@gmail.com", "email"),
        ("contact: bob@example.co.uk please", "email"),
        ("+14155550123", "phone"),
        ("(415) 555-0123", "phone"),
        ("+44 7700 900123", "phone"),
        ("2C:AA:8E:37:79:B1", "mac"),
        ("a4-da-22-00-11-ff", "mac"),
        ("76.63.132.231", "ip"),
        ("client 2601:ab:cd00::1 connected", "ip"),
        ("4111 1111 1111 1111", "card"),
        ("oTi8JrRhesHhtV47XBTNbcGmRqwyo6du7_bK7bX427a", "token"),
        ("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "token"),
    ],
)
def test_each_detector_hits(value, detector):
    assert detector in detectors([value])


def test_ordinary_fleet_values_are_clean():
    values = ["Vigil Cam v2", "Vigil Outdoor Pro", "3.9.2", "5.12.1", "stream_start",
              "TLS_HANDSHAKE", "RELAY_UNAVAILABLE", "US", "alexa", "android", "visa",
              "2026-10-01 00:00:00", "Front Door"]  # fmt: skip
    assert detectors(values) == set()


def test_luhn_rejects_wrong_check_digit():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert detectors(["4111 1111 1111 1112"]) == set()


def test_fixed_length_random_column_is_a_token_column():
    import secrets

    codes = [secrets.token_hex(10)[:18] + "x" for _ in range(200)]  # short, but random
    assert "token" in detectors(codes)


def test_allow_skips_a_detector():
    assert detectors(["(415) 555-0123"], {"phone"}) == set()


def test_redaction_keeps_shape_not_content():
    assert redact("alice.smith42@gmail.com") == "xxxxx.xxxxx99@xxxxx.xxx"
    long = redact("oTi8JrRhesHhtV47XBTNbcGmRqwyo6du7_bK7bX427a")
    assert "oTi8" not in long and long.endswith("(43 chars)")

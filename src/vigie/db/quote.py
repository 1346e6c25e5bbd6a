"""Identifiers and string literals for SQL text, one function per engine.

Production's names are data, not code: a column called ``x", (SELECT ...) AS "y`` must stay
one identifier. Every identifier vigie writes into SQL for a production engine goes
through ``ident``, every string literal through ``literal``; values travel as parameters
wherever the driver has them.
"""

from __future__ import annotations

from typing import Literal

Engine = Literal["postgresql", "mysql", "sqlite", "duckdb"]


def ident(engine: str, name: str) -> str:
    """``name`` as one quoted identifier of ``engine`` (the quote character doubled)."""
    if "\x00" in name:
        raise ValueError("an identifier cannot hold a NUL character")
    if engine == "mysql":
        return "`" + name.replace("`", "``") + "`"
    return '"' + name.replace('"', '""') + '"'


def literal(engine: str, text: str) -> str:
    """``text`` as one string literal of ``engine`` (MySQL's backslash escapes included)."""
    if "\x00" in text:
        raise ValueError("a string literal cannot hold a NUL character")
    if engine == "mysql":
        text = text.replace("\\", "\\\\")
    return "'" + text.replace("'", "''") + "'"

"""The one exception root of vigie.

Every error a user can cause or meet is a ``VigieError``: it says what was wrong,
where, and what to do next. Edges (CLI, HTTP) translate them once; the core never
prints or exits.

    VigieError
    ├── UsageError              bad arguments or numbers given on the command line / API
    ├── ConnectionFailed        a database could not be reached            (transient)
    ├── DsnError                a DSN that cannot be parsed or names an unknown engine
    ├── TargetNotEmpty          a fleet target already holds tables (use --replace)
    ├── PolicyError             the policy file is invalid (file, line, column)
    ├── KeyfileError            keyfile missing, unreadable, loose mode, wrong key
    ├── StoreError              store missing, loose file modes, cannot be opened
    │   └── StoreNonConforming  `vigie store verify` found the store off its policy
    └── SyncError               a sync stage stopped; nothing of the failing batch was loaded
        ├── UnclassifiedColumns default deny: production has columns the policy does not name
        ├── SchemaDrift         a column changed type since the policy/store were made
        └── ScanHit             a kept value looks like PII or a secret

Errors marked transient may succeed when retried unchanged; all others are terminal.
Messages never contain secret values: key material, passwords in DSNs, tokens.
"""

from __future__ import annotations


class VigieError(Exception):
    """Root of every vigie error. ``hint`` tells the user what to do next."""

    transient: bool = False
    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  → {self.hint}"
        return self.message


class UsageError(VigieError):
    """Arguments that make no sense (negative counts, unknown choices)."""

    exit_code = 2


class DsnError(VigieError):
    """A DSN that cannot be parsed, or one naming an unsupported engine."""

    exit_code = 2


class ConnectionFailed(VigieError):
    """A database could not be reached or refused us."""

    transient = True
    exit_code = 3


class TargetNotEmpty(VigieError):
    """The fleet target already holds tables; refuse unless asked to replace them."""


class PolicyError(VigieError):
    """The policy file is invalid; the message names file, line and column."""

    exit_code = 4


class KeyfileError(VigieError):
    """The keyfile is missing, unreadable, too open, or holds a wrong key."""

    exit_code = 5


class StoreError(VigieError):
    """The analytics store cannot be opened or is not protected as required."""

    exit_code = 5


class StoreNonConforming(StoreError):
    """The store holds what the policy does not allow, or is not protected as required."""

    exit_code = 7


class SyncError(VigieError):
    """A sync stage stopped. Nothing of the failing batch was loaded."""

    exit_code = 6


class UnclassifiedColumns(SyncError):
    """Default deny: production columns that the policy does not classify."""


class SchemaDrift(SyncError):
    """A production column changed type since the store was built."""


class ScanHit(SyncError):
    """A kept value looks like PII or a secret."""

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
    ├── AuthError               no credentials, an unknown, expired or revoked API key
    ├── Forbidden               an authenticated actor whose role does not allow the action
    ├── Refused                 a request vigie will not run (a SQL statement outside the sandbox)
    ├── Unavailable             the data service is not running or not answering   (transient)
    │   └── GuardClosed         the guard failed closed: nothing is served until it passes
    ├── AuditError              the audit log cannot be written or does not verify
    └── SyncError               a sync stage stopped; nothing of the failing batch was loaded
        ├── UnclassifiedColumns default deny: production has columns the policy does not name
        ├── SchemaDrift         a column changed type since the policy/store were made
        └── ScanHit             a kept value looks like PII or a secret

Errors marked transient may succeed when retried unchanged; all others are terminal.
Each class has a ``kind`` (usage, config, auth, forbidden, refused, not_found, unavailable,
conflict, internal): the CLI maps it to an exit code, the server to an HTTP status, and the
audit log records it, never the message text.
Messages never contain secret values: key material, passwords in DSNs, tokens.
"""

from __future__ import annotations

from typing import Any


class VigieError(Exception):
    """Root of every vigie error. ``hint`` tells the user what to do next."""

    transient: bool = False
    exit_code: int = 1
    kind: str = "internal"

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

    kind = "usage"

    exit_code = 2


class DsnError(VigieError):
    """A DSN that cannot be parsed, or one naming an unsupported engine."""

    kind = "config"

    exit_code = 2


class ConnectionFailed(VigieError):
    """A database could not be reached or refused us."""

    kind = "unavailable"

    transient = True
    exit_code = 3


class TargetNotEmpty(VigieError):
    """The fleet target already holds tables; refuse unless asked to replace them."""

    kind = "conflict"


class PolicyError(VigieError):
    """The policy file is invalid; the message names file, line and column."""

    kind = "config"

    exit_code = 4


class KeyfileError(VigieError):
    """The keyfile is missing, unreadable, too open, or holds a wrong key."""

    kind = "config"

    exit_code = 5


class StoreError(VigieError):
    """The analytics store cannot be opened or is not protected as required."""

    kind = "config"

    exit_code = 5


class StoreNonConforming(StoreError):
    """The store holds what the policy does not allow, or is not protected as required."""

    kind = "refused"

    exit_code = 7


class SyncError(VigieError):
    """A sync stage stopped. Nothing of the failing batch was loaded."""

    kind = "refused"

    exit_code = 6


class UnclassifiedColumns(SyncError):
    """Default deny: production columns that the policy does not classify."""


class SchemaDrift(SyncError):
    """A production column changed type since the store was built."""


class ScanHit(SyncError):
    """A kept value looks like PII or a secret."""


class AuthError(VigieError):
    """No credentials, or an unknown, expired or revoked API key (HTTP 401)."""

    kind = "auth"
    exit_code = 8


class Forbidden(VigieError):
    """The actor's role does not allow the action (HTTP 403)."""

    kind = "forbidden"
    exit_code = 8


class NotFound(VigieError):
    """What was asked for does not exist (an unknown KPI, route or key name)."""

    kind = "not_found"
    exit_code = 2


class Refused(VigieError):
    """A request vigie will not run as asked: a SQL statement outside the sandbox, a
    statement over its time limit (HTTP 422)."""

    kind = "refused"
    exit_code = 9


class Unavailable(VigieError):
    """The data service is not running or did not answer (HTTP 503)."""

    kind = "unavailable"
    transient = True
    exit_code = 3


class GuardClosed(Unavailable):
    """The guard found a FAIL (or cannot tell): data is not served until it passes again."""

    transient = False
    exit_code = 11

    def __init__(self, failing: list[Any]) -> None:
        if failing:
            what = "; ".join(f"{r.key}: {r.reason}" for r in failing[:3])
            more = f" (+{len(failing) - 3} more)" if len(failing) > 3 else ""
            message = f"The guard closed the data: {what}{more}."
            hint = failing[0].fix or "See `vigie guard status`."
        else:
            message = "The guard has not finished its first round; data stays closed until then."
            hint = "Retry in a few seconds."
        super().__init__(message, hint=hint)
        self.failing = failing


class AuditError(VigieError):
    """The audit log cannot be written, or ``vigie audit verify`` found it tampered with."""

    kind = "internal"
    exit_code = 10

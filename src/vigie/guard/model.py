"""What a check says: PASS, FAIL or UNKNOWN (which counts as FAIL), why, and the fix."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    PASS = "PASS"  # noqa: S105 - a status, not a password
    FAIL = "FAIL"
    UNKNOWN = "UNKNOWN"  # a timeout, an answer we cannot read, a refused probe: a FAIL


@dataclass(frozen=True)
class Result:
    """One check's outcome. ``evidence`` says what a probe read to decide (never rows)."""

    check: str
    status: Status
    reason: str
    fix: str = ""
    target: str = ""
    evidence: str = ""
    origin: str = ""  # where a probe ran from: "network namespace", "this host"
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status is Status.PASS

    @property
    def key(self) -> str:
        return f"{self.check}[{self.target}]" if self.target else self.check

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["status"], out["at"] = str(self.status), self.at.isoformat()
        return out


def passed(check: str, reason: str, **kw: Any) -> Result:
    return Result(check, Status.PASS, reason, **kw)


def failed(check: str, reason: str, fix: str, **kw: Any) -> Result:
    return Result(check, Status.FAIL, reason, fix, **kw)


def unknown(check: str, reason: str, fix: str, **kw: Any) -> Result:
    return Result(check, Status.UNKNOWN, reason, fix, **kw)

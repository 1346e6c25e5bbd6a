"""Approvals of the security posture, and the two-person rule.

``<store folder>/guard/approvals.jsonl`` (0600) holds one signed line per approval: the
posture, its hash, the admin, their public key and an Ed25519 signature made with a key
derived from their API key (``vigie.access.signing``), chained to the previous line. The
baseline is derived by replaying the file:

- the first approval (no baseline yet) needs one admin of the access file;
- later, a posture that does not lower security needs one admin *of the baseline*; one
  that lowers it needs two different admins of the baseline, on the same posture.

A line whose signature or chain does not verify, or whose signer is not an admin of the
baseline, makes the file untrustworthy: the guard fails closed until it is sorted out.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vigie.access.keys import AccessFile, Entry
from vigie.access.signing import sign, signature_ok
from vigie.errors import Forbidden, UsageError
from vigie.guard.posture import Change, compare, posture_hash
from vigie.locking import exclusive

GENESIS = "0" * 64


def approvals_path(store: Path) -> Path:
    return store.parent / "guard" / "approvals.jsonl"


def _message(hash_: str, admin: str, at: str, prev: str) -> bytes:
    return f"vigie approval v1|{hash_}|{admin}|{at}|{prev}".encode()


@dataclass
class Ledger:
    """The approvals replayed: the baseline, pending signatures, and any problem."""

    baseline: dict[str, Any] | None = None
    baseline_hash: str | None = None
    approved_by: list[str] = field(default_factory=list)
    approved_at: str | None = None
    pending: dict[str, set[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    last_line: str = GENESIS
    count: int = 0


def needed(ledger: Ledger, posture: dict[str, Any]) -> tuple[int, list[Change]]:
    """How many admins must sign ``posture``, and what changed from the baseline."""
    if ledger.baseline is None:
        return 1, []
    changes = compare(ledger.baseline, posture)
    return (2 if any(c.lowers for c in changes) else 1), changes


def read_ledger(path: Path, access: AccessFile) -> Ledger:
    ledger = Ledger()
    if not path.exists():
        return ledger
    admins_now = {e.name: e for e in access.entries()}
    for n, raw in enumerate(path.read_bytes().splitlines(), 1):
        try:
            line = json.loads(raw)
            _replay(ledger, line, admins_now)
        except (ValueError, KeyError, TypeError) as exc:
            ledger.problems.append(f"{path}:{n}: {exc}")
            return ledger
        ledger.last_line = hashlib.sha256(raw).hexdigest()
        ledger.count += 1
    return ledger


def _replay(ledger: Ledger, line: dict[str, Any], admins_now: dict[str, Entry]) -> None:
    posture, admin, key = line["posture"], line["admin"], line["sign_key"]
    if posture_hash(posture) != line["hash"] or line["prev"] != ledger.last_line:
        raise ValueError("the line does not match its hash or does not follow the previous one")
    if not signature_ok(key, line["sig"], _message(line["hash"], admin, line["at"], line["prev"])):
        raise ValueError(f"the signature of '{admin}' does not verify")
    if ledger.baseline is None:
        entry = admins_now.get(admin)
        if entry is None or entry.sign_key != key:
            raise ValueError(f"'{admin}' is not an admin of the access file with this key")
    elif ledger.baseline["admins"].get(admin) != key:
        raise ValueError(f"'{admin}' is not an admin of the approved baseline")
    signers = ledger.pending.setdefault(line["hash"], set())
    signers.add(admin)
    want, _ = needed(ledger, posture)
    if len(signers) >= want:
        ledger.baseline, ledger.baseline_hash = posture, line["hash"]
        ledger.approved_by, ledger.approved_at = sorted(signers), line["at"]
        ledger.pending = {}


@dataclass(frozen=True)
class Outcome:
    approved: bool  # the posture is now the baseline
    signers: list[str]
    needed: int
    changes: list[Change]


def approve(path: Path, access: AccessFile, api_key: str, posture: dict[str, Any]) -> Outcome:
    """Sign ``posture`` with the admin key ``api_key``; it becomes the baseline once enough
    different admins have signed it. Two admins approving at once take turns: each line
    is chained to the one before it, read under the same lock as it is written."""
    entry = access.admin(api_key)
    with exclusive(path, os.O_WRONLY | os.O_APPEND) as fd:
        return _approve_locked(fd, path, access, entry, api_key, posture)


def _approve_locked(fd: int, path: Path, access: AccessFile, entry: Entry, api_key: str,
                    posture: dict[str, Any]) -> Outcome:  # fmt: skip
    ledger = read_ledger(path, access)
    if ledger.problems:
        raise Forbidden(
            f"The approvals file does not verify: {ledger.problems[0]}",
            hint="Keep it as evidence; ask the other admins before starting a new one.",
        )
    hash_ = posture_hash(posture)
    want, changes = needed(ledger, posture)
    if ledger.baseline_hash == hash_:
        raise UsageError("This posture is already the approved baseline.", hint="Nothing to do.")
    if ledger.baseline is not None and ledger.baseline["admins"].get(entry.name) != entry.sign_key:
        raise Forbidden(
            f"'{entry.name}' is not an admin of the approved baseline.",
            hint="An admin added since can approve once a baseline that includes "
            "them is approved by the others.",
        )
    if entry.name in ledger.pending.get(hash_, set()):
        raise Forbidden(
            f"'{entry.name}' already approved this posture.",
            hint="A second, different admin must approve it: "
            "one person alone cannot lower security.",
        )
    at = datetime.now(UTC).isoformat(timespec="seconds")
    line = {
        "hash": hash_,
        "admin": entry.name,
        "sign_key": entry.sign_key,
        "at": at,
        "prev": ledger.last_line,
        "posture": posture,
        "sig": sign(api_key, _message(hash_, entry.name, at, ledger.last_line)),
    }
    _append(fd, json.dumps(line, sort_keys=True, separators=(",", ":")).encode())
    after = read_ledger(path, access)
    signers = sorted(
        after.approved_by if after.baseline_hash == hash_ else after.pending.get(hash_, set())
    )
    return Outcome(after.baseline_hash == hash_, signers, want, changes)


def _append(fd: int, line: bytes) -> None:
    os.write(fd, line + b"\n")
    os.fsync(fd)

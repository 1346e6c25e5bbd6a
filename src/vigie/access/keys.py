"""API keys: random, shown once, kept only as a hash in an access file of their own (0600).

A key reads ``vk_<id>_<secret>``: the id finds the entry, the secret is checked against its
SHA-256 (a 256-bit random secret needs no slow hash) in constant time. The file holds names,
roles, expiry and revocation; never a key. It is rewritten atomically (a fresh temporary
file in the same 0700 folder, then one rename), and re-read when it changes, so that a
revocation takes effect at the next request of a running server. Changes (create, revoke)
read and write it under an exclusive ``flock`` on ``<file>.lock``: two at once take turns,
and neither undoes the other (a key created while another was revoked, say).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from vigie.access.decide import Actor, Role
from vigie.access.signing import public_key_hex
from vigie.errors import AuthError, Forbidden, KeyfileError, NotFound, UsageError
from vigie.locking import exclusive

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_KEY = re.compile(r"^vk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_DURATION = re.compile(r"^(\d+)([hdw])$")


@dataclass(frozen=True)
class Entry:
    """One key as the access file records it (its hash, never the key)."""

    name: str
    role: Role
    key_id: str
    key_hash: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None = None
    sign_key: str | None = None  # an admin's Ed25519 public key for approvals (hex)

    @property
    def actor(self) -> Actor:
        return Actor(self.name, self.role, self.expires_at, self.revoked_at is not None)

    def status(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if now >= self.expires_at else "active"


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``2w`` -> a timedelta (at most a year: keys expire)."""
    m = _DURATION.match(text.strip())
    if not m or int(m[1]) == 0:
        raise UsageError(f"--expires '{text}' is not a duration.", hint="Use e.g. 12h, 30d or 2w.")
    delta = timedelta(**{{"h": "hours", "d": "days", "w": "weeks"}[m[2]]: int(m[1])})
    if delta > timedelta(days=366):
        raise UsageError(
            f"--expires '{text}' is over a year.", hint="Keys expire: use 366d at most."
        )
    return delta


class AccessFile:
    """The access file: load, authenticate, create, list, revoke."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._entries: dict[str, Entry] = {}

    def entries(self) -> list[Entry]:
        self._reload()
        return sorted(self._entries.values(), key=lambda e: e.created_at)

    def authenticate(self, key: str, now: datetime | None = None) -> Actor:
        """The actor behind ``key``; AuthError (without the key) if it is not a live key."""
        m = _KEY.match(key.strip())
        if not m:
            raise AuthError("Not a vigie API key.", hint="Keys read vk_<id>_<secret>.")
        self._reload()
        entry = next((e for e in self._entries.values() if e.key_id == m[1]), None)
        digest = hashlib.sha256(m[2].encode()).hexdigest()
        if entry is None or not hmac.compare_digest(entry.key_hash, digest):
            raise AuthError(
                "Unknown API key.", hint="Ask an admin for a key (vigie access create)."
            )
        status = entry.status(now or datetime.now(UTC))
        if status != "active":
            raise AuthError(
                f"API key '{entry.name}' is {status}.", hint="Ask an admin for a new key."
            )
        return entry.actor

    def create(self, name: str, role: Role, expires_in: timedelta) -> str:
        """Add a key and return it: the only time it is ever shown."""
        if not _NAME.match(name):
            raise UsageError(f"Key name '{name}' is not valid.", hint="Use letters, digits, _ . -")
        with self._changing():
            if name in self._entries:
                raise UsageError(
                    f"A key named '{name}' exists.", hint="Revoke it or pick another name."
                )
            key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
            now = datetime.now(UTC).replace(microsecond=0)
            key = f"vk_{key_id}_{secret}"
            sign = public_key_hex(key) if role is Role.ADMIN else None
            self._entries[name] = Entry(name, role, key_id,
                                        hashlib.sha256(secret.encode()).hexdigest(),
                                        now, now + expires_in, None, sign)  # fmt: skip
            self._write()
        return key

    def admin(self, key: str, now: datetime | None = None) -> Entry:
        """The live admin entry behind ``key`` (AuthError or Forbidden otherwise)."""
        actor = self.authenticate(key, now)
        entry = self._entries[actor.name]
        if entry.role is not Role.ADMIN or entry.sign_key is None:
            raise Forbidden(
                f"Key '{entry.name}' is not an admin key that can sign approvals.",
                hint="Approvals need an admin key made by `vigie access create --role admin`.",
            )
        return entry

    def revoke(self, name: str) -> Entry:
        with self._changing():
            entry = self._entries.get(name)
            if entry is None:
                raise NotFound(
                    f"No key named '{name}' in {self.path}.", hint="See vigie access list."
                )
            if entry.revoked_at is None:
                entry = replace(entry, revoked_at=datetime.now(UTC).replace(microsecond=0))
                self._entries[name] = entry
                self._write()
        return entry

    @contextmanager
    def _changing(self) -> Iterator[None]:
        """Hold the file's lock, with its entries read afresh, while they are changed."""
        with exclusive(self.path.with_name(self.path.name + ".lock")):
            self._stamp = None  # whatever was read before the lock may be stale
            self._reload()
            yield

    def _reload(self) -> None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._entries, self._stamp = {}, None
            return
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._stamp:
            return
        if stat.S_IMODE(st.st_mode) & 0o077:
            raise KeyfileError(
                f"Access file {self.path} is open to others (mode {stat.S_IMODE(st.st_mode):04o}).",
                hint=f"chmod 600 {self.path}",
            )
        try:
            body = json.loads(self.path.read_text())
            self._entries = {e["name"]: _entry(e) for e in body["keys"]}
        except (ValueError, KeyError, TypeError):
            raise KeyfileError(
                f"Access file {self.path} is not a vigie access file.",
                hint="Point --access at the file `vigie access create` wrote.",
            ) from None
        self._stamp = stamp

    def _write(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        body = {"version": 1, "keys": [_dump(e) for e in self._entries.values()]}
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".access-")  # 0600, O_EXCL
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(body, fh, indent=2)
                fh.flush()
                os.fsync(fh.fileno())
            Path(tmp).replace(self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._stamp = None


def _entry(e: dict[str, str]) -> Entry:
    revoked = e.get("revoked_at")
    return Entry(e["name"], Role(e["role"]), e["key_id"], e["key_hash"],
                 datetime.fromisoformat(e["created_at"]), datetime.fromisoformat(e["expires_at"]),
                 datetime.fromisoformat(revoked) if revoked else None,
                 e.get("sign_key"))  # fmt: skip


def _dump(e: Entry) -> dict[str, str | None]:
    return {"name": e.name, "role": str(e.role), "key_id": e.key_id, "key_hash": e.key_hash,
            "created_at": e.created_at.isoformat(), "expires_at": e.expires_at.isoformat(),
            "revoked_at": e.revoked_at.isoformat() if e.revoked_at else None,
            "sign_key": e.sign_key}  # fmt: skip

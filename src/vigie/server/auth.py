"""Who is asking: an API key (``Authorization: Bearer``) or a dashboard session cookie.

Every decision is ``vigie.access.decide.allowed``; this module only finds the actor, keeps
sessions, checks the Origin of state-changing cookie requests and rate-limits failures.
"""

from __future__ import annotations

import secrets
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from datetime import UTC, datetime

from starlette.requests import Request

from vigie.access.decide import Action, Actor, allowed
from vigie.access.keys import AccessFile
from vigie.errors import AuthError, Forbidden

SESSION_COOKIE = "vigie_session"
SESSION_TTL = 8 * 3600.0  # absolute
SESSION_IDLE = 3600.0
FAILURES_ALLOWED = 10  # per client address per window
FAILURE_WINDOW = 60.0


class TooManyAttempts(AuthError):
    kind = "rate_limited"


@dataclass
class Session:
    name: str  # the API key's name; the key itself is re-checked at every request
    key_id: str
    created: float
    seen: float


class Gate:
    """Authentication state of the web process (sessions live in its memory only)."""

    def __init__(self, access: AccessFile) -> None:
        self.access = access
        self.sessions: dict[str, Session] = {}
        self.failures: dict[str, deque[float]] = defaultdict(deque)

    def check_rate(self, client: str) -> None:
        window = self.failures.get(client)
        if window is None:
            return
        now = time.monotonic()
        while window and now - window[0] > FAILURE_WINDOW:
            window.popleft()
        if not window:
            del self.failures[client]  # addresses seen once do not pile up
            return
        if len(window) >= FAILURES_ALLOWED:
            raise TooManyAttempts(
                f"Too many failed authentications from {client}.",
                hint=f"Wait {FAILURE_WINDOW:.0f} s, then use a valid key.",
            )

    def failed(self, client: str) -> None:
        self.failures[client].append(time.monotonic())

    def login(self, key: str, client: str) -> tuple[str, Actor]:
        """A new session for a valid key."""
        self.check_rate(client)
        try:
            actor = self.access.authenticate(key)
        except AuthError:
            self.failed(client)
            raise
        sid = secrets.token_urlsafe(32)
        now = time.monotonic()
        self._prune(now)
        key_id = key.split("_", 2)[1]
        self.sessions[sid] = Session(actor.name, key_id, now, now)
        return sid, actor

    def _prune(self, now: float) -> None:
        for old in [k for k, v in self.sessions.items() if _expired(v, now)]:
            del self.sessions[old]

    def logout(self, sid: str | None) -> None:
        if sid:
            self.sessions.pop(sid, None)

    def actor(self, request: Request) -> tuple[Actor | None, str]:
        """The actor of a request and how it came (``key``, ``session`` or ``none``)."""
        client = client_of(request)
        header = request.headers.get("authorization", "")
        if header:
            self.check_rate(client)
            scheme, _, key = header.partition(" ")
            try:
                if scheme.lower() != "bearer" or not key:
                    raise AuthError("Authorization must be 'Bearer <API key>'.")
                return self.access.authenticate(key), "key"
            except AuthError:
                self.failed(client)
                raise
        sid = request.cookies.get(SESSION_COOKIE)
        if sid:
            return self._session_actor(sid), "session"
        return None, "none"

    def _session_actor(self, sid: str) -> Actor:
        session = self.sessions.get(sid)
        now = time.monotonic()
        if session is None or _expired(session, now):
            self.sessions.pop(sid, None)
            raise AuthError("Your session has expired.", hint="Log in again.")
        entry = next((e for e in self.access.entries() if e.name == session.name), None)
        if entry is None or entry.key_id != session.key_id:
            self.sessions.pop(sid, None)
            raise AuthError("The key behind this session no longer exists.", hint="Log in again.")
        session.seen = now
        return entry.actor

    def require(self, request: Request, action: Action) -> Actor:
        """The actor, if ``allowed`` lets it do ``action`` on this route; else 401/403."""
        actor, via = self.actor(request)
        decision = allowed(actor, action, request.scope["path"])
        request.state.actor = actor
        request.state.reason = decision.reason
        if decision:
            if via == "session" and request.method not in ("GET", "HEAD"):
                check_origin(request)
            assert actor is not None
            return actor
        if actor is None or actor.revoked or datetime.now(UTC) >= actor.expires_at:
            raise AuthError(
                f"Authentication required: {decision.reason}.",
                hint="Send 'Authorization: Bearer <API key>' or log in at /login.",
            )
        raise Forbidden(
            f"Forbidden: {decision.reason}.", hint="Ask an admin for a key with that role."
        )


def _expired(session: Session, now: float) -> bool:
    return now - session.created > SESSION_TTL or now - session.seen > SESSION_IDLE


def check_origin(request: Request) -> None:
    """A state-changing request carried by the session cookie must come from this site."""
    origin = request.headers.get("origin")
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    if origin != own:
        raise Forbidden(
            f"Cross-site request refused (Origin {str(origin)[:80]!r} is not {own}).",
            hint="Use the dashboard itself, or an API key in the Authorization header.",
        )


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"

"""Roles, actions and the one permission decision: ``allowed(actor, action, resource)``.

No route decides on its own: the server asks ``allowed`` for every request and records the
decision's reason in the audit log.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum


class Role(StrEnum):
    ANALYST = "analyst"
    ENGINEER = "engineer"
    RESPONDER = "responder"
    ADMIN = "admin"


class Action(StrEnum):
    READ_KPIS = "kpi.read"
    RUN_SQL = "sql.run"
    READ_AUDIT = "audit.read"
    READ_STATUS = "status.read"
    READ_SCHEMA = "schema.read"  # the OpenAPI document, the dashboard's pages
    MANAGE_ACCESS = "access.manage"
    READ_GUARD = "guard.read"  # the guard's checks, their results and reasons
    APPROVE = "guard.approve"  # sign the security posture (two admins to lower it)
    READ_INCIDENTS = "incident.read"  # exposure reports


ROLE_ACTIONS: dict[Role, frozenset[Action]] = {
    Role.ANALYST: frozenset({Action.READ_KPIS, Action.READ_STATUS, Action.READ_SCHEMA}),
    Role.ENGINEER: frozenset(
        {Action.READ_KPIS, Action.RUN_SQL, Action.READ_STATUS, Action.READ_SCHEMA}
    ),
    Role.RESPONDER: frozenset(
        {
            Action.READ_AUDIT,
            Action.READ_GUARD,
            Action.READ_INCIDENTS,
            Action.READ_STATUS,
            Action.READ_SCHEMA,
        }
    ),
    Role.ADMIN: frozenset(
        {
            Action.MANAGE_ACCESS,
            Action.READ_GUARD,
            Action.APPROVE,
            Action.READ_STATUS,
            Action.READ_SCHEMA,
        }
    ),
}


@dataclass(frozen=True)
class Actor:
    """Someone authenticated by an API key (directly or through a dashboard session)."""

    name: str
    role: Role
    expires_at: datetime
    revoked: bool = False


@dataclass(frozen=True)
class Decision:
    allow: bool
    reason: str

    def __bool__(self) -> bool:
        return self.allow


def allowed(
    actor: Actor | None, action: Action, resource: str = "", *, now: datetime | None = None
) -> Decision:
    """Whether ``actor`` may do ``action`` on ``resource``, and why (for the audit log)."""
    if actor is None:
        return Decision(False, "not authenticated")
    if actor.revoked:
        return Decision(False, f"key '{actor.name}' is revoked")
    if (now or datetime.now(UTC)) >= actor.expires_at:
        return Decision(False, f"key '{actor.name}' expired at {actor.expires_at:%Y-%m-%d %H:%M}Z")
    if action not in ROLE_ACTIONS[actor.role]:
        return Decision(False, f"role {actor.role} may not {action} {resource}".rstrip())
    return Decision(True, f"role {actor.role} may {action}")

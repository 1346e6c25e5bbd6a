"""The security posture: what the approved baseline records, and which changes lower it.

A posture is plain JSON: the policy (what each column becomes when it leaves production,
and which detectors it may pass), how the server is exposed, the probe targets, the alert
channels (their count, never a URL), check intervals, key ids, the k of suppression, and
the admins who may sign approvals. ``compare`` says what changed and whether it lowers
security: a column kept where it was pseudonymized, a new table copied, a detector allowed,
the server moved onto the network, a probe target or alert channel removed, a longer
interval, a smaller k, an admin added.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from vigie.guard.config import GuardConfig, as_json
from vigie.policy.model import Policy
from vigie.stores.meta import action_spec

EXPOSURE_RANK = {"loopback": 0, "network+tls": 1, "network": 2}


@dataclass(frozen=True)
class Change:
    what: str
    detail: str
    lowers: bool

    def __str__(self) -> str:
        return f"{self.what}: {self.detail}"


def make_posture(
    policy: Policy | None,
    exposure: str,
    config: GuardConfig,
    key_ids: dict[str, str],
    admins: dict[str, str],
    k: int | None,
) -> dict[str, Any]:
    columns: dict[str, str] = {}
    allows: dict[str, list[str]] = {}
    if policy is not None:
        for table in policy.tables.values():
            for rule in table.columns.values():
                if rule.leaves_production:
                    columns[f"{rule.table}.{rule.column}"] = action_spec(rule.action)
                if rule.allow:
                    allows[f"{rule.table}.{rule.column}"] = sorted(rule.allow)
    return {
        "version": 1,
        "policy": {
            "digest": policy.digest if policy else None,
            "columns": columns,
            "allow": allows,
        },
        "exposure": exposure,
        "guard": as_json(config),
        "keys": key_ids,
        "k": k,
        "admins": admins,
    }


def posture_hash(posture: dict[str, Any]) -> str:
    body = json.dumps(posture, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(body).hexdigest()


def _rank(spec: str | None) -> int:
    if spec is None or spec == "drop":
        return 0
    return 2 if spec == "keep" else 1


def compare(approved: dict[str, Any], current: dict[str, Any]) -> list[Change]:
    """Every difference from the approved posture, each marked lowering or not."""
    out = _policy_changes(approved["policy"], current["policy"])
    a, c = approved["exposure"], current["exposure"]
    if a != c:
        out.append(Change("exposure", f"{a} → {c}", EXPOSURE_RANK[c] > EXPOSURE_RANK[a]))
    out += _guard_changes(approved["guard"], current["guard"])
    if approved["keys"] != current["keys"]:
        out.append(Change("keys", "the store or pseudonymization key changed", False))
    ka, kc = approved.get("k"), current.get("k")
    if ka != kc:
        out.append(Change("k", f"suppression k {ka} → {kc}", (kc or 0) < (ka or 0)))
    added = sorted(set(current["admins"]) - set(approved["admins"]))
    changed = sorted(
        n
        for n in set(current["admins"]) & set(approved["admins"])
        if current["admins"][n] != approved["admins"][n]
    )
    if added or changed:
        out.append(
            Change("admins", f"admin(s) added or re-keyed: {', '.join(added + changed)}", True)
        )
    removed = sorted(set(approved["admins"]) - set(current["admins"]))
    if removed:
        out.append(Change("admins", f"admin(s) removed: {', '.join(removed)}", False))
    return out


def _policy_changes(a: dict[str, Any], c: dict[str, Any]) -> list[Change]:
    out = []
    for col in sorted(set(a["columns"]) | set(c["columns"])):
        was, now = a["columns"].get(col), c["columns"].get(col)
        if was == now:
            continue
        lowers = _rank(now) > _rank(was) or (_rank(now) == _rank(was) == 1)
        out.append(
            Change("policy", f"{col}: {was or 'not copied'} → {now or 'not copied'}", lowers)
        )
    for col in sorted(set(a["allow"]) | set(c["allow"])):
        more = set(c["allow"].get(col, [])) - set(a["allow"].get(col, []))
        if more:
            out.append(
                Change("policy", f"{col}: detector(s) now allowed: {', '.join(sorted(more))}", True)
            )
    if not out and a["digest"] != c["digest"]:
        out.append(Change("policy", "the policy file changed (no rule did)", False))
    return out


def _guard_changes(a: dict[str, Any], c: dict[str, Any]) -> list[Change]:
    out = []
    removed = sorted(set(a["targets"]) - set(c["targets"]))
    added = sorted(set(c["targets"]) - set(a["targets"]))
    if removed:
        out.append(Change("targets", f"probe target(s) removed: {'; '.join(removed)}", True))
    if added:
        out.append(Change("targets", f"probe target(s) added: {'; '.join(added)}", False))
    if c["alert_channels"] != a["alert_channels"]:
        out.append(
            Change(
                "alerts",
                f"alert channels {a['alert_channels']} → {c['alert_channels']}",
                c["alert_channels"] < a["alert_channels"],
            )
        )
    for name in sorted(set(a["every"]) | set(c["every"])):
        was, now = a["every"].get(name), c["every"].get(name)
        if was != now:
            lowers = now is None or (was is not None and now > was)  # slower, or back to a group's
            shown = f"{was:g}s" if was else "its group's", f"{now:g}s" if now else "its group's"
            out.append(Change("intervals", f"{name} checks every {shown[0]} → {shown[1]}", lowers))
    return out

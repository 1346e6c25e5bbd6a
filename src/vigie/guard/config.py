"""The guard's settings (``guard.yaml``): check intervals and the probe targets.

Alert channels are apprise URLs, which carry tokens: they come from ``VIGIE_ALERT_URLS``
(whitespace-separated) or a 0600 file named by ``alerts_file``, never from this file.

    every: {local: 5s, probes: 30s, audit.chain: 10s}   # groups, or one check by name
    alerts_file: /etc/vigie/alerts       # optional
    targets:
      - {name: prod-pg, kind: postgres, address: 10.0.0.5:5432, users: [postgres, app]}
      - {name: logs, kind: elasticsearch, address: https://10.0.0.9:9200}
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vigie.errors import PolicyError, UsageError
from vigie.policy.yamlmarks import Node, parse

KINDS = {
    "postgres": 5432,
    "mysql": 3306,
    "redis": 6379,
    "mqtt": 1883,
    "rabbitmq": 5672,
    "elasticsearch": 9200,
    "kibana": 5601,
    "clickhouse": 8123,
}
ALIASES = {"mariadb": "mysql", "opensearch": "elasticsearch", "postgresql": "postgres"}
HTTP_KINDS = {"elasticsearch", "kibana", "clickhouse"}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)$")
ALERT_VARIABLE = "VIGIE_ALERT_URLS"
# every check the guard runs, and the group whose interval it takes unless set by name
CHECK_GROUPS = {
    "files": "local", "audit.chain": "local", "posture.approved": "local", "store": "local",
    "serve.bind": "local", "api.exposure": "local", "api.auth": "probes", "targets": "probes",
}  # fmt: skip


@dataclass(frozen=True)
class Target:
    """A data store the guard probes, as an attacker on the network would."""

    name: str
    kind: str
    host: str
    port: int
    tls: bool = False  # https (HTTP kinds)
    users: tuple[str, ...] = ()
    where: str = ""

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = ("https://" if self.tls else "http://") if self.kind in HTTP_KINDS else ""
        return f"{scheme}{host}:{self.port}"

    def describe(self) -> str:
        users = f" users={','.join(self.users)}" if self.users else ""
        return f"{self.kind} {self.name} {self.address}{users}"


@dataclass(frozen=True)
class GuardConfig:
    local_every: float = 5.0
    probe_every: float = 30.0
    targets: tuple[Target, ...] = ()
    alert_urls: tuple[str, ...] = field(default=(), repr=False)
    source: str = "(defaults)"
    intervals: tuple[tuple[str, float], ...] = ()  # per check, by name

    def every(self, check: str) -> float:
        """The interval of ``check``: its own if set, else its group's."""
        own = dict(self.intervals).get(check)
        if own is not None:
            return own
        return self.probe_every if CHECK_GROUPS.get(check) == "probes" else self.local_every


def load_config(path: Path | None) -> GuardConfig:
    """The guard's settings from ``path`` (defaults without one) and the alert URLs."""
    if path is None:
        return GuardConfig(alert_urls=_alerts(None))
    try:
        text = path.read_text()
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        raise UsageError(
            f"Guard settings {path}: {exc.strerror}.",
            hint="Point --guard-config at a guard.yaml (see docs/guard.md).",
        ) from None
    root = parse(text, str(path))
    top = _mapping(root, str(path), {"every", "targets", "alerts_file"})
    known = {"local", "probes", *CHECK_GROUPS}
    every = _mapping(top["every"], str(path), known) if "every" in top else {}
    local = _seconds(every["local"], str(path)) if "local" in every else 5.0
    probes = _seconds(every["probes"], str(path)) if "probes" in every else 30.0
    own = tuple(sorted((n, _seconds(v, str(path))) for n, v in every.items() if n in CHECK_GROUPS))
    targets = tuple(_target(n, str(path)) for n in _list(top.get("targets"), str(path)))
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise PolicyError(f"{path}: two targets share a name.", hint="Give each its own name.")
    alerts_file = top.get("alerts_file")
    alerts = _alerts(Path(str(alerts_file.value)) if alerts_file else None)
    return GuardConfig(local, probes, targets, alerts, str(path), own)


def _where(file: str, node: Node) -> str:
    return f"{file}:{node.line}:{node.column}"


def _mapping(node: Node, file: str, keys: set[str]) -> dict[str, Node]:
    if not isinstance(node.value, dict):
        raise PolicyError(f"{_where(file, node)}: expected a mapping.", hint="See docs/guard.md.")
    unknown = sorted(set(node.value) - keys)
    if unknown:
        raise PolicyError(
            f"{_where(file, node)}: unknown key '{unknown[0]}'.",
            hint=f"Known keys: {', '.join(sorted(keys))}.",
        )
    return dict(node.value)


def _list(node: Node | None, file: str) -> list[Node]:
    if node is None:
        return []
    if not isinstance(node.value, list):
        raise PolicyError(f"{_where(file, node)}: expected a list.", hint="See docs/guard.md.")
    return list(node.value)


def _seconds(node: Node, file: str) -> float:
    m = _DURATION.match(str(node.value))
    value = float(m[1]) * {"ms": 0.001, "s": 1, "m": 60}[m[2]] if m else 0.0
    if not 0.2 <= value <= 3600:
        raise PolicyError(
            f"{_where(file, node)}: '{node.value}' is not an interval from 200ms to 60m.",
            hint="Write e.g. 5s, 30s or 2m.",
        )
    return value


def _target(node: Node, file: str) -> Target:
    m = _mapping(node, file, {"name", "kind", "address", "users"})
    for need in ("name", "kind", "address"):
        if need not in m:
            raise PolicyError(
                f"{_where(file, node)}: a target needs '{need}'.",
                hint="name, kind and address (host:port or URL).",
            )
    kind = ALIASES.get(str(m["kind"].value).lower(), str(m["kind"].value).lower())
    if kind not in KINDS:
        raise PolicyError(
            f"{_where(file, m['kind'])}: unknown kind '{m['kind'].value}'.",
            hint=f"Kinds: {', '.join(sorted(KINDS))}.",
        )
    host, port, tls = _address(str(m["address"].value), kind, _where(file, m["address"]))
    users = tuple(str(u.value) for u in _list(m.get("users"), file))
    return Target(str(m["name"].value), kind, host, port, tls, users, _where(file, node))


def _address(text: str, kind: str, where: str) -> tuple[str, int, bool]:
    tls = text.startswith("https://")
    rest = re.sub(r"^[a-z]+://", "", text).rstrip("/")
    m = re.match(r"^\[([0-9a-fA-F:]+)\](?::(\d+))?$", rest) or re.match(
        r"^([A-Za-z0-9.-]+)(?::(\d+))?$", rest
    )
    if not m or "/" in rest:
        raise PolicyError(
            f"{where}: address '{text}' is not host:port or a URL of a host.",
            hint="e.g. 10.0.0.5:5432 or https://es.internal:9200",
        )
    port = int(m[2]) if m[2] else KINDS[kind]
    if not 0 < port < 65536:
        raise PolicyError(f"{where}: port {port} is out of range.")
    return m[1], port, tls


def _alerts(path: Path | None) -> tuple[str, ...]:
    text = os.environ.get(ALERT_VARIABLE, "")
    if path is not None:
        try:
            st = path.stat()
            body = path.read_text()
        except OSError as exc:
            raise UsageError(f"Alerts file {path}: {exc.strerror}.") from None
        if stat.S_IMODE(st.st_mode) & 0o077:
            raise UsageError(
                f"Alerts file {path} is open to others (its URLs carry tokens).",
                hint=f"chmod 600 {path}",
            )
        text += "\n" + body
    return tuple(u for u in text.split() if not u.startswith("#"))


def as_json(config: GuardConfig) -> dict[str, Any]:
    """What the posture records of the settings (never an alert URL: they carry tokens)."""
    return {
        "every": {
            "local": config.local_every,
            "probes": config.probe_every,
            **dict(config.intervals),
        },
        "targets": sorted(t.describe() for t in config.targets),
        "alert_channels": len(config.alert_urls),
    }

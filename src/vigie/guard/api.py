"""vigie's own API, seen from outside: every route that is not public answers 401 to a
request without credentials (routes enumerated from the app itself, not from a list), and
the API does not answer in clear on any of this host's network addresses."""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from vigie.guard.model import Result, failed, passed
from vigie.guard.netns import NS_ORIGIN, Origin, is_loopback
from vigie.guard.probes import answers_http, route_statuses

TIMEOUT = 2.0


@dataclass(frozen=True)
class WebInfo:
    pid: int
    host: str
    port: int
    tls: bool

    @property
    def exposure(self) -> str:
        if is_loopback(self.host):
            return "loopback"
        return "network+tls" if self.tls else "network"


@cache
def app_routes() -> tuple[tuple[str, str], ...]:
    """(method, path) of every route of the app that must require a key; path parameters
    filled in. Built from ``create_app`` itself, so a new route is probed unlisted."""
    from vigie.server.app import PUBLIC, WebSettings, create_app

    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        app = create_app(WebSettings(t / "sock", t / "access.json", t / "audit" / "audit.log"))
        app.state.audit.close()
        out = set()
        for route in app.routes:
            path = getattr(route, "path", None)
            if path is None or path in PUBLIC:
                continue
            for method in sorted(getattr(route, "methods", None) or {"GET"}):
                if method != "HEAD":
                    out.add((method, re.sub(r"\{[^}]+\}", "x", path)))
    return tuple(sorted(out))


def network_addresses() -> list[str]:
    """This host's IPv4 addresses that are not loopback (nor the guard's own veths)."""
    import socket

    import psutil

    out = []
    for name, addrs in psutil.net_if_addrs().items():
        if name.startswith(("vgh", "vgn")):
            continue
        out += [
            a.address for a in addrs if a.family == socket.AF_INET and not is_loopback(a.address)
        ]
    return sorted(set(out))


def api_auth(web: WebInfo, origin: Origin) -> Result:
    check = "api.auth"
    host = web.host if web.host not in ("0.0.0.0", "::") else "127.0.0.1"  # noqa: S104
    routes = list(app_routes())
    statuses, where = origin.run(
        host, lambda: route_statuses(host, web.port, web.tls, routes, TIMEOUT)
    )
    open_ = {r: s for r, s in statuses.items() if s != 401}
    if open_:
        first = next(iter(open_.items()))
        return failed(
            check,
            f"{len(open_)} of {len(routes)} routes did not answer 401 without "
            f"a key, e.g. {first[0]} → {first[1]}",
            "Every route must go through the gate; find the route above in vigie/server/app.py.",
            origin=where,
            evidence="read: status codes",
        )
    return passed(
        check,
        f"all {len(routes)} data routes answer 401 without a key",
        origin=where,
        evidence="read: status codes",
    )


def api_exposure(web: WebInfo, origin: Origin) -> Result:
    check = "api.exposure"
    addrs = network_addresses()
    clear = []
    where = NS_ORIGIN if origin.made else f"this host ({origin.why_not})"
    for addr in addrs:
        status, where = origin.run(addr, lambda a=addr: answers_http(a, web.port, TIMEOUT))  # type: ignore[misc]
        if status is not None:
            clear.append(f"{addr}:{web.port}")
    if clear and not web.tls:
        return failed(
            check,
            f"the API answers in clear (plain HTTP) on {', '.join(clear)}",
            "Serve on 127.0.0.1 only, or with TLS; remove any forwarder that exposes the port.",
            origin=where,
            evidence="read: one status line",
        )
    return passed(
        check,
        f"no plain-HTTP answer on {', '.join(addrs) or 'no network address'} port {web.port}",
        origin=where,
    )

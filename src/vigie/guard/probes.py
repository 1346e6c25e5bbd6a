"""Outside-in probes: log in as a stranger would, read-only, and read nothing beyond what
proves the exposure (a login accepted, a list of names; never rows). Each probe says what
it read in ``evidence``. A probe that cannot tell (timeout, refused connection, an answer it
cannot read) is UNKNOWN, which the guard counts as a FAIL."""

from __future__ import annotations

import http.client
import json
import logging
import os
import secrets
import socket
import ssl
import struct
import time
from collections.abc import Callable
from typing import Any

from vigie.guard.config import Target
from vigie.guard.model import Result, failed, passed, unknown

TIMEOUT = 3.0
ES_OPEN_WARNING = "security features are not enabled"


def probe(target: Target, timeout: float = TIMEOUT) -> Result:
    """Run the probe of ``target``'s kind; never raises."""
    started = time.monotonic()
    fn: Callable[[Target, float], Result] = PROBES[target.kind]
    try:
        result = fn(target, timeout)
    except (OSError, ValueError, EOFError) as exc:  # the probe could not tell
        result = unknown(
            f"probe.{target.kind}",
            f"no usable answer: {_why(exc)}",
            f"Check that {target.address} is up and reachable from the guard.",
        )
    return _stamp(result, target, started)


def _stamp(r: Result, target: Target, started: float) -> Result:
    from dataclasses import replace

    return replace(r, target=target.name, seconds=round(time.monotonic() - started, 3))


def _why(exc: BaseException) -> str:
    text = str(getattr(exc, "strerror", None) or exc) or type(exc).__name__
    return text.splitlines()[0][:200]


# -- databases -----------------------------------------------------------------------------


def probe_postgres(t: Target, timeout: float) -> Result:
    import psycopg

    check = "probe.postgres"
    if os.environ.get("PGPASSWORD") or os.environ.get("PGPASSFILE"):
        return unknown(
            check,
            "PGPASSWORD or PGPASSFILE is set where the guard runs: a login "
            "could use it, so the probe cannot tell.",
            "Unset them for the guard.",
        )
    accepted, refused = [], []
    for user in t.users or ("postgres",):
        try:
            con = psycopg.connect(
                host=t.host,
                port=t.port,
                user=user,
                dbname="postgres",
                connect_timeout=max(1, int(timeout)),
                passfile="/nonexistent/vigie-guard-no-passfile",
                gssencmode="disable",
                application_name="vigie-guard",
            )
        except psycopg.OperationalError as exc:
            text = str(exc)
            if any(s in text for s in ("password", "pg_hba.conf", "does not exist", "denied")):
                refused.append(user)
                continue
            return unknown(
                check,
                f"could not reach {t.address}: {_why(exc)}",
                "Check the address, and that the guard may reach it.",
            )
        con.close()
        accepted.append(user)
    if accepted:
        return failed(
            check,
            f"logged in without a password as {', '.join(accepted)}",
            "Require a password (scram-sha-256) in pg_hba.conf for every host and "
            "user; never 'trust'.",
            evidence="read: nothing; the login was accepted",
        )
    return passed(
        check,
        f"logins without a password refused for {', '.join(refused)}",
        evidence="read: the server's refusal",
    )


def probe_mysql(t: Target, timeout: float) -> Result:
    import pymysql

    check = "probe.mysql"
    accepted, refused = [], []
    for user in t.users or ("root",):
        try:
            con = pymysql.connect(
                host=t.host,
                port=t.port,
                user=user,
                password="",
                connect_timeout=timeout,
                read_timeout=timeout,
            )
        except pymysql.err.OperationalError as exc:
            code = exc.args[0] if exc.args else 0
            if code in (1044, 1045, 1130, 1698):  # access denied, host not allowed
                refused.append(user)
                continue
            return unknown(
                check,
                f"could not reach {t.address}: {_why(exc)}",
                "Check the address, and that the guard may reach it.",
            )
        con.close()
        accepted.append(user)
    if accepted:
        return failed(
            check,
            f"logged in with an empty password as {', '.join(accepted)}",
            "Set a password for every account (ALTER USER ... IDENTIFIED BY) and "
            "drop anonymous ones.",
            evidence="read: nothing; the login was accepted",
        )
    return passed(
        check,
        f"empty-password logins refused for {', '.join(refused)}",
        evidence="read: the server's refusal",
    )


# -- Redis, MQTT, AMQP ---------------------------------------------------------------------


def probe_redis(t: Target, timeout: float) -> Result:
    check = "probe.redis"
    with socket.create_connection((t.host, t.port), timeout) as s:
        s.sendall(b"*1\r\n$4\r\nPING\r\n")
        line = _readline(s)
    if line.startswith(b"+PONG"):
        return failed(
            check,
            "answers commands without AUTH",
            "Set requirepass (or ACL users with passwords) and bind it to a private address.",
            evidence="read: the answer to PING",
        )
    if line.startswith((b"-NOAUTH", b"-WRONGPASS", b"-DENIED", b"-NOPERM")):
        word = line[1:].split(b" ", 1)[0].decode()
        return passed(
            check, f"commands without AUTH refused ({word})", evidence="read: the answer to PING"
        )
    return unknown(
        check, f"unexpected answer to PING: {line[:40]!r}", "Check that the target is Redis."
    )


def _readline(s: socket.socket, limit: int = 512) -> bytes:
    out = b""
    while not out.endswith(b"\r\n") and len(out) < limit:
        chunk = s.recv(1)
        if not chunk:
            break
        out += chunk
    return out


def probe_mqtt(t: Target, timeout: float) -> Result:
    check = "probe.mqtt"
    client = f"vigie-guard-{secrets.token_hex(4)}".encode()
    connect = b"\x00\x04MQTT\x04\x02\x00\x0a" + struct.pack("!H", len(client)) + client
    with socket.create_connection((t.host, t.port), timeout) as s:
        s.sendall(b"\x10" + _remaining(len(connect)) + connect)
        kind, body = _packet(s)
        if kind != 0x20 or len(body) < 2:
            return unknown(check, "no CONNACK to an anonymous CONNECT", "Check it is MQTT.")
        if body[1] != 0:
            return passed(
                check,
                f"anonymous CONNECT refused (CONNACK code {body[1]})",
                evidence="read: the CONNACK",
            )
        s.sendall(b"\x82\x06\x00\x01\x00\x01#\x00")  # SUBSCRIBE id 1, topic '#', QoS 0
        kind, body = _packet(s)
        s.sendall(b"\xe0\x00")  # DISCONNECT before any message can be read
    granted = kind == 0x90 and len(body) >= 3 and body[2] != 0x80
    what = "and may subscribe to '#' (every topic)" if granted else "('#' refused)"
    return failed(
        check,
        f"accepts anonymous clients {what}",
        "Set allow_anonymous false and a password_file (and ACLs) on the broker.",
        evidence="read: CONNACK and SUBACK only; no message",
    )


def _remaining(n: int) -> bytes:
    out = b""
    while True:
        byte, n = n % 128, n // 128
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def _packet(s: socket.socket) -> tuple[int, bytes]:
    head = _exact(s, 1)
    length, shift = 0, 0
    while True:
        b = _exact(s, 1)[0]
        length += (b & 0x7F) << shift
        shift += 7
        if not b & 0x80 or shift > 21:
            break
    return head[0] & 0xF0, _exact(s, min(length, 64))


def _exact(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise EOFError("the broker closed the connection")
        out += chunk
    return out


def probe_rabbitmq(t: Target, timeout: float) -> Result:
    import pika
    import pika.exceptions as px

    check = "probe.rabbitmq"
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    params = pika.ConnectionParameters(
        host=t.host,
        port=t.port,
        credentials=pika.PlainCredentials("guest", "guest"),
        connection_attempts=1,
        retry_delay=0,
        socket_timeout=timeout,
        stack_timeout=timeout,
        blocked_connection_timeout=timeout,
    )
    try:
        pika.BlockingConnection(params).close()
    except (
        px.ProbableAuthenticationError,
        px.AuthenticationError,
        px.ProbableAccessDeniedError,
    ) as exc:
        return passed(check, "guest/guest refused", evidence=f"read: {_why(exc)[:80]}")
    except px.AMQPError as exc:
        return unknown(
            check,
            f"no AMQP login answer from {t.address}: {_why(exc) or 'closed'}",
            "Check the address, and that the guard may reach it.",
        )
    return failed(
        check,
        "guest/guest logged in",
        "Delete the guest user, or keep it to loopback_users (RabbitMQ's default).",
        evidence="read: nothing; the login was accepted",
    )


# -- HTTP stores ---------------------------------------------------------------------------


def http_get(
    host: str,
    port: int,
    path: str,
    tls: bool,
    timeout: float,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One GET without credentials; at most 64 KiB of the body is read."""
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # auth is probed, not trust
        con: http.client.HTTPConnection = http.client.HTTPSConnection(
            host, port, timeout=timeout, context=ctx
        )
    else:
        con = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        con.request("GET", path, headers=headers or {})
        resp = con.getresponse()
        body = resp.read(65536)
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        con.close()


def probe_elasticsearch(t: Target, timeout: float) -> Result:
    check = "probe.elasticsearch"
    answers = {
        p: http_get(t.host, t.port, p, t.tls, timeout)
        for p in ("/", "/_cat/indices?format=json&h=index", "/_security/_authenticate")
    }
    fix = (
        "Enable security (xpack.security.enabled: true, with passwords and TLS) and keep "
        "the node off public addresses."
    )
    for path, (_, headers, _) in answers.items():
        if ES_OPEN_WARNING in headers.get("warning", ""):
            return failed(
                check,
                f"{path} answers with the warning that security features are not enabled",
                fix,
                evidence="read: response headers only; no document",
            )
    open_paths = [p for p, (status, _, _) in answers.items() if 200 <= status < 300]
    if open_paths:
        names = _index_names(answers["/_cat/indices?format=json&h=index"])
        extra = f"; {len(names)} index names readable ({', '.join(names[:5])})" if names else ""
        return failed(
            check,
            f"answers without credentials: {', '.join(open_paths)}{extra}",
            fix,
            evidence="read: the cluster banner and index names; no document",
        )
    statuses = {p: s for p, (s, _, _) in answers.items()}
    if all(s in (401, 403) for s in statuses.values()):
        return passed(
            check,
            "every request without credentials refused (401/403)",
            evidence="read: status codes",
        )
    return unknown(
        check,
        f"unexpected answers {statuses}",
        "Check that the target is Elasticsearch or OpenSearch.",
    )


def _index_names(answer: tuple[int, dict[str, str], bytes]) -> list[str]:
    status, _, body = answer
    if not 200 <= status < 300:
        return []
    try:
        return sorted(str(i.get("index")) for i in json.loads(body) if isinstance(i, dict))
    except ValueError:
        return []


def probe_kibana(t: Target, timeout: float) -> Result:
    check = "probe.kibana"
    answers = {
        p: http_get(t.host, t.port, p, t.tls, timeout, {"kbn-xsrf": "vigie-guard"})
        for p in ("/api/status", "/api/saved_objects/_find?type=index-pattern&per_page=1")
    }
    open_paths = [p for p, (s, _, _) in answers.items() if 200 <= s < 300]
    if open_paths or any(ES_OPEN_WARNING in h.get("warning", "") for _, h, _ in answers.values()):
        return failed(
            check,
            f"answers without credentials: {', '.join(open_paths)}",
            "Enable security in Kibana and Elasticsearch; put it behind a login.",
            evidence="read: status codes and headers",
        )
    if all(s in (401, 403) for s, _, _ in answers.values()):
        return passed(check, "requests without credentials refused", evidence="read: status codes")
    statuses = {p: s for p, (s, _, _) in answers.items()}
    return unknown(check, f"unexpected answers {statuses}", "Check that the target is Kibana.")


def probe_clickhouse(t: Target, timeout: float) -> Result:
    check = "probe.clickhouse"
    status, _, body = http_get(
        t.host, t.port, "/?query=SELECT%201", t.tls, timeout, {"X-ClickHouse-User": "default"}
    )
    if status == 200 and body.strip() == b"1":
        return failed(
            check,
            "SELECT 1 ran as 'default' without a password",
            "Give the default user a password (or disable it) in users.xml.",
            evidence="read: the result of SELECT 1",
        )
    if status in (401, 403, 516) or b"Authentication failed" in body:
        return passed(check, "'default' without a password refused", evidence="read: the refusal")
    return unknown(check, f"unexpected answer {status}", "Check that the target is ClickHouse.")


PROBES: dict[str, Callable[[Target, float], Result]] = {
    "postgres": probe_postgres,
    "mysql": probe_mysql,
    "redis": probe_redis,
    "mqtt": probe_mqtt,
    "rabbitmq": probe_rabbitmq,
    "elasticsearch": probe_elasticsearch,
    "kibana": probe_kibana,
    "clickhouse": probe_clickhouse,
}


def answers_http(host: str, port: int, timeout: float) -> str | None:
    """What a plain-HTTP request to host:port gets: the status line, or None (no listener,
    or it does not speak plain HTTP, e.g. TLS)."""
    try:
        status, _, _ = http_get(host, port, "/healthz", False, timeout)
    except (OSError, http.client.HTTPException):
        return None
    return str(status)


def route_statuses(
    host: str, port: int, tls: bool, routes: list[tuple[str, str]], timeout: float
) -> dict[str, int | str]:
    """Each route's status for a request without credentials (or why there was none)."""
    out: dict[str, int | str] = {}
    for method, path in routes:
        try:
            if tls:
                ctx = ssl.create_default_context()
                ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
                con: Any = http.client.HTTPSConnection(host, port, timeout=timeout, context=ctx)
            else:
                con = http.client.HTTPConnection(host, port, timeout=timeout)
            try:
                body = b"{}" if method in ("POST", "PUT", "PATCH") else None
                con.request(method, path, body=body, headers={"content-type": "application/json"})
                out[f"{method} {path}"] = con.getresponse().status
            finally:
                con.close()
        except (OSError, http.client.HTTPException) as exc:
            out[f"{method} {path}"] = _why(exc)
    return out

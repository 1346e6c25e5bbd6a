"""Test targets for the guard: real services started with and without credentials, a
fake Elasticsearch, a webhook that records alerts, a poller of a data route."""

from __future__ import annotations

import http.server
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from serving import free_port
from vigie.guard.api import network_addresses


def host_address() -> str:
    """An address of this host that is not loopback: what the network reaches."""
    addrs = network_addresses()
    assert addrs, "this machine has no non-loopback address to probe across"
    return addrs[0]


def any_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, host: str = "127.0.0.1", timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {host}:{port}")


@dataclass
class Proc:
    proc: subprocess.Popen
    port: int
    cleanup: list = field(default_factory=list)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fn in self.cleanup:
            fn()


def redis(password: str | None) -> Proc:
    port = any_port()
    args = ["redis-server", "--port", str(port), "--bind", "0.0.0.0", "--save", "",
            "--appendonly", "no", "--protected-mode", "no"]  # fmt: skip
    if password:
        args += ["--requirepass", password]
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return Proc(p, port)


def mosquitto(tmp: Path, anonymous: bool) -> Proc:
    port = any_port()
    conf = tmp / f"mosquitto-{port}.conf"
    conf.write_text(f"listener {port} 0.0.0.0\nallow_anonymous {'true' if anonymous else 'false'}\n"
                    "persistence false\n")  # fmt: skip
    p = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)  # fmt: skip
    wait_port(port)
    return Proc(p, port)


def postgres_with_password() -> Proc:
    """A PostgreSQL cluster of the test's own: scram-sha-256 for every host connection (in
    a folder of /tmp the postgres user owns: it cannot enter pytest's 0700 folders)."""
    bindir = next(Path("/usr/lib/postgresql").glob("*/bin"))
    tmp = Path(tempfile.mkdtemp(prefix="vigie-test-pg-"))
    data = tmp / "pgdata"
    pw = tmp / "pgpass-init"
    pw.write_text("s3cret-for-the-test\n")
    user = pwd.getpwnam("postgres")
    for p in (tmp, pw):
        os.chown(p, user.pw_uid, user.pw_gid)
    as_pg = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_pg, str(bindir / "initdb"), "-D", str(data), "-A", "scram-sha-256",
                    "-U", "postgres", f"--pwfile={pw}"], check=True, capture_output=True)  # fmt: skip
    with (data / "pg_hba.conf").open("a") as fh:
        fh.write("host all all 0.0.0.0/0 scram-sha-256\n")
    port = any_port()
    p = subprocess.Popen([*as_pg, str(bindir / "postgres"), "-D", str(data), "-p", str(port),
                          "-c", "listen_addresses=*", "-k", str(tmp)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    wait_port(port)
    return Proc(p, port, [lambda: shutil.rmtree(tmp, ignore_errors=True)])


class _Elastic(http.server.BaseHTTPRequestHandler):
    mode = "open7"

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        if self.mode == "silent":
            time.sleep(30)
            return
        if self.mode == "open7":
            # Elasticsearch 7.x without security: answers, with the deprecation warning
            # header its docs show ("security features are not enabled")
            body = {"/": {"name": "node-1", "cluster_name": "prod-logs",
                          "version": {"number": "7.17.9"}, "tagline": "You Know, for Search"},
                    "/_cat/indices": [{"index": "users"}, {"index": "cameras"}]}.get(
                self.path.split("?")[0], {"error": "security_exception", "status": 500})  # fmt: skip
            status = 500 if isinstance(body, dict) and "error" in body else 200
            self.send_response(status)
            self.send_header("Warning", '299 Elasticsearch-7.17.9 "Elasticsearch built-in '
                             "security features are not enabled. Without authentication, your "
                             'cluster could be accessible to anyone."')  # fmt: skip
        else:  # a secured 8.x cluster: 401 with the authenticate challenge
            body = {"error": {"root_cause": [{"type": "security_exception",
                    "reason": f"missing authentication credentials for REST request [{self.path}]",
                    "header": {"WWW-Authenticate": ['Basic realm="security" charset="UTF-8"',
                                                    "ApiKey"]}}],
                    "type": "security_exception"}, "status": 401}  # fmt: skip
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="security" charset="UTF-8"')
            self.send_header("WWW-Authenticate", "ApiKey")
        data = json.dumps(body).encode()
        self.send_header("content-type", "application/json; charset=UTF-8")
        self.send_header("X-elastic-product", "Elasticsearch")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def fake_elasticsearch(mode: str) -> tuple[http.server.ThreadingHTTPServer, int]:
    handler = type("Handler", (_Elastic,), {"mode": mode})
    server = http.server.ThreadingHTTPServer(("0.0.0.0", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


class Webhook:
    """Records what apprise's json:// posts (an alert channel)."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                hook.received.append({"at": time.monotonic(), **json.loads(body)})
                self.send_response(200)
                self.end_headers()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"json://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Poller:
    """Asks a data route as an analyst, as fast as it answers; records (time, status)."""

    def __init__(self, url: str, key: str) -> None:
        self.seen: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._client = httpx.Client(base_url=url, headers={"authorization": f"Bearer {key}"},
                                    timeout=10)  # fmt: skip
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                r = self._client.get("/api/kpis/device_activations")
                self.seen.append((time.monotonic(), r.status_code))
            except httpx.HTTPError:
                self.seen.append((time.monotonic(), 0))
            time.sleep(0.02)

    def first(self, status: int, after: float) -> float | None:
        return next((t for t, s in self.seen if s == status and t >= after), None)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)
        self._client.close()


def wait_status(url: str, want: int, timeout: float = 20.0) -> float:
    """Seconds until /healthz answers ``want``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if httpx.get(f"{url}/healthz", timeout=5).status_code == want:
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"/healthz did not answer {want} within {timeout} s")


__all__ = ["free_port"]


def fake_http(status: int, body: bytes) -> tuple[http.server.ThreadingHTTPServer, int]:
    """An HTTP server answering every GET with ``status`` and ``body`` (Kibana, ClickHouse)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(status)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("0.0.0.0", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]

"""A running `vigie serve` for the server tests: a synced fleet, keys per role, a port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from vigie.access.decide import Role
from vigie.access.keys import AccessFile, parse_duration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    url: str
    store: Path
    keyfile: Path
    proc: subprocess.Popen
    keys: dict[str, str] = field(default_factory=dict)
    root: Path = Path()

    def client(self, role: str | None = None, **kw) -> httpx.Client:
        headers = {"authorization": f"Bearer {self.keys[role]}"} if role else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **kw)

    @property
    def audit_log(self) -> Path:
        return self.store.parent / "audit" / "audit.log"

    def web_pid(self) -> int:
        out = subprocess.run(
            ["pgrep", "-P", str(self.proc.pid), "-f", "vigie.server"],
            capture_output=True,
            text=True,
        ).stdout.split()
        return int(out[0])


def make_keys(store: Path) -> dict[str, str]:
    access = AccessFile(store.parent / "access.json")
    keys = {str(r): access.create(f"{r}-1", r, parse_duration("1d")) for r in Role}
    keys["revoked"] = access.create("gone", Role.ENGINEER, parse_duration("1d"))
    access.revoke("gone")
    keys["expired"] = access.create("old", Role.ENGINEER, parse_duration("1h"))
    body = json.loads(access.path.read_text())
    for entry in body["keys"]:
        if entry["name"] == "old":
            entry["expires_at"] = "2020-01-01T00:00:00+00:00"
    access.path.write_text(json.dumps(body))
    return keys


def bootstrap_admin(store: Path) -> str:
    """An admin key for the tests' own approvals (kept beside the store, tests only)."""
    saved = store.parent / ".test-bootstrap-admin"
    if saved.exists():
        return saved.read_text()
    key = AccessFile(store.parent / "access.json").create(
        "guard-bootstrap", Role.ADMIN, parse_duration("2d")
    )
    saved.write_text(key)
    saved.chmod(0o600)
    return key


def approve_running(store: Path, key: str | None = None) -> bool:
    """Approve the running server's posture (the first approval: one admin), then run the
    guard's checks at once. False if it was already the baseline."""
    from vigie.errors import UsageError
    from vigie.guard.approvals import approvals_path, approve
    from vigie.serve.protocol import ask, socket_path

    key = key or bootstrap_admin(store)
    access = AccessFile(store.parent / "access.json")
    try:
        approve(approvals_path(store), access, key, ask(socket_path(store), "posture"))
    except UsageError:  # already the baseline
        return False
    finally:
        ask(socket_path(store), "guard", {"run": True})
    return True


def start_serve(
    store: Path, keyfile: Path, *extra: str, cwd: Path | None = None, approve: bool = True
) -> Served:
    port = free_port()
    env = {**os.environ, "VIGIE_KEYFILE": str(keyfile)}  # the web process must not inherit it
    proc = subprocess.Popen(
        [sys.executable, "-c", "from vigie.cli.app import main; main()", "serve",
         "--store", str(store), "--port", str(port), *extra],
        env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vigie serve exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            health = httpx.get(f"{url}/healthz", timeout=1)
            if health.status_code == 200 and store.with_name(store.name + ".sock").exists():
                return Served(url, store, keyfile, proc)
            failing = health.json().get("failing", []) if health.status_code == 503 else []
            if approve and failing == ["posture.approved"]:
                approve_running(store)
                continue
            if not approve and failing and "guard starting" not in failing:
                return Served(url, store, keyfile, proc)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("vigie serve did not come up")


def stop_serve(served: Served) -> None:
    served.proc.terminate()
    try:
        served.proc.wait(20)
    except subprocess.TimeoutExpired:
        served.proc.kill()
        served.proc.wait()
    if served.proc.stdout:
        served.proc.stdout.close()

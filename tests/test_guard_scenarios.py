"""The guard end to end, while `vigie serve` runs: each way protection was lowered in 2019
(and others), done as a hurried operator or an intruder would. For each: the guard reports
FAIL, data routes answer 503 within the interval (5 s) plus 1 s, an alert reaches a
webhook and the audit log, no data row is served after detection, and fixing the fault (or,
for a lowered policy, a second admin's approval) reopens the data."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import httpx
import pytest

from conftest import EXAMPLE_POLICY
from guardkit import Poller, Webhook, host_address, wait_status
from helpers import synced_fleet
from serving import bootstrap_admin, make_keys, start_serve, stop_serve
from vigie.access.keys import AccessFile
from vigie.audit.log import read_entries
from vigie.errors import Forbidden, StoreError
from vigie.guard import inside
from vigie.guard.approvals import approvals_path, approve
from vigie.serve.protocol import ask, socket_path
from vigie.stores.duckdb_store import Store

INTERVAL = 5.0  # the guard's default for local checks
DEADLINE = INTERVAL + 1.0


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("guarded")
    dsn, store, keys = synced_fleet(root, users=600, days=2, seed=5)
    policy = root / "policy.yaml"
    shutil.copy(EXAMPLE_POLICY, policy)
    api_keys = make_keys(store)
    hook = Webhook()
    os.environ["VIGIE_ALERT_URLS"] = hook.url
    try:
        served = start_serve(store, root / "keys", "--sync-from", dsn.url if hasattr(dsn, "url")
                             else str(dsn), "--policy", str(policy))  # fmt: skip
    finally:
        del os.environ["VIGIE_ALERT_URLS"]
    served.keys, served.root = api_keys, root
    poller = Poller(served.url, api_keys["analyst"])
    yield served, policy, keys, hook, poller
    poller.stop()
    hook.close()
    stop_serve(served)


def _closes_then_reopens(world, fault, fix) -> float:
    """Apply ``fault``; assert the guard's reaction; apply ``fix``; wait until served
    again. Returns the seconds from the fault to the first 503 of a data route."""
    served, _, _, hook, poller = world
    wait_status(served.url, 200)
    time.sleep(0.3)
    alerts_before = len(hook.received)
    t0 = time.monotonic()
    fault()
    wait_status(served.url, 503, timeout=15)
    deadline = time.monotonic() + 3
    while poller.first(503, t0) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    first = poller.first(503, t0)
    assert first is not None and first - t0 <= DEADLINE, f"503 after {first and first - t0} s"
    fixed_at = time.monotonic()
    served_after = [t for t, s in poller.seen if s == 200 and first < t < fixed_at]
    assert served_after == [], "a data row was served after the guard failed"
    deadline = time.monotonic() + 10
    while len(hook.received) == alerts_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any("FAIL" in a["title"] for a in hook.received[alerts_before:]), hook.received
    fix()
    wait_status(served.url, 200, timeout=20)
    return first - t0


def _with_store(store: Path, keys, sql: str, params=None):
    """Write to the store behind vigie's back (retrying while the server copies it)."""
    for _ in range(100):
        try:
            with Store(store, keys) as s:
                return s.con.execute(sql, params or []).fetchall()
        except (duckdb.IOException, StoreError):  # the server is copying it: retry
            time.sleep(0.1)
    raise AssertionError("could not open the store")


def test_chmod_644_on_the_store_closes_the_data(world):
    served = world[0]
    took = _closes_then_reopens(world, lambda: served.store.chmod(0o644),
                                lambda: served.store.chmod(0o600))  # fmt: skip
    assert took <= DEADLINE


def test_a_ransom_note_table_closes_the_data(world):
    served, _, keys, _, _ = world
    note = "CREATE TABLE read_me AS SELECT 'All your data is backed up. Send 0.1 BTC' AS note"
    _closes_then_reopens(world, lambda: _with_store(served.store, keys, note),
                         lambda: _with_store(served.store, keys, "DROP TABLE read_me"))  # fmt: skip
    status = ask(socket_path(served.store), "guard")
    assert status["ok"]


def test_an_email_planted_in_a_kept_column_is_never_served(world):
    served, _, keys, _, _ = world
    ((dev, firmware),) = _with_store(served.store, keys, "SELECT id, firmware FROM devices LIMIT 1")
    planted = "UPDATE devices SET firmware = 'alice.martin@example.com' WHERE id = ?"
    restore = "UPDATE devices SET firmware = ? WHERE id = ?"
    sql = world[0].client("engineer")
    _closes_then_reopens(world, lambda: _with_store(served.store, keys, planted, [dev]),
                         lambda: _with_store(served.store, keys, restore, [firmware, dev]))  # fmt: skip
    answer = sql.post("/api/sql", json={"sql": "SELECT count(*) FROM devices WHERE firmware "
                                        "LIKE '%@%'"}).json()  # fmt: skip
    sql.close()
    assert answer["rows"] == [[0]]  # the planted value was never in a served snapshot


def test_the_api_exposed_in_clear_on_the_network_closes_the_data(world):
    """A hurried operator forwards the API's port onto the LAN address without TLS."""
    served = world[0]
    port = int(served.url.rsplit(":", 1)[1])
    forwarder: list[subprocess.Popen] = []

    def expose() -> None:
        forwarder.append(subprocess.Popen(
            ["socat", f"TCP-LISTEN:{port},bind={host_address()},fork,reuseaddr",
             f"TCP:127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip

    def unexpose() -> None:
        forwarder[0].terminate()
        forwarder[0].wait(5)

    _closes_then_reopens(world, expose, unexpose)
    guard = [c for c in read_entries(served.audit_log) if c.get("path") == "guard.fail"]
    assert any("api.exposure" in e["params"]["checks"] for e in guard)


def test_keeping_emails_without_a_second_approval_closes_the_data(world):
    served, policy, _, _, _ = world
    original = policy.read_text()
    lowered = original.replace("email:         {class: pii, pseudonymize: email}",
                               "email:         {class: quasi, keep}")  # fmt: skip
    assert lowered != original
    access = AccessFile(served.store.parent / "access.json")
    ana, bob = served.keys["admin"], bootstrap_admin(served.store)

    def two_admins_approve() -> None:
        posture = ask(socket_path(served.store), "posture")
        first = approve(approvals_path(served.store), access, ana, posture)
        assert not first.approved
        with pytest.raises(Forbidden):  # the same admin twice is still one person
            approve(approvals_path(served.store), access, ana, posture)
        ask(socket_path(served.store), "guard", {"run": True})
        assert httpx.get(f"{served.url}/healthz").status_code == 503
        assert approve(approvals_path(served.store), access, bob, posture).approved

    _closes_then_reopens(world, lambda: policy.write_text(lowered), two_admins_approve)
    policy.write_text(original)  # back to the stricter policy: tightening needs no approval
    wait_status(served.url, 200)


def test_an_altered_audit_entry_closes_the_data(world):
    served = world[0]
    saved: dict[str, bytes] = {}

    def rewrite(edit) -> None:
        with served.audit_log.open("r+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)  # the intruder waits for a quiet moment
            data = fh.read()
            fh.seek(0)
            fh.write(edit(data))
            fh.truncate()

    def alter(data: bytes) -> bytes:
        lines = data.split(b"\n")
        saved["line"] = lines[2]
        lines[2] = re.sub(rb'"status":\d+', b'"status":299', lines[2])  # hide a refusal
        assert lines[2] != saved["line"]
        saved["altered"] = lines[2]
        return b"\n".join(lines)

    def restore(data: bytes) -> bytes:
        return data.replace(saved["altered"], saved["line"], 1)

    _closes_then_reopens(world, lambda: rewrite(alter), lambda: rewrite(restore))


def test_the_guard_sees_a_web_process_listening_off_loopback_without_tls(tmp_path):
    """The check behind `vigie serve`'s refusal to start that way, on a real listener."""
    code = (
        "import http.server as h; s = h.HTTPServer(('{}', 0), h.BaseHTTPRequestHandler);"
        " print(s.server_port, flush=True); s.serve_forever()"
    )
    for host, ok in (("0.0.0.0", False), ("127.0.0.1", True)):
        p = subprocess.Popen(["python3", "-c", code.format(host)], stdout=subprocess.PIPE)
        try:
            assert p.stdout is not None
            port = int(p.stdout.readline())  # listening from here on, however loaded the CI
            result = inside.listeners(p.pid, tls=False)
            assert str(port) in result.reason, result
        finally:
            p.kill()
            p.communicate()
        assert result.ok is ok, result


def test_serve_restarted_off_loopback_without_tls_never_serves(tmp_path, world):
    served = world[0]
    proc = subprocess.run(
        [sys.executable, "-c", "from vigie.cli.app import main; main()", "serve", "--store", str(served.store), "--host", "0.0.0.0", "--port", "1"],
        capture_output=True, text=True, env={**os.environ, "VIGIE_KEYFILE": str(served.keyfile)},
    )  # fmt: skip
    assert proc.returncode == 2 and "without TLS" in proc.stderr + proc.stdout


def test_a_value_planted_between_scheduled_syncs_is_caught_before_the_next_publish(tmp_path):
    """With `--every`, the schedule still watches the store between syncs, and a sync that
    finds the store changed behind its back scans everything before publishing."""
    dsn, store, keys = synced_fleet(tmp_path, users=300, days=2, seed=8)
    api_keys = make_keys(store)
    served = start_serve(store, tmp_path / "keys", "--sync-from", str(dsn), "--policy",
                         str(EXAMPLE_POLICY), "--every", "3s")  # fmt: skip
    poller = Poller(served.url, api_keys["analyst"])
    try:
        wait_status(served.url, 200)
        ((dev, firmware),) = _with_store(store, keys, "SELECT id, firmware FROM devices LIMIT 1")
        _with_store(store, keys, "UPDATE devices SET firmware = 'bob@example.org' WHERE id = ?",
                    [dev])  # fmt: skip
        t0 = time.monotonic()  # planted from here (the write waited for the schedule's lock)
        planted = datetime.now(UTC).replace(tzinfo=None)
        wait_status(served.url, 503, timeout=15)
        refused = datetime.fromisoformat(ask(socket_path(store), "guard")["failing_since"])
        deadline = time.monotonic() + 3  # the data route may follow /healthz by a poll
        while poller.first(503, t0) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        first = poller.first(503, t0)
        assert first is not None and first - t0 <= DEADLINE
        time.sleep(4)  # a scheduled sync runs meanwhile: it must not publish the planted value
        assert [s for t, s in poller.seen if t > first] and all(
            s == 503 for t, s in poller.seen if t > first
        )
        _with_store(store, keys, "UPDATE devices SET firmware = ? WHERE id = ?", [firmware, dev])
        wait_status(served.url, 200, timeout=20)
        # the guard looked before the next sync did anything: no run began and ended between
        sql = "SELECT run_id FROM _vigie.runs WHERE started_at > ? AND finished_at < ?"
        over = _with_store(store, keys, sql, [planted, refused.replace(tzinfo=None)])
        assert over == [], f"runs {over} synced over the planted value before it was refused"
    finally:
        poller.stop()
        stop_serve(served)

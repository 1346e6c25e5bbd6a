"""`vigie guard check|approve|status|run` on a store that is not served."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta

import pytest

from guardkit import Webhook
from helpers import synced_fleet
from vigie.access.decide import Role
from vigie.access.keys import AccessFile

VIGIE = [sys.executable, "-c", "from vigie.cli.app import main; main()"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("guardcli")
    _, store, _ = synced_fleet(root, users=300, days=2, seed=9)
    access = AccessFile(store.parent / "access.json")
    admins = [access.create(n, Role.ADMIN, timedelta(days=1)) for n in ("ana", "bob")]
    return root, store, admins


def vigie(root, *args, admin: str | None = None, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "VIGIE_KEYFILE": str(root / "keys"), "COLUMNS": "200"}
    if admin:
        env["VIGIE_ADMIN_KEY"] = admin
    return subprocess.run([*VIGIE, *args], capture_output=True, text=True, env=env, **kw)


def test_check_fails_closed_until_an_admin_approves_then_passes(world):
    root, store, (ana, _) = world
    first = vigie(root, "guard", "check", "--store", str(store))
    assert first.returncode == 11, first.stdout + first.stderr
    assert "posture.approved" in first.stdout and "no approved security posture" in first.stdout
    assert "store.verify" in first.stdout  # the store itself conforms
    approved = vigie(root, "guard", "approve", "--store", str(store), admin=ana)
    assert approved.returncode == 0 and "Approved by ana" in approved.stdout, approved.stderr
    again = vigie(root, "guard", "check", "--store", str(store))
    assert again.returncode == 0, again.stdout
    status = vigie(root, "guard", "status", "--store", str(store))
    assert status.returncode == 0 and "PASS" in status.stdout


def test_check_reports_a_listed_target_that_is_open(world, tmp_path):
    root, store, _ = world
    config = tmp_path / "guard.yaml"
    config.write_text("targets:\n  - {name: cache, kind: redis, address: 127.0.0.1:6379}\n")
    out = vigie(root, "guard", "check", "--store", str(store), "--guard-config", str(config))
    assert out.returncode == 11
    assert "probe.redis" in out.stdout and "without AUTH" in out.stdout


def test_guard_run_alerts_when_the_store_is_opened_to_others(world):
    root, store, _ = world
    hook = Webhook()
    env_extra = {"VIGIE_ALERT_URLS": hook.url}
    proc = subprocess.Popen([*VIGIE, "guard", "run", "--store", str(store)],
                            env={**os.environ, "VIGIE_KEYFILE": str(root / "keys"), **env_extra},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        time.sleep(4)
        store.chmod(0o644)
        deadline = time.monotonic() + 15
        while not hook.received and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        store.chmod(0o600)
        proc.terminate()
        out = proc.communicate(timeout=20)[0]
        hook.close()
    assert hook.received and "store.modes" in hook.received[0]["title"], out
    assert "FAIL" in out

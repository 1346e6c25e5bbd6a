"""The guard: probes against this machine's real services (open and secured, across a real
interface from a network namespace), a fake Elasticsearch in three states, the approvals'
two-person rule, and the settings file."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from guardkit import (
    fake_elasticsearch,
    host_address,
    mosquitto,
    postgres_with_password,
    redis,
)
from vigie.access.decide import Role
from vigie.access.keys import AccessFile
from vigie.audit.log import AuditLog, verify
from vigie.errors import Forbidden, PolicyError, UsageError
from vigie.guard.approvals import approve, read_ledger
from vigie.guard.config import GuardConfig, Target, load_config
from vigie.guard.model import Status
from vigie.guard.netns import HOST_ORIGIN, NS_ORIGIN, Origin
from vigie.guard.posture import compare, make_posture
from vigie.guard.probes import probe


@pytest.fixture(scope="module")
def origin():
    o = Origin()
    assert o.made, f"the tests probe from a network namespace: {o.why_not}"
    yield o
    o.close()


def run_probe(origin: Origin, kind: str, host: str, port: int, **kw):
    target = Target(f"test-{kind}", kind, host, port, **kw)
    result, where = origin.run(host, lambda: probe(target, timeout=3))
    return result, where


# -- this machine's services, as they run: open -----------------------------------------


def test_the_local_postgres_that_accepts_passwordless_logins_is_fail(origin):
    result, where = run_probe(origin, "postgres", "127.0.0.1", 5432, users=("postgres",))
    assert result.status is Status.FAIL and "without a password" in result.reason
    assert where == HOST_ORIGIN  # loopback: no network reaches it; a local process does


def test_mariadb_root_without_password_is_fail(origin):
    result, _ = run_probe(origin, "mysql", "127.0.0.1", 3306)
    assert result.status is Status.FAIL and "root" in result.reason


def test_redis_without_auth_is_fail(origin):
    result, _ = run_probe(origin, "redis", "127.0.0.1", 6379)
    assert result.status is Status.FAIL and "without AUTH" in result.reason


def test_mosquitto_accepting_anonymous_clients_is_fail(origin):
    result, _ = run_probe(origin, "mqtt", "127.0.0.1", 1883)
    assert result.status is Status.FAIL and "anonymous" in result.reason
    assert "no message" in result.evidence  # CONNACK and SUBACK, never a payload


def test_rabbitmq_guest_guest_is_fail(origin):
    result, _ = run_probe(origin, "rabbitmq", "127.0.0.1", 5672)
    assert result.status is Status.FAIL and "guest" in result.reason


# -- the same kinds of target with credentials, probed across the veth ---------------------


def test_a_postgres_cluster_requiring_passwords_is_pass_from_the_network(origin):
    pg = postgres_with_password()
    try:
        result, where = run_probe(origin, "postgres", host_address(), pg.port,
                                  users=("postgres", "app"))  # fmt: skip
    finally:
        pg.stop()
    assert result.status is Status.PASS, result
    assert where == NS_ORIGIN


def test_redis_with_requirepass_is_pass_and_without_is_fail_across_the_veth(origin):
    secured, open_ = redis("a-long-test-password"), redis(None)
    try:
        ok, where = run_probe(origin, "redis", host_address(), secured.port)
        bad, _ = run_probe(origin, "redis", host_address(), open_.port)
    finally:
        secured.stop()
        open_.stop()
    assert ok.status is Status.PASS and where == NS_ORIGIN
    assert bad.status is Status.FAIL


def test_mosquitto_without_anonymous_is_pass_and_with_is_fail_across_the_veth(origin, tmp_path):
    secured, open_ = mosquitto(tmp_path, anonymous=False), mosquitto(tmp_path, anonymous=True)
    try:
        ok, _ = run_probe(origin, "mqtt", host_address(), secured.port)
        bad, _ = run_probe(origin, "mqtt", host_address(), open_.port)
    finally:
        secured.stop()
        open_.stop()
    assert ok.status is Status.PASS, ok
    assert bad.status is Status.FAIL and "'#'" in bad.reason


def test_a_service_on_loopback_only_is_out_of_the_namespace_reach(origin):
    """The namespace is a real other host: the machine's loopback Redis is not reachable
    from it (so loopback targets are probed from this host, and say so)."""

    def connect() -> bool:
        try:
            socket.create_connection(("127.0.0.1", 6379), 1).close()
            return True
        except OSError:
            return False

    assert origin._pool is not None
    assert origin._pool.submit(connect).result() is False
    assert connect() is True


def test_a_target_that_does_not_answer_is_unknown(origin):
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        port = s.getsockname()[1]  # bound, never listening: refused
    result, _ = run_probe(origin, "redis", host_address(), port)
    assert result.status is Status.UNKNOWN and not result.ok


# -- Elasticsearch: open 7.x, secured 8.x, silent -----------------------------------------


@pytest.mark.parametrize(
    ("mode", "status", "words"),
    [
        ("open7", Status.FAIL, "security features are not enabled"),
        ("secured8", Status.PASS, "refused"),
        ("silent", Status.UNKNOWN, "no usable answer"),
    ],
)
def test_elasticsearch_probe(origin, mode, status, words):
    server, port = fake_elasticsearch(mode)
    try:
        result, where = run_probe(origin, "elasticsearch", host_address(), port)
    finally:
        server.shutdown()
        server.server_close()
    assert result.status is status, result
    assert words in result.reason
    assert where == NS_ORIGIN
    assert "no document" in result.evidence or result.status is not Status.FAIL


# -- approvals: the two-person rule ------------------------------------------------------


def _posture(columns: dict[str, str], admins: dict[str, str], **kw) -> dict:
    from vigie.policy.load import parse_policy

    columns = columns or {"id": "drop"}
    lines = ["version: 1", "tables:", "  users:", "    columns:"]
    lines += [f"      {c}: {{class: quasi, {a}}}" for c, a in columns.items()]
    policy = parse_policy("\n".join(lines) + "\n", Path("p.yaml"))
    return make_posture(policy, kw.get("exposure", "loopback"), GuardConfig(),
                        {"store": "s", "pseudonym": "p"}, admins, kw.get("k", 5))  # fmt: skip


@pytest.fixture
def admins(tmp_path):
    access = AccessFile(tmp_path / "access.json")
    keys = {n: access.create(n, Role.ADMIN, timedelta(days=1)) for n in ("ana", "bob", "eve")}
    signs = {e.name: e.sign_key for e in access.entries()}
    return access, keys, signs


def test_one_admin_alone_cannot_lower_security_even_approving_twice(tmp_path, admins):
    access, keys, signs = admins
    path = tmp_path / "approvals.jsonl"
    base = _posture({"id": "pseudonymize: user", "email": "drop"}, signs)
    assert approve(path, access, keys["ana"], base).approved  # the first baseline: one admin
    lowered = _posture({"id": "pseudonymize: user", "email": "keep"}, signs)
    first = approve(path, access, keys["ana"], lowered)
    assert not first.approved and first.needed == 2
    assert any(c.lowers and "email" in c.detail for c in first.changes)
    with pytest.raises(Forbidden, match="already approved"):
        approve(path, access, keys["ana"], lowered)
    assert read_ledger(path, access).baseline == base
    second = approve(path, access, keys["bob"], lowered)
    assert second.approved and second.signers == ["ana", "bob"]
    assert read_ledger(path, access).baseline == lowered


def test_two_admins_approving_at_once_do_not_break_the_ledger(tmp_path, admins, monkeypatch):
    """Both read the ledger before either wrote: without a lock, both lines chain to the same
    previous one, the ledger no longer verifies and the guard closes the data."""
    import vigie.guard.approvals as approvals
    from helpers import in_threads, read_together

    access, keys, signs = admins
    path = tmp_path / "approvals.jsonl"
    approve(path, access, keys["ana"], _posture({"email": "drop"}, signs))
    lowered = _posture({"email": "keep"}, signs)
    read_together(monkeypatch, approvals, "read_ledger")
    outcomes = {}
    in_threads(*(lambda n=n: outcomes.update({n: approve(path, access, keys[n], lowered)})
                 for n in ("ana", "bob")))  # fmt: skip
    monkeypatch.undo()
    ledger = read_ledger(path, access)
    assert ledger.problems == [] and ledger.count == 3
    assert ledger.baseline == lowered and ledger.approved_by == ["ana", "bob"]
    assert sorted(o.approved for o in outcomes.values()) == [False, True]


def test_a_tightening_needs_one_admin(tmp_path, admins):
    access, keys, signs = admins
    path = tmp_path / "approvals.jsonl"
    approve(path, access, keys["ana"], _posture({"email": "keep"}, signs))
    assert approve(path, access, keys["bob"], _posture({"email": "drop"}, signs)).approved


def test_an_admin_added_after_the_baseline_cannot_count_as_the_second(tmp_path, admins):
    access, keys, signs = admins
    path = tmp_path / "approvals.jsonl"
    approve(path, access, keys["ana"], _posture({"email": "drop"}, signs))
    mallory = access.create("mallory", Role.ADMIN, timedelta(days=1))  # ana's own second key
    lowered = _posture({"email": "keep"}, signs)
    approve(path, access, keys["ana"], lowered)
    with pytest.raises(Forbidden, match="not an admin of the approved baseline"):
        approve(path, access, mallory, lowered)


def test_an_edited_or_forged_approval_breaks_the_ledger(tmp_path, admins):
    access, keys, signs = admins
    path = tmp_path / "approvals.jsonl"
    approve(path, access, keys["ana"], _posture({"email": "drop"}, signs))
    line = json.loads(path.read_text())
    line["posture"]["policy"]["columns"]["users.email"] = "keep"  # widen what was approved
    from vigie.guard.posture import posture_hash

    line["hash"] = posture_hash(line["posture"])
    path.write_text(json.dumps(line) + "\n")
    ledger = read_ledger(path, access)
    assert ledger.problems and "signature" in ledger.problems[0]
    assert ledger.baseline is None


def test_an_analyst_key_cannot_approve(tmp_path, admins):
    access, _, signs = admins
    analyst = access.create("al", Role.ANALYST, timedelta(days=1))
    with pytest.raises(Forbidden, match="not an admin key"):
        approve(tmp_path / "a.jsonl", access, analyst, _posture({}, signs))


@pytest.mark.parametrize(
    ("change", "lowers"),
    [
        ({"columns": {"email": "keep"}}, True),
        ({"columns": {"email": "drop"}}, False),
        ({"columns": {"email": "pseudonymize: email", "phone": "keep"}}, True),
        ({"exposure": "network+tls"}, True),
        ({"k": 2}, True),
        ({"k": 10}, False),
    ],
)
def test_compare_says_which_changes_lower_security(change, lowers):
    signs = {"ana": "00"}
    base = _posture({"email": "pseudonymize: email"}, signs)
    now = _posture(change.get("columns", {"email": "pseudonymize: email"}), signs,
                   exposure=change.get("exposure", "loopback"), k=change.get("k", 5))  # fmt: skip
    changes = compare(base, now)
    assert changes and any(c.lowers for c in changes) is lowers


def test_a_removed_probe_target_lowers_security():
    t = Target("es", "elasticsearch", "10.0.0.9", 9200)
    base = make_posture(None, "loopback", GuardConfig(targets=(t,)), {}, {}, None)
    now = make_posture(None, "loopback", GuardConfig(), {}, {}, None)
    assert [c.what for c in compare(base, now) if c.lowers] == ["targets"]


# -- settings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "where", "words"),
    [
        ("targets:\n  - {name: a, kind: mongo, address: h:1}\n", ":2:", "unknown kind"),
        ("targets:\n  - {name: a, kind: redis, address: 'h:99999'}\n", ":2:", "out of range"),
        ("every: {local: 0s}\n", ":1:", "not an interval"),
        ("everything: 1\n", ":1:", "unknown key"),
    ],
)
def test_bad_guard_settings_are_refused_with_their_place(tmp_path, text, where, words):
    path = tmp_path / "guard.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError) as info:
        load_config(path)
    assert where in info.value.message and words in info.value.message


def test_alert_urls_never_come_from_a_file_others_can_read(tmp_path, monkeypatch):
    monkeypatch.delenv("VIGIE_ALERT_URLS", raising=False)
    alerts = tmp_path / "alerts"
    alerts.write_text("json://127.0.0.1:9/hook\n")
    alerts.chmod(0o644)
    (tmp_path / "guard.yaml").write_text(f"alerts_file: {alerts}\n")
    with pytest.raises(UsageError, match="open to others"):
        load_config(tmp_path / "guard.yaml")
    alerts.chmod(0o600)
    assert load_config(tmp_path / "guard.yaml").alert_urls == ("json://127.0.0.1:9/hook",)


def test_two_processes_append_to_one_audit_chain(tmp_path):
    """The web process records requests and the data process the guard's events."""
    log = tmp_path / "audit.log"
    AuditLog(log).close()
    code = ("import sys; from pathlib import Path; from vigie.audit.log import AuditLog\n"
            "a = AuditLog(Path(sys.argv[1]))\n"
            "for i in range(200): a.append(who=sys.argv[2], i=i)\n"
            "a.close()\n")  # fmt: skip
    procs = [subprocess.Popen([sys.executable, "-c", code, str(log), w]) for w in ("web", "guard")]
    for p in procs:
        assert p.wait(60) == 0
    assert verify(log) == []
    assert len(log.read_text().splitlines()) == 400


def test_a_writer_opened_while_another_appends_continues_the_chain(tmp_path, monkeypatch):
    """The interleaving that made the two-process test fail now and then ("entry 7 appears
    twice"): another process appends after a new writer has read the chain's tail and
    released its lock, before that writer's first append. It must not reuse a seq."""
    from contextlib import contextmanager

    import vigie.audit.log as audit_log

    log = tmp_path / "audit.log"
    other = AuditLog(log)
    other.append(who="web", i=0)
    real_locked = audit_log._locked

    @contextmanager
    def read_then_the_other_appends(path, how):
        with real_locked(path, how):
            yield
        other.append(who="web", i=1)  # lands between the tail's read and the first append

    monkeypatch.setattr(audit_log, "_locked", read_then_the_other_appends)
    late = AuditLog(log)
    monkeypatch.undo()
    assert late.append(who="guard", i=0) == 3
    late.close()
    other.close()
    assert verify(log) == []
    assert [e["seq"] for e in audit_log.read_entries(log)] == [1, 2, 3]


def test_stale_namespaces_of_a_killed_guard_are_removed():
    from vigie.guard.netns import PREFIX, remove_stale_namespaces

    dead = subprocess.Popen(["true"])
    dead.wait()
    name = f"{PREFIX}{dead.pid}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    remove_stale_namespaces()
    assert not Path(f"/run/netns/{name}").exists()


def test_rows_wiped_behind_vigies_back_are_a_sign_of_compromise_a_synced_purge_is_not(tmp_path):
    from helpers import synced_fleet
    from vigie.guard.inside import census, vanished
    from vigie.stores.duckdb_store import Store

    _, store, keys = synced_fleet(tmp_path, users=400, days=2, seed=4)
    with Store(store, keys) as s:
        before = census(s)
        s.con.execute("DELETE FROM connection_events WHERE hash(id) % 10 <> 0")  # 90% gone
        now = census(s)
        wiped = vanished(s, before, now)
        assert [r.check for r in wiped] == ["store.rows"] and "connection_events" in wiped[0].reason
        gone = before.rows["connection_events"] - now.rows["connection_events"]
        s.con.execute(  # as if a vigie sync had reconciled deletes from production
            "INSERT INTO _vigie.table_runs VALUES (?, 'connection_events', 0, 0, ?, 0.1, 'ok')",
            [before.run_id + 1, gone],
        )
        assert vanished(s, before, census(s)) == []


def test_each_check_can_have_its_own_interval_and_slowing_one_lowers_security(tmp_path):
    path = tmp_path / "guard.yaml"
    path.write_text("every: {local: 2s, probes: 1m, audit.chain: 500ms}\n")
    config = load_config(path)
    assert config.every("audit.chain") == 0.5
    assert config.every("files") == 2.0 and config.every("api.auth") == 60.0
    base = make_posture(None, "loopback", config, {}, {}, None)
    slower = make_posture(None, "loopback", GuardConfig(2.0, 60.0), {}, {}, None)
    assert [str(c) for c in compare(base, slower) if c.lowers] == [
        "intervals: audit.chain checks every 0.5s → its group's"
    ]


@pytest.mark.parametrize(
    ("kind", "open_answer", "closed_answer"),
    [
        ("kibana", (200, b'{"status":{"overall":{"level":"available"}}}'), (401, b"{}")),
        (
            "clickhouse",
            (200, b"1\n"),
            (516, b"Code: 516. DB::Exception: default: Authentication failed"),
        ),
    ],
)
def test_kibana_and_clickhouse_probes(origin, kind, open_answer, closed_answer):
    from guardkit import fake_http

    for (status, body), want in ((open_answer, Status.FAIL), (closed_answer, Status.PASS)):
        server, port = fake_http(status, body)
        try:
            result, _ = run_probe(origin, kind, host_address(), port)
        finally:
            server.shutdown()
            server.server_close()
        assert result.status is want, result

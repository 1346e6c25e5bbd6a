"""`vigie serve`: every route authenticates, roles decide through one function, the SQL
sandbox holds at the parser and at the engine, the audit chain catches tampering, and the
web process holds no key. Against a real server on a synced store."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
from pathlib import Path

import httpx
import pytest

from helpers import synced_fleet
from serving import Served, make_keys, start_serve, stop_serve
from vigie.access.decide import ROLE_ACTIONS, Action, Role
from vigie.audit.log import AuditLog, verify
from vigie.errors import AuditError, Refused, UsageError
from vigie.kpi.engine import lock_down
from vigie.serve.launch import check_bind
from vigie.serve.sandbox import check_statement, run_statement
from vigie.server.app import PUBLIC, WebSettings, create_app
from vigie.stores.duckdb_store import Store

KPI = "/api/kpis/connection_error_rate"


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Served:
    root = tmp_path_factory.mktemp("serve")
    _, store, _ = synced_fleet(root, users=1500, days=3, seed=11, small_countries=12)
    keys = make_keys(store)
    s = start_serve(store, root / "keys")
    s.keys, s.root = keys, root
    yield s
    stop_serve(s)


def app_routes(tmp_path: Path) -> list[tuple[str, str]]:
    """Every (method, path) the app serves, read from the app itself."""
    app = create_app(WebSettings(tmp_path / "x.sock", tmp_path / "a.json", tmp_path / "a.log"))
    out = []
    for route in app.routes:
        for method in sorted(getattr(route, "methods", None) or []):
            if method != "HEAD":
                out.append((method, route.path))
    app.state.audit.close()
    return out


def concrete(path: str) -> str:
    return path.replace("{name}", "connection_error_rate")


def test_every_route_but_the_public_ones_requires_a_key(served, tmp_path):
    routes = app_routes(tmp_path)
    assert {p for _, p in routes} >= {
        "/api/kpis",
        KPI.replace("connection_error_rate", "{name}"),
        "/api/sql",
        "/api/audit",
        "/api/status",
        "/openapi.json",
        "/",
    }
    assert {"/healthz", "/login", "/static/{name}", "/api/session"} == PUBLIC
    with served.client() as c:
        for method, path in routes:
            if path in PUBLIC:
                continue
            res = c.request(method, concrete(path), json={} if method == "POST" else None)
            assert res.status_code == 401, (method, path, res.status_code)
            if path.startswith("/api") or path == "/openapi.json":
                assert res.json()["error"]["kind"] == "auth"


def test_wrong_role_gets_403_on_every_route_it_may_not_use(served, tmp_path):
    needs = {
        "/api/kpis": Action.READ_KPIS,
        "/api/kpis/{name}": Action.READ_KPIS,
        "/api/sql": Action.RUN_SQL,
        "/api/audit": Action.READ_AUDIT,
    }
    for role in Role:
        with served.client(str(role)) as c:
            for method, path in app_routes(tmp_path):
                if path not in needs:
                    continue
                body = {"sql": "SELECT 1 AS one FROM devices LIMIT 1"} if method == "POST" else None
                res = c.request(method, concrete(path), json=body)
                if needs[path] in ROLE_ACTIONS[role]:
                    assert res.status_code == 200, (role, path, res.text)
                else:
                    assert res.status_code == 403, (role, path, res.status_code)
                    assert res.json()["error"]["kind"] == "forbidden"


@pytest.mark.parametrize("which", ["revoked", "expired", "vk_000000000000_" + "A" * 43, "nonsense"])
def test_revoked_expired_and_unknown_keys_are_refused(served, which):
    key = served.keys.get(which, which)
    res = httpx.get(served.url + "/api/kpis", headers={"authorization": f"Bearer {key}"})
    assert res.status_code == 401
    assert key not in res.text


def test_revocation_takes_effect_at_the_next_request(served):
    from vigie.access.keys import AccessFile, parse_duration

    access = AccessFile(served.store.parent / "access.json")
    key = access.create("temp", Role.ANALYST, parse_duration("1d"))
    headers = {"authorization": f"Bearer {key}"}
    assert httpx.get(served.url + "/api/kpis", headers=headers).status_code == 200
    access.revoke("temp")
    assert httpx.get(served.url + "/api/kpis", headers=headers).status_code == 401


def test_a_revocation_is_not_undone_by_a_key_created_at_the_same_moment(tmp_path, monkeypatch):
    """A responder revokes a leaked key while another admin creates one: each command read
    the file before the other wrote it, and the last write undid the first (the leaked key
    worked again, or the new one never did)."""
    from helpers import in_threads, read_together
    from vigie.access.keys import AccessFile, parse_duration
    from vigie.errors import AuthError

    path = tmp_path / "access.json"
    leaked = AccessFile(path).create("leaked", Role.ANALYST, parse_duration("1d"))
    read_together(monkeypatch, AccessFile, "_reload")
    made = {}
    in_threads(lambda: AccessFile(path).revoke("leaked"),
               lambda: made.update(key=AccessFile(path).create("new", Role.ANALYST,
                                                               parse_duration("1d"))))  # fmt: skip
    monkeypatch.undo()
    access = AccessFile(path)
    with pytest.raises(AuthError, match="revoked"):
        access.authenticate(leaked)
    assert access.authenticate(made["key"]).name == "new"
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)


FORBIDDEN_SQL = [
    ("SELECT * FROM read_csv('/etc/passwd')", "not a table of the replica"),
    ("SELECT * FROM '/etc/passwd'", "not a table of the replica"),
    ("SELECT * FROM read_text('/etc/hostname')", "not a table of the replica"),
    ("SELECT read_blob('/etc/hostname')", "not allowed"),
    ("SELECT getenv('HOME')", "not allowed"),
    ("SELECT current_setting('threads')", "not allowed"),
    ("ATTACH '/tmp/x.db' AS x", "Only SELECT"),
    ("INSTALL httpfs", "Only SELECT"),
    ("LOAD httpfs", "Only SELECT"),
    ("SET enable_external_access = true", "Only SELECT"),
    ("PRAGMA database_list", "Only SELECT"),
    ("COPY users TO '/tmp/users.csv'", "Only SELECT"),
    ("CREATE TABLE x AS SELECT 1", "Only SELECT"),
    ("DELETE FROM users", "Only SELECT"),
    ("SELECT 1; DROP TABLE users", "2 statements"),
    ("SELECT * FROM _vigie.runs", "not a table of the replica"),
    ("SELECT * FROM _vigie_kpi.registry", "not a table of the replica"),
    ("SELECT * FROM duckdb_settings()", "not a table of the replica"),
    ("SELECT * FROM other.main.users", "Catalog"),
    ("WITH t AS (SELECT * FROM read_parquet('s3://b/x')) SELECT * FROM t", "not a table"),
    ("SELECT * FROM users WHERE id IN (SELECT * FROM glob('/etc/*'))", "not a table"),
]


@pytest.mark.parametrize(("sql", "why"), FORBIDDEN_SQL)
def test_sql_outside_the_sandbox_is_refused_with_a_reason(served, sql, why):
    with served.client("engineer") as c:
        res = c.post("/api/sql", json={"sql": sql})
    assert res.status_code == 422, res.text
    assert why in res.json()["error"]["message"]


def test_sql_over_the_replica_answers_with_a_row_cap(served):
    with served.client("engineer") as c:
        res = c.post("/api/sql", json={"sql": "SELECT id FROM devices ORDER BY id", "max_rows": 5})
    body = res.json()
    assert res.status_code == 200 and body["columns"] == ["id"]
    assert len(body["rows"]) == 5 and body["truncated"] is True


@pytest.fixture
def locked_store(served, tmp_path):
    """A copy of the served store opened as the data process opens its snapshots."""
    from vigie.keys import load_keys

    copy = tmp_path / "s" / "vigie.duckdb"
    copy.parent.mkdir(mode=0o700)
    shutil.copy(served.store, copy)
    copy.chmod(0o600)
    with Store(copy, load_keys(served.keyfile), read_only=True) as store:
        lock_down(store)
        yield store


def test_a_statement_smuggled_past_the_parser_still_fails_at_the_engine(locked_store, tmp_path):
    """The data process's query connection is locked down: even with the parser bypassed,
    no file, attach, extension or setting."""
    view = locked_store.cursor_view()
    for sql in (
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM '/etc/passwd'",
        f"ATTACH '{tmp_path}/evil.db' AS evil",
        "INSTALL httpfs",
        "LOAD postgres",
        "SET enable_external_access = true",
        "SET lock_configuration = false",
        f"COPY (SELECT 1) TO '{tmp_path}/out.csv'",
    ):
        with pytest.raises(Refused, match="engine refused"):
            run_statement(view.con, sql, max_rows=10, timeout=5)
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "evil.db").exists()


def test_a_slow_statement_is_stopped_at_its_time_limit(locked_store):
    view = locked_store.cursor_view()
    slow = "SELECT count(*) FROM connection_events a, connection_events b, connection_events c"
    check_statement(slow, set(locked_store.table_names()))
    with pytest.raises(Refused, match="time limit"):
        run_statement(view.con, slow, max_rows=10, timeout=0.5)


def test_the_data_socket_checks_what_the_web_process_sends(served):
    """A compromised web process talking to the socket directly gets what a user could
    ask and nothing more: the parser runs in the data process, ops are few."""
    from vigie.errors import Forbidden
    from vigie.serve.protocol import ask, socket_path

    sock = socket_path(served.store)
    assert oct(sock.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(Refused, match="not a table of the replica"):
        ask(sock, "sql", {"sql": "SELECT * FROM read_csv('/etc/passwd')"})
    with pytest.raises(Refused, match="not a table of the replica"):
        ask(sock, "sql", {"sql": "SELECT * FROM _vigie.runs"})
    with pytest.raises(Forbidden, match="no op"):
        ask(sock, "keys", {})
    with pytest.raises(UsageError, match="max_rows"):
        ask(sock, "sql", {"sql": "SELECT 1 FROM devices", "max_rows": 10**9})


def test_the_data_process_streams_its_serving_state_to_the_web_process(served):
    """The watch connection the web process keeps: a state at once, then heartbeats."""
    import socket as socketlib

    from vigie.serve.protocol import WATCH, socket_path

    with socketlib.socket(socketlib.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(socket_path(served.store)))
        sock.sendall(WATCH + b"\n")
        with sock.makefile("rb") as fh:
            first, second = json.loads(fh.readline()), json.loads(fh.readline())
    assert re.fullmatch(r"g\d+", first["state"]) and second == first


def test_a_kept_kpi_answer_counts_only_under_the_state_it_was_asked_in(tmp_path):
    """A new snapshot, a closed guard, a silent data process: kept answers stop counting."""
    import time

    from vigie.server.answers import Answers

    answers = Answers(tmp_path / "x.sock", stale=0.3)
    key = ("connection_error_rate", b"by=firmware")
    answers.put(key, answers.state(), b"answer")  # no watch line yet: nothing is kept
    answers.read(b'{"state":"g1"}')
    assert answers.get(key) is None
    answers.put(key, answers.state(), b"answer")
    assert answers.get(key) == b"answer"
    answers.read(b'{"state":"g2"}')  # a new snapshot is served
    assert answers.get(key) is None
    answers.put(key, "g1", b"old")  # asked before the new snapshot, answered after
    assert answers.get(key) is None
    answers.put(key, answers.state(), b"new")
    answers.read(b'{"state":null}')  # the guard closed the data
    assert answers.state() is None and answers.get(key) is None
    answers.read(b'{"state":"g2"}')
    assert answers.get(key) is None  # reopening does not bring back what was dropped
    answers.put(key, answers.state(), b"new")
    answers.drop()  # the data process refused a request: what was kept is not given after
    assert answers.get(key) is None
    answers.read(b'{"state":"g2"}')
    answers.put(key, answers.state(), b"new")
    time.sleep(0.4)  # the data process stopped talking
    assert answers.get(key) is None


def test_unknown_or_overlong_kpi_parameters_are_refused(served):
    with served.client("analyst") as c:
        for params, why in (
            ({"bye": "firmware"}, "Unknown parameter 'bye'"),
            ({"by": "x" * 201}, "over 200 characters"),
            ({"format": "xml"}, "json or csv"),
            ({"where": [f"country=F{i}" for i in range(21)]}, "At most 20"),
        ):
            res = c.get(KPI, params=params)
            assert res.status_code == 400 and why in res.json()["error"]["message"], res.text


INJECTIONS = [
    "firmware; DROP TABLE users",
    "firmware' OR '1'='1",
    "country) --",
    'x"; SELECT 1',
    "' UNION SELECT password_hash FROM users --",
    "../../etc/passwd",
    "%00",
    "\u202e",
]


@pytest.mark.parametrize("payload", INJECTIONS)
def test_injection_in_every_query_parameter_is_a_clean_4xx(served, payload):
    with served.client("analyst") as c:
        for params in (
            {"by": payload},
            {"where": f"country={payload}"},
            {"where": payload},
            {"from": payload},
            {"to": payload},
            {"grain": payload},
            {"format": payload},
        ):
            res = c.get(KPI, params=params)
            assert res.status_code in (200, 400, 404, 422), (params, res.status_code, res.text)
            assert "Traceback" not in res.text and "password_hash" not in res.text.replace(
                payload, ""
            )
        res = c.get(f"/api/kpis/{payload}")
        assert res.status_code in (404, 400), res.text
        assert c.get(KPI, params={"by": "firmware"}).status_code == 200  # still there


def test_csv_export_equals_json(served):
    with served.client("analyst") as c:
        body = c.get(KPI, params={"by": "country"}).json()
        text = c.get(KPI, params={"by": "country", "format": "csv"}).text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == len(body["cells"]) > 0
    assert any(cell["suppressed"] for cell in body["cells"])  # the tiny countries
    for row, cell in zip(rows, body["cells"], strict=True):
        assert row["period"] == cell["period"]
        assert row["country"] == ("(all)" if cell["total"] else cell["dims"][0])
        assert row["suppressed"] == str(cell["suppressed"]).lower()
        assert (row["connection_error_rate"] == "") == (cell["value"] is None)
        if cell["value"] is not None:
            assert float(row["connection_error_rate"]) == pytest.approx(cell["value"])


def test_the_api_answers_what_the_cli_answers(served):
    """The same compiler and pattern: the CLI, which asks the running service, and the API."""
    import subprocess
    import sys

    with served.client("analyst") as c:
        api = c.get(KPI, params={"by": "firmware"}).json()
    cli = subprocess.run(
        [
            sys.executable,
            "-c",
            "from vigie.cli.app import main; main()",
            "kpi",
            "show",
            "connection_error_rate",
            "--by",
            "firmware",
            "--store",
            str(served.store),
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 0, cli.stderr
    cells = json.loads(cli.stdout)["cells"]
    assert [(c["period"], c["suppressed"]) for c in cells] == [
        (c["period"], c["suppressed"]) for c in api["cells"]
    ]


def test_the_web_process_holds_no_key(served):
    pid = served.web_pid()
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert not [
        v for v in env if v.startswith((b"VIGIE_KEYFILE", b"VIGIE_PSEUDONYM", b"VIGIE_STORE"))
    ]
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    assert str(served.keyfile).encode() not in cmdline
    opened = {str(p.resolve()) for p in Path(f"/proc/{pid}/fd").iterdir() if p.exists()}
    assert str(served.keyfile.resolve()) not in opened
    assert not any(o.endswith((".duckdb", ".wal")) or ".served-" in o for o in opened)
    secret = json.loads(served.keyfile.read_text())
    maps = Path(f"/proc/{pid}/maps").read_text()
    assert str(served.keyfile) not in maps
    # and the keys' material is nowhere in what the web process was given
    assert secret["store_key"].encode() not in cmdline and secret[
        "pseudonym_key"
    ].encode() not in b"".join(env)


def test_login_cookie_is_httponly_strict_and_origin_checked(served):
    key = served.keys["analyst"]
    with httpx.Client(base_url=served.url) as c:
        bad = c.post("/api/session", json={"key": key}, headers={"origin": "https://evil.example"})
        assert bad.status_code == 403
        ok = c.post("/api/session", json={"key": key}, headers={"origin": served.url})
        assert ok.status_code == 200
        cookie = ok.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert c.get("/api/kpis").status_code == 200  # the cookie
        assert c.post("/api/logout", headers={"origin": "https://evil.example"}).status_code == 403
        assert c.post("/api/logout", headers={"origin": served.url}).status_code == 200
        assert c.get("/api/kpis").status_code == 401
    page = httpx.get(served.url + "/")
    assert page.status_code == 401 and "url=/login" in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp


def in_process(app, calls):
    """Run (method, path, headers[, json body]) calls against the app in this process."""
    import asyncio

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return [
                await c.request(m, p, headers=h, json=b[0] if b else None) for m, p, h, *b in calls
            ]

    return asyncio.run(go())


def test_failed_authentication_is_rate_limited_per_address(tmp_path):
    app = create_app(WebSettings(tmp_path / "x.sock", tmp_path / "a.json", tmp_path / "a.log"))
    bad = ("GET", "/api/kpis", {"authorization": "Bearer nope"})
    codes = [r.status_code for r in in_process(app, [bad] * 12)]
    app.state.audit.close()
    assert codes[:10] == [401] * 10 and codes[10:] == [429, 429]


def test_openapi_is_for_authenticated_callers(served):
    assert httpx.get(served.url + "/openapi.json").status_code == 401
    with served.client("analyst") as c:
        schema = c.get("/openapi.json").json()
    assert "/api/kpis/{name}" in schema["paths"] and "/api/sql" in schema["paths"]


def test_audit_records_each_request_without_any_key(served):
    with served.client("analyst") as c:
        c.get(KPI, params={"by": "firmware"})
        c.get(KPI, params={"by": "firmware", "key": served.keys["analyst"]})  # a hurried paste
    with served.client("engineer") as c:
        c.post("/api/sql", json={"sql": f"SELECT 1 FROM devices -- {served.keys['engineer']}"})
    httpx.get(served.url + "/api/kpis", headers={"authorization": "Bearer wrong"})
    text = served.audit_log.read_text()
    entries = [json.loads(line) for line in text.splitlines()]
    ok = [e for e in entries if e["route"] == "/api/kpis/{name}" and e["status"] == 200]
    assert ok and ok[-1]["actor"] == "analyst-1" and ok[-1]["rows"] > 0
    assert ok[-1]["params"]["by"] == ["firmware"] and ok[-1]["client"] == "127.0.0.1"
    assert any(e["status"] == 401 and e["actor"] is None for e in entries)
    for key in served.keys.values():
        assert key not in text and key.split("_", 2)[2] not in text
    secret = json.loads(served.keyfile.read_text())
    assert secret["store_key"] not in text
    assert verify(served.audit_log) == []
    with served.client("responder") as c:
        assert c.get("/api/audit", params={"limit": 5}).json()["entries"][-1]["seq"] > 1


def test_an_audit_write_failure_blocks_the_request(tmp_path):
    from vigie.access.keys import AccessFile, parse_duration

    key = AccessFile(tmp_path / "a.json").create("ana", Role.ANALYST, parse_duration("1d"))
    app = create_app(WebSettings(tmp_path / "x.sock", tmp_path / "a.json", tmp_path / "a.log"))
    call = ("GET", "/api/whoami", {"authorization": f"Bearer {key}"})
    assert in_process(app, [call])[0].status_code == 200
    full = os.open("/dev/full", os.O_WRONLY)  # the disk is full: every write fails ENOSPC
    os.dup2(full, app.state.audit._fd)
    os.close(full)
    (res,) = in_process(app, [call])
    assert res.status_code == 503 and "ana" not in res.text
    assert "audit log" in res.json()["error"]["message"]


def _chain(tmp_path: Path, n: int = 8) -> Path:
    log = tmp_path / "audit" / "audit.log"
    audit = AuditLog(log)
    for i in range(n):
        audit.append(actor="ana", route="/api/kpis", status=200, rows=i)
    audit.close()
    return log


def _rewrite(log: Path, edit) -> None:
    text = log.read_text()
    edited = "".join(edit(text.splitlines(keepends=True)))
    assert edited != text  # the tampering happened
    log.write_text(edited)


@pytest.mark.parametrize(("kind", "edit"), [
    ("modified", lambda ls: [*ls[:3], ls[3].replace('"rows":3', '"rows":300'), *ls[4:]]),
    ("deleted", lambda ls: ls[:3] + ls[4:]),
    ("inserted", lambda ls: [*ls[:5], ls[2], *ls[5:]]),
    ("reordered", lambda ls: [*ls[:2], ls[3], ls[2], *ls[4:]]),
    ("cut", lambda ls: ls[:-2]),
])  # fmt: skip
def test_audit_verify_finds_each_kind_of_tampering(tmp_path, kind, edit):
    log = _chain(tmp_path)
    assert verify(log) == []
    _rewrite(log, edit)
    problems = verify(log)
    assert kind in {p.kind for p in problems}, problems


@pytest.mark.parametrize(("kind", "edit"), [
    ("modified", lambda ls: [*ls[:3], ls[3].replace('"rows":3', '"rows":300'), *ls[4:]]),
    ("deleted", lambda ls: ls[:3] + ls[4:]),
    ("inserted", lambda ls: [*ls[:5], ls[2], *ls[5:]]),
    ("reordered", lambda ls: [*ls[:2], ls[3], ls[2], *ls[4:]]),
    ("cut", lambda ls: ls[:-2]),
    ("appended", lambda ls: [*ls, ls[-1].replace('"rows":7', '"rows":8')]),
])  # fmt: skip
def test_the_guards_incremental_watch_sees_each_kind_of_tampering(tmp_path, kind, edit):
    """``ChainWatch`` (what the guard runs every few seconds) re-hashes what it verified
    instead of re-verifying it; every tampering is still seen, and a restored log passes."""
    from vigie.audit.log import ChainWatch

    log = _chain(tmp_path)
    watch = ChainWatch(log)
    assert watch.problems() == []
    original = log.read_bytes()
    _rewrite(log, edit)
    assert watch.problems() != [], kind
    log.write_bytes(original)
    assert watch.problems() == []
    audit = AuditLog(log)
    audit.append(actor="bob", status=200)
    audit.close()
    assert watch.problems() == []  # new entries are verified one by one


def test_audit_verify_cli_fails_on_a_tampered_log(tmp_path):
    import subprocess
    import sys

    log = _chain(tmp_path)

    def run():
        return subprocess.run(
            [
                sys.executable,
                "-c",
                "from vigie.cli.app import main; main()",
                "audit",
                "verify",
                "--log",
                str(log),
            ],
            capture_output=True,
            text=True,
        )

    assert run().returncode == 0
    _rewrite(log, lambda ls: ls[:3] + ls[4:])
    res = run()
    assert (
        res.returncode == 10 and "deleted" in res.stdout and "entries 4 are missing" in res.stdout
    )
    with pytest.raises(AuditError, match="does not verify"):
        AuditLog(log)  # nothing is appended to a broken chain


def test_serving_off_loopback_needs_tls(tmp_path):
    with pytest.raises(UsageError, match="without TLS"):
        check_bind("0.0.0.0", None, None)
    with pytest.raises(UsageError, match="go together"):
        check_bind("127.0.0.1", tmp_path / "c.pem", None)
    check_bind("127.0.0.1", None, None)
    check_bind("::1", None, None)


def test_store_verify_and_kpi_show_ask_the_running_service(served):
    import subprocess
    import sys

    from conftest import EXAMPLE_POLICY

    res = subprocess.run(
        [
            sys.executable,
            "-c",
            "from vigie.cli.app import main; main()",
            "store",
            "verify",
            "--store",
            str(served.store),
            "--policy",
            str(EXAMPLE_POLICY),
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert re.search(r"conforms", res.stdout)


def test_queries_during_a_scheduled_sync_answer_one_state_never_a_mix(tmp_path):
    """A sync every 2 s while production changes; SQL counts and KPI answers asked all the
    while. Every answer comes from one published snapshot: answers of one generation are
    identical, each count is one production held at a sync, and none fails."""
    import threading
    import time

    from conftest import EXAMPLE_POLICY
    from vigie.fleet.tick import tick_fleet

    dsn, store, _ = synced_fleet(tmp_path, users=800, days=2, seed=3)
    keys = make_keys(store)
    s = start_serve(
        store,
        tmp_path / "keys",
        "--sync-from",
        str(dsn),
        "--policy",
        str(EXAMPLE_POLICY),
        "--every",
        "2s",
    )
    s.keys = keys
    answers: list[tuple[int, int, str]] = []
    failures: list[str] = []
    stop = threading.Event()

    def ask():
        with s.client("engineer") as c:
            while not stop.is_set():
                res = c.post("/api/sql", json={"sql": "SELECT count(*) FROM connection_events"})
                kpi = c.get(KPI, params={"by": "firmware"})
                if res.status_code != 200 or kpi.status_code != 200:
                    failures.append(res.text + kpi.text)
                    continue
                body = res.json()
                answers.append(
                    (
                        body["generation"],
                        body["rows"][0][0],
                        json.dumps(kpi.json()["cells"]) + str(kpi.json()["generation"]),
                    )
                )

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for t in threads:
        t.start()
    counts_at = set()
    try:
        # at least 4 ticks, and on until 3 snapshots were seen (a sync and its refresh take
        # 3 to 6 s here, by the machine's load): at most a minute
        deadline, i = time.monotonic() + 60, 0
        while i < 4 or (len({a[0] for a in answers}) < 3 and time.monotonic() < deadline):
            counts_at.add(_count(dsn))
            tick_fleet(dsn, minutes=10, seed=100 + i)
            time.sleep(2.5)
            i += 1
        counts_at.add(_count(dsn))
        time.sleep(3)
    finally:
        stop.set()
        for t in threads:
            t.join()
        stop_serve(s)
    assert not failures, failures[:3]
    by_generation: dict[int, set[int]] = {}
    for generation, count, _ in answers:
        by_generation.setdefault(generation, set()).add(count)
    assert len(by_generation) >= 3, by_generation  # syncs were published during the load
    assert all(len(c) == 1 for c in by_generation.values()), by_generation
    assert {c for cs in by_generation.values() for c in cs} <= counts_at


def _count(dsn) -> int:
    import sqlite3

    with sqlite3.connect(dsn.path) as con:
        return con.execute("SELECT count(*) FROM connection_events").fetchone()[0]


def test_schemathesis_finds_no_server_error(served):
    """Property-based requests from the OpenAPI schema, with a valid engineer key: no 5xx."""
    import subprocess
    import sys
    from pathlib import Path

    st = Path(sys.executable).with_name("st")
    res = subprocess.run(
        [str(st), "run", f"{served.url}/openapi.json", "-H",
         f"Authorization: Bearer {served.keys['engineer']}", "--checks", "not_a_server_error",
         "--max-examples", "40", "--seed", "1"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    m = re.search(r"(\d+) generated, (\d+) passed", res.stdout)
    assert m and m[1] == m[2] and int(m[1]) > 100, res.stdout[-2000:]


def test_a_burst_of_connections_to_the_data_socket_is_accepted(served):
    """The web process opens its pooled connections at once under load: none is refused."""
    import asyncio

    from vigie.serve.protocol import encode, socket_path

    async def burst():
        async def one():
            reader, writer = await asyncio.open_unix_connection(str(socket_path(served.store)))
            writer.write(encode({"op": "ping", "args": {}}))
            line = await reader.readline()
            writer.close()
            return line

        return await asyncio.gather(*[one() for _ in range(64)], return_exceptions=True)

    answers = asyncio.run(burst())
    assert all(isinstance(a, bytes) and a.startswith(b'{"ok":true') for a in answers), answers


def test_stale_snapshots_of_a_killed_server_are_deleted_before_serving(tmp_path):
    """A copy left by a server killed with SIGKILL may hold what a tightened policy has
    since removed from the store: it does not survive the next start."""
    from vigie.serve.data import remove_stale_snapshots

    store = tmp_path / "vigie.duckdb"
    left = [tmp_path / "vigie.duckdb.served-7", tmp_path / "vigie.duckdb.served-7.wal",
            tmp_path / "vigie.duckdb.served-8.partial"]  # fmt: skip
    for path in [store, *left]:
        path.write_bytes(b"x")
    (tmp_path / "vigie.duckdb.served-7.tmp").mkdir()
    (tmp_path / "other.duckdb.served-1").write_bytes(b"x")
    remove_stale_snapshots(store)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.duckdb.served-1", "vigie.duckdb"]


def _status_of_an_hourly_schedule(dsn, store: Path, keyfile: Path) -> dict:
    """Serve ``store`` synced from ``dsn`` every hour; the status an analyst sees once it
    answers, after the server stopped."""
    from conftest import EXAMPLE_POLICY

    keys = make_keys(store)
    s = start_serve(store, keyfile, "--sync-from", str(dsn), "--policy",
                    str(EXAMPLE_POLICY), "--every", "1h")  # fmt: skip
    s.keys = keys
    try:
        with s.client("analyst") as c:
            return dict(c.get("/api/status").json())
    finally:
        stop_serve(s)


def test_a_long_schedule_serves_at_once_and_says_when_it_syncs_next(tmp_path):
    """With --every 1h the first sync runs at start, the server answers right after it
    (not an hour later), and status gives the next run."""
    from datetime import UTC, datetime

    dsn, store, _ = synced_fleet(tmp_path, users=300, days=1, seed=2)
    status = _status_of_an_hourly_schedule(dsn, store, tmp_path / "keys")
    assert status["sync"]["runs"] == 1 and status["sync"]["last_error"] is None
    next_at = datetime.fromisoformat(status["sync"]["next_at"])
    assert 3500 < (next_at - datetime.now(UTC)).total_seconds() <= 3600
    assert not list(store.parent.glob("*.served-*"))  # removed at stop


def test_a_schedule_under_the_guard_makes_its_store_with_the_first_sync(tmp_path):
    """`vigie serve --sync-from --every` onto a store not made yet: the first sync makes it
    (the guard has nothing to inspect before it), and it is served. Failed when a due sync
    inspected the store first: "No store at ..."."""
    dsn, _, _ = synced_fleet(tmp_path, users=200, days=1, seed=4)
    store = tmp_path / "new" / "vigie.duckdb"
    store.parent.mkdir(mode=0o700)
    status = _status_of_an_hourly_schedule(dsn, store, tmp_path / "keys")
    assert status["sync"]["runs"] == 1 and status["sync"]["last_error"] is None
    assert status["snapshot"]["generation"] == 1  # one copy, after the sync: none before it


def test_a_dashboard_session_expires_and_dies_with_its_key(tmp_path):
    from vigie.access.keys import AccessFile, parse_duration
    from vigie.server.auth import SESSION_COOKIE, SESSION_IDLE

    access = AccessFile(tmp_path / "a.json")
    key = access.create("ana", Role.ANALYST, parse_duration("1d"))
    app = create_app(WebSettings(tmp_path / "x.sock", tmp_path / "a.json", tmp_path / "a.log"))
    gate = app.state.gate
    (login,) = in_process(app, [("POST", "/api/session", {"origin": "http://t"}, {"key": key})])
    sid = login.cookies[SESSION_COOKIE]
    me = ("GET", "/api/whoami", {"cookie": f"{SESSION_COOKIE}={sid}"}, None)
    assert in_process(app, [me])[0].status_code == 200
    gate.sessions[sid].seen -= SESSION_IDLE + 1  # an hour idle
    assert in_process(app, [me])[0].status_code == 401
    (login,) = in_process(app, [("POST", "/api/session", {"origin": "http://t"}, {"key": key})])
    me = (
        "GET",
        "/api/whoami",
        {"cookie": f"{SESSION_COOKIE}={login.cookies[SESSION_COOKIE]}"},
        None,
    )
    access.revoke("ana")
    assert in_process(app, [me])[0].status_code == 401
    app.state.audit.close()


def test_responders_get_the_exposure_report_others_do_not(served):
    params = {"from": "2000-01-01", "to": "2100-01-01"}
    with served.client("responder") as c:
        report = c.get("/api/incidents/report", params=params)
        md = c.get("/api/incidents/report", params={**params, "format": "md"})
        bad = c.get("/api/incidents/report", params={"from": "2020-01-02", "to": "2020-01-01"})
    assert report.status_code == 200, report.text
    body = report.json()
    assert {t["table"] for t in body["tables"]} >= {"users", "devices", "connection_events"}
    assert body["users"] > 0 and "never left production" in body["summary"]
    assert md.status_code == 200 and md.text.startswith("# Exposure report")
    assert bad.status_code == 400
    with served.client("analyst") as c:
        assert c.get("/api/incidents/report", params=params).status_code == 403


def test_the_web_process_exits_when_vigie_serve_is_killed(tmp_path):
    import os
    import signal
    import time

    _, store, _ = synced_fleet(tmp_path, users=200, days=1, seed=2)
    s = start_serve(store, tmp_path / "keys")
    web = s.web_pid()
    os.kill(s.proc.pid, signal.SIGKILL)  # no cleanup at all
    s.proc.wait()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{web}").exists() and time.monotonic() < deadline:
        status = (
            Path(f"/proc/{web}/stat").read_text().split()[2]
            if Path(f"/proc/{web}").exists()
            else "X"
        )
        if status == "Z":
            break
        time.sleep(0.2)
    stat = Path(f"/proc/{web}/stat")
    assert not stat.exists() or stat.read_text().split()[2] == "Z"
    stop_serve(s)
    from vigie.guard.netns import remove_stale_namespaces

    remove_stale_namespaces()  # what the next guard's start does: the killed one left its own


def test_a_group_of_audit_entries_is_one_chain_even_with_another_writer_between(tmp_path):
    """The web process's group commit and the data process's appends share one chain."""
    log = tmp_path / "audit" / "audit.log"
    web, data = AuditLog(log), AuditLog(log)  # two writers, as the two processes are
    assert web.append_many([{"actor": "ana", "rows": i} for i in range(3)]) == [1, 2, 3]
    assert data.append(actor=None, event="guard.fail") == 4
    assert web.append_many([{"actor": "bob", "rows": i} for i in range(2)]) == [5, 6]
    web.close()
    data.close()
    assert verify(log) == []
    lines = log.read_text().splitlines()
    _rewrite(log, lambda ls: [*ls[:4], *ls[5:]])  # one entry of a group taken out
    assert [p.kind for p in verify(log)] == ["deleted"] and len(lines) == 6

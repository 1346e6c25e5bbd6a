"""Incident response on a fleet in real PostgreSQL: a planted exposure window with syncs,
ticks, a policy change (a sensitive column kept, then dropped) and deletions inside it.
The report's counts equal an independent computation (the union of the store's states in
force during the window, read from the tables themselves, not from vigie's lineage); the
notify list equals the production users behind those rows; the rotation playbook changes
nothing in a dry run, everything once with --execute, nothing more the second time, and
resumes after a crash between steps."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import hmac
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conftest import EXAMPLE_POLICY
from helpers import prod
from vigie.access.decide import Role
from vigie.access.keys import AccessFile, parse_duration
from vigie.audit.log import AuditLog
from vigie.errors import UsageError
from vigie.fleet.build import generate_fleet
from vigie.fleet.generate import FleetSpec
from vigie.fleet.inspect import checksums
from vigie.fleet.tick import tick_fleet
from vigie.incident.notify import notify_list
from vigie.incident.render import to_html, to_json, to_markdown
from vigie.incident.report import build_report
from vigie.incident.rotate import Rotation, load_playbook, state_path
from vigie.stores.duckdb_store import Store
from vigie.sync.run import sync

ROOT = Path(__file__).resolve().parent.parent
PLAYBOOK = ROOT / "src" / "vigie" / "fleet" / "fleet-playbook.yaml"
USER_COLUMNS = {"users": "id", "devices": "user_id", "api_tokens": "user_id",
                "integrations": "user_id", "payment_methods": "user_id"}  # fmt: skip


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _bad_policy(tmp: Path) -> Path:
    """The example policy, but the Wi-Fi network names kept (every detector waived)."""
    text = EXAMPLE_POLICY.read_text()
    waive = ", ".join(f'{d}: "kept by mistake"' for d in
                      ("email", "phone", "mac", "ip", "card", "token", "person_name",
                       "identifier"))  # fmt: skip
    bad = text.replace("wifi_ssid:     {class: pii, drop}",
                       f"wifi_ssid:     {{class: quasi, keep, allow: {{{waive}}}}}")  # fmt: skip
    assert bad != text
    path = tmp / "bad-policy.yaml"
    path.write_text(bad)
    return path


def _state(store: Path, keys) -> dict[str, set]:
    """The store's rows as they are now: every table's row identities (all columns but the
    lineage ones), read from the tables themselves."""
    out: dict[str, set] = {}
    with Store(store, keys, read_only=True) as s:
        for table in s.table_names():
            cols = [c for c in s.columns()[table] if not c.startswith("_vigie")]
            key = "id" if "id" in cols else None
            sel = f'"{key}"' if key else ", ".join(f'"{c}"' for c in cols)
            out[table] = set(s.rows(f'SELECT {sel} FROM "{table}"'))
            if table in USER_COLUMNS:
                out[f"users-of:{table}"] = {
                    r[0] for r in s.rows(f'SELECT "{USER_COLUMNS[table]}" FROM "{table}"')}  # fmt: skip
    return out


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    from vigie.keys import init_keyfile, load_keys

    tmp = tmp_path_factory.mktemp("incident")
    from conftest import PG, _server_db

    gen = _server_db(PG, "vigie_inc")
    dsn = next(gen)
    generate_fleet(dsn, FleetSpec(users=300, days=2, seed=21))
    init_keyfile(tmp / "keys")
    keys = load_keys(tmp / "keys")
    store = tmp / "store" / "vigie.duckdb"
    bad = _bad_policy(tmp)
    states = []
    sync(dsn, bad, store, keys)
    tick_fleet(dsn, minutes=120, seed=1)
    sync(dsn, bad, store, keys)
    states.append(_state(store, keys))  # in force at the window's start
    log = AuditLog(store.parent / "audit" / "audit.log")
    log.append(actor="before", status=200, rows=5, path="/api/sql", route="/api/sql")
    time.sleep(0.05)
    t1 = _now()
    time.sleep(0.05)
    tick_fleet(dsn, minutes=240, seed=2)
    sync(dsn, bad, store, keys)
    states.append(_state(store, keys))
    log.append(actor="ana", role="engineer", method="POST", path="/api/sql", route="/api/sql",
               status=200, rows=40, client="10.0.0.7")  # fmt: skip
    log.append(actor=None, method="GET", path="/api/kpis", route="/api/kpis", status=401,
               client="203.0.113.9")  # fmt: skip
    log.append(actor="vigie-guard", role="guard", method="GUARD", path="guard.fail",
               params={"checks": ["store.modes"]}, status=503, reason="mode 0644")  # fmt: skip
    sync(dsn, EXAMPLE_POLICY, store, keys)  # tightened: wifi_ssid leaves the store
    tightened = _now()
    states.append(_state(store, keys))
    log.append(actor="vigie-guard", role="guard", method="GUARD", path="guard.pass",
               params={"checks": []}, status=200)  # fmt: skip
    tick_fleet(dsn, minutes=300, seed=3)
    sync(dsn, EXAMPLE_POLICY, store, keys)
    states.append(_state(store, keys))
    time.sleep(0.05)
    t2 = _now()
    time.sleep(0.05)
    log.append(actor="after", status=200, rows=7, path="/api/sql", route="/api/sql")
    tick_fleet(dsn, minutes=120, seed=4)
    sync(dsn, EXAMPLE_POLICY, store, keys)  # after the window: must not count
    log.close()
    yield {"dsn": dsn, "store": store, "keys": keys, "t1": t1, "t2": t2, "states": states,
           "tightened": tightened, "tmp": tmp}  # fmt: skip
    with contextlib.suppress(StopIteration):
        next(gen)  # drops the database


def _report(p, start=None, end=None):
    with Store(p["store"], p["keys"], read_only=True) as s:
        return build_report(s, start or p["t1"], end or p["t2"],
                            p["store"].parent / "audit" / "audit.log", "drill")  # fmt: skip


def test_report_counts_equal_the_union_of_the_store_states_in_the_window(planted):
    report = _report(planted)
    expected = {}
    for state in planted["states"]:
        for table, rows in state.items():
            expected.setdefault(table, set()).update(rows)
    got = {t.table: t.present for t in report.tables}
    for table, present in got.items():
        assert present == len(expected[table]), table
    assert sum(t.deleted_since for t in report.tables) > 0  # deletions inside: counted
    users = set().union(*(v for k, v in expected.items() if k.startswith("users-of:")))
    assert report.users == len(users - {None})


def test_a_column_kept_by_a_bad_policy_is_exposed_while_it_was_there_and_not_after(planted):
    report = _report(planted)
    ssid = [r for r in report.readable if (r.table, r.column) == ("devices", "wifi_ssid")]
    assert len(ssid) == 1 and ssid[0].action == "keep" and ssid[0].until is not None
    assert ssid[0].until <= planted["tightened"]
    later = _report(planted, start=planted["tightened"])
    assert not [r for r in later.readable if r.column == "wifi_ssid"]


def test_the_report_says_truthfully_what_was_not_there(planted):
    report = _report(planted)
    cats = {c.name: c for c in report.categories}
    assert not cats["passwords and password hashes"].exposed
    assert "users.password_hash" in cats["passwords and password hashes"].withheld
    assert not cats["tokens (app, API, integration)"].exposed
    assert {"api_tokens.token", "integrations.access_token"} <= set(
        cats["tokens (app, API, integration)"].withheld)  # fmt: skip
    assert not cats["payment card numbers and bank details"].exposed
    assert cats["other payment data"].readable == ["payment_methods.card_brand"]
    text = to_markdown(report)
    assert "never left production" in text and "users.password_hash" in text
    assert "<script" not in to_html(report) and '"summary"' in to_json(report)


def test_the_report_shows_the_window_of_the_audit_log_and_the_guard(planted):
    a = _report(planted).audit
    assert [r["actor"] for r in a.reads] == ["ana"]  # not "before", not "after"
    assert a.reads[0]["rows"] == 40 and a.reads[0]["clients"] == ["10.0.0.7"]
    assert a.unauthenticated == 1 and a.unauthenticated_clients == ["203.0.113.9"]
    assert [g["event"] for g in a.guard_events] == ["guard.fail", "guard.pass"]
    report = _report(planted)
    assert report.exposure_seen_at is not None and report.restored_at is not None


def test_the_notify_list_is_the_production_users_behind_the_window(planted, tmp_path):
    keys = planted["keys"]
    out = tmp_path / "notify.csv"
    with Store(planted["store"], keys, read_only=True) as s:
        result = notify_list(s, keys, planted["dsn"], planted["t1"], planted["t2"], out)
    assert out.stat().st_mode & 0o777 == 0o600
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    users = set()
    for state in planted["states"]:
        for k, v in state.items():
            if k.startswith("users-of:"):
                users |= {str(u) for u in v if u is not None}
    key = keys.pseudonym_key.encode()
    production = {
        str(uuid.UUID(bytes=hmac.new(key, f"user:{i}".encode(), hashlib.sha256).digest()[:16])):
        (i, e) for i, e in prod(planted["dsn"], "SELECT id, email FROM users")}  # fmt: skip
    expected = {production[u][0] for u in users if u in production}
    assert {int(r["user_id"]) for r in rows} == expected
    assert result.unmatched == len(users - set(production))  # deleted from production since
    one = next(r for r in rows)
    assert one["email"] == dict(production.values())[int(one["user_id"])]
    assert "users" in one["exposed"].split("; ")
    legend = out.with_name(out.name + ".columns.txt")
    assert legend.stat().st_mode & 0o777 == 0o600 and "users: country" in legend.read_text()
    with (
        pytest.raises(Exception, match="never overwrites"),
        Store(planted["store"], keys, read_only=True) as s,
    ):
        notify_list(s, keys, planted["dsn"], planted["t1"], planted["t2"], out)


def _rotation(p, tmp: Path, audit=None) -> Rotation:
    access = AccessFile(tmp / "access.json")
    if not access.path.exists():
        access.create("ana", Role.ANALYST, parse_duration("1d"))
        access.create("root-1", Role.ADMIN, parse_duration("1d"))
    return Rotation(load_playbook(PLAYBOOK), p["dsn"], access, state_path(tmp / "s.duckdb"),
                    audit)  # fmt: skip


def test_rotate_dry_run_changes_nothing_execute_once_then_nothing_more(planted, tmp_path):
    dsn = planted["dsn"]
    before = checksums(dsn)
    dry = _rotation(planted, tmp_path).run(execute=False)
    assert checksums(dsn) == before
    assert {r.step: r.pending for r in dry}["revoke-app-tokens"] == prod(
        dsn, "SELECT COUNT(*) FROM api_tokens WHERE revoked_at IS NULL")[0][0]  # fmt: skip
    log = AuditLog(tmp_path / "audit.log")
    done = _rotation(planted, tmp_path, log).run(execute=True)
    assert all(r.changed == r.pending for r in done)
    assert prod(dsn, "SELECT COUNT(*) FROM api_tokens WHERE revoked_at IS NULL")[0][0] == 0
    assert prod(dsn, "SELECT COUNT(*) FROM integrations WHERE unlinked_at IS NULL")[0][0] == 0
    assert all(e.revoked_at for e in AccessFile(tmp_path / "access.json").entries())
    after = checksums(dsn)
    again = _rotation(planted, tmp_path, log).run(execute=True)
    log.close()
    assert checksums(dsn) == after and all(r.changed == 0 for r in again)
    assert all(r.note.startswith("done at") for r in again)


def test_rotate_resumes_after_a_crash_between_steps(tmp_path, pg_dsn):
    generate_fleet(pg_dsn, FleetSpec(users=120, days=1, seed=5))
    p = {"dsn": pg_dsn}
    rotation = _rotation(p, tmp_path)
    code = ("import sys; from pathlib import Path\n"
            "from vigie.access.keys import AccessFile\n"
            "from vigie.db.dsn import parse_dsn\n"
            "from vigie.incident.rotate import Rotation, load_playbook\n"
            "r = Rotation(load_playbook(Path(sys.argv[1])), parse_dsn(sys.argv[2]),\n"
            "             AccessFile(Path(sys.argv[3])), Path(sys.argv[4]))\n"
            "r.run(execute=True, crash_after='revoke-app-tokens')\n")  # fmt: skip
    crashed = subprocess.run([sys.executable, "-c", code, str(PLAYBOOK), str(pg_dsn),
                              str(tmp_path / "access.json"), str(rotation.state)])  # fmt: skip
    assert crashed.returncode == 70
    assert prod(pg_dsn, "SELECT COUNT(*) FROM api_tokens WHERE revoked_at IS NULL")[0][0] == 0
    assert prod(pg_dsn, "SELECT COUNT(*) FROM integrations WHERE unlinked_at IS NULL")[0][0] > 0
    resumed = {r.step: r for r in rotation.run(execute=True)}
    assert resumed["revoke-app-tokens"].note.startswith("done at")
    assert resumed["unlink-integrations"].changed > 0
    assert prod(pg_dsn, "SELECT COUNT(*) FROM integrations WHERE unlinked_at IS NULL")[0][0] == 0


def test_the_drill_tells_the_whole_story_with_a_timeline(tmp_path):
    res = subprocess.run(
        [sys.executable, "-c", "from vigie.cli.app import main; main()", "incident", "drill",
         "--workdir", str(tmp_path / "drill"), "--users", "300"],
        capture_output=True, text=True, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    for stage in ("the guard catches it", "exposure report", "notify list", "rotation playbook"):
        assert stage in res.stdout, stage
    report = (tmp_path / "drill" / "report.md").read_text()
    assert "store.modes" in report and "never left production" in report
    assert (tmp_path / "drill" / "notify.csv").stat().st_mode & 0o777 == 0o600


def test_report_cli_on_a_store_that_is_not_served(planted, tmp_path):
    out = tmp_path / "r.html"
    res = subprocess.run(
        [sys.executable, "-c", "from vigie.cli.app import main; main()", "incident", "report",
         "--store", str(planted["store"]), "--from", planted["t1"].isoformat(),
         "--to", planted["t2"].isoformat(), "--format", "html", "--out", str(out),
         "--keyfile", str(planted["tmp"] / "keys")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert out.stat().st_mode & 0o777 == 0o600 and "<h1>Exposure report" in out.read_text()
    backwards = subprocess.run(
        [sys.executable, "-c", "from vigie.cli.app import main; main()", "incident", "report",
         "--store", str(planted["store"]), "--from", "2020-01-02", "--to", "2020-01-01"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert backwards.returncode == 2 and "must come after" in backwards.stdout + backwards.stderr


def _answers(store: Path, keys) -> dict:
    from vigie.kpi.engine import default_range, refresh_rollups, run_kpi
    from vigie.kpi.load import load_metrics
    from vigie.kpi.parse import parse_query

    metrics = load_metrics(None)
    out = {}
    with Store(store, keys) as s:
        refresh_rollups(s, metrics)
        for name, kpi in metrics.kpis.items():
            for by in ["", *kpi.fact.dimensions]:
                query = parse_query(name, by, None, None, "day", [])
                try:
                    result = run_kpi(s, metrics, default_range(s, metrics, query))
                except UsageError:  # a share needs its dimension: asked with it too
                    continue
                out[(name, by)] = [(c.period, c.dims, c.shown, c.suppressed) for c in result.cells]
    return out


def test_key_rotation_keeps_every_kpi_answer_and_old_pseudonyms_match_nothing(tmp_path):
    from vigie.db.dsn import parse_dsn
    from vigie.incident.rekey import rotate_pseudonym_key
    from vigie.keys import init_keyfile, load_keys

    dsn = parse_dsn(f"sqlite:///{tmp_path / 'prod.db'}")
    generate_fleet(dsn, FleetSpec(users=400, days=2, seed=13))
    init_keyfile(tmp_path / "keys")
    old = load_keys(tmp_path / "keys")
    store = tmp_path / "store" / "vigie.duckdb"
    sync(dsn, EXAMPLE_POLICY, store, old)
    prod_exec_delete = "DELETE FROM users WHERE id IN (SELECT id FROM users LIMIT 3)"
    from helpers import prod_exec

    prod_exec(dsn, "PRAGMA foreign_keys = ON", prod_exec_delete)  # values that left production
    before = _answers(store, old)
    with Store(store, old, read_only=True) as s:
        old_users = {r[0] for r in s.rows("SELECT id FROM users")}
        old_devices = {r[0] for r in s.rows("SELECT device_id FROM connection_events")}
    states = store.with_name(store.name + ".kpi-state")  # per person pseudonym, a bit a day
    assert states.exists()
    result = rotate_pseudonym_key(store, tmp_path / "keys", dsn)
    assert not states.exists()  # the old pseudonyms in them went with the rotation
    new = load_keys(tmp_path / "keys")
    assert new.pseudonym_key != old.pseudonym_key and result.rewritten > 0
    assert result.orphans >= 3  # the deleted users' pseudonyms: fresh random ones
    assert not (tmp_path / "keys.next").exists()
    assert _answers(store, new) == before
    with Store(store, new, read_only=True) as s:
        now_users = {r[0] for r in s.rows("SELECT id FROM users")}
        now_devices = {r[0] for r in s.rows("SELECT device_id FROM connection_events")}
        joined = s.rows("SELECT COUNT(*) FROM devices d JOIN users u ON d.user_id = u.id")
    assert not (now_users & old_users) and not (now_devices & old_devices)
    assert joined[0][0] > 0  # joins hold under the new key
    report = sync(dsn, EXAMPLE_POLICY, store, new)  # the next sync agrees with the store
    assert all(r.inserted == 0 and r.updated == 0 for r in report.tables), report.tables


def _sqlite_store(tmp_path: Path, users: int, seed: int):
    """A SQLite fleet synced into a store, its keyfile at ``tmp_path / "keys"``."""
    from vigie.db.dsn import parse_dsn
    from vigie.keys import init_keyfile, load_keys

    dsn = parse_dsn(f"sqlite:///{tmp_path / 'prod.db'}")
    generate_fleet(dsn, FleetSpec(users=users, days=1, seed=seed))
    init_keyfile(tmp_path / "keys")
    store = tmp_path / "store" / "vigie.duckdb"
    sync(dsn, EXAMPLE_POLICY, store, load_keys(tmp_path / "keys"))
    return dsn, store


def test_a_key_rotation_that_crashed_after_its_commit_is_finished_by_running_it_again(tmp_path):
    from vigie.incident.rekey import rotate_pseudonym_key
    from vigie.keys import load_keys

    dsn, store = _sqlite_store(tmp_path, users=150, seed=3)
    old_text = (tmp_path / "keys").read_text()
    rotate_pseudonym_key(store, tmp_path / "keys", dsn)
    # as if the process died between the commit and the keyfile's rename
    (tmp_path / "keys").rename(tmp_path / "keys.next")
    (tmp_path / "keys").write_text(old_text)
    (tmp_path / "keys").chmod(0o600)
    rotate_pseudonym_key(store, tmp_path / "keys", dsn)
    with Store(store, load_keys(tmp_path / "keys"), read_only=True) as s:
        assert s.rows("SELECT COUNT(*) FROM users")[0][0] > 0
    assert not (tmp_path / "keys.next").exists()


def test_the_key_rotation_step_runs_once_per_incident(tmp_path):

    dsn, store = _sqlite_store(tmp_path, users=120, seed=4)
    playbook = tmp_path / "p.yaml"
    playbook.write_text("steps:\n  - {name: new-key, vigie: rotate-pseudonym-key}\n")

    def run() -> list:
        return Rotation(load_playbook(playbook), dsn, AccessFile(tmp_path / "a.json"),
                        state_path(store), None, store, tmp_path / "keys").run(execute=True)  # fmt: skip

    before = (tmp_path / "keys").read_text()
    assert run()[0].changed == 1
    after = (tmp_path / "keys").read_text()
    assert after != before
    assert run()[0].note.startswith("done at") and (tmp_path / "keys").read_text() == after

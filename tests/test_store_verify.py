"""`vigie store verify`: passes on a clean store, fails naming the problem on each way a
store can drift from its policy (what the guard will run every few seconds)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import EXAMPLE_POLICY
from vigie.errors import StoreError
from vigie.fleet.build import generate_fleet
from vigie.fleet.generate import FleetSpec
from vigie.keys import init_keyfile, load_keys
from vigie.policy.load import load_policy
from vigie.stores.checks import verify_store
from vigie.stores.duckdb_store import Store
from vigie.sync.run import sync

SPEC = FleetSpec(users=200, days=1, seed=11)


@pytest.fixture
def synced(sqlite_dsn, keys, store_path):
    generate_fleet(sqlite_dsn, SPEC)
    assert not sync(sqlite_dsn, EXAMPLE_POLICY, store_path, keys).failed
    return store_path


def findings(store: Path, keys, policy: Path = EXAMPLE_POLICY) -> list[str]:
    return [str(f) for f in verify_store(store, load_policy(policy), keys)]


def cli_verify(store: Path, keyfile: Path, policy: Path = EXAMPLE_POLICY):
    return subprocess.run(
        [sys.executable, "-c", "from vigie.cli.app import main; main()", "store", "verify", "--store", str(store),
         "--policy", str(policy), "--keyfile", str(keyfile)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_a_clean_store_conforms(synced, keyfile):
    res = cli_verify(synced, keyfile)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "conforms to the policy" in res.stdout


def test_a_column_added_by_hand_is_a_finding(synced, keys, keyfile):
    with Store(synced, keys) as s:
        s.con.execute("ALTER TABLE devices ADD COLUMN owner_note VARCHAR")
    res = cli_verify(synced, keyfile)
    assert res.returncode == 7
    assert (
        "schema: devices.owner_note: the store holds this column, not in the policy" in res.stdout
    )
    assert "Traceback" not in res.stderr


def test_emails_planted_in_a_kept_column_after_the_sync_are_found(synced, keys):
    """The scan reads the whole stored table, not a sample: one planted row is enough."""
    with Store(synced, keys) as s:
        s.con.execute(
            "UPDATE devices SET model = 'jane.doe@example.com' "
            "WHERE rowid = (SELECT MIN(rowid) FROM devices)"
        )
    found = findings(synced, keys)
    assert any(
        f.startswith(
            "scan: devices.model: kept values look like email (1 distinct value(s) in the whole table"
        )
        for f in found
    )
    assert not any("jane" in f for f in found), "no stored value in a finding"


def test_a_tightened_policy_not_yet_synced_is_a_finding(synced, keys, tmp_path):
    tight = tmp_path / "tight.yaml"
    tight.write_text(EXAMPLE_POLICY.read_text().replace(
        "country:       {class: quasi, keep}", "country:       {class: quasi, drop}"))  # fmt: skip
    found = findings(synced, keys, tight)
    assert found == [
        f"schema: users.country: the store holds this column, 'drop' at {tight}:19:22 → "
        "Run `vigie sync`: it converges the store to the policy."
    ]


def test_a_changed_action_not_yet_synced_is_a_finding(synced, keys, tmp_path):
    changed = tmp_path / "changed.yaml"
    changed.write_text(EXAMPLE_POLICY.read_text().replace(
        "created_at:    {class: public, generalize: day}",
        "created_at:    {class: public, generalize: month}"))  # fmt: skip
    found = findings(synced, keys, changed)
    assert any("users.created_at: stored as 'generalize: day', the policy says "
               "'generalize: month'" in f for f in found)  # fmt: skip


@pytest.mark.parametrize(("target", "mode"), [("file", 0o644), ("folder", 0o755)])
def test_a_loose_file_mode_is_a_finding(synced, keys, target, mode):
    path = synced if target == "file" else synced.parent
    path.chmod(mode)
    found = findings(synced, keys)
    assert any(
        f.startswith(f"modes: {path.resolve()}: mode {mode:04o} lets others in") for f in found
    )


def test_a_store_behind_a_symlink_is_checked_where_it_really_is(synced, keys, tmp_path):
    """Modes are checked on the resolved path: a link from a tight folder does not hide a
    store in a loose one."""
    synced.parent.chmod(0o755)
    tight = tmp_path / "tight"
    tight.mkdir(mode=0o700)
    link = tight / "vigie.duckdb"
    link.symlink_to(synced)
    assert any(f.startswith(f"modes: {synced.parent.resolve()}:") for f in findings(link, keys))


def test_tables_vigie_did_not_make_are_findings(synced, keys):
    with Store(synced, keys) as s:
        s.con.execute("CREATE TABLE read_me (btc_address VARCHAR)")
        s.con.execute("CREATE SCHEMA pwned")
        s.con.execute("CREATE TABLE pwned.meow (x INTEGER)")
        s.con.execute("CREATE TABLE _vigie.backup_users AS SELECT 1 AS x")
    found = findings(synced, keys)
    assert any(
        f.startswith("schema: read_me: the store holds table read_me, not in the policy")
        for f in found
    )
    assert any(f.startswith("foreign: pwned.meow: a table vigie did not make") for f in found)
    assert any(
        f.startswith("foreign: _vigie.backup_users: a table vigie did not make") for f in found
    )


def test_a_column_whose_type_was_altered_is_a_finding(synced, keys):
    """A pseudonym column turned into text could hold anything: it must be a UUID."""
    with Store(synced, keys) as s:
        s.con.execute("ALTER TABLE devices ALTER COLUMN user_id TYPE VARCHAR")
    assert any(f.startswith("schema: devices.user_id: type VARCHAR, recorded UUID")
               for f in findings(synced, keys))  # fmt: skip


def test_another_keyfile_is_a_finding_not_a_traceback(synced, tmp_path):
    other = tmp_path / "other" / "vigie.keys"
    init_keyfile(other)
    res = cli_verify(synced, other)
    assert res.returncode == 7
    assert "keys: " in res.stdout and "cannot be opened with this store key" in res.stdout
    assert "Traceback" not in res.stderr


def test_verify_changes_nothing_in_the_store(synced, keys):
    before = synced.read_bytes()
    assert findings(synced, keys) == []
    assert synced.read_bytes() == before


def test_a_removed_table_is_a_finding(synced, keyfile, tmp_path):
    policy = tmp_path / "more.yaml"
    policy.write_text(EXAMPLE_POLICY.read_text().replace("exclude: [body_metrics]", "exclude: []")
                      + "\n  body_metrics:\n    columns:\n      user_id: {class: identifier, drop}\n")  # fmt: skip
    found = findings(synced, load_keys(keyfile), policy)
    assert any(f.startswith("schema: body_metrics: the policy copies this table; the store lacks it")
               for f in found)  # fmt: skip


def test_the_kpi_state_file_is_checked_like_the_store(synced, keys):
    """The KPI states' file beside the store: a table planted in it is foreign, and a
    loose mode on it is refused at open and reported, as the store's own would be."""
    with Store(synced, keys) as s:
        s.attach_kpi_state()
    assert not findings(synced, keys)
    with Store(synced, keys) as s:
        s.attach_kpi_state()
        s.con.execute("CREATE TABLE kpi_state.main.exfil AS SELECT 'x' AS email")
    state = synced.resolve().with_name(synced.name + ".kpi-state")
    assert any(f.startswith(f"foreign: {state}: main.exfil") for f in findings(synced, keys))
    state.chmod(0o644)
    with pytest.raises(StoreError, match="readable by others"):
        Store(synced, keys)
    assert any(f.startswith(f"modes: {state}: mode 0644") for f in findings(synced, keys))


def test_a_kpi_state_file_that_does_not_open_names_no_key(synced, keys):
    """A state file that is not a database (or not under this key) is a finding, and the
    error says which file, never the store key it was tried with."""
    state = synced.resolve().with_name(synced.name + ".kpi-state")
    state.write_bytes(b"not a database " * 512)
    state.chmod(0o600)
    with (
        Store(synced, keys, read_only=True) as s,
        pytest.raises(StoreError) as err,
        s.kpi_state_read_only(),  # the attach itself raises
    ):
        pass
    assert str(state) in err.value.message and keys.store_key not in str(err.value)
    found = [f for f in findings(synced, keys) if str(state) in f]
    assert found and found[0].startswith("encryption:") and keys.store_key not in found[0]

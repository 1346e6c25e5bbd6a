"""The Spark engine (``vigie sync --engine spark``): the same policy, pseudonyms, scan and
answers as the DuckDB path, into an encrypted Parquet dataset.

One Spark session (``local[2]``) serves the whole module; the fleet is synced once by both
engines, ticked (inserts, updates, deleted accounts with their devices and events), and
synced again by both.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from conftest import EXAMPLE_POLICY, PG, _server_db
from helpers import LINEAGE, prod_exec, store_content
from vigie.errors import KeyfileError, SchemaDrift, UnclassifiedColumns
from vigie.fleet.build import generate_fleet
from vigie.fleet.generate import FleetSpec
from vigie.fleet.tick import tick_fleet
from vigie.keys import Keys, init_keyfile
from vigie.kpi.engine import run_kpi
from vigie.kpi.load import load_metrics
from vigie.kpi.query import KpiQuery
from vigie.spark import lake
from vigie.spark.target import SparkTarget
from vigie.stores.duckdb_store import Store, q
from vigie.sync.run import sync

pytest.importorskip("pyspark")
pytestmark = pytest.mark.slow

SPEC = FleetSpec(users=300, days=2, seed=11)
LOCAL = SparkTarget("local[2]")
VIGIE = str(Path(sys.executable).with_name("vigie"))


def spark_sync(*args, **kwargs):
    from vigie.spark.sync import spark_sync as run

    return run(*args, LOCAL, **kwargs)


def lake_content(root: Path, keys: Keys) -> dict[str, list[tuple]]:
    """Every table of the lake as ``helpers.store_content`` shows a DuckDB store's."""
    out = {}
    with lake.local_store(root, keys) as store:
        for table in store.table_names():
            cols = [c for (c,) in store.rows(
                "SELECT column_name FROM information_schema.columns WHERE table_catalog = "
                "'store' AND table_schema = 'main' AND table_name = ? ORDER BY ordinal_position",
                [table]) if c not in LINEAGE]  # fmt: skip
            select = ", ".join(q(c) for c in cols)
            out[table] = sorted(store.rows(f"SELECT {select} FROM {q(table)}"), key=repr)
    return out


def deleted_keys(store: Store) -> dict[str, set]:
    out = {}
    for (name,) in store.rows(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = 'store' "
        "AND schema_name = '_vigie' AND table_name LIKE 'deleted__%'"
    ):
        cols = [c for (c,) in store.rows(
            "SELECT column_name FROM information_schema.columns WHERE table_catalog = 'store' "
            "AND table_schema = '_vigie' AND table_name = ? AND column_name NOT LIKE '\\_vigie%' "
            "ESCAPE '\\'", [name])]  # fmt: skip
        rows = store.rows(f"SELECT {', '.join(q(c) for c in cols)} FROM _vigie.{q(name)}")
        out[name] = set(rows)
    return out


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """A PostgreSQL fleet synced by both engines, ticked, and synced again by both."""
    root = tmp_path_factory.mktemp("spark")
    keys = init_keyfile(root / "secrets" / "vigie.keys")
    for dsn in _server_db(PG, "vigie_spark"):
        generate_fleet(dsn, SPEC)
        duck, lk = root / "duck" / "vigie.duckdb", root / "lake"
        first = spark_sync(dsn, EXAMPLE_POLICY, lk, keys)
        sync(dsn, EXAMPLE_POLICY, duck, keys)
        after_first = (lake.manifest(lk), lake_content(lk, keys), store_content(duck, keys))
        tick_fleet(dsn, minutes=240, seed=3)
        second = spark_sync(dsn, EXAMPLE_POLICY, lk, keys)
        sync(dsn, EXAMPLE_POLICY, duck, keys)
        yield {"dsn": dsn, "keys": keys, "duck": duck, "lake": lk, "first": first,
               "second": second, "after_first": after_first}  # fmt: skip


def test_spark_and_duckdb_give_identical_tables_after_a_full_sync_and_a_tick(both):
    keys = both["keys"]
    _, lake_first, duck_first = both["after_first"]
    assert lake_first == duck_first
    assert all(t.passes == ["full"] for t in both["first"].tables)
    second = {t.table: t for t in both["second"].tables}
    assert second["users"].passes == ["delta"]
    assert second["users"].deleted >= 1 and second["connection_events"].deleted >= 1
    assert second["connection_events"].inserted >= 1 and second["api_tokens"].updated >= 1
    assert lake_content(both["lake"], keys) == store_content(both["duck"], keys)


def test_deleted_keys_are_recorded_as_the_duckdb_path_records_them(both):
    keys = both["keys"]
    with lake.open_meta(both["lake"], keys, read_only=True) as meta:
        spark_deleted = deleted_keys(meta)
    with Store(both["duck"], keys, read_only=True) as store:
        duck_deleted = deleted_keys(store)
    assert spark_deleted["deleted__users"]
    assert spark_deleted == duck_deleted


def test_every_shipped_kpi_gives_identical_cells_on_both_stores(both):
    keys, metrics = both["keys"], load_metrics()
    start = datetime(2025, 12, 29)  # a Monday: weeks start there
    with lake.local_store(both["lake"], keys) as from_lake, Store(both["duck"], keys) as duck:
        for name, kpi in sorted(metrics.kpis.items()):
            across = getattr(kpi.measure, "across", None)  # a share needs its dimension
            for by in [(), *kpi.fact.rollups]:
                if across and across not in by:
                    continue
                for grain in ("day", "week"):
                    query = KpiQuery(name, by, (), start, datetime(2027, 1, 4), grain)
                    a = run_kpi(from_lake, metrics, query, use_rollups=False)
                    b = run_kpi(duck, metrics, query, use_rollups=False)
                    assert a.cells == b.cells, (name, by, grain)
                    assert a.cells, (name, by, grain)


def test_a_run_is_published_whole_and_old_versions_go(both):
    root = both["lake"]
    first, _, _ = both["after_first"]
    now = lake.manifest(root)
    assert set(now) == set(first)
    changed = [t for t in now if now[t].run != first[t].run]
    assert changed  # the tick changed tables: their new versions are other folders
    for name in changed:
        assert (root / now[name].path).is_dir()
        assert (root / first[name].path).is_dir()  # kept for readers of the previous manifest
    assert now["connection_events"].by_day
    days = [p.name for p in (root / now["connection_events"].path).iterdir() if p.is_dir()]
    assert days and all(d.startswith("vigie_day=") for d in days)


def test_the_lake_cannot_be_read_without_its_keys(both, tmp_path):
    import pyarrow.dataset as ds

    from vigie.keys import init_keyfile

    root = both["lake"]
    folder = root / lake.manifest(root)["users"].path
    with pytest.raises(Exception, match=r"(?i)parquet|encrypt|magic"):
        ds.dataset(folder, format="parquet").to_table()
    other = init_keyfile(tmp_path / "other" / "vigie.keys")
    other = Keys(both["keys"].pseudonym_key, other.store_key, "test")
    with pytest.raises(KeyfileError, match="lake cannot be read with this store key"):
        lake.read_table(root, other, lake.manifest(root)["users"], set())
    from vigie.spark.session import spark_session
    from vigie.spark.sync import configure_encryption

    spark = spark_session(LOCAL)
    configure_encryption(spark, other)
    try:
        with pytest.raises(Exception, match=r"(?i)footer|access denied|store key"):
            spark.read.parquet(str(folder)).collect()
    finally:
        configure_encryption(spark, both["keys"])


def test_no_kept_string_appears_in_the_raw_bytes(both):
    keys, root = both["keys"], both["lake"]
    with Store(both["duck"], keys, read_only=True) as store:
        kept = {v for (v,) in store.rows("SELECT DISTINCT model FROM devices")}
        kept |= {v for (v,) in store.rows("SELECT DISTINCT firmware FROM devices")}
        kept |= {v for (v,) in store.rows("SELECT DISTINCT country FROM users")}
    kept = {k for k in kept if k and len(k) >= 4}
    assert len(kept) >= 5
    files = [p for p in (root / "data").rglob("*") if p.is_file()]
    assert files
    for path in files:
        raw = path.read_bytes()
        for value in kept:
            assert value.encode() not in raw, (path, value)


def test_lake_files_are_private(both):
    root = both["lake"]
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, (path, oct(mode))


# -- what stops a Spark sync stops it as it stops the DuckDB one ------------------------------


def _two_tables(tmp_path: Path) -> Path:
    """The example policy with users and devices only (the other tables left unlisted)."""
    text = EXAMPLE_POLICY.read_text()
    policy = tmp_path / "policy.yaml"
    policy.write_text(text[: text.index("  device_shares:")])
    return policy


def _refusal(call) -> str:
    with pytest.raises((UnclassifiedColumns, SchemaDrift)) as info:
        call()
    return f"{type(info.value).__name__}: {info.value}"


def test_default_deny_and_type_drift_stop_spark_with_the_duckdb_messages(pg_dsn, keys, tmp_path):
    generate_fleet(pg_dsn, SPEC)
    policy, root, duck = _two_tables(tmp_path), tmp_path / "lake", tmp_path / "d" / "v.duckdb"
    prod_exec(pg_dsn, "ALTER TABLE devices ADD COLUMN owner_email VARCHAR(160)")
    denied = _refusal(lambda: spark_sync(pg_dsn, policy, root, keys))
    assert denied.startswith("UnclassifiedColumns") and "owner_email" in denied
    assert denied == _refusal(lambda: sync(pg_dsn, policy, duck, keys))
    assert not lake.is_lake(root)  # nothing was written
    prod_exec(pg_dsn, "ALTER TABLE devices DROP COLUMN owner_email")
    spark_sync(pg_dsn, policy, root, keys)
    sync(pg_dsn, policy, duck, keys)
    before = lake.manifest(root)
    prod_exec(pg_dsn, "ALTER TABLE devices ALTER COLUMN model TYPE TEXT")
    drift = _refusal(lambda: spark_sync(pg_dsn, policy, root, keys))
    assert "devices.model changed type in production: varchar → text" in drift
    assert drift == _refusal(lambda: sync(pg_dsn, policy, duck, keys))
    assert lake.manifest(root) == before


def test_planted_email_and_token_stop_spark_with_the_duckdb_messages(mysql_dsn, keys, tmp_path):
    generate_fleet(mysql_dsn, SPEC)
    policy, root, duck = _two_tables(tmp_path), tmp_path / "lake", tmp_path / "d" / "v.duckdb"
    spark_sync(mysql_dsn, policy, root, keys)
    sync(mysql_dsn, policy, duck, keys)
    stored = lake_content(root, keys)["devices"]
    assert stored == store_content(duck, keys)["devices"]
    plants = [("alice.smith@example.com", 7, "email"),
              ("q8Zr2LxPk0vW9sYt3NcB7hJmD4fGa1uE6iKoR5pT", 11, "token")]  # fmt: skip
    for n, (value, device, detector) in enumerate(plants):
        prod_exec(mysql_dsn, f"UPDATE devices SET model = '{value}', "
                  f"updated_at = '2027-01-0{n + 1} 00:00:00' WHERE id = {device}")  # fmt: skip
        spark = {t.table: t for t in spark_sync(mysql_dsn, policy, root, keys).tables}
        ducked = {t.table: t for t in sync(mysql_dsn, policy, duck, keys).tables}
        assert spark["devices"].status == "stopped" == ducked["devices"].status
        assert f"kept values look like {detector}" in spark["devices"].message
        assert spark["devices"].message == ducked["devices"].message
        assert value[:8] not in spark["devices"].message
        assert spark["users"].status == "ok"
        assert lake_content(root, keys)["devices"] == stored  # the version stands
        prod_exec(mysql_dsn, f"UPDATE devices SET model = 'C200' WHERE id = {device}")


def test_cli_syncs_with_spark_and_shows_a_kpi_from_the_lake(pg_dsn, keyfile, keys, tmp_path):
    generate_fleet(pg_dsn, SPEC)
    root, policy = tmp_path / "lake", _two_tables(tmp_path)
    env = {**os.environ, "VIGIE_KEYFILE": str(keyfile)}
    done = subprocess.run(
        [VIGIE, "sync", "--engine", "spark", "--master", "local[1]", "--from", str(pg_dsn),
         "--policy", str(policy), "--to", str(root)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "devices" in done.stdout and "on Spark (local[1])" in done.stdout
    shown = subprocess.run(
        [VIGIE, "kpi", "show", "device_activations", "--store", str(root), "--by", "model",
         "--format", "json", "--from", "2026-01-01", "--to", "2027-01-01"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr[-2000:]
    from_lake = json.loads(shown.stdout)
    sync(pg_dsn, policy, tmp_path / "d" / "v.duckdb", keys)
    from_duck = subprocess.run(
        [VIGIE, "kpi", "show", "device_activations", "--store", str(tmp_path / "d" / "v.duckdb"),
         "--by", "model", "--format", "json", "--from", "2026-01-01", "--to", "2027-01-01"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert from_lake == json.loads(from_duck.stdout)
    assert any(c.get("value") for c in from_lake["cells"])


def test_spark_refuses_a_sqlite_source_with_what_to_do(sqlite_dsn, keyfile, tmp_path):
    done = subprocess.run(
        [VIGIE, "sync", "--engine", "spark", "--from", str(sqlite_dsn),
         "--policy", str(EXAMPLE_POLICY), "--to", str(tmp_path / "lake")],
        capture_output=True, text=True, env={**os.environ, "VIGIE_KEYFILE": str(keyfile)},
    )  # fmt: skip
    assert done.returncode != 0
    assert "--engine spark reads PostgreSQL or MySQL/MariaDB through JDBC" in done.stderr
    assert not (tmp_path / "lake").exists()

"""The Spark engine (``vigie sync --engine spark``): the same policy, pseudonyms, scan and
answers as the DuckDB path, into an encrypted Parquet dataset.

One Spark session (``local[2]``) serves the whole module; the fleet is synced once by both
engines, ticked (inserts, updates, deleted accounts with their devices and events), and
synced again by both.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from conftest import EXAMPLE_POLICY, PG, _server_db
from helpers import LINEAGE, prod_exec, store_content
from vigie.errors import KeyfileError, SchemaDrift, StoreError, UnclassifiedColumns
from vigie.fleet.build import generate_fleet
from vigie.fleet.generate import FleetSpec
from vigie.fleet.tick import tick_fleet
from vigie.keys import Keys, init_keyfile
from vigie.kpi.engine import run_kpi
from vigie.kpi.load import load_metrics
from vigie.kpi.patterns import compute_pattern
from vigie.kpi.query import KpiQuery
from vigie.spark import lake
from vigie.spark.target import SparkTarget
from vigie.stores.duckdb_store import Store, q
from vigie.sync.run import sync

pytest.importorskip("pyspark")
pytestmark = pytest.mark.slow

SPEC = FleetSpec(users=300, days=2, seed=11)
EVENT_COLUMNS = "id, device_id, ts, firmware, kind, error_code, rtt_ms, client_ip, app_version"
LOCAL = SparkTarget("local[2]")
VIGIE = str(Path(sys.executable).with_name("vigie"))


@pytest.fixture(scope="module", autouse=True)
def _one_session():
    """One Spark session for the module, stopped after it (the JVM and its Python workers
    do not linger through the rest of the suite), and the process's umask given back."""
    umask = os.umask(0o022)
    os.umask(umask)
    yield
    from vigie.spark.session import stop_sessions

    stop_sessions()
    os.umask(umask)


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
        after_second = lake.manifest(lk)
        prod_exec(dsn, f"INSERT INTO connection_events ({EVENT_COLUMNS}) SELECT id + 10000000, "
                  f"{EVENT_COLUMNS.split(', ', 1)[1]} FROM connection_events "
                  "ORDER BY ts DESC LIMIT 3")  # fmt: skip
        third = spark_sync(dsn, EXAMPLE_POLICY, lk, keys)
        sync(dsn, EXAMPLE_POLICY, duck, keys)
        yield {"dsn": dsn, "keys": keys, "duck": duck, "lake": lk, "first": first,
               "second": second, "after_first": after_first, "after_second": after_second,
               "third": third}  # fmt: skip


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


def test_new_events_of_one_day_rewrite_that_day_only(both):
    """A run that adds events to the latest day writes that day again; the other days stay
    in the folders an earlier run wrote (a tick costs what it changed, not the history)."""
    before, now = both["after_second"]["connection_events"], lake.manifest(both["lake"])
    after = now["connection_events"]
    events = {t.table: t for t in both["third"].tables}["connection_events"]
    assert events.inserted == 3 and events.deleted == 0
    assert before.days and after.days and len(after.days) >= 2
    rewritten = {d for d in after.days if after.days[d] != before.days.get(d)}
    assert rewritten == {max(after.days)}
    assert after.rows == before.rows + 3
    assert all(
        v.run == both["after_second"][n].run for n, v in now.items() if n != "connection_events"
    )


def test_the_exposure_report_reads_a_lake_as_it_reads_a_duckdb_store(both):
    """Incident response works on a lake: over a window holding every run, the same rows,
    people and devices were readable (times differ: the engines ran seconds apart)."""
    from vigie.incident.report import build_report

    keys, start, end = both["keys"], datetime(2000, 1, 1), datetime(2100, 1, 1)
    with lake.reading(both["lake"], keys) as s:
        from_lake = build_report(s, start, end, None)
    with lake.reading(both["duck"], keys) as s:
        from_duck = build_report(s, start, end, None)
    assert from_lake.tables == from_duck.tables
    assert (from_lake.users, from_lake.devices) == (from_duck.users, from_duck.devices)
    assert from_lake.users >= SPEC.users
    assert [c.readable for c in from_lake.categories] == [c.readable for c in from_duck.categories]
    with lake.open_meta(both["lake"], keys, read_only=True) as meta:
        (missing,) = meta.rows(
            "SELECT COUNT(*) FROM _vigie.deleted__users WHERE _vigie_first_seen IS NULL"
        )[0]
    assert missing == 0  # deleted rows keep when they were first copied


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


def test_every_shipped_kpi_gives_identical_cells_on_spark_sql(both):
    """The cluster path: the compiler's and the planner's SQL transpiled to Spark SQL over
    the lake's Parquet give the DuckDB store's patterns and cells, suppression included."""
    from vigie.spark.kpi import LakeKpis
    from vigie.spark.session import spark_session

    keys, metrics = both["keys"], load_metrics()
    start = datetime(2025, 12, 29)
    with LakeKpis(spark_session(LOCAL), both["lake"], keys, metrics) as lake_kpis, \
            Store(both["duck"], keys) as duck:  # fmt: skip
        for name, fact in metrics.facts.items():
            want = compute_pattern(duck, metrics, fact).suppressed
            assert lake_kpis.pattern(name).suppressed == want, name
        hidden = 0
        for name, kpi in sorted(metrics.kpis.items()):
            across = getattr(kpi.measure, "across", None)
            for by in [(), *kpi.fact.rollups]:
                if across and across not in by:
                    continue
                for grain in ("day", "week"):
                    query = KpiQuery(name, by, (), start, datetime(2027, 1, 4), grain)
                    a = lake_kpis.answer(query)
                    b = run_kpi(duck, metrics, query, use_rollups=False)
                    assert a.cells == b.cells, (name, by, grain)
                    hidden += sum(c.suppressed for c in a.cells)
        assert hidden  # the comparison covers suppressed cells too
        query = KpiQuery("rtt_p95", (), (("firmware", "3.8.4"),), start, datetime(2027, 1, 4))
        filtered = lake_kpis.answer(query).cells
        assert filtered and filtered == run_kpi(duck, metrics, query).cells


def test_values_reach_spark_sql_as_values_never_as_sql(both):
    """A --where value with quotes, backslashes or a comment is a value on Spark SQL as on
    DuckDB (the engine's SQL is bound before it is transpiled): it selects nothing, and
    cannot widen the query."""
    from vigie.spark.kpi import LakeKpis, SparkSql
    from vigie.spark.session import spark_session

    keys, metrics = both["keys"], load_metrics()
    hostile = ["x' OR '1'='1", "a\\", "it''s", "x\\' OR 1=1 --", "a\nb", "%_*"]
    spark = spark_session(LOCAL)
    slots = ", ".join("?" for _ in hostile)
    assert SparkSql(spark, keys).rows(f"SELECT {slots}", hostile) == [tuple(hostile)]
    with LakeKpis(spark, both["lake"], keys, metrics) as lake_kpis, \
            Store(both["duck"], keys) as duck:  # fmt: skip
        for value in hostile:
            query = KpiQuery("connection_error_rate", (), (("firmware", value),),
                             datetime(2025, 12, 29), datetime(2027, 1, 4))  # fmt: skip
            assert lake_kpis.answer(query).cells == run_kpi(duck, metrics, query).cells == []


def test_a_kpi_query_that_fails_on_spark_repeats_no_value(both, capfd):
    """A query that fails on a row (a cast of a stored text, as a hand-written fact might
    do) raises a vigie error without the row's value, and pyspark logs nothing of it."""
    from vigie.spark.kpi import LakeKpis
    from vigie.spark.session import spark_session

    keys, metrics = both["keys"], load_metrics()
    with Store(both["duck"], keys) as duck:
        models = [m for (m,) in duck.rows("SELECT DISTINCT model FROM devices")]
    capfd.readouterr()
    with (
        LakeKpis(spark_session(LOCAL), both["lake"], keys, metrics) as lake_kpis,
        pytest.raises(StoreError) as info,
    ):
        lake_kpis.sql.rows("SELECT CAST(model AS INTEGER) AS n FROM devices")
    said = f"{info.value.message} {info.value.hint}"
    assert said.startswith("A KPI query failed on Spark: ")
    out, err = capfd.readouterr()
    assert models and not [m for m in models if m in said or m in out or m in err]


def test_a_run_is_published_whole_and_old_versions_go(both):
    root = both["lake"]
    first, second, now = both["after_first"][0], both["after_second"], lake.manifest(root)
    assert set(now) == set(second) == set(first)
    assert [t for t in now if now[t].run != second[t].run] == ["connection_events"]
    kept = {f for v in (*now.values(), *second.values()) for f in v.folders}
    for version in second.values():  # kept for readers of the previous manifest
        assert all((root / f).is_dir() for f in version.folders)
    moved = [n for n in first if second[n].run != first[n].run]
    assert "users" in moved and "payment_methods" not in moved  # unchanged: not rewritten
    for name in moved:  # two manifests back: gone
        assert all(not (root / f).exists() for f in first[name].folders if f not in kept)
    assert now["connection_events"].by_day
    assert all(f.split("/")[-1].startswith("vigie_day=") for f in now["connection_events"].folders)


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
    on_spark = subprocess.run(  # the cluster path, without --from/--to: the last 7 days
        [VIGIE, "kpi", "show", "device_activations", "--store", str(root), "--by", "model",
         "--format", "json", "--engine", "spark", "--master", "local[1]"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert on_spark.returncode == 0, on_spark.stderr[-2000:]
    last_week = subprocess.run(
        [VIGIE, "kpi", "show", "device_activations", "--store", str(root), "--by", "model",
         "--format", "json"], capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert json.loads(on_spark.stdout) == json.loads(last_week.stdout)
    assert json.loads(on_spark.stdout)["cells"]
    refused = subprocess.run(
        [VIGIE, "kpi", "show", "device_activations", "--store", str(tmp_path / "d" / "v.duckdb"),
         "--engine", "spark"], capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert refused.returncode != 0 and "is not a lake" in refused.stderr + refused.stdout


def test_spark_refuses_a_sqlite_source_with_what_to_do(sqlite_dsn, keyfile, tmp_path):
    done = subprocess.run(
        [VIGIE, "sync", "--engine", "spark", "--from", str(sqlite_dsn),
         "--policy", str(EXAMPLE_POLICY), "--to", str(tmp_path / "lake")],
        capture_output=True, text=True, env={**os.environ, "VIGIE_KEYFILE": str(keyfile)},
    )  # fmt: skip
    assert done.returncode != 0
    assert "--engine spark reads PostgreSQL or MySQL/MariaDB through JDBC" in done.stderr
    assert not (tmp_path / "lake").exists()


def test_a_tightened_policy_leaves_no_old_value_in_the_lake(pg_dsn, keys, tmp_path):
    """A kept column turned to drop, and a table moved to exclude: after the next Spark
    sync no file of the lake holds them, and the metadata says the column is dropped."""
    generate_fleet(pg_dsn, SPEC)
    policy, root = _two_tables(tmp_path), tmp_path / "lake"
    spark_sync(pg_dsn, policy, root, keys)
    first = lake.manifest(root)
    text = policy.read_text()
    assert "firmware:      {class: public, keep}" in text
    tightened = tmp_path / "tight.yaml"
    tightened.write_text(
        text.replace("firmware:      {class: public, keep}", "firmware:      {class: public, drop}")
    )
    spark_sync(pg_dsn, tightened, root, keys)
    assert lake.manifest(root)["devices"].run != first["devices"].run
    versions = list((root / "data" / "devices").iterdir())
    assert [p.name for p in versions] == [f"run={lake.manifest(root)['devices'].run}"]
    for folder in versions:
        version = lake.Version(str(folder.relative_to(root)), 0, 0)
        assert "firmware" not in lake.read_table(root, keys, version, set()).column_names
    with lake.open_meta(root, keys, read_only=True) as meta:
        (stored,) = meta.rows(
            "SELECT store_type FROM _vigie.columns WHERE table_name = 'devices' "
            "AND column_name = 'firmware'"
        )[0]
    assert stored is None
    users_only = tmp_path / "users.yaml"
    users_only.write_text(text[: text.index("  devices:")].replace(
        "exclude: [body_metrics]", "exclude: [body_metrics, devices]"))  # fmt: skip
    spark_sync(pg_dsn, users_only, root, keys)
    assert set(lake.manifest(root)) == {"users"}
    assert not (root / "data" / "devices").exists()


def test_no_key_in_spark_properties_or_plans(both):
    """The pseudonym key travels inside the executors' tasks only, and the store key not at
    all (the KMS token is derived from it): neither is in a property or a query plan, which
    the Spark UI and event logs show."""
    from vigie.policy.load import load_policy
    from vigie.sources import open_source
    from vigie.spark.session import spark_session
    from vigie.spark.sync import _TableRun
    from vigie.sync.plan import make_plan

    keys, spark = both["keys"], spark_session(LOCAL)
    properties = {**dict(spark.sparkContext.getConf().getAll()), **spark.conf.getAll}
    source = open_source(both["dsn"])
    try:
        with lake.open_meta(both["lake"], keys) as meta:
            plan = make_plan(load_policy(EXAMPLE_POLICY), source, meta, keys.pseudonym_key)
            users = next(t for t in plan.tables if t.policy.name == "users")
            run = _TableRun(spark, source, both["dsn"], None, users, keys, meta, both["lake"],
                            0, 1000, None)  # fmt: skip
            masked = run._masked(run._read(None))
            plans = masked._jdf.queryExecution().toString()
            assert masked.count() >= SPEC.users  # the plan is the one that runs
    finally:
        source.close()
    for secret in (keys.pseudonym_key, keys.store_key):
        assert secret not in json.dumps(properties)
        assert secret not in plans
    assert "MapInArrow" in plans or "mapInArrow" in plans.lower()


def test_an_executor_failure_shows_no_value_in_spark_logs_or_errors(sqlite_dsn, keys):
    """Any error a task raises (here an Arrow cast quoting a kept value) leaves the executor
    redacted, as the marked SyncError the driver raises again: Spark logs what a task
    raised, so nothing else may cross."""
    import pyarrow as pa

    from vigie.errors import SyncError
    from vigie.policy.compile import compile_table
    from vigie.policy.load import load_policy
    from vigie.sources import open_source
    from vigie.spark.tasks import masked_batches, reraise

    generate_fleet(sqlite_dsn, SPEC)
    prod_exec(sqlite_dsn, "UPDATE devices SET model = 'Zephyr-Unique-9431' WHERE id = 5")
    source = open_source(sqlite_dsn)
    try:
        table = source.describe("devices")
        batch = next(source.read(table, list(table.names), None, None, 10_000))
    finally:
        source.close()
    compiled = compile_table(load_policy(EXAMPLE_POLICY).tables["devices"], table,
                             keys.pseudonym_key)  # fmt: skip
    wrong = pa.schema([pa.field("model", pa.int64())])  # a type the value cannot take
    with pytest.raises(RuntimeError) as info:
        list(masked_batches(compiled, keys.pseudonym_key, 1, datetime(2026, 1, 1), wrong,
                            None, 1000, iter(batch.to_batches())))  # fmt: skip
    crossed = str(info.value)
    assert "Zephyr" not in crossed and "9431" not in crossed
    assert keys.pseudonym_key not in crossed
    with pytest.raises(SyncError, match=r"devices: masking on Spark failed \(Arrow"):
        reraise(info.value)


@pytest.fixture
def connect_url(tmp_path):
    """A Spark Connect server on this machine (the one the pyspark wheel ships), started as
    docs/scale.md says: vigie's KMS jar and the JDBC drivers on its class path, this
    interpreter for its Python workers. Stopped after the test."""
    import pyspark

    from vigie.spark.session import JDBC_JARS, kms_jar

    home = Path(pyspark.__file__).parent
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    jars = ",".join([str(kms_jar()), *(jar for jar, _ in JDBC_JARS.values())])
    env = {**os.environ, "SPARK_HOME": str(home), "PYSPARK_PYTHON": sys.executable,
           "SPARK_LOCAL_IP": "127.0.0.1"}  # fmt: skip
    log = (tmp_path / "connect.log").open("w")
    server = subprocess.Popen(
        [str(home / "bin" / "spark-submit"), "--class",
         "org.apache.spark.sql.connect.service.SparkConnectServer", "--master", "local[2]",
         "--jars", jars, "--conf", f"spark.connect.grpc.binding.port={port}",
         "--conf", "spark.connect.grpc.binding.address=127.0.0.1",
         "--conf", "spark.driver.host=127.0.0.1", "--conf", "spark.ui.enabled=false",
         "spark-internal"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    try:
        for _ in range(240):
            if "Spark Connect server started" in (tmp_path / "connect.log").read_text():
                break
            assert server.poll() is None, (tmp_path / "connect.log").read_text()[-2000:]
            time.sleep(0.5)
        else:
            pytest.fail("the Spark Connect server did not start in 120 s")
        yield f"sc://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(60)
        log.close()


def test_spark_connect_syncs_ticks_and_answers_as_duckdb_does(pg_dsn, keyfile, keys, tmp_path,
                                                              connect_url):  # fmt: skip
    """`--remote sc://...`: the sync, a tick with deletes, and a KPI on Spark SQL, all run
    by a Spark Connect server, give the DuckDB store's rows and cells. (Spark Connect
    infers no schema from an empty table: a tick that changes nothing in a table once
    failed there.)"""
    generate_fleet(pg_dsn, SPEC)
    root, duck = tmp_path / "lake", tmp_path / "d" / "v.duckdb"
    env = {**os.environ, "VIGIE_KEYFILE": str(keyfile), "COLUMNS": "120"}
    sync_args = [VIGIE, "sync", "--engine", "spark", "--remote", connect_url, "--from",
                 str(pg_dsn), "--policy", str(EXAMPLE_POLICY), "--to", str(root)]  # fmt: skip
    for step in range(2):
        if step:
            tick_fleet(pg_dsn, minutes=240, seed=3)
        done = subprocess.run(sync_args, capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        assert f"on Spark ({connect_url})" in done.stdout
        sync(pg_dsn, EXAMPLE_POLICY, duck, keys)
    assert "delta" in done.stdout
    assert lake_content(root, keys) == store_content(duck, keys)
    shown = subprocess.run(
        [VIGIE, "kpi", "show", "connection_error_rate", "--by", "firmware", "--store", str(root),
         "--format", "json", "--engine", "spark", "--remote", connect_url],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr[-2000:]
    here = subprocess.run(
        [VIGIE, "kpi", "show", "connection_error_rate", "--by", "firmware", "--store", str(duck),
         "--format", "json"], capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert json.loads(shown.stdout) == json.loads(here.stdout)
    assert json.loads(shown.stdout)["cells"]

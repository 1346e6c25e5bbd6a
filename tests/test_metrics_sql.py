"""Metric files declare, they do not execute: a fact's SQL is one query over the replica's
tables, checked before it runs; k counts people; and the connection KPI queries run on
cannot read a file or change a setting even if a statement got past the parser."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from helpers import store_content, synced_fleet
from vigie.errors import PolicyError
from vigie.kpi.engine import lock_down, refresh_rollups, run_kpi
from vigie.kpi.load import load_metrics
from vigie.kpi.query import KpiQuery
from vigie.stores.duckdb_store import Store

FACT = """version: 1
facts:
  sneaky:
    time: time
    user: {user}
    dimensions: [model]
    sql: |
      {sql}
kpis:
  sneaky_count:
    description: Rows of the fact.
    fact: sneaky
    measure: {{count: "*"}}
"""


def metrics_file(tmp_path: Path, sql: str, user: str = "user_id") -> Path:
    path = tmp_path / "metrics.yaml"
    path.write_text(FACT.format(sql=sql.replace("\n", "\n      "), user=user))
    return path


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT activated_at AS time, user_id, model FROM devices; DROP TABLE users",
         "its SQL must be one statement, found 2."),
        ("SELECT * FROM read_csv('/etc/passwd')", "is not a table name"),
        ("SELECT activated_at AS time, user_id, model, read_text('/etc/hostname') AS t FROM devices",
         "function read_text() reaches outside the store's tables (line 1 of the SQL)."),
        ("COPY users TO '{out}'", "its SQL must be a query (SELECT or WITH), not COPY."),
        ("ATTACH '{out}' AS other", "its SQL must be a query (SELECT or WITH), not ATTACH."),
        ("DROP TABLE users", "its SQL must be a query (SELECT or WITH), not DROP."),
        ("SET enable_external_access = true", "its SQL must be a query (SELECT or WITH), not SET."),
        ("INSTALL httpfs", "its SQL must be a query (SELECT or WITH), not INSTALL."),
        ("SELECT activated_at AS time, user_id, model FROM _vigie.meta",
         "'_vigie.meta' names a schema or database"),
        ("SELECT activated_at AS time, user_id, model\nFROM devices WHERE getenv('HOME') <> ''",
         "function getenv() reaches outside the store's tables (line 2 of the SQL)."),
        ("SELECT activated_at AS time, user_id, model,\n"
         "reflect('java.lang.System', 'getenv', 'VIGIE_KEYFILE') AS k FROM devices",
         "function reflect() reaches outside the store's tables (line 2 of the SQL)."),
        ("SELECT activated_at AS time, user_id, java_method('java.lang.System', 'getProperty', "
         "'user.home') AS model FROM devices",
         "function java_method() reaches outside the store's tables"),
    ],
)  # fmt: skip
def test_a_fact_that_would_execute_something_is_refused_with_its_place(sql, message, tmp_path):
    out = tmp_path / "leak.csv"
    path = metrics_file(tmp_path, sql.format(out=out))
    with pytest.raises(PolicyError) as info:
        load_metrics(path)
    assert f"{path}:7:10: fact 'sneaky': " in info.value.message
    assert message in info.value.message
    assert not out.exists()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    _, path, keys = synced_fleet(tmp_path_factory.mktemp("metrics_sql"), 150, 2, seed=3)
    return path, keys


@pytest.mark.parametrize(
    ("sql", "user", "problem"),
    [
        ("SELECT activated_at AS time, id AS device_id, model FROM devices", "device_id",
         "user 'device_id' comes from devices.id, not a column pseudonymized in the 'user' domain"),
        ("SELECT activated_at AS time, model AS who, model FROM devices", "who",
         "user 'who' comes from devices.model"),
        ("SELECT activated_at AS time, md5(model) AS who, model FROM devices", "who",
         "user 'who' comes from a computed value"),
        ("SELECT activated_at AS time, user_id, model FROM '/etc/passwd'", "user_id",
         "reads /etc/passwd, not a table of the store's replica"),
    ],
)  # fmt: skip
def test_k_counts_people_and_facts_read_only_the_replica(store, tmp_path, sql, user, problem):
    path, keys = store
    metrics = load_metrics(metrics_file(tmp_path, sql, user))
    before = store_content(path, keys)
    with Store(path, keys) as s, pytest.raises(PolicyError) as info:
        run_kpi(s, metrics, KpiQuery("sneaky_count"))
    assert problem in info.value.message
    assert f"{tmp_path / 'metrics.yaml'}:7:10: fact 'sneaky'" in info.value.message
    with Store(path, keys) as s, pytest.raises(PolicyError):
        refresh_rollups(s, metrics)
    assert store_content(path, keys) == before


def test_the_shipped_facts_count_people(store):
    path, keys = store
    with Store(path, keys) as s:
        assert refresh_rollups(s, load_metrics())


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "COPY users TO '{out}'",
        "ATTACH '{out}' AS other",
        "SET enable_external_access = true",
        "INSTALL httpfs",
    ],
)
def test_a_statement_past_the_parser_still_cannot_reach_outside(store, tmp_path, statement):
    """The KPI connection is read-only, with external access off and settings locked."""
    path, keys = store
    out = tmp_path / "leak.csv"
    with Store(path, keys, read_only=True) as s:
        lock_down(s)
        with pytest.raises(duckdb.Error):
            s.rows(statement.format(out=out))
        with pytest.raises(duckdb.Error):
            s.rows("DROP TABLE users")
    assert not out.exists()


def test_min_users_only_raises_k(store, tmp_path):
    path, keys = store
    low = tmp_path / "low.yaml"
    low.write_text("version: 1\nsettings: {min_users: 6}\n")
    with pytest.raises(PolicyError, match="min_users 6 would lower k below 10"):
        load_metrics(low)
    assert load_metrics(min_users=25).min_users == 25
    keyfile = keys.source
    res = subprocess.run(
        [sys.executable, "-c", "from vigie.cli.app import main; main()", "kpi", "show",
         "device_activations", "--store", str(path), "--keyfile", keyfile, "--min-users", "5"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 4
    assert "min_users can only raise k: 5 is below the 10" in res.stderr


def test_counts_print_as_integers_and_rates_as_fractions(store):
    path, keys = store

    def show(kpi: str) -> str:
        res = subprocess.run(
            [sys.executable, "-c", "from vigie.cli.app import main; main()", "kpi", "show",
             kpi, "--store", str(path), "--keyfile", keys.source],
            capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "120"},
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        return res.stdout

    counts = [line.split("│")[-2].strip() for line in show("device_activations").splitlines()
              if line.startswith("│ 2")]  # fmt: skip
    assert counts and all(re.fullmatch(r"[\d,]+|<\d+", v) for v in counts), counts
    rates = [line.split("│")[-2].strip() for line in show("connection_error_rate").splitlines()
             if line.startswith("│ 2")]  # fmt: skip
    assert rates and all(re.fullmatch(r"0\.\d{4}|<\d+|-", v) for v in rates), rates

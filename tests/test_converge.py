"""A changed policy: the next sync leaves the store exactly as a fresh full sync under the
new policy would, and the values a tightened policy removed appear nowhere in the store."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conftest import EXAMPLE_POLICY
from helpers import prod, prod_exec, store_content, store_rows
from vigie.fleet.build import generate_fleet
from vigie.fleet.generate import FleetSpec
from vigie.fleet.tick import tick_fleet
from vigie.stores.duckdb_store import Store
from vigie.stores.meta import readable_between
from vigie.sync.converge import PolicyChanges
from vigie.sync.run import sync

SPEC = FleetSpec(users=300, days=2, seed=7)
BASE = EXAMPLE_POLICY.read_text()


def _without_table(text: str, table: str) -> str:
    """The policy text without ``table``'s block (its line and the deeper ones after it)."""
    out, skipping = [], False
    for line in text.splitlines(keepends=True):
        if line.startswith(f"  {table}:"):
            skipping = True
        elif skipping and line.strip() and not line.startswith("   "):
            skipping = False
        if not skipping:
            out.append(line)
    return "".join(out)


# kind of change -> (edit of the example policy, production statements it needs)
CHANGES = {
    "keep_to_drop": (lambda t: t.replace("country:       {class: quasi, keep}",
                                         "country:       {class: quasi, drop}"), ()),
    "keep_to_pseudonymize": (lambda t: t.replace("model:         {class: public, keep}",
                                                 "model:         {class: public, pseudonymize: model}"), ()),
    "keep_to_generalize": (lambda t: t.replace("activated_at:  {class: public, keep}",
                                               "activated_at:  {class: public, generalize: day}"), ()),
    "coarser_generalization": (lambda t: t.replace("created_at:    {class: public, generalize: day}",
                                                   "created_at:    {class: public, generalize: month}"), ()),
    "table_excluded": (lambda t: _without_table(t, "payment_methods").replace(
        "exclude: [body_metrics]", "exclude: [body_metrics, payment_methods]"), ()),
    "table_removed_from_policy": (lambda t: _without_table(t, "device_shares"), ()),
    "drop_to_keep": (lambda t: t.replace("billing_zip: {class: quasi, drop}",
                                         "billing_zip: {class: quasi, keep}"), ()),
    "new_column": (lambda t: t.replace("      model:         {class: public, keep}",
                                       "      model:         {class: public, keep}\n"
                                       "      hw_rev:        {class: public, keep}"),
                   ("ALTER TABLE devices ADD COLUMN hw_rev VARCHAR(8) DEFAULT 'B2'",)),
    "domain_change": (lambda t: t.replace("shared_with_email: {class: pii, pseudonymize: email}",
                                          "shared_with_email: {class: pii, pseudonymize: share_email}"), ()),
    "key_rule_change": (lambda t: t.replace("id:          {class: identifier, pseudonymize: api_token}",
                                            "id:          {class: identifier, pseudonymize: token}"), ()),
}  # fmt: skip


def write_policy(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def assert_converged(dsn, policy: Path, store: Path, keys, tmp_path: Path) -> None:
    fresh = tmp_path / "fresh" / "vigie.duckdb"
    report = sync(dsn, policy, fresh, keys)
    assert not report.failed
    assert store_content(store, keys) == store_content(fresh, keys)


def values_anywhere(store: Path, keys, values: set[str]) -> list[str]:
    """Every column of every table of the store (data, lineage, metadata, rollups) that
    holds one of ``values`` (compared as text)."""
    found = []
    with Store(store, keys) as s:
        columns = s.rows(
            "SELECT table_schema, table_name, column_name FROM information_schema.columns "
            "WHERE table_catalog = 'store'"
        )
        for schema, table, column in columns:
            hits = s.rows(
                f'SELECT COUNT(*) FROM "{schema}"."{table}" WHERE CAST("{column}" AS VARCHAR) '
                f"IN ({', '.join('?' for _ in values)})",
                list(values),
            )[0][0]
            if hits:
                found.append(f"{schema}.{table}.{column}")
    return found


@pytest.mark.parametrize("kind", list(CHANGES))
def test_each_kind_of_policy_change_converges_to_a_fresh_sync(kind, sqlite_dsn, keys, tmp_path):
    """After any policy change, one sync leaves the store equal to a fresh full sync under
    the new policy: every table, every column, every row."""
    edit, statements = CHANGES[kind]
    generate_fleet(sqlite_dsn, SPEC)
    store = tmp_path / "store" / "vigie.duckdb"
    assert not sync(sqlite_dsn, EXAMPLE_POLICY, store, keys).failed
    if statements:
        prod_exec(sqlite_dsn, *statements)
    changed = write_policy(tmp_path, kind, edit(BASE))
    assert changed.read_text() != BASE
    heard: list[PolicyChanges] = []
    report = sync(sqlite_dsn, changed, store, keys, announce=heard.append)
    assert not report.failed
    assert heard and heard[0].lines(), "the plan is announced before anything changes"
    assert_converged(sqlite_dsn, changed, store, keys, tmp_path)


def test_all_changes_at_once_with_a_tick_converge_on_every_engine(any_dsn, keys, tmp_path):
    """Tightening, loosening, rewriting and excluding at once, with inserts, updates and
    deletes in production between the two syncs, on SQLite, PostgreSQL and MariaDB."""
    generate_fleet(any_dsn, SPEC)
    store = tmp_path / "store" / "vigie.duckdb"
    assert not sync(any_dsn, EXAMPLE_POLICY, store, keys, batch_rows=700).failed
    text = BASE
    for kind in ("keep_to_drop", "keep_to_pseudonymize", "keep_to_generalize",
                 "coarser_generalization", "table_removed_from_policy", "drop_to_keep",
                 "key_rule_change"):  # fmt: skip
        text = CHANGES[kind][0](text)
    changed = write_policy(tmp_path, "all", text)
    tick_fleet(any_dsn, minutes=180, seed=3)
    report = sync(any_dsn, changed, store, keys, batch_rows=700)
    assert not report.failed
    by_table = {t.table: t for t in report.tables}
    assert by_table["payment_methods"].backfilled == ["billing_zip"]
    assert by_table["users"].deleted >= 1  # the tick's deletes were applied too
    assert_converged(any_dsn, changed, store, keys, tmp_path)


def test_exclusion_new_column_and_domain_change_converge_on_every_engine(any_dsn, keys, tmp_path):
    """The kinds of change the test above leaves out, on SQLite, PostgreSQL and MariaDB."""
    generate_fleet(any_dsn, SPEC)
    store = tmp_path / "store" / "vigie.duckdb"
    assert not sync(any_dsn, EXAMPLE_POLICY, store, keys, batch_rows=700).failed
    text = BASE
    for kind in ("table_excluded", "new_column", "domain_change"):
        text = CHANGES[kind][0](text)
    prod_exec(any_dsn, *CHANGES["new_column"][1])
    changed = write_policy(tmp_path, "more", text)
    report = sync(any_dsn, changed, store, keys, batch_rows=700)
    assert {t.table: t.backfilled for t in report.tables}["devices"] == ["hw_rev"]
    assert_converged(any_dsn, changed, store, keys, tmp_path)


def test_tightened_values_appear_nowhere_in_the_store(sqlite_dsn, keys, tmp_path):
    """users.country to drop and payment_methods excluded: after one sync no country and
    no card brand is anywhere in the store (tables, lineage, metadata, KPI rollups), and
    the store file was rewritten into a new file (the old one's free blocks are gone)."""
    generate_fleet(sqlite_dsn, SPEC)
    store = tmp_path / "store" / "vigie.duckdb"
    sync(sqlite_dsn, EXAMPLE_POLICY, store, keys)
    from vigie.kpi.engine import refresh_rollups
    from vigie.kpi.load import load_metrics

    with Store(store, keys) as s:
        assert refresh_rollups(s, load_metrics(None))  # rollups by country exist
    countries = {c for (c,) in prod(sqlite_dsn, "SELECT DISTINCT country FROM users")}
    brands = {b for (b,) in prod(sqlite_dsn, "SELECT DISTINCT card_brand FROM payment_methods")}
    assert values_anywhere(store, keys, countries)  # the check can fail: they are there
    assert values_anywhere(store, keys, brands)
    inode = store.stat().st_ino
    text = CHANGES["table_excluded"][0](CHANGES["keep_to_drop"][0](BASE))
    sync(sqlite_dsn, write_policy(tmp_path, "tight", text), store, keys)
    assert values_anywhere(store, keys, countries) == []
    assert values_anywhere(store, keys, brands) == []
    assert store.stat().st_ino != inode, "the store was copied into a fresh file"
    assert store.stat().st_mode & 0o777 == 0o600


def test_lineage_says_which_columns_were_readable_before_and_after(sqlite_dsn, keys, tmp_path):
    """The policy text and each run's column classes and actions are recorded, so that
    'which columns were readable between T1 and T2' is answered from what was in force."""
    generate_fleet(sqlite_dsn, SPEC)
    store = tmp_path / "store" / "vigie.duckdb"
    sync(sqlite_dsn, EXAMPLE_POLICY, store, keys)
    before = datetime.now(UTC).replace(tzinfo=None)
    time.sleep(0.05)
    tight = write_policy(tmp_path, "tight", CHANGES["keep_to_drop"][0](BASE))
    sync(sqlite_dsn, tight, store, keys)
    time.sleep(0.05)
    after = datetime.now(UTC).replace(tzinfo=None)
    with Store(store, keys) as s:
        then = {(r.table, r.column): r for r in readable_between(s, datetime(2000, 1, 1), before)}
        now = {(r.table, r.column): r for r in readable_between(s, after, datetime(2100, 1, 1))}
        texts = {t for (t,) in s.rows("SELECT text FROM _vigie.policies")}
    assert then[("users", "country")].action == "keep"
    assert then[("users", "country")].data_class == "quasi"
    assert then[("users", "country")].until is not None
    assert ("users", "country") not in now
    assert ("users", "password_hash") not in then  # secrets never were readable
    assert now[("users", "id")].action == "pseudonymize: user"
    assert now[("users", "id")].until is None
    assert texts == {BASE, tight.read_text()}


def test_the_plan_names_each_change_with_row_counts(sqlite_dsn, keys, tmp_path):
    generate_fleet(sqlite_dsn, SPEC)
    store = tmp_path / "store" / "vigie.duckdb"
    sync(sqlite_dsn, EXAMPLE_POLICY, store, keys)
    text = CHANGES["table_excluded"][0](CHANGES["keep_to_drop"][0](BASE))
    heard: list[PolicyChanges] = []
    sync(sqlite_dsn, write_policy(tmp_path, "p", text), store, keys, announce=heard.append)
    (users,) = prod(sqlite_dsn, "SELECT COUNT(*) FROM users")[0]
    (cards,) = prod(sqlite_dsn, "SELECT COUNT(*) FROM payment_methods")[0]
    lines = heard[0].lines()
    assert (
        f"table payment_methods: removed from the store ({cards:,} rows): excluded by the policy"
        in lines
    )
    assert f"column users.country (keep → drop): values removed ({users:,} rows)" in lines
    assert store_rows(store, keys, "SELECT COUNT(*) FROM information_schema.tables "
                      "WHERE table_name LIKE '%payment_methods'") == [(0,)]  # fmt: skip


def test_a_hand_added_column_is_removed_by_the_next_sync(sqlite_dsn, keys, tmp_path):
    generate_fleet(sqlite_dsn, SPEC)
    store = tmp_path / "store" / "vigie.duckdb"
    sync(sqlite_dsn, EXAMPLE_POLICY, store, keys)
    with Store(store, keys) as s:
        s.con.execute("ALTER TABLE users ADD COLUMN leaked VARCHAR DEFAULT 'alice@example.com'")
    sync(sqlite_dsn, EXAMPLE_POLICY, store, keys)
    assert values_anywhere(store, keys, {"alice@example.com"}) == []
    assert_converged(sqlite_dsn, EXAMPLE_POLICY, store, keys, tmp_path)


def test_a_hand_added_column_named_like_a_dropped_one_is_removed(sqlite_dsn, keys, tmp_path):
    """users.password_hash is 'drop': a column of that name in the store is removed, not
    taken for the dropped column it is named after."""
    generate_fleet(sqlite_dsn, SPEC)
    store = tmp_path / "store" / "vigie.duckdb"
    sync(sqlite_dsn, EXAMPLE_POLICY, store, keys)
    with Store(store, keys) as s:
        s.con.execute("ALTER TABLE users ADD COLUMN password_hash VARCHAR DEFAULT 'x$y$z'")
    heard: list[PolicyChanges] = []
    sync(sqlite_dsn, EXAMPLE_POLICY, store, keys, announce=heard.append)
    assert any("users.password_hash (not recorded by any sync → drop)" in line
               for line in heard[0].lines())  # fmt: skip
    assert values_anywhere(store, keys, {"x$y$z"}) == []


def test_a_column_altered_to_another_type_is_copied_again(sqlite_dsn, keys, tmp_path):
    """A pseudonym column turned into text by hand (it could then hold anything) is
    removed and copied again from production."""
    generate_fleet(sqlite_dsn, SPEC)
    store = tmp_path / "store" / "vigie.duckdb"
    sync(sqlite_dsn, EXAMPLE_POLICY, store, keys)
    with Store(store, keys) as s:
        s.con.execute("ALTER TABLE devices ALTER COLUMN user_id TYPE VARCHAR")
        s.con.execute("UPDATE devices SET user_id = 'raw user 42'")
    sync(sqlite_dsn, EXAMPLE_POLICY, store, keys)
    assert values_anywhere(store, keys, {"raw user 42"}) == []
    assert_converged(sqlite_dsn, EXAMPLE_POLICY, store, keys, tmp_path)


def test_a_rewrite_that_crashed_before_its_rename_leaves_the_old_store_whole(
    sqlite_dsn, keys, tmp_path
):
    """A crash while the store was being copied into its fresh file leaves the old store
    as it was and a partial `.fresh` file, which the next open removes; the next sync then
    converges as if nothing had happened."""
    generate_fleet(sqlite_dsn, SPEC)
    store = tmp_path / "store" / "vigie.duckdb"
    sync(sqlite_dsn, EXAMPLE_POLICY, store, keys)
    partial = store.with_name(store.name + ".fresh")
    partial.write_bytes(b"half a copy")
    tight = write_policy(tmp_path, "tight", CHANGES["keep_to_drop"][0](BASE))
    report = sync(sqlite_dsn, tight, store, keys)
    assert not report.failed and report.changes.removes
    assert not partial.exists()
    assert_converged(sqlite_dsn, tight, store, keys, tmp_path)

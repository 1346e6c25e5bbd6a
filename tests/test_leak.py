"""The leak test: a store synced with the example policy gives away nobody.

Security regression test. Invariant: no e-mail, full name, phone, SSID, MAC, nickname,
token, password hash, card number or client IP of production appears in any column of any
table of the store (metadata included), and no raw user or device id appears in any
column that holds identifiers.
"""

from __future__ import annotations

from conftest import EXAMPLE_POLICY
from helpers import prod
from vigie.fleet.build import generate_fleet
from vigie.fleet.generate import FleetSpec
from vigie.fleet.tick import tick_fleet
from vigie.stores.duckdb_store import Store
from vigie.sync.run import sync

SECRETS_AND_PII = {
    "users": ["full_name", "email", "password_hash", "phone"],
    "devices": ["mac", "nickname", "wifi_ssid"],
    "device_shares": ["shared_with_email"],
    "api_tokens": ["token"],
    "integrations": ["access_token", "refresh_token"],
    "payment_methods": ["card_last4"],
    "connection_events": ["client_ip"],
}


def every_store_value(store: Store) -> tuple[set[str], set[str], set[str]]:
    """Every value of every table as text: (all, of text columns, of identifier columns)."""
    values: set[str] = set()
    text_values: set[str] = set()
    identifiers: set[str] = set()
    columns = store.rows(
        "SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_catalog = 'store'"
    )
    assert len(columns) > 60
    for schema, table, column, data_type in columns:
        rows = store.rows(f'SELECT DISTINCT CAST("{column}" AS VARCHAR) FROM "{schema}"."{table}"')
        texts = {r[0] for r in rows if r[0] is not None}
        values |= texts
        if data_type == "VARCHAR":
            text_values |= texts
        if data_type == "UUID" or column in ("id", "user_id", "device_id"):
            identifiers |= texts
    return values, text_values, identifiers


def test_no_personal_value_or_raw_id_reaches_the_store(sqlite_dsn, keys, store_path):
    generate_fleet(sqlite_dsn, FleetSpec(users=1500, days=2, seed=13))
    sync(sqlite_dsn, EXAMPLE_POLICY, store_path, keys)
    tick_fleet(sqlite_dsn, minutes=240, seed=3)  # deletions leave tombstones: check those too
    sync(sqlite_dsn, EXAMPLE_POLICY, store_path, keys)
    with Store(store_path, keys) as store:
        values, text_values, identifiers = every_store_value(store)
    leaked = {}
    for table, columns in SECRETS_AND_PII.items():
        for column in columns:
            production = {
                str(v) for (v,) in prod(sqlite_dsn, f"SELECT DISTINCT {column} FROM {table}")
            }
            # four digits may equal a number (an rtt): compare card digits with text only
            overlap = production & (text_values if column == "card_last4" else values)
            if overlap:
                leaked[f"{table}.{column}"] = sorted(overlap)[:3]
    assert not leaked, f"production values found in the store: {leaked}"
    raw_ids = {str(v) for (v,) in prod(sqlite_dsn, "SELECT id FROM users")}
    raw_ids |= {str(v) for (v,) in prod(sqlite_dsn, "SELECT id FROM devices")}
    assert not raw_ids & identifiers
    assert len(identifiers) > 1000  # the identifier columns were really read


def test_pseudonymized_columns_hold_only_uuids(sqlite_dsn, keys, store_path):
    generate_fleet(sqlite_dsn, FleetSpec(users=200, days=1, seed=2))
    sync(sqlite_dsn, EXAMPLE_POLICY, store_path, keys)
    with Store(store_path, keys) as store:
        types = {
            (t, c): d
            for t, c, d in store.rows(
                "SELECT table_name, column_name, data_type FROM information_schema.columns "
                "WHERE table_catalog = 'store' AND table_schema = 'main'"
            )
        }
    for table, column in [("users", "id"), ("users", "email"), ("devices", "user_id"),
                          ("connection_events", "device_id"), ("device_shares", "shared_with_email")]:  # fmt: skip
        assert types[(table, column)] == "UUID"
    assert ("users", "password_hash") not in types and ("devices", "mac") not in types

"""The production schema of the synthetic camera fleet, as data.

Modelled on what the 2019 leak exposed. Each column carries its ground-truth data
class, used by the demo summary and by the tests that check the policy tools.
DDL for SQLite, PostgreSQL and MySQL/MariaDB is rendered from this one description.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ColType = Literal["bigint", "int", "smallint", "text", "ts", "decimal"]
DataClass = Literal["identifier", "pii", "secret", "quasi", "public"]


@dataclass(frozen=True)
class Column:
    name: str
    type: ColType
    data_class: DataClass
    nullable: bool = False
    length: int = 255  # for text columns (VARCHAR length in MySQL)


@dataclass(frozen=True)
class ForeignKey:
    columns: tuple[str, ...]
    table: str
    ref_columns: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    foreign_keys: tuple[ForeignKey, ...] = ()
    indexes: tuple[tuple[str, ...], ...] = ()
    unique: tuple[tuple[str, ...], ...] = ()

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


def _fk(col: str, table: str, ref: str = "id") -> ForeignKey:
    return ForeignKey((col,), table, (ref,))


C = Column
USERS = Table(
    "users",
    (
        C("id", "bigint", "identifier"),
        C("full_name", "text", "pii", length=120),
        C("email", "text", "pii", length=160),
        C("password_hash", "text", "secret", length=128),
        C("phone", "text", "pii", length=32),
        C("country", "text", "quasi", length=2),
        C("created_at", "ts", "public"),
        C("updated_at", "ts", "public"),
    ),
    primary_key=("id",),
    unique=(("email",),),
    indexes=(("updated_at",), ("created_at",)),
)
DEVICES = Table(
    "devices",
    (
        C("id", "bigint", "identifier"),
        C("user_id", "bigint", "identifier"),
        C("mac", "text", "pii", length=17),
        C("model", "text", "public", length=40),
        C("firmware", "text", "public", length=16),
        C("nickname", "text", "pii", length=60),
        C("wifi_ssid", "text", "pii", length=64),
        C("activated_at", "ts", "public"),
        C("last_seen_at", "ts", "public", nullable=True),
        C("updated_at", "ts", "public"),
    ),
    primary_key=("id",),
    foreign_keys=(_fk("user_id", "users"),),
    unique=(("mac",),),
    indexes=(("user_id",), ("updated_at",), ("firmware",)),
)
DEVICE_SHARES = Table(
    "device_shares",
    (
        C("device_id", "bigint", "identifier"),
        C("shared_with_email", "text", "pii", length=160),
        C("created_at", "ts", "public"),
    ),
    primary_key=("device_id", "shared_with_email"),
    foreign_keys=(_fk("device_id", "devices"),),
    indexes=(("created_at",),),
)
API_TOKENS = Table(
    "api_tokens",
    (
        C("id", "bigint", "identifier"),
        C("user_id", "bigint", "identifier"),
        C("platform", "text", "public", length=8),
        C("token", "text", "secret", length=64),
        C("issued_at", "ts", "public"),
        C("expires_at", "ts", "public"),
        C("revoked_at", "ts", "public", nullable=True),
        C("updated_at", "ts", "public"),
    ),
    primary_key=("id",),
    foreign_keys=(_fk("user_id", "users"),),
    unique=(("token",),),
    indexes=(("user_id",), ("updated_at",)),
)
INTEGRATIONS = Table(
    "integrations",
    (
        C("id", "bigint", "identifier"),
        C("user_id", "bigint", "identifier"),
        C("provider", "text", "public", length=16),
        C("access_token", "text", "secret", length=128),
        C("refresh_token", "text", "secret", length=64),
        C("linked_at", "ts", "public"),
        C("unlinked_at", "ts", "public", nullable=True),
        C("updated_at", "ts", "public"),
    ),
    primary_key=("id",),
    foreign_keys=(_fk("user_id", "users"),),
    indexes=(("user_id",), ("updated_at",)),
)
BODY_METRICS = Table(
    "body_metrics",
    (
        C("user_id", "bigint", "identifier"),
        C("measured_at", "ts", "public"),
        C("height_cm", "decimal", "pii"),
        C("weight_kg", "decimal", "pii"),
        C("bone_density", "decimal", "pii"),
    ),
    primary_key=("user_id", "measured_at"),
    foreign_keys=(_fk("user_id", "users"),),
)
PAYMENT_METHODS = Table(
    "payment_methods",
    (
        C("user_id", "bigint", "identifier"),
        C("card_brand", "text", "public", length=16),
        C("card_last4", "text", "secret", length=4),
        C("billing_zip", "text", "quasi", length=10),
        C("updated_at", "ts", "public"),
    ),
    primary_key=("user_id",),
    foreign_keys=(_fk("user_id", "users"),),
    indexes=(("updated_at",),),
)
CONNECTION_EVENTS = Table(
    "connection_events",
    (
        C("id", "bigint", "identifier"),
        C("device_id", "bigint", "identifier"),
        C("ts", "ts", "public"),
        C("firmware", "text", "public", length=16),  # as the camera reported it then
        C("kind", "text", "public", length=16),
        C("error_code", "text", "public", nullable=True, length=24),
        C("rtt_ms", "int", "public", nullable=True),
        C("client_ip", "text", "pii", length=45),
        C("app_version", "text", "public", nullable=True, length=16),
    ),
    primary_key=("id",),
    foreign_keys=(_fk("device_id", "devices"),),
    indexes=(("device_id", "ts"), ("ts",)),
)

TABLES: tuple[Table, ...] = (
    USERS,
    DEVICES,
    DEVICE_SHARES,
    API_TOKENS,
    INTEGRATIONS,
    BODY_METRICS,
    PAYMENT_METHODS,
    CONNECTION_EVENTS,
)
TABLES_BY_NAME = {t.name: t for t in TABLES}

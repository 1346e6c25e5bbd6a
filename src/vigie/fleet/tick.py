"""`vigie fleet tick`: move production forward by some minutes.

New sign-ups and activations, connection events, staged firmware upgrades, account
deletions (rows really deleted, with everything that hangs off them), token
revocations and new logins, integration unlinks. The clock of production is the time
of its latest connection event; every change is stamped inside the new interval, and
every changed row gets a new ``updated_at``, as the application does.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vigie.db.connect import Connection, connect
from vigie.db.dsn import Dsn
from vigie.db.ops import commit, execute, query_arrow, scalar
from vigie.errors import UsageError
from vigie.fleet import vocab as V
from vigie.fleet.arrays import (
    BASE64,
    BASE64URL,
    choice,
    concat,
    random_chars,
    rng_for,
    take,
    timestamps,
)
from vigie.fleet.ddl import quote
from vigie.fleet.schema import TABLES_BY_NAME, Column, Table
from vigie.fleet.values import emails, ips, macs, phones, ssids
from vigie.fleet.writers import writer_for

MAX_MINUTES = 7 * 24 * 60
SIGNUPS_PER_USER_MINUTE = 2e-5
DELETIONS_PER_USER_MINUTE = 2e-6
LOGINS_PER_USER_MINUTE = 1e-5


@dataclass(frozen=True)
class TickReport:
    """What a tick changed, per table: rows inserted, updated and deleted."""

    start: datetime
    end: datetime
    inserted: dict[str, int] = field(default_factory=dict)
    updated: dict[str, int] = field(default_factory=dict)
    deleted: dict[str, int] = field(default_factory=dict)


class _Tick:
    def __init__(self, conn: Connection, dsn: Dsn, minutes: int, seed: int) -> None:
        self.conn, self.dsn = conn, dsn
        clock = scalar(conn, dsn, "SELECT MAX(ts) FROM connection_events")
        if clock is None:
            raise UsageError(
                f"{dsn} holds no connection events to tick from.",
                hint="Generate a fleet first: vigie fleet generate --to DSN",
            )
        self.t0 = _epoch(clock) + 1
        self.t1 = self.t0 + minutes * 60
        self.rng = rng_for(seed, "tick", self.t0)
        self.writer = writer_for(dsn, conn)
        self.inserted: Counter[str] = Counter()
        self.updated: Counter[str] = Counter()
        self.deleted: Counter[str] = Counter()
        self.minutes = minutes

    def q(self, name: str) -> str:
        return quote(self.dsn.engine, name)

    def when(self, n: int) -> np.ndarray:
        return np.sort(self.rng.integers(self.t0, self.t1, n))

    def count(self, per_minute: float, base: int) -> int:
        """How many of something happen in the interval; at least one, so ticks show."""
        return max(1, int(self.rng.poisson(per_minute * base * self.minutes)))

    def max_id(self, table: str) -> int:
        return int(scalar(self.conn, self.dsn, f"SELECT COALESCE(MAX(id), 0) FROM {self.q(table)}"))

    def insert(self, table: str, data: pa.Table) -> None:
        if data.num_rows:
            self.writer.write(TABLES_BY_NAME[table], data)
            self.inserted[table] += data.num_rows

    def run(self) -> TickReport:
        if self.dsn.engine == "sqlite":
            execute(self.conn, self.dsn, "BEGIN")
        users = int(scalar(self.conn, self.dsn, "SELECT COUNT(*) FROM users"))
        self.signups(self.count(SIGNUPS_PER_USER_MINUTE, users))
        self.logins(self.count(LOGINS_PER_USER_MINUTE, users))
        self.revocations()
        self.unlinks()
        self.upgrades()
        self.events()
        self.deletions(self.count(DELETIONS_PER_USER_MINUTE, users))
        if self.dsn.engine == "sqlite":
            execute(self.conn, self.dsn, "COMMIT")
        commit(self.conn, self.dsn)
        return TickReport(
            _dt(self.t0), _dt(self.t1), dict(self.inserted), dict(self.updated), dict(self.deleted)
        )

    # -- inserts ---------------------------------------------------------------------------

    def signups(self, n: int) -> None:
        rng, first_id = self.rng, self.max_id("users") + 1
        ids = np.arange(first_id, first_id + n, dtype=np.int64)
        created = self.when(n)
        country = choice(rng, [c[1] for c in V.COUNTRIES], n)
        first = rng.integers(0, len(V.FIRST_NAMES), n)
        last = rng.integers(0, len(V.LAST_NAMES), n)
        pw = concat(
            "$argon2id$v=19$m=65536,t=3,p=4$",
            random_chars(rng, n, 22, BASE64),
            "$",
            random_chars(rng, n, 43, BASE64),
        )
        first_s = take([f[0] for f in V.FIRST_NAMES], first)
        last_s = take([x[0] for x in V.LAST_NAMES], last)
        self.insert(
            "users",
            pa.table(
                {
                    "id": ids,
                    "full_name": concat(first_s, " ", last_s),
                    "email": emails(rng, ids, first, last),
                    "password_hash": pw,
                    "phone": phones(rng, country),
                    "country": take([c[0] for c in V.COUNTRIES], country),
                    "created_at": timestamps(created),
                    "updated_at": timestamps(created),
                }
            ),
        )
        self.activations(ids, created, first_s, last_s)
        self.new_tokens(ids, created)

    def activations(
        self, owners: np.ndarray, created: np.ndarray, first: pa.Array, last: pa.Array
    ) -> None:
        rng = self.rng
        per_user = 1 + np.minimum(rng.poisson(0.7, len(owners)), 5)
        idx = np.repeat(np.arange(len(owners)), per_user)
        m, first_id = len(idx), self.max_id("devices") + 1
        ids = np.arange(first_id, first_id + m, dtype=np.int64)
        activated = np.minimum(created[idx] + rng.integers(60, 3600, m), self.t1 - 1)
        model = choice(rng, [x.share for x in V.MODELS], m)
        self.insert(
            "devices",
            pa.table(
                {
                    "id": ids,
                    "user_id": owners[idx],
                    "mac": macs(model, ids),
                    "model": take([x.name for x in V.MODELS], model),
                    "firmware": pa.array([V.FIRMWARE[-1].version] * m, pa.string()),
                    "nickname": take(V.NICKNAMES, rng.integers(0, len(V.NICKNAMES), m)),
                    "wifi_ssid": ssids(rng, first.take(pa.array(idx)), last.take(pa.array(idx))),
                    "activated_at": timestamps(activated),
                    "last_seen_at": timestamps(activated, mask=np.ones(m, dtype=bool)),
                    "updated_at": timestamps(activated),
                }
            ),
        )

    def new_tokens(self, owners: np.ndarray, issued: np.ndarray) -> None:
        rng, n = self.rng, len(owners)
        first_id = self.max_id("api_tokens") + 1
        order = np.argsort(issued, kind="stable")
        owners, issued = owners[order], issued[order]
        self.insert(
            "api_tokens",
            pa.table(
                {
                    "id": np.arange(first_id, first_id + n, dtype=np.int64),
                    "user_id": owners.astype(np.int64),
                    "platform": take(["ios", "android"], choice(rng, [0.55, 0.45], n)),
                    "token": random_chars(rng, n, 43, BASE64URL),
                    "issued_at": timestamps(issued),
                    "expires_at": timestamps(issued + 90 * 86_400),
                    "revoked_at": timestamps(issued, mask=np.ones(n, dtype=bool)),
                    "updated_at": timestamps(issued),
                }
            ),
        )

    def logins(self, n: int) -> None:
        users = self.ids("SELECT id FROM users ORDER BY id")
        self.new_tokens(self.rng.choice(users, n), self.when(n))

    def events(self) -> None:
        devices = query_arrow(
            self.conn,
            self.dsn,
            "SELECT id, firmware FROM devices ORDER BY id",
            pa.schema([("id", pa.int64()), ("firmware", pa.string())]),
        )
        ids = devices.column("id").to_numpy()
        rng, m = self.rng, len(ids)
        n = int(rng.poisson(V.EVENTS_PER_DEVICE_DAY / 1440 * self.minutes * m))
        dev_idx = rng.integers(0, m, n)
        ts = self.when(n)
        kinds = [k[0] for k in V.EVENT_KINDS]
        kind = choice(rng, [k[1] for k in V.EVENT_KINDS], n)
        is_app = np.isin(kind, [kinds.index(k) for k in V.APP_EVENT_KINDS])
        attempt = kind != kinds.index("disconnect")
        releases = (V.BASE_FIRMWARE, *V.FIRMWARE)
        known = pc.index_in(devices.column("firmware"), pa.array([f.version for f in releases]))
        rates = np.array([f.error_rate for f in releases] + [V.BASE_FIRMWARE.error_rate])
        fw = np.asarray(pc.fill_null(known, len(releases)).to_numpy(zero_copy_only=False))
        err = rates[fw][dev_idx]
        failed = attempt & (rng.random(n) < err)
        codes = np.array(V.ERROR_CODES)[choice(rng, V.ERROR_WEIGHTS, n)]
        rtt = np.round(rng.lognormal(np.log(80.0), 0.45, n)).astype(np.int32)
        app = take([a[0] for a in V.APP_VERSIONS], choice(rng, [a[1] for a in V.APP_VERSIONS], n))
        first_id = self.max_id("connection_events") + 1
        self.insert(
            "connection_events",
            pa.table(
                {
                    "id": np.arange(first_id, first_id + n, dtype=np.int64),
                    "device_id": ids[dev_idx],
                    "ts": timestamps(ts),
                    "firmware": devices.column("firmware").take(pa.array(dev_idx)),
                    "kind": take(kinds, kind),
                    "error_code": pa.array(codes, pa.string(), mask=~failed),
                    "rtt_ms": pa.array(rtt, mask=failed | ~attempt),
                    "client_ip": ips(rng, n, v6_share=0.15),
                    "app_version": pa.array(app.to_numpy(zero_copy_only=False), mask=~is_app),
                }
            ),
        )
        seen = np.unique(dev_idx[::-1], return_index=True)
        last_ts = ts[::-1][seen[1]]
        self.bulk_update("devices", ids[seen[0]], {"last_seen_at": last_ts, "updated_at": last_ts})

    # -- updates ---------------------------------------------------------------------------

    def ids(self, sql: str) -> np.ndarray:
        table = query_arrow(self.conn, self.dsn, sql, pa.schema([("id", pa.int64())]))
        return np.asarray(table.column("id").to_numpy())

    def pick(self, sql: str, share: float) -> np.ndarray:
        """A random subset of the ids that ``sql`` returns: ``share`` per hour of tick."""
        ids = self.ids(sql)
        if not len(ids):
            return ids
        k = max(1, int(self.rng.binomial(len(ids), min(1.0, share * self.minutes / 60))))
        return np.sort(self.rng.choice(ids, min(k, len(ids)), replace=False))

    def revocations(self) -> None:
        ids = self.pick("SELECT id FROM api_tokens WHERE revoked_at IS NULL ORDER BY id", 0.0005)
        t = self.when(len(ids))
        self.bulk_update("api_tokens", ids, {"revoked_at": t, "updated_at": t})

    def unlinks(self) -> None:
        ids = self.pick("SELECT id FROM integrations WHERE unlinked_at IS NULL ORDER BY id", 0.0003)
        t = self.when(len(ids))
        self.bulk_update("integrations", ids, {"unlinked_at": t, "updated_at": t})

    def upgrades(self) -> None:
        """Staged rollout goes on: some devices not yet on the newest firmware get it."""
        newest = V.FIRMWARE[-1].version
        ids = self.pick(f"SELECT id FROM devices WHERE firmware <> '{newest}' ORDER BY id", 0.01)
        t = self.when(len(ids))
        version = np.full(len(ids), newest, dtype=object)
        self.bulk_update("devices", ids, {"firmware": version, "updated_at": t})

    def bulk_update(self, table: str, ids: np.ndarray, values: dict[str, np.ndarray]) -> None:
        """UPDATE many rows by id in one statement, through a temporary table."""
        if not len(ids):
            return
        target = TABLES_BY_NAME[table]
        cols = [Column("id", "bigint", "identifier")] + [target.column(c) for c in values]
        tmp = Table(f"tmp_{table}", tuple(cols), ("id",))
        data = pa.table(
            {"id": ids.astype(np.int64)}
            | {
                c: timestamps(v) if target.column(c).type == "ts" else pa.array(v, pa.string())
                for c, v in values.items()
            }
        )
        q = self.q
        execute(self.conn, self.dsn, f"DROP TABLE IF EXISTS {q(tmp.name)}")
        execute(self.conn, self.dsn, _create_temp(self.dsn, tmp))
        self.writer.write(tmp, data)
        execute(self.conn, self.dsn, _update_from(self.dsn, table, tmp.name, list(values)))
        execute(self.conn, self.dsn, f"DROP TABLE {q(tmp.name)}")
        self.updated[table] += len(ids)

    # -- deletes ---------------------------------------------------------------------------

    def deletions(self, n: int) -> None:
        """Accounts deleted for good: the user and every row that hangs off it."""
        victims = self.rng.choice(self.ids("SELECT id FROM users ORDER BY id"), n, replace=False)
        marks = ", ".join(str(int(v)) for v in np.sort(victims))
        devices = f"SELECT id FROM {self.q('devices')} WHERE user_id IN ({marks})"
        steps = [
            ("connection_events", f"device_id IN ({devices})"),
            ("device_shares", f"device_id IN ({devices})"),
            ("api_tokens", f"user_id IN ({marks})"),
            ("integrations", f"user_id IN ({marks})"),
            ("body_metrics", f"user_id IN ({marks})"),
            ("payment_methods", f"user_id IN ({marks})"),
            ("devices", f"user_id IN ({marks})"),
            ("users", f"id IN ({marks})"),
        ]
        for table, where in steps:
            self.deleted[table] += execute(
                self.conn, self.dsn, f"DELETE FROM {self.q(table)} WHERE {where}"
            )


def tick_fleet(dsn: Dsn, *, minutes: int, seed: int) -> TickReport:
    """Move the production at ``dsn`` forward by ``minutes``."""
    if not 1 <= minutes <= MAX_MINUTES:
        raise UsageError(f"--minutes must be between 1 and {MAX_MINUTES}, got {minutes}.")
    if seed < 0:
        raise UsageError(f"--seed must be zero or positive, got {seed}.")
    conn = connect(dsn)
    try:
        return _Tick(conn, dsn, minutes, seed).run()
    finally:
        conn.close()


def _create_temp(dsn: Dsn, table: Table) -> str:
    from vigie.fleet.ddl import create_table

    ddl = create_table(dsn.engine, table)
    return ddl.replace("CREATE TABLE", "CREATE TEMPORARY TABLE", 1)


def _update_from(dsn: Dsn, table: str, tmp: str, columns: list[str]) -> str:
    q = partial(quote, dsn.engine)
    if dsn.engine == "mysql":
        sets = ", ".join(f"t.{q(c)} = s.{q(c)}" for c in columns)
        return f"UPDATE {q(table)} t JOIN {q(tmp)} s ON t.id = s.id SET {sets}"
    sets = ", ".join(f"{q(c)} = s.{q(c)}" for c in columns)
    return f"UPDATE {q(table)} SET {sets} FROM {q(tmp)} s WHERE {q(table)}.id = s.id"


def _epoch(value: object) -> int:
    if isinstance(value, datetime):
        return int(value.replace(tzinfo=UTC).timestamp())
    return int(datetime.fromisoformat(str(value)).replace(tzinfo=UTC).timestamp())


def _dt(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)

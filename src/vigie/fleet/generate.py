"""Generate the synthetic production fleet as Arrow tables, set-based and deterministic.

Everything is drawn from numpy random streams keyed by (seed, table, chunk), so the
same seed gives the same rows whichever engine they are written to. Values are built
column-wise with numpy and Arrow compute; there is no Python loop per row.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vigie.errors import UsageError
from vigie.fleet import vocab as V
from vigie.fleet.arrays import (
    BASE64,
    BASE64URL,
    choice,
    concat,
    digits,
    random_chars,
    rng_for,
    select,
    take,
    timestamps,
)
from vigie.fleet.values import (
    emails,
    external_emails,
    ips,
    macs,
    phones,
    postcodes,
    ssids,
)

WINDOW_START = int(datetime(2026, 10, 1, tzinfo=UTC).timestamp())
DAY = 86_400
HOUR = 3_600
HISTORY_DAYS = 730
MAX_USERS = 50_000_000
MAX_DAYS = 366
NEVER = np.iinfo(np.int64).max
FIRMWARE_VERSIONS = [V.BASE_FIRMWARE.version] + [f.version for f in V.FIRMWARE]

Chunk = tuple[str, pa.Table]


@dataclass(frozen=True)
class FleetSpec:
    """What to generate: ``users`` accounts, ``days`` of traffic, from ``seed``."""

    users: int
    days: int
    seed: int

    def __post_init__(self) -> None:
        if not 1 <= self.users <= MAX_USERS:
            raise UsageError(
                f"--users must be between 1 and {MAX_USERS:,}, got {self.users:,}.",
                hint="The demo uses 10000; the incident-sized fleet is 2400000.",
            )
        if not 1 <= self.days <= MAX_DAYS:
            raise UsageError(f"--days must be between 1 and {MAX_DAYS}, got {self.days}.")
        if self.seed < 0:
            raise UsageError(f"--seed must be zero or positive, got {self.seed}.")

    @property
    def start(self) -> int:
        return WINDOW_START

    @property
    def end(self) -> int:
        return WINDOW_START + self.days * DAY


@dataclass
class _Users:
    created: np.ndarray
    country: np.ndarray
    first: np.ndarray
    last: np.ndarray
    email: pa.Array
    home_ip: pa.Array
    app_version: np.ndarray


@dataclass
class _Devices:
    owner: np.ndarray  # user index (0-based) of each device, devices in activation order
    activated: np.ndarray
    upgrades: np.ndarray  # (len(FIRMWARE), n): when each upgrade lands on the device
    noisy: np.ndarray
    cum_weight: np.ndarray
    last_seen: np.ndarray


class FleetGenerator:
    """Builds the fleet's tables; ``chunks()`` yields them in a load-friendly order."""

    def __init__(self, spec: FleetSpec) -> None:
        self.spec = spec
        self.users = self._users()
        self.devices = self._devices()

    def chunks(self) -> Iterator[Chunk]:
        yield "users", self.users_table()
        yield "device_shares", self.device_shares_table()
        yield "api_tokens", self.api_tokens_table()
        yield "integrations", self.integrations_table()
        yield "body_metrics", self.body_metrics_table()
        yield "payment_methods", self.payment_methods_table()
        yield from (("connection_events", t) for t in self.connection_events())
        yield "devices", self.devices_table()  # last: it carries last_seen_at

    def estimated_rows(self) -> int:
        n, m = len(self.users.created), len(self.devices.owner)
        return int(n * 3.0 + m * 1.2 + m * V.EVENTS_PER_DEVICE_DAY * self.spec.days * 0.97)

    # -- users ---------------------------------------------------------------------------

    def _users(self) -> _Users:
        s, n = self.spec, self.spec.users
        rng = rng_for(s.seed, "users")
        span = (HISTORY_DAYS + s.days) * DAY
        created = np.sort(s.end - 1 - (span * rng.random(n) ** 1.6).astype(np.int64))
        country = choice(rng, [c[1] for c in V.COUNTRIES], n)
        first = rng.integers(0, len(V.FIRST_NAMES), n)
        last = rng.integers(0, len(V.LAST_NAMES), n)
        email = emails(rng, np.arange(1, n + 1), first, last)
        home_ip = ips(rng, n, v6_share=0.12)
        app_version = choice(rng, [a[1] for a in V.APP_VERSIONS], n)
        return _Users(created, country, first, last, email, home_ip, app_version)

    def users_table(self) -> pa.Table:
        u, n = self.users, self.spec.users
        rng = rng_for(self.spec.seed, "users.extra")
        first = take([f[0] for f in V.FIRST_NAMES], u.first)
        last = take([x[0] for x in V.LAST_NAMES], u.last)
        pw = concat(
            "$argon2id$v=19$m=65536,t=3,p=4$",
            random_chars(rng, n, 22, BASE64),
            "$",
            random_chars(rng, n, 43, BASE64),
        )
        updated = u.created + (rng.random(n) * (self.spec.end - u.created) * 0.5).astype(np.int64)
        return pa.table(
            {
                "id": np.arange(1, n + 1, dtype=np.int64),
                "full_name": concat(first, " ", last),
                "email": u.email,
                "password_hash": pw,
                "phone": phones(rng, u.country),
                "country": take([c[0] for c in V.COUNTRIES], u.country),
                "created_at": timestamps(u.created),
                "updated_at": timestamps(updated),
            }
        )

    # -- devices ---------------------------------------------------------------------------

    def _devices(self) -> _Devices:
        s, u = self.spec, self.users
        rng = rng_for(s.seed, "devices")
        per_user = 1 + np.minimum(rng.poisson(0.7, len(u.created)), 5)
        owner = np.repeat(np.arange(len(u.created)), per_user)
        m = len(owner)
        is_first = np.r_[True, owner[1:] != owner[:-1]]
        born = u.created[owner]
        later = born + (rng.random(m) * (s.end - born)).astype(np.int64)
        soon = born + rng.exponential(HOUR, m).astype(np.int64)
        activated = np.minimum(np.where(is_first, soon, later), s.end - 1)
        order = np.argsort(activated, kind="stable")
        owner, activated = owner[order], activated[order]
        upgrades = self._upgrade_times(rng, m)
        noisy = rng.random(m) < V.NOISY_SHARE
        weight = rng.gamma(2.0, 0.5, m) * np.where(noisy, 5.0, 1.0)
        last_seen = np.full(m, -1, dtype=np.int64)
        return _Devices(owner, activated, upgrades, noisy, np.cumsum(weight), last_seen)

    def _upgrade_times(self, rng: np.random.Generator, m: int) -> np.ndarray:
        s = self.spec
        width = s.end - s.start
        laggard = rng.random(m) < V.LAGGARD_SHARE
        times = np.empty((len(V.FIRMWARE), m), dtype=np.int64)
        for i, fw in enumerate(V.FIRMWARE):
            t = s.start + fw.release * width + fw.duration * width * np.sqrt(rng.random(m))
            t = t.astype(np.int64)
            if i > 0:
                t = np.where(laggard, NEVER, np.maximum(t, times[i - 1]))
            times[i] = t
        return times

    def firmware_at(self, device: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Index into (BASE, *FIRMWARE) of each device's firmware at time ``ts``."""
        ups = self.devices.upgrades[:, device]
        return np.asarray((ups <= ts).sum(axis=0))

    def devices_table(self) -> pa.Table:
        d, s = self.devices, self.spec
        m = len(d.owner)
        rng = rng_for(s.seed, "devices.extra")
        ids = np.arange(1, m + 1, dtype=np.int64)
        model = choice(rng, [x.share for x in V.MODELS], m)
        fw_now = self.firmware_at(np.arange(m), np.full(m, s.end - 1))
        landed = np.where(d.upgrades <= s.end - 1, d.upgrades, -1).max(axis=0)
        first = take([f[0] for f in V.FIRST_NAMES], self.users.first[d.owner])
        last = take([x[0] for x in V.LAST_NAMES], self.users.last[d.owner])
        nick = take(V.NICKNAMES, rng.integers(0, len(V.NICKNAMES), m))
        nick = pc.if_else(pa.array(rng.random(m) < 0.2), concat(first, "'s ", nick), nick)
        return pa.table(
            {
                "id": ids,
                "user_id": d.owner.astype(np.int64) + 1,
                "mac": macs(model, ids),
                "model": take([x.name for x in V.MODELS], model),
                "firmware": take(FIRMWARE_VERSIONS, fw_now),
                "nickname": nick,
                "wifi_ssid": ssids(rng, first, last),
                "activated_at": timestamps(d.activated),
                "last_seen_at": timestamps(d.last_seen, mask=d.last_seen < 0),
                "updated_at": timestamps(np.maximum(d.activated, landed)),
            }
        )

    # -- connection events -------------------------------------------------------------

    def connection_events(self, first_id: int = 1) -> Iterator[pa.Table]:
        """One table per hour of the window, ids growing with time."""
        s = self.spec
        next_id = first_id
        for hour in range(s.days * 24):
            t0 = s.start + hour * HOUR
            table = self.events_between(t0, t0 + HOUR, next_id, rng_for(s.seed, "events", hour))
            if table.num_rows:
                next_id += table.num_rows
                yield table

    def events_between(
        self, t0: int, t1: int, first_id: int, rng: np.random.Generator, rate: float = 1.0
    ) -> pa.Table:
        """Connection events in [t0, t1) for the devices active then."""
        d = self.devices
        k = int(np.searchsorted(d.activated, t1, side="left"))
        if k == 0:
            return _empty_events()
        diurnal = V.DIURNAL[(t0 // HOUR) % 24] / (sum(V.DIURNAL) / 24)
        mean = V.EVENTS_PER_DEVICE_DAY / DAY * (t1 - t0) * diurnal * d.cum_weight[k - 1] * rate
        count = rng.poisson(mean)
        dev = np.searchsorted(d.cum_weight[:k], rng.random(count) * d.cum_weight[k - 1], "right")
        dev = np.minimum(dev, k - 1)
        ts = t0 + rng.integers(0, t1 - t0, count)
        keep = ts >= d.activated[dev]
        dev, ts = dev[keep], ts[keep]
        order = np.argsort(ts, kind="stable")
        dev, ts = dev[order], ts[order]
        d.last_seen[dev] = ts  # ts ascending: the last write per device is its latest
        return self._events_table(rng, dev, ts, first_id)

    def _events_table(
        self, rng: np.random.Generator, dev: np.ndarray, ts: np.ndarray, first_id: int
    ) -> pa.Table:
        n = len(dev)
        kind = choice(rng, [k[1] for k in V.EVENT_KINDS], n)
        kinds = [k[0] for k in V.EVENT_KINDS]
        is_app = np.isin(kind, [kinds.index(k) for k in V.APP_EVENT_KINDS])
        attempt = kind != kinds.index("disconnect")
        fw = self.firmware_at(dev, ts)
        rates = np.array([V.BASE_FIRMWARE.error_rate] + [f.error_rate for f in V.FIRMWARE])
        err_rate = np.where(self.devices.noisy[dev], V.NOISY_ERROR_RATE, rates[fw])
        failed = attempt & (rng.random(n) < err_rate)
        bad = fw == 2  # 3.9.2, the bad firmware
        code = np.where(
            bad, choice(rng, V.BAD_FIRMWARE_ERROR_WEIGHTS, n), choice(rng, V.ERROR_WEIGHTS, n)
        )
        rtt = np.round(rng.lognormal(np.log(80.0), 0.45, n)).astype(np.int32)
        user = self.devices.owner[dev]
        mobile = is_app & (rng.random(n) < 0.4)
        ip = pc.if_else(pa.array(mobile), ips(rng, n, v6_share=0.3), self.users.home_ip.take(user))
        app = take([a[0] for a in V.APP_VERSIONS], self.users.app_version[user])
        return pa.table(
            {
                "id": np.arange(first_id, first_id + n, dtype=np.int64),
                "device_id": dev.astype(np.int64) + 1,
                "ts": timestamps(ts),
                "firmware": take(FIRMWARE_VERSIONS, fw),
                "kind": take(kinds, kind),
                "error_code": pa.array(np.array(V.ERROR_CODES)[code], mask=~failed),
                "rtt_ms": pa.array(rtt, mask=failed | ~attempt),
                "client_ip": ip,
                "app_version": pc.if_else(pa.array(is_app), app, pa.scalar(None, pa.string())),
            }
        )

    # -- the smaller tables --------------------------------------------------------------

    def device_shares_table(self) -> pa.Table:
        d, s = self.devices, self.spec
        rng = rng_for(s.seed, "device_shares")
        m = len(d.owner)
        shared = np.flatnonzero(rng.random(m) < 0.12)
        twice = shared[rng.random(len(shared)) < 0.3]
        friend = rng.integers(0, s.users, len(shared))
        ext_first = rng.integers(0, len(V.FIRST_NAMES), len(twice))
        ext_last = rng.integers(0, len(V.LAST_NAMES), len(twice))
        external = external_emails(rng, ext_first, ext_last)
        dev = np.concatenate([shared, twice])
        email = pa.concat_arrays([self.users.email.take(pa.array(friend)), external])
        created = d.activated[dev] + (rng.random(len(dev)) * (s.end - d.activated[dev]))
        table = pa.table(
            {
                "device_id": dev.astype(np.int64) + 1,
                "shared_with_email": email,
                "created_at": timestamps(created.astype(np.int64)),
            }
        )
        return table.sort_by([("device_id", "ascending"), ("shared_with_email", "ascending")])

    def api_tokens_table(self) -> pa.Table:
        u, s = self.users, self.spec
        rng = rng_for(s.seed, "api_tokens")
        per_user = 1 + np.minimum(rng.poisson(0.8, s.users), 4)
        owner = np.repeat(np.arange(s.users), per_user)
        n = len(owner)
        issued = u.created[owner] + (rng.random(n) * (s.end - u.created[owner])).astype(np.int64)
        order = np.argsort(issued, kind="stable")
        owner, issued = owner[order], issued[order]
        revoked = issued + (rng.random(n) * (s.end - issued)).astype(np.int64)
        is_revoked = rng.random(n) < 0.3
        return pa.table(
            {
                "id": np.arange(1, n + 1, dtype=np.int64),
                "user_id": owner.astype(np.int64) + 1,
                "platform": take(["ios", "android"], choice(rng, [0.55, 0.45], n)),
                "token": random_chars(rng, n, 43, BASE64URL),
                "issued_at": timestamps(issued),
                "expires_at": timestamps(issued + 90 * DAY),
                "revoked_at": timestamps(revoked, mask=~is_revoked),
                "updated_at": timestamps(np.where(is_revoked, revoked, issued)),
            }
        )

    def integrations_table(self) -> pa.Table:
        u, s = self.users, self.spec
        rng = rng_for(s.seed, "integrations")
        owner = np.flatnonzero(rng.random(s.users) < 0.35)
        n = len(owner)
        linked = u.created[owner] + (rng.random(n) * (s.end - u.created[owner])).astype(np.int64)
        order = np.argsort(linked, kind="stable")
        owner, linked = owner[order], linked[order]
        provider = choice(rng, [p[1] for p in V.PROVIDERS], n)
        access = select(provider, [random_chars(rng, n, p[2], BASE64URL) for p in V.PROVIDERS])
        unlinked = linked + (rng.random(n) * (s.end - linked)).astype(np.int64)
        is_unlinked = rng.random(n) < 0.15
        return pa.table(
            {
                "id": np.arange(1, n + 1, dtype=np.int64),
                "user_id": owner.astype(np.int64) + 1,
                "provider": take([p[0] for p in V.PROVIDERS], provider),
                "access_token": access,
                "refresh_token": random_chars(rng, n, 64, BASE64URL),
                "linked_at": timestamps(linked),
                "unlinked_at": timestamps(unlinked, mask=~is_unlinked),
                "updated_at": timestamps(np.where(is_unlinked, unlinked, linked)),
            }
        )

    def body_metrics_table(self) -> pa.Table:
        u, s = self.users, self.spec
        rng = rng_for(s.seed, "body_metrics")
        beta = np.flatnonzero(rng.random(s.users) < 0.01)
        height = rng.normal(170.0, 10.0, len(beta))
        weight = rng.normal(76.0, 14.0, len(beta))
        density = rng.normal(1.10, 0.12, len(beta))
        per_user = 1 + rng.poisson(2.0, len(beta))
        idx = np.repeat(np.arange(len(beta)), per_user)
        who = beta[idx]
        when = u.created[who] + (rng.random(len(idx)) * (s.end - u.created[who])).astype(np.int64)
        _, first = np.unique(np.stack([who, when]), axis=1, return_index=True)
        idx, who, when = idx[first], who[first], when[first]  # unique (user, time), sorted
        noise = rng.normal(0.0, 1.0, len(idx))
        return pa.table(
            {
                "user_id": who.astype(np.int64) + 1,
                "measured_at": timestamps(when),
                "height_cm": np.round(height[idx], 1),
                "weight_kg": np.round(weight[idx] + noise, 1),
                "bone_density": np.round(density[idx] + noise / 100, 2),
            }
        )

    def payment_methods_table(self) -> pa.Table:
        u, s = self.users, self.spec
        rng = rng_for(s.seed, "payment_methods")
        payer = np.flatnonzero(rng.random(s.users) < 0.2)
        n = len(payer)
        updated = u.created[payer] + (rng.random(n) * (s.end - u.created[payer])).astype(np.int64)
        return pa.table(
            {
                "user_id": payer.astype(np.int64) + 1,
                "card_brand": take(
                    [b[0] for b in V.CARD_BRANDS], choice(rng, [b[1] for b in V.CARD_BRANDS], n)
                ),
                "card_last4": digits(rng, n, 4),
                "billing_zip": postcodes(rng, u.country[payer]),
                "updated_at": timestamps(updated),
            }
        )


def _empty_events() -> pa.Table:
    return pa.table(
        {
            "id": pa.array([], pa.int64()),
            "device_id": pa.array([], pa.int64()),
            "ts": pa.array([], pa.timestamp("s")),
            "firmware": pa.array([], pa.string()),
            "kind": pa.array([], pa.string()),
            "error_code": pa.array([], pa.string()),
            "rtt_ms": pa.array([], pa.int32()),
            "client_ip": pa.array([], pa.string()),
            "app_version": pa.array([], pa.string()),
        }
    )

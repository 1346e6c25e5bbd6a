"""`vigie incident report`: for an exposure window of the store, what was readable (from
the recorded policy lineage, not today's policy), which rows and whose, what the audit log
and the guard saw, and what to rotate.

Everything comes from the store's metadata and the audit log: ``_vigie.run_columns`` (each
column's class and action per run, in force from the run's ``converged_at``), the
``_vigie_first_seen`` of live rows and the ``deleted__<table>`` histories (rows deleted
since, with when), and the audit entries of the window.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vigie.stores.meta import (
    META,
    Readable,
    Store,
    column_records,
    history_columns,
    quote,
    readable_between,
)

PASSWORD = re.compile(r"passw|pwd|passphrase", re.IGNORECASE)
TOKEN = re.compile(r"token|secret|api_?key", re.IGNORECASE)
PAYMENT = re.compile(r"card|payment|iban|billing|bank|account_?number", re.IGNORECASE)
CARD_NUMBER = re.compile(r"last4|pan|card_?number|cvv|iban|account_?number", re.IGNORECASE)


@dataclass(frozen=True)
class TableRows:
    table: str
    present: int  # rows present at any moment of the window
    deleted_since: int  # of which deleted from production since (kept as keys only)


@dataclass(frozen=True)
class Category:
    """A kind of sensitive data and whether any of it was readable, with the evidence."""

    name: str
    readable: list[str]  # table.column readable in the window
    withheld: list[str]  # table.column that exist in production, never readable (action)

    @property
    def exposed(self) -> bool:
        return bool(self.readable)


@dataclass(frozen=True)
class AuditFacts:
    reads: list[dict[str, Any]]  # per actor and route: requests, rows, clients
    refused: int
    unauthenticated: int
    unauthenticated_clients: list[str]
    guard_events: list[dict[str, Any]]
    entries: int
    available: bool = True


@dataclass(frozen=True)
class Report:
    store: str
    start: datetime
    end: datetime
    generated_at: datetime
    readable: list[Readable]
    no_longer_stored: list[str]
    categories: list[Category]
    tables: list[TableRows]
    users: int
    devices: int
    policies: list[dict[str, Any]]
    audit: AuditFacts
    exposure_seen_at: datetime | None
    restored_at: datetime | None
    rotations: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["categories"] = [{**asdict(c), "exposed": c.exposed} for c in self.categories]
        out["summary"] = summary(self)
        return out


def _naive(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo else t


def build_report(
    store: Store, start: datetime, end: datetime, audit_log: Path | None, name: str = ""
) -> Report:
    start, end = _naive(start), _naive(end)
    readable = readable_between(store, start, end)
    stored = set(_stored_tables(store))
    readable_tables = sorted({r.table for r in readable})
    tables = [_rows(store, t, start, end) for t in readable_tables if t in stored]
    audit = audit_facts(audit_log, start, end)
    seen, restored = _guard_window(audit_log, start, end)
    report = Report(
        store=name,
        start=start,
        end=end,
        generated_at=datetime.now(UTC).replace(tzinfo=None),
        readable=readable,
        no_longer_stored=[t for t in readable_tables if t not in stored],
        categories=categories(store, start, end, readable),
        tables=tables,
        users=_distinct(store, "user", start, end, stored),
        devices=_distinct(store, "device", start, end, stored),
        policies=_policies(store, start, end),
        audit=audit,
        exposure_seen_at=seen,
        restored_at=restored,
    )
    return Report(**{**report.__dict__, "rotations": rotations(report)})


def _stored_tables(store: Store) -> list[str]:
    return [
        t
        for (t,) in store.rows(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = 'store' "
            "AND schema_name = 'main'"
        )
    ]


def _rows(store: Store, table: str, start: datetime, end: datetime) -> TableRows:
    """Rows present at any moment of [start, end): loaded before ``end`` and still here,
    or deleted since, after ``start``."""
    (live,) = store.rows(f"SELECT COUNT(*) FROM {quote(table)} WHERE _vigie_first_seen < ?", [end])[
        0
    ]
    gone = 0
    if history_columns(store, table):
        (gone,) = store.rows(
            f"SELECT COUNT(*) FROM {META}.{quote('deleted__' + table)} "
            "WHERE _vigie_first_seen < ? AND _vigie_deleted_at >= ?",
            [end, start],
        )[0]
    return TableRows(table, int(live) + int(gone), int(gone))


def _distinct(store: Store, domain: str, start: datetime, end: datetime, stored: set[str]) -> int:
    """Distinct pseudonyms of ``domain`` (user, device) in rows present in the window, over
    every table that holds such a column (deleted rows: where their key is one)."""
    spec = f"pseudonymize: {domain}"
    parts = []
    for table, cols in column_records(store).items():
        if table not in stored:
            continue
        history = history_columns(store, table)
        for col in (c for c, r in cols.items() if r.spec == spec):
            parts.append(
                f"SELECT {quote(col)} AS p FROM {quote(table)} WHERE _vigie_first_seen < $2"
            )
            if col in history:
                parts.append(
                    f"SELECT {quote(col)} FROM {META}.{quote('deleted__' + table)} "
                    "WHERE _vigie_first_seen < $2 AND _vigie_deleted_at >= $1"
                )
    if not parts:
        return 0
    sql = f"SELECT COUNT(DISTINCT p) FROM ({' UNION ALL '.join(parts)})"
    return int(store.rows(sql, [start, end])[0][0])


def categories(
    store: Store, start: datetime, end: datetime, readable: list[Readable]
) -> list[Category]:
    """Secrets, passwords, tokens and payment data: which were readable, and which exist in
    production but never left it (their action in every policy in force in the window)."""
    rules = store.rows(
        f"""SELECT DISTINCT c.table_name, c.column_name, c.data_class, c.action
        FROM {META}.run_columns c JOIN {META}.runs r USING (run_id)
        WHERE r.converged_at IS NOT NULL AND r.converged_at < ?""",
        [end],
    )
    shown = {f"{r.table}.{r.column}" for r in readable}
    kinds: dict[str, Callable[[str, str, str], bool]] = {
        "secrets (class secret)": lambda t, c, k: k == "secret",
        "passwords and password hashes": lambda t, c, k: bool(PASSWORD.search(c)),
        "tokens (app, API, integration)": lambda t, c, k: bool(TOKEN.search(c)),
        "payment card numbers and bank details": lambda t, c, k: (
            bool(CARD_NUMBER.search(c)) or (bool(PAYMENT.search(t)) and k == "secret")
        ),
        "other payment data": lambda t, c, k: (
            bool(PAYMENT.search(f"{t}.{c}"))
            and not CARD_NUMBER.search(c)
            and k not in ("secret", "identifier")
            and not c.endswith("_at")
        ),
    }
    out = []
    for name, match in kinds.items():
        hits = sorted({f"{t}.{c}" for t, c, k, _ in rules if match(t, c, k or "")})
        out.append(
            Category(name, [h for h in hits if h in shown], [h for h in hits if h not in shown])
        )
    return out


def _policies(store: Store, start: datetime, end: datetime) -> list[dict[str, Any]]:
    rows = store.rows(
        f"""WITH spans AS (SELECT run_id, policy_sha256, converged_at AS since,
                LEAD(converged_at) OVER (ORDER BY run_id) AS until
            FROM {META}.runs WHERE converged_at IS NOT NULL)
        SELECT policy_sha256, MIN(since), MAX(until), COUNT(*), LIST(run_id ORDER BY run_id)
        FROM spans WHERE since < ? AND (until IS NULL OR until > ?)
        GROUP BY policy_sha256 ORDER BY MIN(since)""",
        [end, start],
    )
    return [
        {"sha256": d, "in_force_from": a, "until": b if b else None, "runs": list(r)}
        for d, a, b, _, r in rows
    ]


# -- the audit log -------------------------------------------------------------------------


def _entries(audit_log: Path | None) -> list[dict[str, Any]] | None:
    if audit_log is None or not audit_log.exists():
        return None
    from vigie.audit.log import read_entries

    return read_entries(audit_log)


def _time(entry: dict[str, Any]) -> datetime | None:
    try:
        return _naive(datetime.fromisoformat(str(entry["time"]).replace("Z", "+00:00")))
    except (KeyError, ValueError):
        return None


def audit_facts(audit_log: Path | None, start: datetime, end: datetime) -> AuditFacts:
    entries = _entries(audit_log)
    if entries is None:
        return AuditFacts([], 0, 0, [], [], 0, available=False)
    inside = [e for e in entries if (t := _time(e)) is not None and start <= t < end]
    reads: dict[tuple[str, str], dict[str, Any]] = {}
    refused = unauth = 0
    strangers: Counter[str] = Counter()
    guard = []
    for e in inside:
        if str(e.get("path", "")).startswith("guard."):
            guard.append(
                {
                    "time": e["time"],
                    "event": e["path"],
                    "checks": (e.get("params") or {}).get("checks", []),
                    "reason": e.get("reason"),
                }
            )
            continue
        status = e.get("status") or 0
        if status == 401:
            unauth += 1
            strangers[str(e.get("client"))] += 1
        elif status in (403, 422, 429):
            refused += 1
        if e.get("actor") and 200 <= status < 300:
            key = (str(e["actor"]), str(e.get("route") or e.get("path")))
            r = reads.setdefault(
                key,
                {
                    "actor": key[0],
                    "role": e.get("role"),
                    "route": key[1],
                    "requests": 0,
                    "rows": 0,
                    "clients": set(),
                },
            )
            r["requests"] += 1
            r["rows"] += int(e.get("rows") or 0)
            r["clients"].add(str(e.get("client")))
    for r in reads.values():
        r["clients"] = sorted(r["clients"])
    top = sorted(reads.values(), key=lambda r: (-r["rows"], r["actor"]))
    return AuditFacts(
        top, refused, unauth, [c for c, _ in strangers.most_common(20)], guard, len(inside)
    )


def _guard_window(
    audit_log: Path | None, start: datetime, end: datetime
) -> tuple[datetime | None, datetime | None]:
    """When the guard first saw a failure in force during the window, and when every check
    passed again (None: not seen / not restored)."""
    entries = _entries(audit_log) or []
    seen = restored = None
    for e in entries:
        t = _time(e)
        if t is None or t >= end or not str(e.get("path", "")).startswith("guard."):
            continue
        if e["path"] == "guard.fail" and seen is None:
            seen, restored = t, None
        elif e["path"] == "guard.pass" and seen is not None:
            if t < start:
                seen = None  # a failure fixed before the window
            else:
                restored = t
    return seen, restored


# -- words ---------------------------------------------------------------------------------


def rotations(report: Report) -> list[str]:
    out = ["revoke every mobile app token (every user logs in again)"]
    tokens = next(c for c in report.categories if c.name.startswith("tokens"))
    out.append(
        "unlink every third-party integration (Alexa, Google...)"
        if tokens.exposed
        else "unlink third-party integrations of affected users (their tokens never left "
        "production; a precaution)"
    )
    out.append("revoke vigie's own API keys and issue new ones")
    out.append("rotate the pseudonymization key (re-pseudonymize the store; destroy the old)")
    return out


def summary(report: Report) -> str:
    days = (report.end - report.start).total_seconds() / 86400
    rows = sum(t.present for t in report.tables)
    cols = sorted({f"{r.table}.{r.column}" for r in report.readable})
    lines = [
        f"Between {report.start:%Y-%m-%d %H:%M} and {report.end:%Y-%m-%d %H:%M} UTC "
        f"({days:.1f} days), the analytics copy held {rows:,} rows from {len(report.tables)} "
        f"tables, about {report.users:,} people (pseudonymous) and {report.devices:,} devices.",
        f"{len(cols)} columns were readable, each copied under the policy then in force: "
        "identifiers only as keyed pseudonyms, other personal data dropped or generalized.",
    ]
    for c in report.categories:
        if c.exposed:
            lines.append(f"{c.name.capitalize()}: READABLE ({', '.join(c.readable)}).")
        elif c.withheld:
            lines.append(
                f"{c.name.capitalize()}: not in the copy; they never left production "
                f"({', '.join(c.withheld[:6])}{'...' if len(c.withheld) > 6 else ''})."
            )
        else:
            lines.append(f"{c.name.capitalize()}: none exist in the copied tables.")
    a = report.audit
    if a.available:
        readers = sorted({r["actor"] for r in a.reads})
        lines.append(
            f"The audit log records {a.entries:,} requests in the window: reads by "
            f"{', '.join(readers) or 'no one'}; {a.unauthenticated:,} without "
            f"credentials, all refused; {a.refused:,} refused for lack of rights."
        )
    if report.exposure_seen_at:
        until = (
            f"restored at {report.restored_at:%Y-%m-%d %H:%M:%S}"
            if report.restored_at
            else "not restored within the window"
        )
        seen = f"{report.exposure_seen_at:%Y-%m-%d %H:%M:%S}"
        lines.append(f"The guard saw protection drop at {seen} UTC and closed the data; {until}.")
    return " ".join(lines)

"""Checks from the inside: files and their modes, the audit chain, the store's contents,
the web process's listeners. Each returns Results; none raises on what it inspects."""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

import duckdb

from vigie.audit.log import ChainWatch, head_path, key_path
from vigie.guard.model import Result, failed, passed, unknown
from vigie.keys import Keys
from vigie.policy.model import Policy
from vigie.stores.checks import (
    Finding,
    check_encrypted,
    check_foreign,
    check_modes,
    check_scan,
    check_schema,
    verify_store,
)
from vigie.stores.duckdb_store import Store, q
from vigie.stores.meta import META

RANSOM = re.compile(
    r"read_?me|readme|meow|ransom|recover|decrypt|bitcoin|btc|pwned|hacked|warning|how_to|"
    r"backup_?info|please_read",
    re.IGNORECASE,
)
DROP_SHARE = 0.5  # a table losing more than half its rows at once...
DROP_MIN = 100  # ...and at least this many


def file_mode(check: str, path: Path, what: str, want: int = 0o600) -> Result:
    """``path`` exists, is a regular file of this user, and no one else may read it."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return failed(
            check, f"{what} {path} is missing", f"Restore {path} from its owner.", target=str(path)
        )
    if stat.S_ISLNK(st.st_mode):
        return failed(
            check,
            f"{what} {path} is a symlink",
            "Replace it with the file itself.",
            target=str(path),
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        return failed(
            check,
            f"{what} {path} has mode {mode:04o}: others may read it",
            f"chmod {want:o} {path}",
            target=str(path),
        )
    if st.st_uid != os.getuid():
        return failed(
            check,
            f"{what} {path} is owned by uid {st.st_uid}, not this user",
            f"chown it to the user that runs vigie: {path}",
            target=str(path),
        )
    folder = stat.S_IMODE(path.parent.stat().st_mode)
    if folder & 0o022:
        return failed(
            check,
            f"the folder of {what} {path.parent} has mode {folder:04o}: "
            "others may replace the file",
            f"chmod 700 {path.parent}",
            target=str(path),
        )
    return passed(check, f"{what} is {mode:04o}, owned by this user", target=str(path))


def keyfile(keys: Keys) -> Result:
    if not keys.source or keys.source == "env":
        return passed("files.keyfile", "keys come from the environment (no keyfile)")
    return file_mode("files.keyfile", Path(keys.source), "keyfile")


def access_file(path: Path) -> Result:
    if not path.exists():
        return passed("files.access", "no access file yet: no key can log in", target=str(path))
    return file_mode("files.access", path, "access file")


def audit_files(log: Path) -> list[Result]:
    out = []
    for path, what in (
        (log, "audit log"),
        (key_path(log), "audit key"),
        (head_path(log), "audit head"),
    ):
        if path.exists():
            out.append(file_mode("files.audit", path, what))
    return out


def audit_chain(watch: ChainWatch) -> Result:
    check = "audit.chain"
    try:
        problems = watch.problems()
    except Exception as exc:
        return unknown(
            check,
            f"the audit log could not be verified: {exc}",
            "Run `vigie audit verify` and look at the log's files.",
        )
    if problems:
        first = problems[0]
        where = f" at line {first.line}" if first.line else ""
        return failed(
            check,
            f"{len(problems)} problem(s): {first.kind}{where}: {first.detail}",
            "Keep the log as evidence (`vigie audit verify` lists every problem); "
            "start a new log with --audit-log once it is secured.",
        )
    return passed(check, "the chain and its head verify")


def store_modes(store: Path) -> Result:
    findings = list(check_modes(store))
    if findings:
        f = findings[0]
        return failed("store.modes", f"{f.where}: {f.problem}", f.fix)
    return passed("store.modes", "the store's folder is 0700 and its files 0600, ours")


def findings_results(findings: list[Finding], prefix: str = "store") -> list[Result]:
    """``vigie store verify``'s findings, one Result per kind of check."""
    by: dict[str, list[Finding]] = {}
    for f in findings:
        by.setdefault(f.check, []).append(f)
    out = []
    for check, items in sorted(by.items()):
        first = items[0]
        more = f" (+{len(items) - 1} more)" if len(items) > 1 else ""
        reason = f"{first.where}: {first.problem}{more}"
        if any(RANSOM.search(f.where.split(".")[-1]) for f in items):
            reason = "a ransom-note-like table: " + reason
        out.append(failed(f"{prefix}.{check}", reason, first.fix))
    return out


def store_full(path: Path, policy: Policy, keys: Keys) -> list[Result]:
    """``vigie store verify`` in full (modes, encryption, keys, schema, foreign, scan)."""
    found = findings_results(verify_store(path, policy, keys))
    return found or [passed("store.verify", "the store conforms to the policy (store verify)")]


@dataclass(frozen=True)
class Census:
    """A snapshot's row count per table, and the last sync run it holds."""

    run_id: int
    rows: dict[str, int]


def census(store: Store) -> Census:
    (run,) = store.rows(f"SELECT COALESCE(MAX(run_id), 0) FROM {META}.runs")[0]
    rows = {t: int(store.rows(f"SELECT COUNT(*) FROM {q(t)}")[0][0]) for t in store.table_names()}
    return Census(int(run), rows)


def vanished(store: Store, before: Census, now: Census) -> list[Result]:
    """Tables that lost most of their rows at once, beyond what vigie's own sync runs since
    ``before`` deleted (a purge synced from production is explained; a wipe is not)."""
    deleted = dict(store.rows(
        f"SELECT table_name, SUM(deleted) FROM {META}.table_runs WHERE run_id > ? "
        "GROUP BY table_name", [before.run_id]))  # fmt: skip
    out = []
    for table, n in sorted(before.rows.items()):
        left = now.rows.get(table, 0)
        unexplained = n - left - int(deleted.get(table) or 0)
        if unexplained >= DROP_MIN and left < n * (1 - DROP_SHARE):
            out.append(failed("store.rows", f"{table}: {n:,} rows → {left:,} at once, "
                              f"{unexplained:,} of them not deleted by a vigie sync",
                              "A sudden drop is a sign of tampering: check the audit log and "
                              "who opened the store before serving again."))  # fmt: skip
    return out


def snapshot(
    store: Store, policy: Policy | None, before: Census | None, scan: bool
) -> tuple[list[Result], Census]:
    """What a snapshot about to be served must pass: it holds what its policy copies and
    nothing else, no foreign (ransom-note) table, no kept value that looks like PII (when
    ``scan``), and no table lost most of its rows at once."""
    counts = census(store)
    if policy is None:
        return [
            unknown(
                "store.snapshot",
                "the store records no converged policy to check it against",
                "Run `vigie sync` with the policy.",
            )
        ], counts
    try:
        findings = [*check_encrypted(store), *check_schema(store, policy),
                    *check_foreign(store, policy)]  # fmt: skip
        if scan:
            findings += list(check_scan(store, policy))
    except duckdb.Error as exc:
        return [
            unknown(
                "store.snapshot",
                f"could not inspect the snapshot: {exc}",
                "Run `vigie store verify`.",
            )
        ], counts
    out = findings_results(findings)
    if before is not None:
        out += vanished(store, before, counts)
    return out or [
        passed(
            "store.snapshot",
            f"{len(counts.rows)} tables conform{' (values scanned)' if scan else ''}; "
            "no foreign table",
        )
    ], counts


def listeners(pid: int, tls: bool) -> Result:
    """The web process listens on loopback only, or with TLS."""
    import psutil

    check = "serve.bind"
    try:
        conns = psutil.Process(pid).net_connections(kind="inet")
    except (psutil.Error, OSError) as exc:
        return unknown(
            check, f"cannot see the web process's sockets: {exc}", "Is `vigie serve` running?"
        )
    listening = [c.laddr for c in conns if c.status == psutil.CONN_LISTEN]
    exposed = [a for a in listening if not _loopback(a.ip)]
    if exposed and not tls:
        where = ", ".join(f"{a.ip}:{a.port}" for a in exposed)
        return failed(
            check,
            f"the API listens on {where} without TLS",
            "Serve on 127.0.0.1, or give --tls-cert and --tls-key.",
        )
    where = ", ".join(f"{a.ip}:{a.port}" for a in listening) or "nothing"
    return passed(check, f"listens on {where}{' with TLS' if exposed else ''}")


def _loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip in ("::1", "localhost")

"""The guard assembled: its context, the posture in force, and the list of checks for a
served store (inside ``vigie serve``) or a store on its own (``vigie guard check|run``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vigie.access.decide import Role
from vigie.access.keys import AccessFile
from vigie.audit.log import ChainWatch
from vigie.errors import VigieError
from vigie.guard import inside
from vigie.guard.api import WebInfo, api_auth, api_exposure
from vigie.guard.approvals import approvals_path, read_ledger
from vigie.guard.config import GuardConfig
from vigie.guard.model import Result, failed, passed, unknown
from vigie.guard.netns import HOST_ORIGIN, Origin
from vigie.guard.posture import Change, compare, make_posture, posture_hash
from vigie.guard.probes import probe
from vigie.guard.runner import Check
from vigie.keys import Keys
from vigie.policy.load import load_policy, parse_policy
from vigie.policy.model import Policy


@dataclass(frozen=True)
class GuardContext:
    store: Path
    keys: Keys
    access: Path
    audit_log: Path
    config: GuardConfig
    policy_path: Path | None = None
    metrics: Path | None = None
    web: WebInfo | None = None
    namespace: bool = True


def status_path(store: Path) -> Path:
    return store.parent / "guard" / "status.json"


def recorded_policy(store: Any) -> Policy | None:
    """The policy of the last run that converged ``store`` (an open Store)."""
    from vigie.stores.meta import converged_policy_text

    found = converged_policy_text(store)
    if found is None:
        return None
    run, text = found
    return parse_policy(text, Path(f"<the policy of run {run}>"))


class PostureSource:
    """The posture in force now: the policy file (or the store's recorded policy), the
    server's exposure, the guard's settings, key ids, k and the admins."""

    def __init__(self, ctx: GuardContext, recorded: Callable[[], Policy | None]) -> None:
        self.ctx, self.recorded = ctx, recorded
        self.web: WebInfo | None = ctx.web
        self._policy: tuple[tuple[int, int], Policy] | None = None
        self.access = AccessFile(ctx.access)
        self._k: int | None = None
        if ctx.metrics is not None:
            from vigie.kpi.load import load_metrics

            self._k = load_metrics(ctx.metrics).min_users

    def policy(self) -> Policy | None:
        path = self.ctx.policy_path
        if path is None:
            return self.recorded()
        st = path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
        if self._policy is None or self._policy[0] != stamp:
            self._policy = (stamp, load_policy(path))
        return self._policy[1]

    def current(self) -> dict[str, Any]:
        web = self.web
        admins = {
            e.name: e.sign_key
            for e in self.access.entries()
            if e.role is Role.ADMIN and e.sign_key and e.revoked_at is None
        }
        keys = {"store": self.ctx.keys.store_key_id, "pseudonym": self.ctx.keys.pseudonym_key_id}
        exposure = web.exposure if web else "loopback"
        return make_posture(self.policy(), exposure, self.ctx.config, keys, admins, self._k)


@dataclass(frozen=True)
class PostureVerdict:
    result: Result
    lowered: list[Change]  # changes that lower security and lack their approvals


def posture_verdict(ctx: GuardContext, source: PostureSource) -> PostureVerdict:
    check = "posture.approved"
    approve = f"vigie guard approve --store {ctx.store}"
    current = source.current()
    ledger = read_ledger(approvals_path(ctx.store), source.access)
    if ledger.problems:
        return PostureVerdict(
            failed(
                check,
                f"the approvals file does not verify: {ledger.problems[0]}",
                "Keep it as evidence; the admins must sort it out.",
            ),
            [],
        )
    if ledger.baseline is None:
        return PostureVerdict(
            failed(
                check,
                "no approved security posture yet",
                f"An admin approves the current one: {approve}",
            ),
            [],
        )
    changes = compare(ledger.baseline, current)
    lowered = [c for c in changes if c.lowers and c.what != "admins"]
    if lowered:
        signers = sorted(ledger.pending.get(posture_hash(current), set()))
        have = f"approved so far by {', '.join(signers)}" if signers else "approved by nobody"
        reason = f"security lowered without two approvals ({have}): " + "; ".join(
            str(c) for c in lowered[:5]
        )
        fix = f"Revert the change, or two different admins run: {approve}"
        return PostureVerdict(failed(check, reason, fix), lowered)
    note = "; ".join(str(c) for c in changes[:3])
    by = ", ".join(ledger.approved_by)
    reason = f"the posture approved by {by} at {ledger.approved_at} is in force"
    return PostureVerdict(passed(check, reason + (f" (not lowering: {note})" if note else "")), [])


def posture_check(ctx: GuardContext, source: PostureSource) -> list[Result]:
    return [posture_verdict(ctx, source).result]


def file_checks(ctx: GuardContext) -> list[Result]:
    return [
        inside.store_modes(ctx.store),
        inside.keyfile(ctx.keys),
        inside.access_file(ctx.access),
        *inside.audit_files(ctx.audit_log),
    ]


def target_checks(ctx: GuardContext, origin: Origin) -> list[Result]:
    out = []
    for target in ctx.config.targets:
        result, where = origin.run(target.host, lambda t=target: probe(t))  # type: ignore[misc]
        note = "" if where != HOST_ORIGIN or origin.made else f" ({origin.why_not})"
        out.append(replace(result, origin=where + note))
    return out


def audit_check(ctx: GuardContext, watch: ChainWatch) -> list[Result]:
    if not ctx.audit_log.exists():
        return [passed("audit.chain", "no audit log yet (nothing was served)")]
    return [inside.audit_chain(watch)]


def build_checks(ctx: GuardContext, origin: Origin, source: PostureSource) -> list[Check]:
    """The checks every guard runs: files, audit chain, posture, the targets."""
    every = ctx.config.every
    watch = ChainWatch(ctx.audit_log)
    checks = [
        Check("files", every("files"), lambda: file_checks(ctx)),
        Check("audit.chain", every("audit.chain"), lambda: audit_check(ctx, watch)),
        Check("posture.approved", every("posture.approved"), lambda: posture_check(ctx, source)),
    ]
    if ctx.config.targets:
        checks.append(Check("targets", every("targets"), lambda: target_checks(ctx, origin)))
    return checks


def web_checks(ctx: GuardContext, web: WebInfo, origin: Origin) -> list[Check]:
    """The running server's: its listeners, and its API probed from outside."""
    every = ctx.config.every
    return [
        Check("serve.bind", every("serve.bind"), lambda: [inside.listeners(web.pid, web.tls)]),
        Check("api.exposure", every("api.exposure"), lambda: [api_exposure(web, origin)]),
        # a request per route, each one audited: at the probes' pace by default
        Check("api.auth", every("api.auth"), lambda: [api_auth(web, origin)]),
    ]


def store_check(ctx: GuardContext, source: PostureSource) -> Check:
    """``vigie store verify`` in full, for a store that is not served; re-run only when the
    store's files change (the scan reads every kept value)."""
    last: dict[str, Any] = {}

    def run() -> list[Result]:
        stamp = _stamp(ctx.store)
        if last.get("stamp") == stamp:
            return list(last["results"])
        policy = source.policy() if ctx.policy_path else recorded_from_file(ctx)
        if policy is None:
            return [
                unknown(
                    "store.verify",
                    "no policy to verify the store against",
                    "Give --policy, or sync the store first.",
                )
            ]
        results = inside.store_full(ctx.store, policy, ctx.keys)
        last.update(stamp=stamp, results=results)
        return results

    return Check("store", ctx.config.every("store"), run)


def recorded_from_file(ctx: GuardContext) -> Policy | None:
    from vigie.stores.duckdb_store import Store

    try:
        with Store(ctx.store, ctx.keys, read_only=True, check_file_modes=False) as store:
            return recorded_policy(store)
    except VigieError:
        return None


def _stamp(store: Path) -> tuple[int, ...]:
    out: list[int] = []
    for p in (store, store.with_name(store.name + ".wal")):
        st = p.stat() if p.exists() else None
        out += [st.st_mtime_ns, st.st_size, st.st_ino, st.st_mode] if st else [0, 0, 0, 0]
    return tuple(out)

"""`vigie incident rotate`: a declared playbook of rotation steps, dry-run by default.

A playbook (YAML) lists steps. A production step gives SQL: ``count`` (how many rows the
step would change) and ``run`` (the change), written so that running it again changes
nothing (``... WHERE revoked_at IS NULL``). With ``--execute`` each step runs in one
transaction against the production DSN: count, change, count again, and the transaction
is rolled back if the second count is not 0 (the step is not idempotent, or did not do
what it says). vigie's own steps: ``revoke-api-keys`` (every live key of the access file).

Each step is recorded in the audit log, and in a state file beside the store, so a run
that crashed resumes: a step done before counts 0 and is skipped with its earlier result.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vigie.access.keys import AccessFile
from vigie.db.dsn import Dsn
from vigie.errors import PolicyError, SyncError
from vigie.policy.yamlmarks import Node, parse

VIGIE_STEPS = ("revoke-api-keys", "rotate-pseudonym-key")


@dataclass(frozen=True)
class Step:
    name: str
    what: str
    count: str = ""
    run: str = ""
    vigie: str = ""
    where: str = ""


@dataclass(frozen=True)
class StepResult:
    step: str
    what: str
    pending: int  # rows (or keys) the step changes / would change
    changed: int  # changed by this run (0 in a dry run)
    seconds: float
    note: str = ""


def load_playbook(path: Path) -> list[Step]:
    root = parse(path.read_text(), str(path))
    where = f"{path}:{root.line}:{root.column}"
    if not isinstance(root.value, dict) or "steps" not in root.value:
        raise PolicyError(
            f"{where}: a playbook is a mapping with 'steps:'.",
            hint="See examples/fleet-playbook.yaml.",
        )
    steps, names = [], set()
    for node in root.value["steps"].value:
        step = _step(node, str(path))
        if step.name in names:
            raise PolicyError(f"{step.where}: two steps are named '{step.name}'.")
        names.add(step.name)
        steps.append(step)
    return steps


def _step(node: Node, file: str) -> Step:
    where = f"{file}:{node.line}:{node.column}"
    if not isinstance(node.value, dict):
        raise PolicyError(f"{where}: a step is a mapping (name, what, count/run or vigie).")
    v = {k: str(n.value) for k, n in node.value.items()}
    unknown = set(v) - {"name", "what", "count", "run", "vigie"}
    if unknown or "name" not in v:
        raise PolicyError(
            f"{where}: a step needs 'name' (and knows what, count, run, vigie); got {sorted(v)}."
        )
    if "vigie" in v:
        if v["vigie"] not in VIGIE_STEPS:
            raise PolicyError(
                f"{where}: unknown vigie step '{v['vigie']}'.",
                hint=f"Known: {', '.join(VIGIE_STEPS)}.",
            )
    elif not (v.get("count") and v.get("run")):
        raise PolicyError(f"{where}: step '{v['name']}' needs both 'count' and 'run' SQL.")
    return Step(
        v["name"],
        v.get("what", v["name"]),
        v.get("count", ""),
        v.get("run", ""),
        v.get("vigie", ""),
        where,
    )


def state_path(store: Path) -> Path:
    return store.parent / "incident" / "rotate-state.json"


class Rotation:
    """Runs (or dry-runs) a playbook's steps in order, recording each."""

    def __init__(
        self,
        steps: list[Step],
        production: Dsn | None,
        access: AccessFile,
        state: Path,
        audit: Any = None,
        store: Path | None = None,
        keyfile: Path | None = None,
    ) -> None:
        self.steps, self.production, self.access = steps, production, access
        self.state, self.audit = state, audit
        self.store, self.keyfile = store, keyfile

    def run(self, execute: bool, crash_after: str | None = None) -> list[StepResult]:
        done = self._load_state()
        out = []
        for step in self.steps:
            earlier = done.get(step.name)
            if execute and earlier and step.vigie == "rotate-pseudonym-key":
                # once per incident: running the playbook again must not rotate again
                out.append(StepResult(step.name, step.what, 0, 0, 0.0, f"done at {earlier['at']}"))
                continue
            result = self._one(step, execute)
            if execute:
                earlier = done.get(step.name)
                if result.changed == 0 and earlier:
                    result = StepResult(
                        step.name,
                        step.what,
                        0,
                        0,
                        result.seconds,
                        f"done at {earlier['at']} ({earlier['changed']:,})",
                    )
                else:
                    done[step.name] = {"at": _now(), "changed": result.changed}
                self._save_state(done)
                self._record(result)
            out.append(result)
            if crash_after == step.name:  # the tests' crash between two steps
                os._exit(70)
        return out

    def _one(self, step: Step, execute: bool) -> StepResult:
        started = time.monotonic()
        if step.vigie == "revoke-api-keys":
            live = [e for e in self.access.entries() if e.status(datetime.now(UTC)) == "active"]
            if execute:
                for e in live:
                    self.access.revoke(e.name)
            changed = len(live) if execute else 0
            return StepResult(
                step.name,
                step.what,
                len(live),
                changed,
                round(time.monotonic() - started, 3),
                "vigie API keys",
            )
        if step.vigie == "rotate-pseudonym-key":
            return self._rekey(step, execute, started)
        pending, changed = self._sql(step, execute)
        return StepResult(
            step.name, step.what, pending, changed, round(time.monotonic() - started, 3)
        )

    def _rekey(self, step: Step, execute: bool, started: float) -> StepResult:
        from vigie.incident.rekey import rotate_pseudonym_key

        if self.store is None or self.keyfile is None or self.production is None:
            raise SyncError(
                f"Step {step.name} rewrites the store's pseudonyms: give --store, "
                "--keyfile (a file: the old key is destroyed) and --production."
            )
        if not execute:
            return StepResult(step.name, step.what, 1, 0, 0.0, "the store's pseudonyms, 1 key")
        done = rotate_pseudonym_key(self.store, self.keyfile, self.production)
        return StepResult(
            step.name,
            step.what,
            1,
            1,
            round(time.monotonic() - started, 3),
            f"{done.rewritten:,} pseudonyms rewritten, {done.orphans:,} orphans",
        )

    def _sql(self, step: Step, execute: bool) -> tuple[int, int]:
        from vigie.db.connect import connect
        from vigie.db.ops import execute as run_sql
        from vigie.db.ops import scalar

        if self.production is None:
            raise SyncError(f"Step {step.name} changes production: give --production DSN.")
        dsn = self.production
        conn = connect(dsn)
        begin = "START TRANSACTION" if dsn.engine == "mysql" else "BEGIN"
        try:
            run_sql(conn, dsn, begin)  # vigie's connections autocommit: one explicit transaction
            pending = int(scalar(conn, dsn, step.count) or 0)
            if not execute or pending == 0:
                run_sql(conn, dsn, "ROLLBACK")
                return pending, 0
            changed = run_sql(conn, dsn, step.run)
            left = int(scalar(conn, dsn, step.count) or 0)
            if left:
                run_sql(conn, dsn, "ROLLBACK")
                raise SyncError(
                    f"Step {step.name} ({step.where}): after its change, its count still "
                    f"finds {left:,} rows; rolled back.",
                    hint="Its 'run' must change every row its 'count' counts.",
                )
            run_sql(conn, dsn, "COMMIT")
            return pending, max(changed, pending)
        except BaseException:
            _rollback(conn)
            raise
        finally:
            conn.close()

    def _record(self, r: StepResult) -> None:
        if self.audit is None:
            return
        self.audit.append(
            actor="incident-rotate",
            role="responder",
            method="CLI",
            path=f"incident.rotate.{r.step}",
            route=None,
            params={"what": r.what[:200]},
            status=200,
            rows=r.changed,
            kind=None,
            reason=r.note or None,
            client=None,
        )

    def _load_state(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.state.read_text()))
        except (FileNotFoundError, ValueError):
            return {}

    def _save_state(self, done: dict[str, Any]) -> None:
        self.state.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.state.with_name(self.state.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(done, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self.state)


def _rollback(conn: Any) -> None:
    with contextlib.suppress(Exception):  # nothing to roll back
        conn.cursor().execute("ROLLBACK")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")

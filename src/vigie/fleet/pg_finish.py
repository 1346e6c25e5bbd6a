"""Finish a PostgreSQL bulk load fast: keys, indexes and foreign keys on parallel sessions.

Each DDL statement is single-threaded; two sessions keep both cores busy. Foreign keys are
added ``NOT VALID`` (instant) and then validated, which locks the parent only lightly, so
checks of children of one parent run side by side. A statement waits for its
prerequisites (the parent's primary key) and never runs beside another on the same table,
so no session sits waiting on a lock.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

from vigie.fleet.ddl import _fk_clause, _pk_clause, quote
from vigie.fleet.schema import Table

q = partial(quote, "postgresql")


@dataclass(frozen=True)
class Step:
    name: str
    sql: str
    tables: frozenset[str]  # tables it locks in a way that conflicts with DDL
    after: frozenset[str] = frozenset()


def plan(tables: tuple[Table, ...]) -> list[Step]:
    """All steps, most expensive chains first."""
    by_rows = sorted(tables, key=lambda t: _WEIGHT.get(t.name, 0), reverse=True)
    steps = [Step(f"pk:{t.name}", f"ALTER TABLE {q(t.name)} ADD {_pk_clause('postgresql', t)}",
                  frozenset({t.name})) for t in by_rows]  # fmt: skip
    for t in by_rows:
        for fk in t.foreign_keys:
            name = f"fk_{t.name}_{'_'.join(fk.columns)}"
            add = f"ALTER TABLE {q(t.name)} ADD CONSTRAINT {q(name)} {_fk_clause('postgresql', fk)}"
            steps.append(Step(f"add:{name}", add + " NOT VALID", frozenset({t.name, fk.table}),
                              frozenset({f"pk:{fk.table}", f"pk:{t.name}"})))  # fmt: skip
            steps.append(Step(f"check:{name}",
                              f"ALTER TABLE {q(t.name)} VALIDATE CONSTRAINT {q(name)}",
                              frozenset({t.name}), frozenset({f"add:{name}"})))  # fmt: skip
    for t in by_rows:
        for kind, groups in (("uq", t.unique), ("ix", t.indexes)):
            for cols in groups:
                name = f"{kind}_{t.name}_{'_'.join(cols)}"
                unique = "UNIQUE " if kind == "uq" else ""
                sql = f"CREATE {unique}INDEX {q(name)} ON {q(t.name)} ({', '.join(map(q, cols))})"
                steps.append(Step(name, sql, frozenset({t.name})))
    for t in by_rows:
        before = frozenset(s.name for s in steps if t.name in s.tables)
        steps.append(Step(f"analyze:{t.name}", f"ANALYZE {q(t.name)}", frozenset({t.name}), before))
    return steps


_WEIGHT = {"connection_events": 100, "devices": 12, "api_tokens": 10, "users": 8}


class _Scheduler:
    def __init__(self, steps: list[Step]) -> None:
        self.pending = list(steps)
        self.done: set[str] = set()
        self.busy: set[str] = set()
        self.failed: BaseException | None = None
        self.cond = threading.Condition()

    def take(self) -> Step | None:
        with self.cond:
            while True:
                if self.failed or not self.pending:
                    return None
                for step in self.pending:
                    if step.after <= self.done and not step.tables & self.busy:
                        self.pending.remove(step)
                        self.busy |= step.tables
                        return step
                self.cond.wait()

    def finish(self, step: Step, error: BaseException | None) -> None:
        with self.cond:
            self.busy -= step.tables
            self.done.add(step.name)
            if error is not None:
                self.failed = error
            self.cond.notify_all()


def finish_load(
    connect_kwargs: dict[str, Any], tables: tuple[Table, ...], workers: int = 2
) -> None:
    """Run the plan on ``workers`` sessions; re-raise the first failure."""
    import psycopg

    scheduler = _Scheduler(plan(tables))

    def work() -> None:
        with psycopg.connect(**connect_kwargs, autocommit=True) as conn:
            conn.execute("SET maintenance_work_mem = '512MB'")
            while (step := scheduler.take()) is not None:
                try:
                    conn.execute(step.sql.encode())
                except BaseException as exc:
                    scheduler.finish(step, exc)
                    raise
                scheduler.finish(step, None)

    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(work) for _ in range(workers)]
    if scheduler.failed is not None:
        raise scheduler.failed
    for f in futures:
        f.result()

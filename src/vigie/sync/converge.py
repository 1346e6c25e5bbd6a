"""Converge the store to the policy in force, before anything is copied.

After any policy change, the next sync leaves the store as a fresh full sync under the new
policy would. The store's record of each column (``_vigie.columns``: its action's spec and
class) is compared with the policy:
- a table excluded or no longer in the policy leaves the store, with its delete history;
- a column whose rule tightened to ``drop`` is removed; a column whose rule changed to
  another way of copying it (``keep`` → ``pseudonymize`` / ``generalize``, a coarser
  generalization, another pseudonym domain) is removed and then backfilled from production
  under the new rule (``vigie.sync.backfill``); a column a loosened rule now copies is
  backfilled; a column the store holds that no policy made is removed;
- a key column whose rule changed rebuilds its table from production (its stored keys and
  delete history would no longer match);
- a class that changed with the same action changes only the record.
Removals happen first, and when anything was removed the KPI rollups (computed from the
old values) are dropped and the whole store is copied into a fresh file
(``Store.rewrite_fresh``), so removed values do not linger in freed blocks. Every change
is described (``PolicyChanges.lines``) before it is made.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from vigie.policy.compile import CompiledTable
from vigie.stores.duckdb_store import Store, q
from vigie.stores.meta import (
    LINEAGE_COLUMNS,
    META,
    ROLLUP_SCHEMA,
    ColumnRecord,
    action_spec,
    column_records,
    forget_columns,
    forget_table,
    record_column,
    reset_changes,
)
from vigie.sync.writer import column_record

UNRECORDED = "not recorded by any sync"


@dataclass(frozen=True)
class ColumnChange:
    table: str
    column: str
    before: str | None  # the stored rule's spec (None: not stored, "drop": not copied)
    after: str | None  # the rule in force (None: no longer in the policy)
    rows: int  # rows of the stored table

    @property
    def removes(self) -> bool:
        return self.before not in (None, "drop")

    @property
    def fills(self) -> bool:
        return self.after not in (None, "drop")

    @property
    def kind(self) -> str:
        if self.removes and self.fills:
            return "rewritten"
        return "removed" if self.removes else "backfilled"


@dataclass(frozen=True)
class TableChange:
    table: str
    rows: int
    why: str
    rebuild: bool = False  # loaded again from production in this run


@dataclass
class PolicyChanges:
    tables: list[TableChange] = field(default_factory=list)
    columns: list[ColumnChange] = field(default_factory=list)
    reclassified: list[ColumnRecord] = field(default_factory=list)  # same action, new class
    records: list[ColumnRecord] = field(default_factory=list)  # records to complete, silently

    @property
    def removes(self) -> bool:
        return bool(self.tables) or any(c.removes for c in self.columns)

    def fills(self, table: str) -> list[str]:
        """The columns of ``table`` to backfill from production."""
        return [c.column for c in self.columns if c.table == table and c.fills]

    def __bool__(self) -> bool:
        """Whether anything the user should hear of changes."""
        return bool(self.tables or self.columns or self.reclassified)

    def lines(self) -> list[str]:
        """What the change will do, one line per table or column."""
        out = []
        for t in self.tables:
            verb = "rebuilt from production" if t.rebuild else "removed from the store"
            out.append(f"table {t.table}: {verb} ({t.rows:,} rows): {t.why}")
        for c in self.columns:
            rule = f"{c.before or 'not copied'} → {c.after or 'not in the policy'}"
            what = {
                "removed": "values removed",
                "rewritten": "old values removed, then copied again from production",
                "backfilled": "copied from production for every row",
            }[c.kind]
            out.append(f"column {c.table}.{c.column} ({rule}): {what} ({c.rows:,} rows)")
        for r in self.reclassified:
            out.append(f"column {r.table}.{r.column}: class now {r.data_class} (same action)")
        if self.removes:
            out.append(
                "KPI rollups dropped (rebuilt after the sync); store copied into a fresh file"
            )
        return out


def plan_changes(
    store: Store, tables: list[CompiledTable], excluded: frozenset[str] = frozenset()
) -> PolicyChanges:
    """What converging the store to the compiled policy (``tables``) takes."""
    changes = PolicyChanges()
    wanted = {t.policy.name: t for t in tables}
    records, schema = column_records(store), store.columns()
    for name in schema:
        if name not in wanted:
            why = "excluded by the policy" if name in excluded else "not in the policy"
            changes.tables.append(TableChange(name, _rows(store, name), why))
    for name, compiled in wanted.items():
        if name in schema:
            _plan_table(store, compiled, schema[name], records.get(name, {}), changes)
    return changes


def _plan_table(store: Store, compiled: CompiledTable, types: dict[str, str],
                records: dict[str, ColumnRecord], changes: PolicyChanges) -> None:  # fmt: skip
    name = compiled.policy.name
    present = set(types) - set(LINEAGE_COLUMNS)
    found: list[tuple[str, str | None, str | None]] = []  # column, before, after
    for column, rule in compiled.policy.columns.items():
        record = records.get(column)
        before = _stored_as(record, types.get(column))
        after = action_spec(rule.action)
        if record and record.legacy and before == rule.action.name:
            before = after  # recorded before specs were: the same action, taken as the same
        if before == after or (before is None and after == "drop"):
            if record and record.data_class is not None and record.data_class != rule.data_class:
                changes.reclassified.append(column_record(compiled, column))
            elif record is None or record.legacy or record.data_class is None:
                changes.records.append(column_record(compiled, column))
            continue
        found.append((column, before, after))
    for column in sorted(present - set(compiled.policy.columns)):
        found.append((column, _stored_as(records.get(column), types[column]), None))
    if not found:
        return
    rows = _rows(store, name)
    if any(column in compiled.key for column, _, _ in found):
        changes.tables.append(TableChange(name, rows, "a key column's rule changed", True))
    else:
        changes.columns += [ColumnChange(name, c, b, a, rows) for c, b, a in found]


def _stored_as(record: ColumnRecord | None, stored_type: str | None) -> str | None:
    """How the store holds a column (``stored_type``: its type there, None if absent): its
    recorded spec; ``drop`` when recorded as not copied and absent; None when absent; and
    when present but not as recorded (a column added by hand, maybe under the name of a
    dropped one, or altered to another type), a spec that matches no rule, so that it is
    removed (and copied again, if the policy copies it)."""
    if stored_type is None:
        return "drop" if record is not None and not record.stored else None
    if record is None or not record.stored:
        return UNRECORDED
    if record.store_type is not None and record.store_type != stored_type:
        return UNRECORDED
    return record.spec


def apply_removals(store: Store, changes: PolicyChanges, tables: list[CompiledTable]) -> None:
    """Everything the change removes, before anything is copied; then a fresh file."""
    wanted = {t.policy.name: t for t in tables}
    with store.transaction() as con:
        for t in changes.tables:
            con.execute(f"DROP TABLE IF EXISTS {q(t.table)}")
            forget_table(con, t.table)
        for name in sorted({c.table for c in changes.columns}):
            gone = [c for c in changes.columns if c.table == name and c.removes]
            if gone:
                _drop_columns(con, name, [c.column for c in gone])
            forget_columns(con, name, [c.column for c in changes.columns if c.table == name])
            for c in changes.columns:
                if c.table == name and c.after == "drop":
                    record_column(con, column_record(wanted[name], c.column))
        for record in [*changes.reclassified, *changes.records]:
            record_column(con, record)
        if changes.tables or changes.columns:
            reset_changes(con)  # the change log does not follow a rewrite
        if changes.removes:
            con.execute(f"DROP SCHEMA IF EXISTS {ROLLUP_SCHEMA} CASCADE")
    if changes.removes:
        store.rewrite_fresh()


def _drop_columns(con: Any, table: str, columns: list[str]) -> None:
    """``columns`` out of the table's schema (their blocks are left behind in the file,
    which ``Store.rewrite_fresh`` then leaves behind in turn)."""
    for column in columns:
        con.execute(f"ALTER TABLE {q(table)} DROP COLUMN {q(column)}")


def mark_converged(store: Store, run_id: int) -> None:
    """The run's policy is in force in the store from now on (``readable_between``)."""
    with store.transaction() as con:
        con.execute(
            f"UPDATE {META}.runs SET converged_at = ? WHERE run_id = ?",
            [datetime.now(UTC).replace(tzinfo=None), run_id],
        )


def _rows(store: Store, table: str) -> int:
    return int(store.rows(f"SELECT COUNT(*) FROM {q(table)}")[0][0])

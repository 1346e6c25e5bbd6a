"""Before anything is copied: check production against the policy and the store.

Default deny: a production column the policy does not name stops the sync, with the list of
unclassified columns and a ready-to-paste snippet. A policy column production no longer has,
a type that changed since the store was built, a key that would not be copied, or a cursor
of the wrong type stop it too. All problems of all tables are reported at once; nothing is
copied until they are fixed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vigie.errors import PolicyError, SchemaDrift, SyncError, UnclassifiedColumns
from vigie.policy.classify import guess
from vigie.policy.compile import CompiledTable, compile_table
from vigie.policy.model import Buckets, Drop, IpPrefix, Policy, TablePolicy, TruncateTime
from vigie.sources.base import Source, SourceTable
from vigie.stores.duckdb_store import Store
from vigie.stores.meta import META


@dataclass
class Plan:
    tables: list[CompiledTable] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)  # neither synced nor excluded
    # child table -> (column, parent table, parent key column) deleted with the parent
    cascades: dict[str, tuple[tuple[str, str, str], ...]] = field(default_factory=dict)


def make_plan(policy: Policy, source: Source, store: Store, key: str) -> Plan:
    present = set(source.table_names())
    plan = Plan(unlisted=sorted(present - set(policy.tables) - policy.exclude))
    unclassified: list[str] = []
    problems: list[str] = []
    known = _store_types(store)
    for name, table_policy in policy.tables.items():
        if name not in present:
            problems.append(
                f"{table_policy.where}: table '{name}' is in the policy but not in production "
                f"({source.dsn}). Remove it from the policy or move it to 'exclude'."
            )
            continue
        table = source.describe(name)
        missing = [c for c in table.names if c not in table_policy.columns]
        if missing:
            unclassified.append(_snippet(table, table_policy, missing))
            continue
        problems += _check_table(table_policy, table, known.get(name, {}))
        if not problems:
            try:
                plan.tables.append(compile_table(table_policy, table, key))
            except PolicyError as exc:
                problems.append(exc.message)
    if unclassified:
        raise UnclassifiedColumns(
            "Default deny: production has columns the policy does not classify; "
            "nothing was copied.\n" + "\n".join(unclassified),
            hint=f"Review the suggested rules, add them to {policy.path}, and sync again.",
        )
    if problems:
        drift = any("changed type" in p for p in problems)
        error = SchemaDrift if drift else SyncError
        raise error(
            "The sync cannot start; nothing was copied:\n  " + "\n  ".join(problems),
            hint="Fix the policy (or production) as each line says, then sync again.",
        )
    plan.cascades = _cascades(plan, source)
    return plan


def _cascades(plan: Plan, source: Source) -> dict[str, tuple[tuple[str, str, str], ...]]:
    """Foreign keys ON DELETE CASCADE whose two ends are stored alike (same pseudonym
    domain, or both kept), to a parent synced earlier in the run."""
    out: dict[str, tuple[tuple[str, str, str], ...]] = {}
    seen: dict[str, CompiledTable] = {}
    for table in plan.tables:
        found = []
        for fk in source.foreign_keys(table.source):
            parent = seen.get(fk.parent)
            if fk.on_delete != "CASCADE" or parent is None or parent.key != (fk.parent_column,):
                continue
            child_rule = table.policy.columns.get(fk.column)
            parent_rule = parent.policy.columns.get(fk.parent_column)
            if child_rule and parent_rule and child_rule.action == parent_rule.action:
                found.append((fk.column, fk.parent, fk.parent_column))
        out[table.policy.name] = tuple(found)
        seen[table.policy.name] = table
    return out


def _store_types(store: Store) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for table, column, source_type in store.rows(
        f"SELECT table_name, column_name, source_type FROM {META}.columns"
    ):
        out.setdefault(table, {})[column] = source_type
    return out


def _check_table(policy: TablePolicy, table: SourceTable, known: dict[str, str]) -> list[str]:
    problems = []
    for col, rule in policy.columns.items():
        if col not in table.names:
            problems.append(
                f"{rule.where}: {rule.qualified} is in the policy but not in production; "
                "it was renamed or removed. Update the policy."
            )
            continue
        was = known.get(col)
        now = table.column(col).raw_type
        if was is not None and was != now:
            problems.append(
                f"{rule.where}: {rule.qualified} changed type in production: {was} → {now}. "
                "Review its rule; then load the table again (vigie sync --rebuild TABLE)."
            )
    if not table.primary_key:
        problems.append(
            f"{policy.where}: table '{table.name}' has no primary key in production; vigie "
            "needs one to apply updates and deletes. Add one, or exclude the table."
        )
    for col in table.primary_key:
        if table.column(col).nullable:
            problems.append(
                f"{policy.where}: {table.name}.{col} is part of the primary key but may be NULL "
                "in production (SQLite accepts NULL in a key column not declared NOT NULL): "
                "rows with a NULL key cannot be matched from one sync to the next. Declare it "
                "NOT NULL in production, or exclude the table."
            )
        key_rule = policy.columns.get(col)
        if key_rule and isinstance(key_rule.action, Drop | TruncateTime | IpPrefix | Buckets):
            problems.append(
                f"{key_rule.where}: {key_rule.qualified} is part of the primary key and must be "
                f"kept or pseudonymized (not '{key_rule.action.name}'), or rows could not be "
                "matched."
            )
    if policy.cursor and table.column(policy.cursor).kind not in ("timestamp", "integer"):
        problems.append(
            f"{policy.where}: cursor '{policy.cursor}' of '{table.name}' must be a timestamp "
            "(updated_at-like) or an integer growing key, not "
            f"{table.column(policy.cursor).raw_type}."
        )
    return problems


def _snippet(table: SourceTable, policy: TablePolicy, missing: list[str]) -> str:
    width = max(len(c) for c in missing)
    lines = [f"  {table.name}: unclassified column(s) {', '.join(missing)}. Suggested rules:"]
    lines.append(f"    {table.name}:\n      columns:")
    for col in missing:
        g = guess(table.name, table.column(col))
        rule = f"{{class: {g.data_class}, {g.action}}}"
        lines.append(f"        {col + ':':<{width + 1}} {rule}  # REVIEW: {g.why}")
    return "\n".join(lines)

"""Load and validate a policy file once, into frozen objects; every error has a position.

Column rules read as one line each, a data class and one action::

    email:      {class: pii, pseudonymize: email}
    created_at: {class: public, generalize: day}
    country:    {class: quasi, keep}
    token:      {class: secret, drop}
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, cast

from vigie.errors import PolicyError
from vigie.policy.model import (
    ACTIONS,
    ALLOWED_ACTIONS,
    DATA_CLASSES,
    TIME_GRAINS,
    WHY_NOT,
    Action,
    Buckets,
    ColumnRule,
    DataClass,
    Drop,
    IpPrefix,
    Keep,
    Policy,
    Pseudonymize,
    TablePolicy,
    TruncateTime,
    Where,
)
from vigie.policy.yamlmarks import Node, parse
from vigie.scan.column import ALLOWABLE as DETECTORS

TOP_KEYS = ("version", "tables", "exclude")
TABLE_KEYS = ("columns", "cursor")
COLUMN_KEYS = ("class", *ACTIONS, "allow", "note")
GENERALIZE_HOWS = (*TIME_GRAINS, "ip_prefix", "buckets")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def load_policy(path: Path) -> Policy:
    """Read and validate ``path``; raise one PolicyError listing every problem found."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PolicyError(
            f"Cannot read policy file {path}: {exc.strerror}.",
            hint="Check the path, or write one with `vigie policy suggest --from DSN`.",
        ) from None
    return parse_policy(raw.decode("utf-8", errors="replace"), path)


def parse_policy(text: str, path: Path) -> Policy:
    v = _Validator(str(path))
    root = parse(text, str(path))
    policy = v.policy(root, path, hashlib.sha256(text.encode()).hexdigest(), text)
    if v.errors:
        count = len(v.errors)
        raise PolicyError(
            f"{path}: {count} problem{'s' if count > 1 else ''} in the policy:\n  "
            + "\n  ".join(v.errors),
            hint="Fix them and run `vigie policy check FILE`; nothing is copied meanwhile.",
        )
    assert policy is not None
    return policy


class _Validator:
    def __init__(self, file: str) -> None:
        self.file = file
        self.errors: list[str] = []

    def where(self, node: Node) -> Where:
        return Where(self.file, node.line, node.column)

    def error(self, node: Node, message: str) -> None:
        self.errors.append(f"{self.where(node)}: {message}")

    def key_error(self, mapping: Node, key: str, message: str) -> None:
        """An error placed at ``key`` of ``mapping`` (where the reader looks for it)."""
        line, column = (mapping.keys or {}).get(key, (mapping.line, mapping.column))
        self.errors.append(f"{Where(self.file, line, column)}: {message}")

    def mapping(self, node: Node, what: str, keys: tuple[str, ...]) -> dict[str, Node] | None:
        if not isinstance(node.value, dict):
            self.error(node, f"{what} must be a mapping, got {_kind(node.value)}.")
            return None
        for key in node.value:
            if key not in keys:
                self.key_error(
                    node, key, f"unknown key '{key}' in {what}; valid keys: {', '.join(keys)}."
                )
        return cast(dict[str, Node], node.value)

    # -- top level -------------------------------------------------------------------------

    def policy(self, root: Node, path: Path, digest: str, text: str) -> Policy | None:
        top = self.mapping(root, "the policy", TOP_KEYS)
        if top is None:
            return None
        version = top.get("version")
        if version is None or type(version.value) is not int or version.value != 1:
            self.error(version or root, "'version: 1' is required at the top of the policy.")
        exclude = self.exclude(top.get("exclude"))
        tables: dict[str, TablePolicy] = {}
        tables_node = top.get("tables")
        if tables_node is None:
            self.error(root, "the policy has no 'tables:' section; nothing would be copied.")
        elif (
            entries := self.mapping(tables_node, "'tables'", tuple(tables_node.value or ()))
        ) is not None:
            for name, node in entries.items():
                if name in exclude:
                    self.error(node, f"table '{name}' is both in 'tables' and in 'exclude'.")
                table = self.table(name, node)
                if table is not None:
                    tables[name] = table
        return Policy(path, tables, frozenset(exclude), digest, text)

    def exclude(self, node: Node | None) -> set[str]:
        if node is None:
            return set()
        if not isinstance(node.value, list) or not all(
            isinstance(n.value, str) for n in node.value
        ):
            self.error(node, "'exclude' must be a list of table names.")
            return set()
        return {n.value for n in node.value}

    # -- tables ----------------------------------------------------------------------------

    def table(self, name: str, node: Node) -> TablePolicy | None:
        spec = self.mapping(node, f"table '{name}'", TABLE_KEYS)
        if spec is None:
            return None
        columns_node = spec.get("columns")
        if columns_node is None or not isinstance(columns_node.value, dict):
            self.error(node, f"table '{name}' needs a 'columns:' mapping (column: rule).")
            return None
        rules = {}
        for col, col_node in columns_node.value.items():
            rule = self.column(name, col, col_node)
            if rule is not None:
                rules[col] = rule
        cursor = None
        if (cursor_node := spec.get("cursor")) is not None:
            cursor = cursor_node.value
            if not isinstance(cursor, str) or cursor not in columns_node.value:
                self.error(
                    cursor_node,
                    f"cursor of '{name}' must be one of its columns "
                    f"(an updated_at-like timestamp or a growing key), got {cursor!r}.",
                )
                cursor = None
        return TablePolicy(name, rules, self.where(node), cursor)

    # -- columns ---------------------------------------------------------------------------

    def column(self, table: str, column: str, node: Node) -> ColumnRule | None:
        what = f"{table}.{column}"
        spec = self.mapping(node, f"rule of {what}", COLUMN_KEYS)
        if spec is None:
            self.errors[-1] += (
                " Write e.g. {class: pii, pseudonymize: user} or {class: secret, drop}."
            )
            return None
        data_class = self.data_class(what, node, spec.get("class"))
        actions = [k for k in ACTIONS if k in spec]
        if len(actions) != 1:
            self.error(
                node,
                f"{what} needs exactly one action out of {', '.join(ACTIONS)}; "
                f"got {', '.join(actions) or 'none'}.",
            )
            return None
        action = self.action(what, actions[0], spec[actions[0]])
        if data_class is None or action is None:
            return None
        if action.name not in ALLOWED_ACTIONS[data_class]:
            allowed = ", ".join(ALLOWED_ACTIONS[data_class])
            self.key_error(
                node,
                actions[0],
                f"{what} is class '{data_class}' and cannot be '{action.name}' "
                f"({WHY_NOT[data_class]}); allowed: {allowed}.",
            )
            return None
        allow = self.allow(what, spec.get("allow"))
        return ColumnRule(table, column, data_class, action, self.where(node), allow)

    def data_class(self, what: str, node: Node, value: Node | None) -> DataClass | None:
        if value is None:
            self.error(node, f"{what} has no 'class'; one of: {', '.join(DATA_CLASSES)}.")
            return None
        if value.value not in DATA_CLASSES:
            self.error(
                value,
                f"{what}: unknown class {value.value!r}; one of: {', '.join(DATA_CLASSES)}.",
            )
            return None
        return cast(DataClass, value.value)

    def action(self, what: str, name: str, arg: Node) -> Action | None:
        if name in ("keep", "drop"):
            if arg.value is not None and arg.value is not True:  # `keep: 1` is not `keep`
                self.error(arg, f"{what}: '{name}' takes no value (write just '{name}').")
                return None
            return Keep() if name == "keep" else Drop()
        if name == "pseudonymize":
            if not isinstance(arg.value, str) or not _NAME.match(arg.value):
                self.error(
                    arg,
                    f"{what}: pseudonymize needs a domain name such as 'user' or 'device' "
                    "(lower case, digits, _): columns of one domain get the same pseudonyms.",
                )
                return None
            return Pseudonymize(arg.value)
        return self.generalize(what, arg)

    def generalize(self, what: str, arg: Node) -> Action | None:
        how = arg.value
        if isinstance(how, str) and how in TIME_GRAINS:
            return TruncateTime(how)
        if how == "ip_prefix":
            return IpPrefix()
        if isinstance(how, dict) and set(how) == {"buckets"}:
            edges = how["buckets"].value
            numbers = [e.value for e in edges] if isinstance(edges, list) else []
            if (
                numbers
                and all(isinstance(x, int | float) and not isinstance(x, bool) for x in numbers)
                and numbers == sorted(set(numbers))
            ):
                return Buckets(tuple(float(x) for x in numbers))
            self.error(arg, f"{what}: buckets must be a list of increasing numbers.")
            return None
        self.error(
            arg,
            f"{what}: unknown generalization {_shown(how)}; one of: "
            f"{', '.join(TIME_GRAINS)}, ip_prefix, {{buckets: [0, 10, 100]}}.",
        )
        return None

    def allow(self, what: str, node: Node | None) -> dict[str, str]:
        if node is None:
            return {}
        if not isinstance(node.value, dict):
            self.error(node, f"{what}: allow must map a detector to a reason.")
            return {}
        out = {}
        for detector, reason in node.value.items():
            if detector not in DETECTORS:
                self.error(
                    reason,
                    f"{what}: unknown detector '{detector}'; one of: {', '.join(DETECTORS)}.",
                )
            elif not isinstance(reason.value, str) or len(reason.value.strip()) < 8:
                self.error(reason, f"{what}: allowing '{detector}' needs a reason (a sentence).")
            else:
                out[detector] = reason.value
        return out


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"'{value}'" if isinstance(value, str) else repr(value)


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(value) + "}"
    return repr(value)

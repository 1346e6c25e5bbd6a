"""Load the metrics: the shipped file, then an optional user file that adds or overrides by
name. Validated once, every error with file, line and column and the valid choices."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, cast

from vigie.errors import PolicyError
from vigie.kpi.factsql import fact_problems
from vigie.kpi.model import (
    DEFAULT_MIN_USERS,
    MIN_USERS_FLOOR,
    Avg,
    Count,
    CountDistinct,
    Fact,
    Kpi,
    Measure,
    Metrics,
    Quantile,
    Ratio,
    ShareWithin,
    Simple,
    Sum,
)
from vigie.policy.yamlmarks import Node, parse

SHIPPED = Path(__file__).resolve().parent / "metrics.yaml"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_SIMPLE = ("count", "count_distinct", "sum", "avg", "quantile")
_MEASURES = (*_SIMPLE, "ratio", "share_within")


class MetricsError(PolicyError):
    """A metrics file is invalid (reuses the policy's exit code: a declarative file)."""


def load_metrics(user_file: Path | None = None, *, min_users: int | None = None) -> Metrics:
    """The shipped metrics, extended or overridden by ``user_file``; k (``min_users``) is
    the largest of the files' settings (10 shipped) and of the caller's, which can only
    raise it; never below 5. Every fact's SQL is checked (``kpi.factsql``)."""
    facts: dict[str, Fact] = {}
    kpis: dict[str, Kpi] = {}
    k = DEFAULT_MIN_USERS
    files = [SHIPPED] + ([user_file] if user_file else [])
    for path in files:
        try:
            text = path.read_text()
        except OSError as exc:
            raise MetricsError(f"Cannot read metrics file {path}: {exc.strerror}.") from None
        v = _Validator(str(path), facts)
        v.document(parse(text, str(path)))
        if v.errors:
            raise MetricsError(
                f"{path}: {len(v.errors)} problem(s) in the metrics:\n  " + "\n  ".join(v.errors),
                hint="Fix them and run `vigie kpi list --metrics FILE` again.",
            )
        if v.min_users is not None and v.min_users < k:
            raise MetricsError(
                f"{path}: min_users {v.min_users} would lower k below {k}; a metrics file "
                "can only raise it.",
                hint=f"Remove the setting or give {k} or more.",
            )
        facts.update(v.facts)
        kpis.update(v.kpis)
        k = v.min_users or k
    base = k
    if min_users is not None:
        if min_users < k:
            raise MetricsError(
                f"min_users can only raise k: {min_users} is below the {k} of the metrics files.",
                hint=f"Give {k} or more; below that a cell could single people out.",
            )
        k = min_users
    return Metrics(facts, kpis, k, tuple(str(f) for f in files), base_min_users=base)


class _Validator:
    def __init__(self, file: str, known_facts: dict[str, Fact]) -> None:
        self.file = file
        self.errors: list[str] = []
        self.facts: dict[str, Fact] = {}
        self.kpis: dict[str, Kpi] = {}
        self.known = dict(known_facts)
        self.min_users: int | None = None

    def error(self, node: Node, message: str) -> None:
        self.errors.append(f"{self.file}:{node.line}:{node.column}: {message}")

    def mapping(self, node: Node, what: str, keys: tuple[str, ...] | None) -> dict[str, Node]:
        if not isinstance(node.value, dict):
            self.error(node, f"{what} must be a mapping.")
            return {}
        if keys is not None:
            for key in node.value:
                if key not in keys:
                    line, col = (node.keys or {}).get(key, (node.line, node.column))
                    self.errors.append(
                        f"{self.file}:{line}:{col}: unknown key '{key}' in {what}; "
                        f"valid keys: {', '.join(keys)}."
                    )
        return cast(dict[str, Node], node.value)

    def text(self, node: Node | None, what: str, where: Node) -> str:
        if node is None or not isinstance(node.value, str) or not node.value.strip():
            self.error(node or where, f"{what} must be a non-empty text.")
            return ""
        return node.value

    def document(self, root: Node) -> None:
        top = self.mapping(root, "the metrics file", ("version", "settings", "facts", "kpis"))
        version = top["version"].value if "version" in top else None
        if type(version) is not int or version != 1:
            self.error(top.get("version", root), "'version: 1' is required.")
        if "settings" in top:
            settings = self.mapping(top["settings"], "'settings'", ("min_users",))
            if "min_users" in settings:
                value = settings["min_users"].value
                if type(value) is not int or value < MIN_USERS_FLOOR:
                    self.error(
                        settings["min_users"],
                        f"min_users must be a whole number of at least {MIN_USERS_FLOOR}.",
                    )
                else:
                    self.min_users = value
        for name, node in self.mapping(top.get("facts", Node({}, 1, 1)), "'facts'", None).items():
            fact = self.fact(name, node)
            if fact:
                self.facts[name] = self.known[name] = fact
        for name, node in self.mapping(top.get("kpis", Node({}, 1, 1)), "'kpis'", None).items():
            kpi = self.kpi(name, node)
            if kpi:
                self.kpis[name] = kpi

    def fact(self, name: str, node: Node) -> Fact | None:
        keys = ("description", "sql", "time", "user", "dimensions", "rollups")
        spec = self.mapping(node, f"fact '{name}'", keys)
        if not _NAME.match(name):
            self.error(node, f"fact name '{name}' must be lower case letters, digits and _.")
        sql = self.text(spec.get("sql"), f"fact '{name}': sql", node)
        time = self.text(spec.get("time"), f"fact '{name}': time", node)
        user = self.text(spec.get("user"), f"fact '{name}': user", node)
        dims = self.names(spec.get("dimensions"), f"fact '{name}': dimensions", node)
        rollups = []
        for item in (spec["rollups"].value if "rollups" in spec else []) or []:
            group = self.names(item, f"fact '{name}': a rollup", node)
            unknown = [d for d in group if d not in dims]
            if unknown:
                self.error(item, f"rollup of '{name}' uses {unknown}; dimensions: {list(dims)}.")
            if len(group) > 1:
                self.error(
                    item,
                    f"rollup of '{name}' crosses {group}: answers show one "
                    "dimension at a time (docs/kpi.md, 'What can be asked').",
                )
            rollups.append(tuple(group))
        if not (sql and time and user):
            return None
        desc = spec["description"].value if "description" in spec else ""
        where = f"{self.file}:{spec['sql'].line}:{spec['sql'].column}"
        fact = Fact(name, sql, time, user, tuple(dims), tuple(rollups), str(desc), where)
        for problem in fact_problems(fact):  # the file is refused; its KPIs still resolve
            self.error(spec["sql"], f"fact '{name}': {problem}")
        return fact

    def names(self, node: Node | None, what: str, where: Node) -> list[str]:
        if node is None:
            return []
        if not isinstance(node.value, list) or not all(
            isinstance(n.value, str) and _NAME.match(n.value) for n in node.value
        ):
            self.error(node, f"{what} must be a list of column names.")
            return []
        return [n.value for n in node.value]

    def kpi(self, name: str, node: Node) -> Kpi | None:
        spec = self.mapping(node, f"KPI '{name}'", ("description", "fact", "measure", "population"))
        fact_node = spec.get("fact")
        fact = self.known.get(fact_node.value) if fact_node else None
        if fact is None:
            self.error(
                fact_node or node,
                f"KPI '{name}' needs a known fact; one of: {', '.join(sorted(self.known))}.",
            )
            return None
        measure = self.measure(spec.get("measure"), f"KPI '{name}'", node, fact)
        population = spec["population"].value if "population" in spec else None
        if measure is None:
            return None
        desc = self.text(spec.get("description"), f"KPI '{name}': description", node)
        return Kpi(name, desc, fact, measure, population)

    def measure(self, node: Node | None, what: str, where: Node, fact: Fact) -> Measure | None:
        if node is None or not isinstance(node.value, dict) or not node.value:
            self.error(node or where, f"{what} needs a measure: one of {', '.join(_MEASURES)}.")
            return None
        spec = cast(dict[str, Node], node.value)
        kind = next((k for k in _MEASURES if k in spec), None)
        if kind is None:
            self.error(
                node, f"{what}: unknown measure {list(spec)}; one of {', '.join(_MEASURES)}."
            )
            return None
        if kind == "ratio":
            parts = spec["ratio"].value
            if not isinstance(parts, list) or len(parts) != 2:
                self.error(spec["ratio"], f"{what}: ratio takes [numerator, denominator].")
                return None
            num, den = (self.simple(p, what, fact) for p in parts)
            return Ratio(num, den) if num and den else None
        if kind == "share_within":
            inner = self.simple(spec["share_within"], what, fact)
            across = spec.get("across")
            if across is None or across.value not in fact.dimensions:
                self.error(across or node, f"{what}: share_within needs 'across: <dimension>'.")
                return None
            return ShareWithin(inner, across.value) if inner else None
        return self.simple(node, what, fact)

    def simple(self, node: Node, what: str, fact: Fact) -> Simple | None:
        spec = cast(dict[str, Any], node.value) if isinstance(node.value, dict) else {}
        kind = next((k for k in _SIMPLE if k in spec), None)
        if kind is None:
            self.error(node, f"{what}: expected one of {', '.join(_SIMPLE)}.")
            return None
        column = spec[kind].value
        where = spec["where"].value if "where" in spec else None
        if kind == "count":
            return Count(None if column == "*" else column, where)
        if kind == "count_distinct":
            return CountDistinct(column, where)
        if kind == "sum":
            return Sum(column, where)
        if kind == "avg":
            return Avg(column, where)
        p = spec.get("p")
        if p is None or not isinstance(p.value, int | float) or not 0 < p.value < 1:
            self.error(p or node, f"{what}: quantile needs p between 0 and 1.")
            return None
        return Quantile(column, float(p.value), where)

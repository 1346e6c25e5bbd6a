"""YAML with positions: every value keeps the line and column it came from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from vigie.errors import PolicyError


@dataclass(frozen=True)
class Node:
    """A parsed YAML value and its 1-based position."""

    value: Any  # dict[str, Node] | list[Node] | scalar
    line: int
    column: int
    keys: dict[str, tuple[int, int]] | None = None  # for mappings: where each key stands


def parse(text: str, file: str) -> Node:
    """Parse ``text``; syntax errors and duplicate keys become a PolicyError with a position."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else file
        raise PolicyError(
            f"{where}: not valid YAML: {exc.problem}", hint="Fix the syntax at that place."
        ) from None
    if root is None:
        raise PolicyError(f"{file}: the policy file is empty.", hint=_START_HINT)
    return _convert(root, file)


_START_HINT = "Start from `vigie policy suggest --from DSN` or examples/fleet-policy.yaml."


def _convert(node: yaml.Node, file: str) -> Node:
    line, col = node.start_mark.line + 1, node.start_mark.column + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Node] = {}
        marks: dict[str, tuple[int, int]] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node)
            if not isinstance(key, str):
                key = str(key)
            if key in out:
                raise PolicyError(
                    f"{file}:{key_node.start_mark.line + 1}:{key_node.start_mark.column + 1}: "
                    f"'{key}' appears twice in the same mapping.",
                    hint="Keep one entry: a duplicate could silently override a rule.",
                )
            out[key] = _convert(value_node, file)
            marks[key] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
        return Node(out, line, col, marks)
    if isinstance(node, yaml.SequenceNode):
        return Node([_convert(v, file) for v in node.value], line, col)
    return Node(_scalar(node), line, col)


def _scalar(node: yaml.Node) -> Any:
    return yaml.constructor.SafeConstructor().construct_object(node, deep=True)

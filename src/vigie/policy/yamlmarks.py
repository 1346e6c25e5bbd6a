"""YAML with positions: every value keeps the line and column it came from.

Hostile files are refused with a position, never a traceback or a hang: files over
``MAX_BYTES``; anchors reused more than ``MAX_ALIASES`` times or within themselves (the
"billion laughs" and a recursive alias); more than ``MAX_NODES`` values; any tag but the
plain YAML ones (``!!python/...``, ``!!binary``, ``!!set``...); merge keys (``<<``); values
the safe constructor cannot build (an invalid date such as 2026-02-30).
"""

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


MAX_BYTES = 1 << 20
MAX_ALIASES = 32
MAX_NODES = 50_000
_PLAIN_TAGS = {
    f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "map", "seq")
} | {"tag:yaml.org,2002:timestamp"}
_MERGE = "tag:yaml.org,2002:merge"


def parse(text: str, file: str) -> Node:
    """Parse ``text``; syntax errors and duplicate keys become a PolicyError with a position."""
    if len(text.encode()) > MAX_BYTES:
        raise PolicyError(
            f"{file}: {len(text.encode()):,} bytes; a policy or metrics file may hold at most "
            f"{MAX_BYTES:,}.",
            hint="Split it, or check that this is the file you meant.",
        )
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
    return _Converter(file).convert(root)


_START_HINT = "Start from `vigie policy suggest --from DSN` or examples/fleet-policy.yaml."


class _Converter:
    """The composed YAML graph as ``Node``s, refusing what a declarative file never needs."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.seen: set[int] = set()  # nodes converted once: meeting one again is an alias
        self.open: set[int] = set()  # nodes being converted: meeting one is a recursion
        self.aliases = self.nodes = 0

    def refuse(self, node: yaml.Node, message: str, hint: str) -> PolicyError:
        mark = node.start_mark
        return PolicyError(f"{self.file}:{mark.line + 1}:{mark.column + 1}: {message}", hint=hint)

    def convert(self, node: yaml.Node) -> Node:
        if id(node) in self.open:
            raise self.refuse(node, "an alias refers to the value that contains it.",
                              "Write the value out; vigie files need no recursion.")  # fmt: skip
        if id(node) in self.seen:
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise self.refuse(node, f"more than {MAX_ALIASES} alias uses (*name).",
                                  "Write the values out instead of repeating anchors.")  # fmt: skip
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.refuse(node, f"more than {MAX_NODES:,} values.",
                              "Check that this is a vigie policy or metrics file.")  # fmt: skip
        if node.tag not in _PLAIN_TAGS:
            raise self.refuse(node, f"tag {node.tag!r} is not allowed.",
                              "Use plain YAML values: text, numbers, lists, mappings.")  # fmt: skip
        self.seen.add(id(node))
        self.open.add(id(node))
        try:
            return self._value(node)
        finally:
            self.open.discard(id(node))

    def _value(self, node: yaml.Node) -> Node:
        line, col = node.start_mark.line + 1, node.start_mark.column + 1
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Node] = {}
            marks: dict[str, tuple[int, int]] = {}
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE:
                    raise self.refuse(key_node, "merge keys (<<) are not supported.",
                                      "Write each rule out in full.")  # fmt: skip
                key = self._scalar(key_node)
                key = key if isinstance(key, str) else str(key)
                if key in out:
                    raise self.refuse(
                        key_node, f"'{key}' appears twice in the same mapping.",
                        "Keep one entry: a duplicate could silently override a rule.",
                    )  # fmt: skip
                out[key] = self.convert(value_node)
                marks[key] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            return Node(out, line, col, marks)
        if isinstance(node, yaml.SequenceNode):
            return Node([self.convert(v) for v in node.value], line, col)
        return Node(self._scalar(node), line, col)

    def _scalar(self, node: yaml.Node) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise self.refuse(node, "a key must be plain text.", "Write the key as text.")
        if node.tag not in _PLAIN_TAGS:
            raise self.refuse(node, f"tag {node.tag!r} is not allowed.",
                              "Use plain YAML values: text, numbers, lists, mappings.")  # fmt: skip
        try:
            return yaml.constructor.SafeConstructor().construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, OverflowError) as exc:
            raise self.refuse(
                node,
                f"cannot read this value ({type(exc).__name__}).",
                "Quote it if it is text, or correct it (e.g. a real date).",
            ) from None

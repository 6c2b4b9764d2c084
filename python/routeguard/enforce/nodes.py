"""Reading a YAML node tree against a schema, keeping every problem's line and column.

``yaml.compose`` keeps the position of every node; :class:`NodeReader` reads mappings (with
unknown- and duplicate-key checks), text, YAML-typed scalars, numbers and booleans out of it and
records each problem as a :class:`~routeguard.errors.PolicyProblem` at the node it concerns,
raising :class:`Invalid` so the caller can skip that part and keep checking the rest.
``enforce/policy.py`` builds the policy loader on it.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from typing import Any

from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from routeguard.enforce.model import Number, Scalar
from routeguard.enforce.patterns import PatternError
from routeguard.errors import PolicyProblem

__all__ = ["Invalid", "NodeReader", "describe", "first_line"]

_I64 = (-(2**63), 2**63 - 1)


class Invalid(Exception):
    """One problem found (already recorded); caught at the nearest level that can carry on."""


class NodeReader:
    """Typed reads of YAML nodes; each failure is recorded in :attr:`problems`."""

    def __init__(self) -> None:
        self.problems: list[PolicyProblem] = []
        self.constructor = SafeConstructor()
        # (tag, text) -> the value it was read as; a policy repeats few distinct values.
        self._values: dict[tuple[str, str], Scalar] = {}

    # -- reporting --

    def fail(self, node: Node, path: str, message: str) -> Invalid:
        mark = node.start_mark
        self.problems.append(PolicyProblem(mark.line + 1, mark.column + 1, path, message))
        return Invalid(message)

    # -- shapes --

    def mapping(
        self, node: Node, path: str, kind: str, allowed: tuple[str, ...] | None = None
    ) -> dict[str, tuple[Node, Node]]:
        """The entries of a mapping node by key text; repeated keys, and keys not in
        ``allowed`` (when given), are problems."""
        if not isinstance(node, MappingNode):
            raise self.fail(node, path, f"expected a mapping ({kind}), got {describe(node)}")
        out: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            # The common case (a new, allowed text key) stays a few checks; paths and messages
            # are only built for a problem.
            if isinstance(key_node, ScalarNode):
                key = key_node.value
                if key not in out and (allowed is None or key in allowed):
                    out[key] = (key_node, value_node)
                    continue
            self._bad_key(key_node, path, out, allowed)
        return out

    def _bad_key(
        self,
        key_node: Node,
        path: str,
        seen: dict[str, tuple[Node, Node]],
        allowed: tuple[str, ...] | None,
    ) -> None:
        """Record why ``key_node`` cannot be a key of the mapping read so far into ``seen``."""
        if not isinstance(key_node, ScalarNode):
            self.fail(key_node, path, "keys must be plain text")
            return
        key = key_node.value
        where = f"{path}.{key}" if path else key
        if key in seen:
            first = seen[key][0].start_mark.line + 1
            self.fail(key_node, where, f"duplicate key '{key}' (first given on line {first})")
            return
        hint = difflib.get_close_matches(key, allowed or (), n=1)
        also = f" (did you mean '{hint[0]}'?)" if hint else ""
        self.fail(
            key_node,
            where,
            f"unknown key '{key}'{also}; expected one of {', '.join(allowed or ())}",
        )

    def text(
        self, node: Node, path: str, what: str = "a string", *, allow_empty: bool = False
    ) -> str:
        """The text of a scalar as written (YAML's implicit typing does not apply). A quoted
        empty string is only accepted where it means something (a pattern)."""
        if not isinstance(node, ScalarNode):
            raise self.fail(node, path, f"expected {what}, got {describe(node)}")
        if node.tag == "tag:yaml.org,2002:null":
            raise self.fail(node, path, f"expected {what}, got nothing")
        if node.value == "" and not allow_empty:
            raise self.fail(node, path, f"expected {what}, got an empty string")
        return str(node.value)

    def texts(self, node: Node, path: str, what: str) -> tuple[str, ...]:
        """One text or a non-empty list of them."""
        if isinstance(node, SequenceNode):
            if not node.value:
                raise self.fail(node, path, f"expected {what} or a non-empty list of them")
            return tuple(self.text(n, f"{path}[{i}]", what) for i, n in enumerate(node.value))
        return (self.text(node, path, what),)

    def value(self, node: Node, path: str) -> Scalar:
        """A YAML-typed scalar to compare arguments with: string, number, boolean or null."""
        if not isinstance(node, ScalarNode):
            raise self.fail(
                node, path, f"expected a string, number, boolean or null, got {describe(node)}"
            )
        key = (node.tag, node.value)
        try:
            return self._values[key]
        except KeyError:
            pass
        v = self._build(node, path)
        self._values[key] = v
        return v

    def _build(self, node: ScalarNode, path: str) -> Scalar:
        """Construct a scalar's value and check it is one an argument can be compared with."""
        try:
            # The scalar constructor directly: construct_object would also register every node.
            build = self.constructor.yaml_constructors.get(node.tag)
            if build is None:
                raise ValueError(f"unknown tag {node.tag}")
            v = build(self.constructor, node)
        except Exception as e:  # a tag or timestamp PyYAML cannot build
            raise self.fail(node, path, f"cannot read this value: {first_line(e)}") from None
        if v is None or isinstance(v, str | bool):
            return v
        if isinstance(v, int):
            if not _I64[0] <= v <= _I64[1]:
                raise self.fail(node, path, f"integer {v} is outside the 64-bit range")
            return v
        if isinstance(v, float):
            if not math.isfinite(v):
                raise self.fail(node, path, f"{node.value!r} is not a finite number")
            return v
        raise self.fail(
            node, path, f"a {type(v).__name__} is not a JSON value; quote it to compare as text"
        )

    def number(self, node: Node, path: str, *, integer: bool = False) -> Number:
        v = self.value(node, path)
        if (
            isinstance(v, bool)
            or not isinstance(v, int | float)
            or (integer and isinstance(v, float))
        ):
            kind = "an integer" if integer else "a number"
            raise self.fail(node, path, f"expected {kind}, got {node.value!r}")
        return v

    def boolean(self, node: Node, path: str) -> bool:
        v = self.value(node, path)
        if not isinstance(v, bool):
            raise self.fail(node, path, f"expected true or false, got {node.value!r}")
        return v

    def parsed(self, node: Node, path: str, parse: Callable[[str], Any], what: str) -> Any:
        text = self.text(node, path, what)
        try:
            return parse(text)
        except PatternError as e:
            raise self.fail(node, path, f"{e}") from None


def describe(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return f"{node.value!r}" if isinstance(node, ScalarNode) else "something else"


def first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__

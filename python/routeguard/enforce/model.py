"""The normalised policy: the one form both the reference interpreter and the Rust matcher read.

``enforce/policy.py`` builds it from YAML (validated, defaults explicit, numeric conditions as
open/closed bounds, JSON paths pre-split, rules in file order); :func:`to_json` encodes it for
``routeguard._core.CompiledPolicy`` (``rust/policy/compile.rs`` deserialises exactly these
fields and rejects any other), and ``enforce/reference.py`` interprets the Structs directly.
Predicates are a union tagged by ``op``; ``Not`` nests one predicate.
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = [
    "Bounds",
    "Equals",
    "Exists",
    "Glob",
    "In",
    "Not",
    "Number",
    "PathRef",
    "Policy",
    "Pred",
    "Range",
    "Regex",
    "Rule",
    "RuleEffect",
    "Scalar",
    "Test",
    "TimeWindow",
    "to_json",
]

Scalar = str | int | float | bool | None
"""A value an argument is compared with."""
Number = int | float
RuleEffect = Literal["allow", "deny", "require_approval", "redact"]


class Bounds(msgspec.Struct, frozen=True):
    """A numeric interval; a missing end is open."""

    lo: Number | None = None
    lo_incl: bool = False
    hi: Number | None = None
    hi_incl: bool = False


class Equals(msgspec.Struct, frozen=True, tag="equals", tag_field="op"):
    value: Scalar


class In(msgspec.Struct, frozen=True, tag="in", tag_field="op"):
    values: tuple[Scalar, ...]


class Glob(msgspec.Struct, frozen=True, tag="glob", tag_field="op"):
    pattern: str


class Regex(msgspec.Struct, frozen=True, tag="regex", tag_field="op"):
    pattern: str


class Range(msgspec.Struct, frozen=True, tag="range", tag_field="op"):
    lo: Number | None = None
    lo_incl: bool = False
    hi: Number | None = None
    hi_incl: bool = False


class Exists(msgspec.Struct, frozen=True, tag="exists", tag_field="op"):
    value: bool


class Not(msgspec.Struct, frozen=True, tag="not", tag_field="op"):
    test: Test


Test = Equals | In | Glob | Regex | Range | Exists | Not


class Pred(msgspec.Struct, frozen=True):
    """``test`` must hold of the argument at ``path``."""

    path: str
    segments: tuple[str | int, ...]
    test: Test


class PathRef(msgspec.Struct, frozen=True):
    """A path a redact rule masks."""

    path: str
    segments: tuple[str | int, ...]


class TimeWindow(msgspec.Struct, frozen=True):
    """UTC conditions on the decision time: daily ``[start, end)`` seconds (wrapping past
    midnight when start > end), a weekday bit mask (bit 0 = Monday), ``after <= now < before``.
    """

    hours: tuple[int, int] | None = None
    days: int | None = None
    after: float | None = None
    before: float | None = None


class Rule(msgspec.Struct, frozen=True):
    """One normalised rule; every condition that is set must hold."""

    id: str
    effect: RuleEffect
    line: int
    tools: tuple[str, ...]
    reason: str | None = None
    agents: tuple[str, ...] | None = None
    roles: tuple[str, ...] | None = None
    trust: Bounds | None = None
    depth: Bounds | None = None
    args: tuple[Pred, ...] = ()
    labels_any: tuple[str, ...] = ()
    labels_all: tuple[str, ...] = ()
    labels_none: tuple[str, ...] = ()
    step: Bounds | None = None
    time: TimeWindow | None = None
    redact: tuple[PathRef, ...] = ()


class Policy(msgspec.Struct, frozen=True):
    """A validated policy: rules in file order."""

    rules: tuple[Rule, ...]
    version: int = 1


def to_json(policy: Policy) -> str:
    """The normalised policy as the JSON ``routeguard._core.CompiledPolicy`` compiles."""
    return msgspec.json.encode(policy).decode()

"""The reference interpreter: the policy semantics in plain Python, as directly as they read.

This is the executable specification. It walks every rule of a normalised
:class:`~routeguard.enforce.model.Policy` in order, with no index and no precompilation
beyond ``re``'s own cache, and decides by the precedence ``docs/policy.md`` states. The
compiled Rust matcher behind :class:`~routeguard.enforce.engine.PolicyEngine` must give the
same :class:`Decision` for every policy and request; ``tests/test_policy_differential.py``
checks that on random ones. It is slow on purpose: do not use it to enforce.

Data flow: ``decide(policy, request)`` → the tool name made canonical (``enforce/names.py``;
a name mixing scripts is refused) → for each rule, tool globs, then principal, context and
argument conditions (each argument read through :func:`scalar_view`, which gives Python values
the same JSON reading the Rust side applies) → the first matching deny, else the first
require_approval, else the first allow, else the default deny; redactions collected from every
matching redact rule when the call may proceed.

An argument test answers True, False or None: None when the value is of a type the test does
not compare with (a list for ``gt``, ``true`` for a glob, NaN for any number). Tests combine by
Kleene logic, and a rule left at None matches when it restricts (deny, require_approval,
redact) and does not when it permits (allow).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from typing import Any

import msgspec

from routeguard.enforce.decision import (
    DEFAULT_RULE_ID,
    TOOL_NAME_RULE_ID,
    Decision,
    Redaction,
    Request,
)
from routeguard.enforce.model import (
    Bounds,
    Equals,
    Exists,
    Glob,
    In,
    Not,
    Policy,
    Range,
    Regex,
    Rule,
    Test,
    TimeWindow,
)
from routeguard.enforce.names import normalize_tool, tool_name_problem
from routeguard.enforce.patterns import compile_glob, compile_regex

__all__ = ["MISSING", "OTHER", "decide", "numeric_str", "rule_matches", "scalar_view"]


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


MISSING: Any = _Marker("MISSING")
"""What a path that does not resolve reads as."""
OTHER: Any = _Marker("OTHER")
"""What a list, an object or a value of any other type reads as (only ``exists`` judges it)."""

_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


def resolve(args: Any, segments: tuple[str | int, ...]) -> Any:
    """The value at ``segments`` (keys index dicts only, integers index lists/tuples only).

    Reads through the base types' methods, as the Rust side reads through the C API, so a
    subclass that overrides ``__getitem__`` cannot show the two different values.
    """
    cur = args
    for seg in segments:
        if isinstance(seg, str):
            cur = dict.get(cur, seg, MISSING) if isinstance(cur, dict) else MISSING
        elif isinstance(cur, list | tuple):
            base: Any = list if isinstance(cur, list) else tuple
            cur = base.__getitem__(cur, seg) if seg < base.__len__(cur) else MISSING
        else:
            cur = MISSING
        if cur is MISSING:
            return MISSING
    return cur


def scalar_view(v: Any) -> Any:
    """Read a Python value as the policy sees JSON: None, bool, an i64 int, a float, a str,
    or :data:`OTHER`. Ints outside 64 bits become floats (beyond a float's range, OTHER)."""
    if v is None or isinstance(v, bool | str | float):
        return v
    if isinstance(v, int):
        if _I64_MIN <= v <= _I64_MAX:
            return v
        try:
            return float(v)
        except OverflowError:
            return OTHER
    return OTHER


def numeric_str(s: str) -> int | float | None:
    """The number ``s`` spells if it is exactly a JSON number (no ``+``, spaces, ``_``, hex or
    NaN): an int in the i64 range, else the nearest float (``"1e400"`` is infinite)."""
    if not _JSON_NUMBER.fullmatch(s):
        return None
    if len(s) <= 20 and not any(c in s for c in ".eE"):
        i = int(s)
        if _I64_MIN <= i <= _I64_MAX:
            return i
    return float(s)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _num_in(nums: list[Any], v: Any) -> bool | None:
    if not nums or math.isnan(v):
        return None
    return any(m == v for m in nums)  # Python compares int and float exactly


def _member(values: tuple[Any, ...], v: Any) -> bool | None:
    """Whether ``v`` equals one of ``values``; None when none of them has its type."""
    if v is OTHER:
        return None
    if v is None:
        return True if any(m is None for m in values) else None
    if isinstance(v, bool):
        bools = [m for m in values if isinstance(m, bool)]
        return v in bools if bools else None
    nums = [m for m in values if _is_num(m)]
    if isinstance(v, str):
        strs = [m for m in values if isinstance(m, str)]
        if v in strs:
            return True
        n = numeric_str(v) if nums else None
        if n is not None:
            return _num_in(nums, n)
        return False if strs else None
    return _num_in(nums, v)


def _in_bounds(b: Bounds | Range, v: Any) -> bool:
    if b.lo is not None and not (b.lo <= v if b.lo_incl else b.lo < v):
        return False
    return b.hi is None or (v <= b.hi if b.hi_incl else v < b.hi)


def test_holds(test: Test, v: Any) -> bool | None:
    """What ``test`` says of the (already :func:`scalar_view`-ed) value ``v``: True, False,
    or None when it cannot be evaluated on a value of that type."""
    if isinstance(test, Exists):
        return (v is not MISSING) == test.value
    if isinstance(test, Not):
        inner = test_holds(test.test, v)
        return None if inner is None else not inner
    if v is MISSING:
        return False  # a path that does not resolve satisfies only `exists` and `not`
    if isinstance(test, Equals):
        return _member((test.value,), v)
    if isinstance(test, In):
        return _member(test.values, v)
    if isinstance(test, Glob):
        return compile_glob(test.pattern).fullmatch(v) is not None if isinstance(v, str) else None
    if isinstance(test, Regex):
        return compile_regex(test.pattern).search(v) is not None if isinstance(v, str) else None
    n = numeric_str(v) if isinstance(v, str) else v if _is_num(v) else None
    if n is None or math.isnan(n):
        return None
    return _in_bounds(test, n)


def _time_holds(t: TimeWindow, now: float) -> bool:
    if not math.isfinite(now):
        return False
    if (t.after is not None and now < t.after) or (t.before is not None and now >= t.before):
        return False
    secs = math.floor(now)
    if t.hours is not None:
        start, end = t.hours
        sod = secs % 86_400
        inside = start <= sod < end if start < end else (sod >= start or sod < end)
        if not inside:
            return False
    if t.days is not None:
        weekday = (secs // 86_400 + 3) % 7  # 1970-01-01 was a Thursday; Monday is 0
        if not t.days & (1 << weekday):
            return False
    return True


def rule_matches(rule: Rule, request: Request, now: float) -> bool:
    """Whether every condition of ``rule`` holds for ``request`` at time ``now``."""
    p, ctx = request.principal, request.context
    if not any(compile_glob(g).fullmatch(request.tool) for g in rule.tools):
        return False
    if rule.agents is not None and not any(
        compile_glob(g).fullmatch(p.agent_id) for g in rule.agents
    ):
        return False
    if rule.roles is not None and p.role not in rule.roles:
        return False
    if rule.trust is not None and not _in_bounds(rule.trust, float(p.trust)):
        return False
    if rule.depth is not None and not _in_bounds(rule.depth, p.delegation_depth):
        return False
    if rule.step is not None and not _in_bounds(rule.step, ctx.step):
        return False
    labels = ctx.labels
    if rule.labels_any and not any(label in labels for label in rule.labels_any):
        return False
    if not all(label in labels for label in rule.labels_all):
        return False
    if any(label in labels for label in rule.labels_none):
        return False
    if rule.time is not None and not _time_holds(rule.time, now):
        return False
    args: Mapping[str, Any] = request.args
    for pred in rule.args:
        v = resolve(args, pred.segments)
        holds = test_holds(pred.test, scalar_view(v) if v is not MISSING else MISSING)
        if holds is False or (holds is None and rule.effect == "allow"):
            return False
    return True  # every test holds, or some cannot judge the value and the rule restricts


def decide(policy: Policy, request: Request) -> Decision:
    """The decision for ``request`` under ``policy``, by the documented semantics."""
    tool = normalize_tool(request.tool)
    if tool_name_problem(tool) is not None:
        return Decision("deny", TOOL_NAME_RULE_ID)
    request = msgspec.structs.replace(request, tool=tool)
    now = request.context.now if request.context.now is not None else time.time()
    first: dict[str, Rule] = {}
    redactions: list[Redaction] = []
    for rule in policy.rules:
        if not rule_matches(rule, request, now):
            continue
        if rule.effect == "redact":
            for ref in rule.redact:
                if all(r.path != ref.path for r in redactions):
                    redactions.append(Redaction(ref.path, rule.id))
        else:
            first.setdefault(rule.effect, rule)
    if "deny" in first:
        return Decision("deny", first["deny"].id)
    if "require_approval" in first:
        return Decision("require_approval", first["require_approval"].id, tuple(redactions))
    if "allow" in first:
        return Decision("redact" if redactions else "allow", first["allow"].id, tuple(redactions))
    return Decision("deny", DEFAULT_RULE_ID)

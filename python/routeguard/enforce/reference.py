"""The reference interpreter: the policy semantics in plain Python, as directly as they read.

This is the executable specification. It walks every rule of a normalised
:class:`~routeguard.enforce.model.Policy` in order, with no index and no precompilation
beyond ``re``'s own cache, and decides by the precedence ``docs/policy.md`` states. The
compiled Rust matcher behind :class:`~routeguard.enforce.engine.PolicyEngine` must give the
same :class:`Decision` for every policy and request; ``tests/test_policy_differential.py``
checks that on random ones. It is slow on purpose: do not use it to enforce.

Data flow: ``decide(policy, request)`` → for each rule, tool globs, then principal, context
and argument conditions (each argument read through :func:`scalar_view`, which gives Python
values the same JSON reading the Rust side applies) → the first matching deny, else the first
require_approval, else the first allow, else the default deny; redactions collected from every
matching redact rule when the call may proceed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from routeguard.enforce.decision import DEFAULT_RULE_ID, Decision, Redaction, Request
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
from routeguard.enforce.patterns import compile_glob, compile_regex

__all__ = ["MISSING", "OTHER", "decide", "rule_matches", "scalar_view"]


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


MISSING: Any = _Marker("MISSING")
"""What a path that does not resolve reads as."""
OTHER: Any = _Marker("OTHER")
"""What a list, an object or a value of any other type reads as (only ``exists`` sees it)."""

_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1


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


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _scalar_eq(want: Any, v: Any) -> bool:
    if isinstance(want, bool) or isinstance(v, bool):
        return isinstance(want, bool) and isinstance(v, bool) and want == v
    if want is None:
        return v is None
    if isinstance(want, str):
        return isinstance(v, str) and want == v
    return _is_num(v) and want == v  # Python compares int and float exactly


def _in_bounds(b: Bounds | Range, v: Any) -> bool:
    if b.lo is not None and not (b.lo <= v if b.lo_incl else b.lo < v):
        return False
    return b.hi is None or (v <= b.hi if b.hi_incl else v < b.hi)


def test_holds(test: Test, v: Any) -> bool:
    """Whether ``test`` holds of the (already :func:`scalar_view`-ed) value ``v``."""
    if isinstance(test, Exists):
        return (v is not MISSING) == test.value
    if isinstance(test, Not):
        return not test_holds(test.test, v)
    if isinstance(test, Equals):
        return _scalar_eq(test.value, v)
    if isinstance(test, In):
        return any(_scalar_eq(w, v) for w in test.values)
    if isinstance(test, Glob):
        return isinstance(v, str) and compile_glob(test.pattern).fullmatch(v) is not None
    if isinstance(test, Regex):
        return isinstance(v, str) and compile_regex(test.pattern).search(v) is not None
    return _is_num(v) and _in_bounds(test, v)


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
    return all(
        test_holds(
            pred.test,
            scalar_view(v) if (v := resolve(args, pred.segments)) is not MISSING else MISSING,
        )
        for pred in rule.args
    )


def decide(policy: Policy, request: Request) -> Decision:
    """The decision for ``request`` under ``policy``, by the documented semantics."""
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

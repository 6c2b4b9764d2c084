"""The policy engine: a loaded policy compiled into the Rust matcher, asked once per tool call.

Data flow: :meth:`PolicyEngine.from_yaml` → ``enforce/policy.py`` parses and validates the
YAML (every regex also checked by the Rust engine, so a pattern only Python accepts fails at
load with its line) → the normalised policy as JSON → ``routeguard._core.CompiledPolicy``
compiles it once. :meth:`PolicyEngine.decide` hands the principal's fields, the tool name, the
argument ``dict`` itself (Rust reads only the paths the candidate rules test, through keys it
interned at compile time: no serialisation) and the context to the matcher, and wraps the
answer in a :class:`~routeguard.enforce.decision.Decision`. :meth:`PolicyEngine.decide_json`
takes the arguments as the JSON text an LLM's tool call carries, parsed in Rust. Both first make
the tool name canonical (``enforce/names.py``: case, NFKC, invisible characters) and refuse a
name that mixes scripts, as the reference interpreter does.
"""

from __future__ import annotations

import copy
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from routeguard._native import core
from routeguard.enforce.decision import (
    TOOL_NAME_RULE_ID,
    Context,
    Decision,
    Effect,
    Principal,
    Redaction,
    Request,
)
from routeguard.enforce.model import Policy, Rule, to_json
from routeguard.enforce.names import normalize_tool, tool_name_problem
from routeguard.enforce.patterns import parse_path
from routeguard.enforce.policy import load_policy, load_policy_file
from routeguard.errors import InvalidRequest, PolicyError, PolicyProblem

__all__ = ["REDACTED", "PolicyEngine", "apply_redactions"]

REDACTED = "[REDACTED]"
_EMPTY_CONTEXT = Context()
_EMPTY_ARGS: Mapping[str, Any] = {}
_RULE_LINE = re.compile(r"\(line (\d+)\)")
_MAX_REDACTION_SETS = 1024
_TOOL_NAME_DENIAL = Decision("deny", TOOL_NAME_RULE_ID)
_MAX_TOOL_NAMES = 4096
# Cached for a refused name: control characters never survive normalisation, so no canonical
# name equals it.
_REFUSED = "\x00"


def _rust_regex_check(pattern: str) -> str | None:
    return core.CompiledPolicy.regex_error(pattern)


class PolicyEngine:
    """Decides tool calls against one compiled policy. Immutable; share it across threads."""

    __slots__ = ("_compiled", "_policy", "_redaction_sets", "_rules", "_source", "_tool_names")

    def __init__(self, policy: Policy, *, source: str = "<policy>") -> None:
        self._policy = policy
        self._source = source
        self._rules = {r.id: r for r in policy.rules}
        self._redaction_sets: dict[tuple[tuple[str, str], ...], tuple[Redaction, ...]] = {}
        self._tool_names: dict[str, str] = {}
        try:
            self._compiled = core.CompiledPolicy(to_json(policy))
        except ValueError as e:  # only for a policy that bypassed load_policy's checks
            m = _RULE_LINE.search(str(e))
            line = int(m.group(1)) if m else 1
            raise PolicyError([PolicyProblem(line, 1, "", str(e))], source=source) from None

    @classmethod
    def from_yaml(cls, source: str | os.PathLike[str]) -> PolicyEngine:
        """Load a policy from YAML text, or from a file given as a path object or as a string
        ending in ``.yaml``/``.yml`` with no newline. Raises ``PolicyError`` with line numbers.
        """
        if isinstance(source, os.PathLike) or (
            "\n" not in source and source.endswith((".yaml", ".yml"))
        ):
            return cls.from_file(source)
        return cls(load_policy(source, regex_check=_rust_regex_check))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> PolicyEngine:
        """Load a policy file."""
        p = Path(path)
        return cls(load_policy_file(p, regex_check=_rust_regex_check), source=str(p))

    @property
    def policy(self) -> Policy:
        """The normalised policy this engine enforces."""
        return self._policy

    def rule(self, rule_id: str) -> Rule | None:
        """The rule with this id (to show its ``reason``), or None (e.g. the default deny)."""
        return self._rules.get(rule_id)

    def __len__(self) -> int:
        return len(self._policy.rules)

    def __repr__(self) -> str:
        return f"PolicyEngine({self._source!r}, rules={len(self)})"

    def decide(
        self,
        principal: Principal,
        tool: str,
        args: Mapping[str, Any] | None = None,
        context: Context | None = None,
    ) -> Decision:
        """Decide on one tool call. ``args`` is the call's JSON-like ``dict`` (read in place).

        Raises :class:`~routeguard.errors.InvalidRequest` (fail closed) when the request
        cannot be read: a string that is not valid Unicode, an integer step beyond 64 bits.
        """
        ctx = context if context is not None else _EMPTY_CONTEXT
        now = ctx.now if ctx.now is not None else time.time()
        tool = self._tool_names.get(tool) or self._canonical(tool)
        if tool == _REFUSED:
            return _TOOL_NAME_DENIAL
        try:
            effect, rule_id, red = self._compiled.decide(
                principal.agent_id,
                principal.role,
                principal.trust,
                principal.delegation_depth,
                tool,
                args if args is not None else _EMPTY_ARGS,
                ctx.step,
                ctx.labels,
                now,
            )
        except (ValueError, OverflowError) as e:
            raise InvalidRequest(f"cannot decide on tool call '{tool}': {e}") from None
        if red:
            return Decision(_effect(effect), rule_id, self._redactions(red))
        return Decision(_effect(effect), rule_id)

    def decide_json(
        self,
        principal: Principal,
        tool: str,
        args_json: str | bytes,
        context: Context | None = None,
    ) -> Decision:
        """Decide on a tool call whose arguments are JSON text (as in an LLM's tool call)."""
        ctx = context if context is not None else _EMPTY_CONTEXT
        now = ctx.now if ctx.now is not None else time.time()
        tool = self._tool_names.get(tool) or self._canonical(tool)
        if tool == _REFUSED:
            return _TOOL_NAME_DENIAL
        try:
            effect, rule_id, red = self._compiled.decide_json(
                principal.agent_id,
                principal.role,
                principal.trust,
                principal.delegation_depth,
                tool,
                args_json,
                ctx.step,
                ctx.labels,
                now,
            )
        except (ValueError, OverflowError) as e:
            raise InvalidRequest(f"cannot decide on tool call '{tool}': {e}") from None
        return Decision(_effect(effect), rule_id, self._redactions(red) if red else ())

    def _canonical(self, tool: str) -> str:
        """The canonical spelling of a called tool's name, or ``_REFUSED`` if it mixes scripts;
        a service calls few distinct tools, so each is worked out once (a bounded cache)."""
        name = normalize_tool(tool)
        if tool_name_problem(name) is not None:
            name = _REFUSED
        if len(self._tool_names) < _MAX_TOOL_NAMES:
            self._tool_names[tool] = name
        return name

    def _redactions(self, raw: tuple[tuple[str, str], ...]) -> tuple[Redaction, ...]:
        """``Redaction``s for the matcher's pairs; a policy yields few distinct sets, so they
        are built once each (a bounded cache: an adversary cannot grow it without limit)."""
        cached = self._redaction_sets.get(raw)
        if cached is None:
            cached = tuple(Redaction(p, r) for p, r in raw)
            if len(self._redaction_sets) < _MAX_REDACTION_SETS:
                self._redaction_sets[raw] = cached
        return cached

    def decide_request(self, request: Request) -> Decision:
        """:meth:`decide` for a :class:`~routeguard.enforce.decision.Request`."""
        return self.decide(request.principal, request.tool, request.args, request.context)


def _effect(name: str) -> Effect:
    # The Rust side only ever returns one of the four names; this narrows the type for mypy.
    return name  # type: ignore[return-value]


def apply_redactions(
    args: Mapping[str, Any], redactions: tuple[Redaction, ...], mask: Any = REDACTED
) -> dict[str, Any]:
    """A copy of ``args`` with the value at each redacted path replaced by ``mask``.

    Paths that do not resolve are left alone; ``args`` itself is not modified.
    """
    out: dict[str, Any] = copy.deepcopy(dict(args))
    for red in redactions:
        *parents, last = parse_path(red.path)
        cur: Any = out
        for seg in parents:
            cur = cur[seg] if _holds(cur, seg) else None
        if _holds(cur, last):
            cur[last] = mask
    return out


def _holds(container: Any, seg: str | int) -> bool:
    """Whether ``container[seg]`` is there (a key of a dict, an index of a list)."""
    if isinstance(seg, str):
        return isinstance(container, dict) and seg in container
    return isinstance(container, list) and seg < len(container)

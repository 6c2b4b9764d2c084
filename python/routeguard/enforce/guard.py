"""The guard: the one object an agent runtime asks before every tool call.

``Guard.check(tool, args)`` runs the layers in a fixed order and returns a :class:`Verdict`:

1. **delegation** — if the guard acts under a verified delegation chain that has expired,
   every call is refused (rule id ``<delegation>``);
2. **sandbox** — the caller's role and the current step's grants (``<sandbox>``);
3. **data flow** — a sensitive tool whose arguments carry a value first seen in an untrusted
   tool output (``<taint>``);
4. **policy** — the compiled rules, with the principal's trust score and delegation depth and
   the session's labels (``untrusted-data-seen`` once untrusted output was observed);
5. **approval** — a ``require_approval`` decision waits for the approval handler.

Arguments that cannot be read (malformed JSON, not an object, nested deeper than
:data:`MAX_ARGS_DEPTH`, too many objects) are refused first (rule id ``<invalid-arguments>``),
and a layer that fails on a call refuses it: ``check`` always returns a verdict. Then the
trust score takes the outcome (compliant, denied, or violation for layers 2-3) and the audit
log gets one row, whatever the outcome. Allowed calls run with the policy's redactions applied
(``Verdict.args``). After the tool runs, ``Guard.observe(tool, output)`` feeds its output to
the data-flow tracker. ``Guard.tool`` wraps a function to do both around each call.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, overload

import msgspec

from routeguard.enforce.approval import (
    ApprovalHandler,
    ApprovalOutcome,
    ApprovalRequest,
    aresolve,
    new_request_id,
    resolve,
)
from routeguard.enforce.audit import AuditLog, redact_secrets
from routeguard.enforce.decision import TOOL_NAME_RULE_ID, Context, Decision, Principal
from routeguard.enforce.engine import PolicyEngine, apply_redactions
from routeguard.enforce.identity import AgentIdentity, DelegationChain, VerifiedDelegation
from routeguard.enforce.names import normalize_tool, tool_name_problem
from routeguard.enforce.sandbox import SANDBOX_RULE_ID, Sandbox
from routeguard.enforce.taint import TAINT_RULE_ID, TaintTracker
from routeguard.enforce.trust import Outcome, TrustScore
from routeguard.errors import EnforcementError, InvalidRequest

__all__ = [
    "DELEGATION_RULE_ID",
    "INVALID_ARGS_RULE_ID",
    "MAX_ARGS_CONTAINERS",
    "MAX_ARGS_DEPTH",
    "Guard",
    "Stage",
    "ToolCallDenied",
    "Verdict",
]

DELEGATION_RULE_ID = "<delegation>"
INVALID_ARGS_RULE_ID = "<invalid-arguments>"
MAX_ARGS_DEPTH = 64
"""Nesting levels of objects and lists a call's arguments may have (the object itself is 1);
deeper arguments are refused before any layer walks them."""
MAX_ARGS_CONTAINERS = 100_000
"""Objects and lists a call's arguments may hold, a shared one counted each time it appears."""
_CLIPPED = "[clipped]"
_SURROGATE = re.compile("[\ud800-\udfff]")
_NOT_UNICODE = "the arguments hold a string that is not valid Unicode (a lone surrogate)"
_AUDIT_ITEMS = 1_000  # containers kept in the audit row of a refusal for the arguments' shape
_CONTAINERS = (Mapping, list, tuple, set, frozenset)
_log = logging.getLogger(__name__)

Stage = Literal["delegation", "arguments", "sandbox", "taint", "policy", "approval"]
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Verdict:
    """The guard's answer for one tool call."""

    allowed: bool
    """True if the call may run (allow, redact, or approved)."""
    decision: Decision
    """The deciding layer's decision (effect and rule id; sandbox/taint use ``<...>`` ids)."""
    args: dict[str, Any]
    """The arguments to run with (redactions applied)."""
    message: str
    """Refusal text for the agent when not allowed ("" when allowed)."""
    tool: str = ""
    stage: Stage = "policy"
    """Which layer decided: delegation, arguments, sandbox, taint, policy or approval."""
    reason: str = ""
    """Why, in a few words (the rule's reason, the sandbox's or taint tracker's explanation)."""
    approval: ApprovalOutcome | None = field(default=None)


class ToolCallDenied(EnforcementError):
    """A guarded tool call was refused; ``verdict`` holds the details, ``message`` the text."""

    code = "tool_call_denied"

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.message)
        self.verdict = verdict


def _children(value: Any) -> Iterable[Any]:
    if isinstance(value, Mapping):
        return value.values()
    return value if isinstance(value, _CONTAINERS) else ()


def _valid_text(s: str) -> bool:
    """Whether ``s`` is valid Unicode (a lone surrogate can be neither matched nor logged)."""
    return s.isascii() or _SURROGATE.search(s) is None


def _args_problem(value: Any) -> str:
    """Why no layer should walk ``value`` ("" if none): nested deeper than
    :data:`MAX_ARGS_DEPTH` (a cycle always is), more than :data:`MAX_ARGS_CONTAINERS` objects and
    lists once shared ones are counted each time they appear, or a key or string value that is
    not valid Unicode.

    Level by level, each distinct container once per level with how many times it appears,
    so a structure that shares its parts cannot make this walk long, and nothing recurses.
    """
    level: dict[int, tuple[Any, int]] = (
        {id(value): (value, 1)} if isinstance(value, _CONTAINERS) else {}
    )
    depth = total = 0
    while level:
        depth += 1
        if depth > MAX_ARGS_DEPTH:
            return f"the arguments are nested deeper than {MAX_ARGS_DEPTH} levels"
        total += sum(n for _, n in level.values())
        if total > MAX_ARGS_CONTAINERS:
            return f"the arguments hold more than {MAX_ARGS_CONTAINERS} objects and lists"
        nxt: dict[int, tuple[Any, int]] = {}
        for v, n in level.values():
            if isinstance(v, Mapping) and not all(_valid_text(k) for k in v if isinstance(k, str)):
                return _NOT_UNICODE
            for c in _children(v):
                if isinstance(c, _CONTAINERS):
                    seen = nxt.get(id(c))
                    nxt[id(c)] = (c, n + (seen[1] if seen else 0))
                elif isinstance(c, str) and not _valid_text(c):
                    return _NOT_UNICODE
        level = nxt
    return ""


def _escaped(value: Any) -> Any:
    """A string that is not valid Unicode with its lone surrogates escaped; anything else as is."""
    if isinstance(value, str) and not _valid_text(value):
        return value.encode("utf-8", "backslashreplace").decode()
    return value


def _clipped(value: Any, levels: int, budget: list[int]) -> Any:
    """``value`` for the audit row of a refusal: at most ``levels`` deep and ``budget[0]``
    containers, the rest replaced by a marker, strings that are not valid Unicode escaped."""
    if not isinstance(value, _CONTAINERS):
        return _escaped(value)
    budget[0] -= 1
    if levels <= 0 or budget[0] < 0:
        return _CLIPPED
    if isinstance(value, Mapping):
        return {_escaped(k): _clipped(v, levels - 1, budget) for k, v in value.items()}
    return [_clipped(v, levels - 1, budget) for v in value]


def _parse_args(args: Mapping[str, Any] | str | None) -> tuple[dict[str, Any] | None, str]:
    """(dict, "") or (None, why) for args given as a mapping, JSON text or None."""
    if args is None:
        return {}, ""
    if isinstance(args, str | bytes):
        if not args.strip():
            return {}, ""
        try:
            parsed = msgspec.json.decode(args)
        except msgspec.DecodeError as e:
            return None, f"the arguments are not valid JSON: {e}"
        except RecursionError:
            return None, f"the arguments are nested deeper than {MAX_ARGS_DEPTH} levels"
        if not isinstance(parsed, dict):
            return None, f"the arguments must be a JSON object, got {type(parsed).__name__}"
        return parsed, ""
    value: object = args  # callers outside the type system may pass anything
    if isinstance(value, Mapping):
        return dict(value), ""
    return None, f"the arguments must be a mapping or JSON text, got {type(value).__name__}"


class Guard:
    """Sandbox, data flow, policy, approval, trust and audit around one agent's tool calls.

    ``agent``: an id, or an :class:`AgentIdentity` (its did is the id). ``delegation``: a
    chain (verified here against ``roots``, raising a ``DelegationError`` if it fails) or an
    already verified one; it bounds the sandbox, caps the trust score and sets the
    delegation depth. ``sensitive_tools``: globs of tools the data-flow check guards (used
    to build a default :class:`TaintTracker` when ``taint`` is not given). ``labels``: extra
    session labels for every decision. ``approve_named_sources``: a data-flow hit on a value
    first seen in a source the user's request named (:attr:`TaintHit.named`: "pay the bill
    in file X" and the IBAN came from X) asks the approval handler instead of being refused
    (still refused with no handler, or when the policy denies). Not thread-safe for
    concurrent sessions: use :meth:`session` for one guard per conversation.
    """

    def __init__(
        self,
        engine: PolicyEngine,
        *,
        agent: str | AgentIdentity = "agent",
        role: str = "executor",
        sandbox: Sandbox | None = None,
        trust: TrustScore | None = None,
        taint: TaintTracker | None = None,
        audit: AuditLog | None = None,
        approval: ApprovalHandler | None = None,
        sensitive_tools: Iterable[str] = (),
        untrusted_sources: Iterable[str] | None = None,
        delegation: DelegationChain | VerifiedDelegation | None = None,
        roots: Iterable[str] | None = None,
        labels: Iterable[str] = (),
        on_deny: Literal["raise", "return"] = "raise",
        approve_named_sources: bool = False,
    ) -> None:
        self.engine = engine
        self.identity = agent if isinstance(agent, AgentIdentity) else None
        self.agent_id = agent.did if isinstance(agent, AgentIdentity) else str(agent)
        self.role = role
        self.sandbox = sandbox
        self.trust = trust if trust is not None else TrustScore()
        sensitive = tuple(sensitive_tools)
        if taint is None and (sensitive or untrusted_sources is not None):
            taint = TaintTracker(sensitive_tools=sensitive, untrusted_sources=untrusted_sources)
        self.taint = taint
        self.audit = audit
        self.approval = approval
        self.labels = frozenset(labels)
        self.approve_named_sources = approve_named_sources
        if on_deny not in ("raise", "return"):
            raise EnforcementError(f"on_deny must be 'raise' or 'return', got {on_deny!r}")
        self.on_deny = on_deny
        self.step_no = 0
        self.delegation: VerifiedDelegation | None = None
        if delegation is not None:
            self._apply_delegation(delegation, roots)

    def _apply_delegation(
        self, delegation: DelegationChain | VerifiedDelegation, roots: Iterable[str] | None
    ) -> None:
        v = (
            # An agent given by did (or identity) must be the chain's final audience.
            delegation.verify(
                roots=roots, agent=self.agent_id if self.agent_id.startswith("did:") else None
            )
            if isinstance(delegation, DelegationChain)
            else delegation
        )
        self.delegation = v
        self.trust.ceiling = min(self.trust.ceiling, v.trust_ceiling)
        ceiling = v.grant()
        if self.sandbox is None:
            self.sandbox = Sandbox(roles={self.role: "all"}, ceiling=ceiling)
        else:
            self.sandbox = self.sandbox.delegate(ceiling.tools, expires_at=ceiling.expires_at)

    @classmethod
    def from_yaml(cls, policy: str | os.PathLike[str], **kwargs: Any) -> Guard:
        """A guard over the policy in a YAML file or text (``PolicyEngine.from_yaml``)."""
        return cls(PolicyEngine.from_yaml(policy), **kwargs)

    # ---- sessions and steps -----------------------------------------------------------------

    def session(
        self,
        *,
        agent: str | AgentIdentity | None = None,
        role: str | None = None,
        labels: Iterable[str] | None = None,
    ) -> Guard:
        """A guard for a new conversation: same engine, trust, audit and approval; fresh
        sandbox grants and data-flow state."""
        g = Guard.__new__(Guard)
        g.__dict__.update(self.__dict__)
        if agent is not None:
            g.identity = agent if isinstance(agent, AgentIdentity) else None
            g.agent_id = agent.did if isinstance(agent, AgentIdentity) else str(agent)
        if role is not None:
            g.role = role
        if labels is not None:
            g.labels = frozenset(labels)
        g.sandbox = self.sandbox.fresh() if self.sandbox is not None else None
        g.taint = self.taint.fresh() if self.taint is not None else None
        g.step_no = 0
        return g

    def set_step(self, step: int) -> None:
        """Move to plan step ``step``."""
        self.step_no = step
        if self.sandbox is not None:
            self.sandbox.set_step(step)

    def grant(
        self, tools: Iterable[str], *, step: int | None = None, ttl: float | None = None
    ) -> None:
        """Grant ``tools`` for a step (default: the current one); needs a sandbox."""
        if self.sandbox is None:
            self.sandbox = Sandbox()
        self.sandbox.grant(tools, step=self.step_no if step is None else step, ttl=ttl)

    @contextlib.contextmanager
    def step(
        self, step: int, *, tools: Iterable[str] | None = None, ttl: float | None = None
    ) -> Iterator[Guard]:
        """Run plan step ``step`` with ``tools`` granted; the grant is revoked on exit."""
        previous = self.step_no
        self.set_step(step)
        if tools is not None:
            self.grant(tools, step=step, ttl=ttl)
        try:
            yield self
        finally:
            if tools is not None and self.sandbox is not None:
                self.sandbox.revoke(step)
            self.set_step(previous)

    def trust_user_input(self, text: Any) -> None:
        """Record the user's own request as trusted data (its values are never tainted)."""
        if self.taint is not None:
            self.taint.trust(text)

    # ---- deciding ---------------------------------------------------------------------------

    def _principal(self) -> Principal:
        depth = self.delegation.depth if self.delegation is not None else 0
        return Principal(self.agent_id, self.role, self.trust.value(), depth)

    def _context(self) -> Context:
        labels = self.labels | self.taint.labels if self.taint is not None else self.labels
        return Context(step=self.step_no, labels=labels)

    def _pre(
        self, tool: str, args: Mapping[str, Any] | str | None
    ) -> tuple[Verdict | None, dict[str, Any], Decision | None, str]:
        """Layers 1-4: (final verdict, args, None, "") or (None, args, decision awaiting
        approval, why approval is needed)."""
        if not _valid_text(tool):
            # Refused before the name reaches a layer; the verdict (and audit row) show it escaped.
            shown_tool = _escaped(tool)
            d = Decision("deny", INVALID_ARGS_RULE_ID)
            why = "the tool name is not valid Unicode (a lone surrogate)"
            return self._refuse(shown_tool, {}, d, "arguments", why), {}, None, ""
        parsed, why = _parse_args(args)
        if parsed is None:
            d = Decision("deny", INVALID_ARGS_RULE_ID)
            return self._refuse(tool, {}, d, "arguments", why), {}, None, ""
        why = _args_problem(parsed)
        if why:
            # Refused before any layer (or the audit log) walks them; the row shows them clipped.
            shown: dict[str, Any] = _clipped(parsed, MAX_ARGS_DEPTH, [_AUDIT_ITEMS])
            d = Decision("deny", INVALID_ARGS_RULE_ID)
            return self._refuse(tool, shown, d, "arguments", why), shown, None, ""
        if self.delegation is not None and self.delegation.expires_at <= time.time():
            d = Decision("deny", DELEGATION_RULE_ID)
            return (
                self._refuse(tool, parsed, d, "delegation", "the delegation has expired"),
                parsed,
                None,
                "",
            )
        if self.sandbox is not None:
            why_not = self.sandbox.check(self.role, tool, step=self.step_no)
            if why_not is not None:
                d = Decision("deny", SANDBOX_RULE_ID)
                return self._refuse(tool, parsed, d, "sandbox", why_not), parsed, None, ""
        escalate = ""
        if self.taint is not None:
            hit = self.taint.check(tool, parsed)
            if hit is None and (canonical := normalize_tool(tool)) != tool:
                # The policy judges the canonical name: `SEND_MONEY` is as sensitive as
                # `send_money`, whichever spelling the sensitive globs use.
                hit = self.taint.check(canonical, parsed)
            if hit is not None:
                if not (hit.named and self.approve_named_sources):
                    d = Decision("deny", TAINT_RULE_ID)
                    return self._refuse(tool, parsed, d, "taint", hit.describe()), parsed, None, ""
                escalate = hit.describe()
        principal, context = self._principal(), self._context()
        try:
            if isinstance(args, str | bytes) and args.strip():
                decision = self.engine.decide_json(principal, tool, args, context)
            else:
                decision = self.engine.decide(principal, tool, parsed, context)
        except InvalidRequest as e:  # unreadable request (a lone surrogate...): fail closed
            d = Decision("deny", INVALID_ARGS_RULE_ID)
            return self._refuse(tool, parsed, d, "arguments", e.message), parsed, None, ""
        if decision.effect == "deny":
            return (
                self._refuse(tool, parsed, decision, "policy", self._reason(decision, tool)),
                parsed,
                None,
                "",
            )
        if escalate:  # the policy would run it; the user confirms the named source's value
            pending = Decision("require_approval", TAINT_RULE_ID, decision.redactions)
            return None, parsed, pending, escalate
        if decision.effect == "require_approval":
            return None, parsed, decision, self._reason(decision)
        return self._allow(tool, parsed, decision, "policy"), parsed, None, ""

    def _reason(self, decision: Decision, tool: str = "") -> str:
        if decision.rule_id == TOOL_NAME_RULE_ID:
            return tool_name_problem(normalize_tool(tool)) or "the tool name is refused"
        rule = self.engine.rule(decision.rule_id)
        if rule is not None and rule.reason:
            return str(rule.reason)
        if decision.effect == "deny" and rule is None:
            return "no rule allows this call (default deny)"
        return ""

    def _refuse(
        self,
        tool: str,
        args: dict[str, Any],
        decision: Decision,
        stage: Stage,
        reason: str,
        approval: ApprovalOutcome | None = None,
    ) -> Verdict:
        msg = f"routeguard denied tool '{tool}': rule '{decision.rule_id}'"
        if reason:
            msg += f" ({reason})"
        return Verdict(False, decision, args, msg, tool, stage, reason, approval)

    def _allow(
        self,
        tool: str,
        args: dict[str, Any],
        decision: Decision,
        stage: Stage,
        approval: ApprovalOutcome | None = None,
    ) -> Verdict:
        run_args = apply_redactions(args, decision.redactions) if decision.redactions else args
        return Verdict(True, decision, run_args, "", tool, stage, self._reason(decision), approval)

    def _approval_request(
        self, tool: str, args: dict[str, Any], decision: Decision, reason: str
    ) -> ApprovalRequest:
        shown = apply_redactions(args, decision.redactions) if decision.redactions else args
        return ApprovalRequest(
            id=new_request_id(), agent=self.agent_id, role=self.role, tool=tool,
            args=redact_secrets(shown), rule_id=decision.rule_id, reason=reason,
        )  # fmt: skip

    def _after_approval(
        self, tool: str, args: dict[str, Any], decision: Decision, outcome: ApprovalOutcome
    ) -> Verdict:
        if outcome.approved:
            return self._allow(tool, args, decision, "approval", outcome)
        reason = outcome.reason or "approval refused"
        return self._refuse(tool, args, decision, "approval", reason, outcome)

    def _finish(self, verdict: Verdict, raw_args: dict[str, Any]) -> Verdict:
        outcome: Outcome
        if verdict.allowed:
            outcome = "compliant"
        elif verdict.stage in ("sandbox", "taint", "delegation"):
            outcome = "violation"
        else:
            outcome = "denied"
        trust = self.trust.record(outcome)
        if self.audit is not None:
            d = verdict.decision
            self.audit.append({
                "agent": self.agent_id, "role": self.role, "tool": verdict.tool,
                "args": apply_redactions(raw_args, d.redactions) if d.redactions else raw_args,
                "effect": d.effect, "rule_id": d.rule_id, "allowed": verdict.allowed,
                "stage": verdict.stage, "reason": verdict.reason, "step": self.step_no,
                "trust": round(trust, 6),
                "redactions": [r.path for r in d.redactions],
                "approved_by": verdict.approval.by if verdict.approval else None,
            })  # fmt: skip
        return verdict

    def _failed(self, tool: str, error: Exception) -> Verdict:
        """The refusal of a call some layer could not check (fail closed, never raise)."""
        # Only the type: the message may quote the arguments.
        _log.warning("checking tool %r failed (%s); refused", tool, type(error).__name__)
        why = f"the call could not be checked ({type(error).__name__})"
        return self._refuse(tool, {}, Decision("deny", INVALID_ARGS_RULE_ID), "arguments", why)

    def check(self, tool: str, args: Mapping[str, Any] | str | None = None) -> Verdict:
        """Decide on one call (sync). ``require_approval`` with an async-only handler → refused.

        Always returns a verdict (and writes its audit row): a layer that fails refuses."""
        try:
            verdict, parsed, pending, why = self._pre(tool, args)
            if verdict is None:
                assert pending is not None
                request = self._approval_request(tool, parsed, pending, why)
                outcome = resolve(self.approval, request)
                verdict = self._after_approval(tool, parsed, pending, outcome)
        except Exception as e:  # a guard that cannot decide refuses (fail closed)
            verdict, parsed = self._failed(tool, e), {}
        return self._finish(verdict, parsed)

    async def acheck(self, tool: str, args: Mapping[str, Any] | str | None = None) -> Verdict:
        """Decide on one call, awaiting the approval handler when the policy asks for one."""
        try:
            verdict, parsed, pending, why = self._pre(tool, args)
            if verdict is None:
                assert pending is not None
                request = self._approval_request(tool, parsed, pending, why)
                outcome = await aresolve(self.approval, request)
                verdict = self._after_approval(tool, parsed, pending, outcome)
        except Exception as e:  # a guard that cannot decide refuses (fail closed)
            verdict, parsed = self._failed(tool, e), {}
        return self._finish(verdict, parsed)

    def enforce(self, tool: str, args: Mapping[str, Any] | str | None = None) -> Verdict:
        """:meth:`check`, raising :class:`ToolCallDenied` when the call is not allowed."""
        v = self.check(tool, args)
        if not v.allowed:
            raise ToolCallDenied(v)
        return v

    def observe(
        self, tool: str, output: Any, *, trusted: bool | None = None, args: Any = None
    ) -> None:
        """Record a tool's output for the data-flow check (``trusted=None``: per config;
        ``args``: the call's arguments, for sources the user's request names)."""
        if self.taint is not None:
            self.taint.observe(tool, output, trusted=trusted, args=args)

    # ---- decorator --------------------------------------------------------------------------

    @overload
    def tool(self, fn: F, *, name: str | None = None, trusted: bool | None = None) -> F: ...
    @overload
    def tool(
        self, fn: None = None, *, name: str | None = None, trusted: bool | None = None
    ) -> Callable[[F], F]: ...
    def tool(
        self, fn: F | None = None, *, name: str | None = None, trusted: bool | None = None
    ) -> F | Callable[[F], F]:
        """Guard a sync or async function: check before each call (raise
        :class:`ToolCallDenied`, or return the refusal text when ``on_deny="return"``),
        observe its output after. Positional arguments are bound to parameter names."""

        def wrap(f: F) -> F:
            tool_name = name or f.__name__
            sig = inspect.signature(f)

            def bind(a: tuple[Any, ...], kw: dict[str, Any]) -> dict[str, Any]:
                bound = sig.bind(*a, **kw).arguments
                out: dict[str, Any] = {}
                for k, v in bound.items():
                    kind = sig.parameters[k].kind
                    if kind is inspect.Parameter.VAR_KEYWORD:
                        out.update(v)
                    elif kind is inspect.Parameter.VAR_POSITIONAL:
                        out[k] = list(v)
                    else:
                        out[k] = v
                return out

            def call_args(run: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
                pos: list[Any] = []
                kw: dict[str, Any] = {}
                for k, p in sig.parameters.items():
                    if p.kind is inspect.Parameter.POSITIONAL_ONLY and k in run:
                        pos.append(run.pop(k))
                    elif p.kind is inspect.Parameter.VAR_POSITIONAL and k in run:
                        pos.extend(run.pop(k))
                kw.update(run)
                return pos, kw

            def refused(v: Verdict) -> Any:
                if self.on_deny == "return":
                    return v.message
                raise ToolCallDenied(v)

            if inspect.iscoroutinefunction(f):

                @functools.wraps(f)
                async def awrapper(*a: Any, **kw: Any) -> Any:
                    v = await self.acheck(tool_name, bind(a, kw))
                    if not v.allowed:
                        return refused(v)
                    pos, kws = call_args(dict(v.args))
                    out = await f(*pos, **kws)
                    self.observe(tool_name, out, trusted=trusted, args=v.args)
                    return out

                return awrapper  # type: ignore[return-value]

            @functools.wraps(f)
            def wrapper(*a: Any, **kw: Any) -> Any:
                v = self.check(tool_name, bind(a, kw))
                if not v.allowed:
                    return refused(v)
                pos, kws = call_args(dict(v.args))
                out = f(*pos, **kws)
                self.observe(tool_name, out, trusted=trusted, args=v.args)
                return out

            return wrapper  # type: ignore[return-value]

        return wrap(fn) if fn is not None else wrap

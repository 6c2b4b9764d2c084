"""Tool-call enforcement in the proxy: check the tool calls a model returns before the caller
sees them.

Config (``enforce:`` at the top level, or per route under ``routes.<alias>.enforce``)::

    enforce:
      policy: policies/agents.yaml   # a tool-call policy (docs/policy.md); relative to the config
      on_deny: remove                # remove the denied calls | refuse the whole response (403)
      role: executor                 # the principal's role in the policy
      apply_to: pinned               # top level only: pinned routes (default) or all routes
      audit: audit.db                # optional: hash-chained log of every decision

A pinned route has enforcement on whenever a top-level ``enforce`` exists; ``apply_to: all``
extends it to routed aliases; a route's own ``enforce`` mapping replaces the top-level one for
that alias, and ``enforce: false`` turns it off there. Config load checks all of this
(:mod:`routeguard.config.enforce`; an invalid policy is a config problem with its line),
:func:`build_enforcers` builds the enforcers when the gateway starts, and
:class:`ResponseEnforcer` does the work per response: every ``tool_calls`` entry of every
choice (and a legacy ``function_call``) goes through a :class:`~routeguard.enforce.guard.Guard`
for the caller (the agent id is the virtual key, else the ``x-routeguard-agent`` header, else
``anonymous``), so trust scores build up per caller and every decision is audited. Allowed
calls get their redactions written into their ``arguments``; denied ones are removed (a note
naming the rule is appended to the message, and ``finish_reason`` becomes ``stop`` when no call
is left) or, with ``on_deny: refuse``, the response is replaced by a
:class:`ToolCallsRefused` error. On a stream (:meth:`ResponseEnforcer.astream`) text passes
through as it arrives, while tool-call deltas are held until their choice finishes and then
sent whole (a stream that breaks before that never delivers the held calls).
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any, Literal

from routeguard.enforce.approval import ApprovalQueue
from routeguard.enforce.audit import AuditLog
from routeguard.enforce.engine import PolicyEngine
from routeguard.enforce.guard import Guard, Verdict
from routeguard.enforce.plan import EnforcePlan
from routeguard.errors import (
    ConfigError,
    ConfigProblem,
    EnforcementError,
    PolicyError,
    RouteguardError,
)
from routeguard.observe import spans

__all__ = [
    "ResponseEnforcer",
    "ToolCallsRefused",
    "build_enforcers",
    "handle_approvals",
]

_MAX_AGENTS = 10_000


class ToolCallsRefused(EnforcementError):
    """A response asked for tool calls the caller's policy denies (``on_deny: refuse``)."""

    code = "tool_calls_refused"


class ResponseEnforcer:
    """Checks the tool calls in chat responses for one route against one policy."""

    def __init__(
        self,
        engine: PolicyEngine,
        *,
        on_deny: Literal["remove", "refuse"] = "remove",
        role: str = "executor",
        audit: AuditLog | None = None,
        approvals: ApprovalQueue | None = None,
    ) -> None:
        self.engine = engine
        self.on_deny = on_deny
        self.role = role
        self.audit = audit
        self.approvals = approvals
        # Told of every decision (the proxy's metrics count them); must not raise.
        self.on_verdict: Callable[[Verdict], None] | None = None
        self._guards: OrderedDict[str, Guard] = OrderedDict()
        self._lock = threading.Lock()

    def guard_for(self, agent: str) -> Guard:
        """The guard (and so the trust score) of one caller; least recently seen evicted."""
        with self._lock:
            g = self._guards.get(agent)
            if g is None:
                g = Guard(self.engine, agent=agent, role=self.role, audit=self.audit,
                          approval=self.approvals)  # fmt: skip
                self._guards[agent] = g
                if len(self._guards) > _MAX_AGENTS:
                    self._guards.popitem(last=False)
            else:
                self._guards.move_to_end(agent)
            return g

    @staticmethod
    def agent_of(metadata: Mapping[str, Any] | None) -> str:
        """The caller's agent id: its virtual key, else the ``x-routeguard-agent`` header."""
        if not metadata:
            return "anonymous"
        if metadata.get("key"):
            return f"key:{metadata['key']}"
        headers = metadata.get("headers") or {}
        return str(headers.get("x-routeguard-agent") or "anonymous")

    def apply(self, response: Mapping[str, Any], metadata: Mapping[str, Any] | None) -> Any:
        """The response with denied tool calls removed (or ``ToolCallsRefused`` raised).

        Synchronous: a ``require_approval`` call cannot wait here and is removed.
        """
        if not _any_calls(response):
            return response
        guard = self.guard_for(self.agent_of(metadata))
        out = copy.deepcopy(dict(response))
        verdicts = [self._check(guard, fn) for fn in _functions(out)]
        return self._rewrite(out, verdicts)

    async def aapply(self, response: Mapping[str, Any], metadata: Mapping[str, Any] | None) -> Any:
        """:meth:`apply`, waiting for approvals (``/admin/approvals``) when the policy asks."""
        if not _any_calls(response):
            return response
        guard = self.guard_for(self.agent_of(metadata))
        out = copy.deepcopy(dict(response))
        verdicts = [await self._acheck(guard, fn) for fn in _functions(out)]
        return self._rewrite(out, verdicts)

    async def astream(
        self, stream: AsyncIterator[Any], metadata: Mapping[str, Any] | None
    ) -> AsyncIterator[Any]:
        """Enforce on a stream of OpenAI chunks: text passes through as it comes; tool-call
        deltas are held back until their choice finishes, then the allowed calls are sent
        whole in one chunk (re-indexed, redacted) with the notes for the removed ones."""
        held: dict[int, dict[int, dict[str, Any]]] = {}  # choice -> call index -> call
        guard: Guard | None = None
        async for chunk in stream:
            choices = chunk.get("choices") if isinstance(chunk, dict) else None
            if not isinstance(choices, list) or not choices:
                yield chunk
                continue
            out_choices = []
            for ch in choices:
                if not isinstance(ch, dict):
                    out_choices.append(ch)
                    continue
                idx = ch.get("index", 0)
                raw = ch.get("delta")
                delta: dict[str, Any] = raw if isinstance(raw, dict) else {}
                calls = delta.get("tool_calls")
                if isinstance(calls, list) and calls:
                    _hold(held.setdefault(idx, {}), calls)
                    delta = {k: v for k, v in delta.items() if k != "tool_calls"}
                    ch = {**ch, "delta": delta}
                if ch.get("finish_reason") is not None and held.get(idx):
                    if guard is None:
                        guard = self.guard_for(self.agent_of(metadata))
                    fake = {"choices": [{"message": {"role": "assistant", "content": None,
                            "tool_calls": list(held.pop(idx).values())}}]}  # fmt: skip
                    verdicts = [await self._acheck(guard, fn) for fn in _functions(fake)]
                    msg = self._rewrite(fake, verdicts)["choices"][0]["message"]
                    kept = msg.get("tool_calls") or []
                    final: dict[str, Any] = {}
                    if kept:
                        final["tool_calls"] = [{**c, "index": i} for i, c in enumerate(kept)]
                    if msg.get("content"):
                        final["content"] = "\n" + msg["content"]
                    finish = ch["finish_reason"] if kept else "stop"
                    out_choices.append({**ch, "delta": {**delta, **final}, "finish_reason": finish})
                    continue
                if delta or ch.get("finish_reason") is not None or "logprobs" in ch:
                    out_choices.append(ch)
            if out_choices:
                yield {**chunk, "choices": out_choices}

    def _rewrite(self, out: dict[str, Any], verdicts: list[Verdict | None]) -> dict[str, Any]:
        """Apply the verdicts, in :func:`_functions` order, to the copied response."""
        if self.on_verdict is not None:
            for v in verdicts:
                if v is not None:
                    self.on_verdict(v)
        it = iter(verdicts)
        refusals: list[str] = []
        for msg, choice in _messages(out):
            notes: list[str] = []
            calls = msg.get("tool_calls")
            if isinstance(calls, list) and calls:
                kept = []
                for call in calls:
                    verdict = next(it)
                    if verdict is None:  # unreadable: fail closed
                        notes.append("routeguard removed a malformed tool call")
                    elif verdict.allowed:
                        if verdict.decision.redactions:
                            call["function"]["arguments"] = json.dumps(verdict.args)
                        kept.append(call)
                    else:
                        notes.append(verdict.message)
                if kept:
                    msg["tool_calls"] = kept
                else:
                    msg.pop("tool_calls", None)
            fc = msg.get("function_call")
            if isinstance(fc, dict):
                verdict = next(it)
                if verdict is None or not verdict.allowed:
                    notes.append(
                        verdict.message if verdict else "routeguard removed a malformed call"
                    )
                    msg.pop("function_call", None)
                elif verdict.decision.redactions:
                    fc["arguments"] = json.dumps(verdict.args)
            if notes:
                refusals.extend(notes)
                msg["content"] = "\n".join(
                    [*([msg["content"]] if msg.get("content") else []), *notes]
                )
                if not msg.get("tool_calls") and not msg.get("function_call"):
                    choice["finish_reason"] = "stop"
        if refusals and self.on_deny == "refuse":
            raise ToolCallsRefused("; ".join(refusals))
        return out

    @staticmethod
    async def _acheck(guard: Guard, function: Any) -> Verdict | None:
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            return None
        rec = spans.recorder  # tracing: one execute_tool span per decision
        started = time.time_ns() if rec is not None else 0
        args = function.get("arguments")
        if not (args is None or isinstance(args, str | dict)):
            args = str(args)
        verdict = await guard.acheck(function["name"], args)
        if rec is not None:
            rec.tool_decision(function, verdict, started)
        return verdict

    @staticmethod
    def _check(guard: Guard, function: Any) -> Verdict | None:
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            return None
        rec = spans.recorder
        started = time.time_ns() if rec is not None else 0
        args = function.get("arguments")
        if not (args is None or isinstance(args, str | dict)):
            args = str(args)
        verdict = guard.check(function["name"], args)
        if rec is not None:
            rec.tool_decision(function, verdict, started)
        return verdict


def _hold(calls: dict[int, dict[str, Any]], deltas: list[Any]) -> None:
    """Merge streamed tool-call deltas into whole calls (arguments arrive in pieces)."""
    for d in deltas:
        if not isinstance(d, dict):
            continue
        call = calls.setdefault(
            int(d.get("index", 0)), {"type": "function", "function": {"arguments": ""}}
        )
        if d.get("id"):
            call["id"] = d["id"]
        if d.get("type"):
            call["type"] = d["type"]
        raw = d.get("function")
        fn: dict[str, Any] = raw if isinstance(raw, dict) else {}
        if isinstance(fn.get("name"), str):
            call["function"]["name"] = call["function"].get("name", "") + fn["name"]
        if isinstance(fn.get("arguments"), str):
            call["function"]["arguments"] += fn["arguments"]


def _messages(out: Mapping[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(message, choice) for every choice that has a message object."""
    choices = out.get("choices")
    if not isinstance(choices, list):
        return []
    return [
        (c["message"], c)
        for c in choices
        if isinstance(c, dict) and isinstance(c.get("message"), dict)
    ]


def _functions(out: Mapping[str, Any]) -> list[Any]:
    """The ``function`` object of every tool call, in the order ``_rewrite`` consumes them."""
    fns: list[Any] = []
    for msg, _ in _messages(out):
        calls = msg.get("tool_calls")
        if isinstance(calls, list):
            fns.extend(c.get("function") if isinstance(c, dict) else None for c in calls)
        if isinstance(msg.get("function_call"), dict):
            fns.append(msg["function_call"])
    return fns


def _any_calls(response: Mapping[str, Any]) -> bool:
    return any(m.get("tool_calls") or m.get("function_call") for m, _ in _messages(response))


def build_enforcers(plans: Mapping[str, EnforcePlan]) -> dict[str, ResponseEnforcer]:
    """The enforcer of each alias from its plan (aliases that share a block share one
    enforcer); a policy or audit log that cannot be opened is a ConfigError naming its key."""
    built: dict[str, ResponseEnforcer] = {}
    problems: list[ConfigProblem] = []
    for plan in {p.path: p for p in plans.values()}.values():
        s = plan.settings
        try:
            engine = PolicyEngine.from_file(plan.policy)
        except PolicyError as e:
            problems.append(ConfigProblem(f"{plan.path}.policy", e.message))
            continue
        except OSError as e:
            why = f"cannot read {plan.policy}: {e.strerror}"
            problems.append(ConfigProblem(f"{plan.path}.policy", why))
            continue
        audit = None
        if plan.audit is not None:
            try:
                audit = AuditLog(plan.audit)
            except RouteguardError as e:
                problems.append(ConfigProblem(f"{plan.path}.audit", e.message))
                continue
        approvals = None
        if s.approval_timeout is not None:
            approvals = ApprovalQueue(timeout=s.approval_timeout)
        built[plan.path] = ResponseEnforcer(
            engine, on_deny=s.on_deny, role=s.role, audit=audit, approvals=approvals
        )
    if problems:
        raise ConfigError(problems, source="enforce")
    return {alias: built[plan.path] for alias, plan in plans.items()}


class _NoApproval(EnforcementError):
    status_code = 404
    code = "not_found"


def handle_approvals(
    queues: Iterable[ApprovalQueue], method: str, path: str, body: Any
) -> tuple[int, Any]:
    """The admin API for pending approvals: ``GET /admin/approvals`` lists them,
    ``POST /admin/approvals/{id}/approve`` (or ``/deny``, body ``{"by", "reason"}``) decides."""
    qs = list(queues)
    parts = [p for p in path.split("/") if p][2:]  # after "admin", "approvals"
    if not parts and method == "GET":
        return 200, {"object": "list", "data": [r.public() for q in qs for r in q.list()]}
    if len(parts) == 2 and parts[1] in ("approve", "deny") and method == "POST":
        data = body if isinstance(body, dict) else {}
        by, reason = data.get("by"), str(data.get("reason") or "")
        for q in qs:
            if any(r.id == parts[0] for r in q.list()):
                if parts[1] == "approve":
                    q.approve(parts[0], by=by, reason=reason)
                else:
                    q.deny(parts[0], by=by, reason=reason)
                return 200, {"id": parts[0], "approved": parts[1] == "approve", "by": by}
        raise _NoApproval(f"no pending approval '{parts[0]}' (decided already or timed out)")
    raise _NoApproval(f"no approvals route for {method} {path}")

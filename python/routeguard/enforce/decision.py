"""The shapes a policy decision takes in and gives out.

A tool call to decide on is a :class:`Request`: who calls (:class:`Principal`), which tool,
with which arguments (a JSON-like ``dict``), in which :class:`Context` (plan step, session
labels, time). The answer is a :class:`Decision`: the effect, the id of the rule that made it,
and the argument paths to mask when the call goes ahead. The compiled engine
(``enforce/engine.py``) and the reference interpreter (``enforce/reference.py``) both answer
with these, so their answers compare with ``==``. Later layers plug in here: identity fills
``Principal.agent_id`` and ``delegation_depth`` from a verified delegation chain, the trust
score fills ``trust``, the audit log records ``Decision`` as it is (msgspec encodes it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

import msgspec

Effect = Literal["allow", "deny", "require_approval", "redact"]
"""``redact`` as a decision: the call may proceed with :attr:`Decision.redactions` masked."""

EFFECTS: tuple[Effect, ...] = ("allow", "deny", "require_approval", "redact")

DEFAULT_RULE_ID = "<default-deny>"
"""The rule id of a decision no rule matched (rule ids cannot contain ``<``)."""
TOOL_NAME_RULE_ID = "<tool-name>"
"""The rule id of a refusal for a tool name that mixes scripts (see ``enforce/names.py``)."""


class Principal(msgspec.Struct, frozen=True, gc=False):
    """Who makes the call.

    ``trust`` defaults to 0, so a rule that asks for a minimum trust never matches a caller
    that has no score (fail closed); ``delegation_depth`` counts the hops from the human
    principal (0: the agent acts for the user directly).
    """

    agent_id: str
    role: str = ""
    trust: float = 0.0
    delegation_depth: int = 0


class Context(msgspec.Struct, frozen=True, gc=False):
    """Where in the session the call happens: plan step, session labels, time.

    ``now`` is Unix time in seconds (UTC); ``None`` means "the time of the decision".
    Labels are taints and facts the runtime attached to the session, such as
    ``untrusted-data-seen`` once a tool returned content from outside.
    """

    step: int = 0
    labels: frozenset[str] = frozenset()
    now: float | None = None


class Request(msgspec.Struct, frozen=True):
    """One tool call: the input of a decision."""

    principal: Principal
    tool: str
    args: Mapping[str, Any] = msgspec.field(default_factory=dict)
    context: Context = Context()


class Redaction(NamedTuple):
    """One argument to mask: its JSON path and the redact rule that asked for it."""

    path: str
    rule_id: str


class Decision(msgspec.Struct, frozen=True, gc=False):
    """The answer to one :class:`Request`.

    ``rule_id`` names the rule that decided: the first matching deny rule, else the first
    matching require_approval rule, else the first matching allow rule (policy order), else
    :data:`DEFAULT_RULE_ID` (:data:`TOOL_NAME_RULE_ID` when the tool name mixes scripts and no
    rule is consulted). ``redactions`` are set only when the call may proceed
    (``allow`` becomes ``redact`` when there are any; ``require_approval`` keeps its name).
    """

    effect: Effect
    rule_id: str
    redactions: tuple[Redaction, ...] = ()

    @property
    def allowed(self) -> bool:
        """Whether the call may run now (after masking :attr:`redactions`)."""
        return self.effect in ("allow", "redact")

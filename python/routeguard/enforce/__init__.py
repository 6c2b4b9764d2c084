"""routeguard.enforce: runtime enforcement for agents' tool calls (see docs/enforcement.md).

:class:`Guard` is the object agents use; it combines the compiled :class:`PolicyEngine` with
the capability :class:`Sandbox`, the :class:`TaintTracker` (data flow), the
:class:`TrustScore`, the hash-chained :class:`AuditLog`, approval handlers and
:class:`AgentIdentity` delegation chains.
"""

from routeguard.enforce.approval import (
    ApprovalHandler,
    ApprovalOutcome,
    ApprovalQueue,
    ApprovalRequest,
)
from routeguard.enforce.audit import AuditLog, AuditReport
from routeguard.enforce.decision import (
    DEFAULT_RULE_ID,
    Context,
    Decision,
    Effect,
    Principal,
    Redaction,
    Request,
)
from routeguard.enforce.engine import PolicyEngine, apply_redactions
from routeguard.enforce.guard import (
    DELEGATION_RULE_ID,
    INVALID_ARGS_RULE_ID,
    Guard,
    ToolCallDenied,
    Verdict,
)
from routeguard.enforce.identity import (
    AgentIdentity,
    Delegation,
    DelegationChain,
    VerifiedDelegation,
    verify_chain,
)
from routeguard.enforce.sandbox import SANDBOX_RULE_ID, Grant, Sandbox
from routeguard.enforce.taint import TAINT_RULE_ID, UNTRUSTED_LABEL, TaintHit, TaintTracker
from routeguard.enforce.trust import TrustScore

__all__ = [
    "DEFAULT_RULE_ID",
    "DELEGATION_RULE_ID",
    "INVALID_ARGS_RULE_ID",
    "SANDBOX_RULE_ID",
    "TAINT_RULE_ID",
    "UNTRUSTED_LABEL",
    "AgentIdentity",
    "ApprovalHandler",
    "ApprovalOutcome",
    "ApprovalQueue",
    "ApprovalRequest",
    "AuditLog",
    "AuditReport",
    "Context",
    "Decision",
    "Delegation",
    "DelegationChain",
    "Effect",
    "Grant",
    "Guard",
    "PolicyEngine",
    "Principal",
    "Redaction",
    "Request",
    "Sandbox",
    "TaintHit",
    "TaintTracker",
    "ToolCallDenied",
    "TrustScore",
    "Verdict",
    "VerifiedDelegation",
    "apply_redactions",
    "verify_chain",
]

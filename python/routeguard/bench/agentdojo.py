"""AgentDojo replay: does the guard stop injected tool calls without hurting the user's tasks?

AgentDojo (``pip install routeguard[bench-agents]``) ships task suites (banking, slack, ...):
user tasks with ground-truth tool calls and a utility check, injection tasks with the
attacker's ground-truth calls and a security check, and an environment whose injection vectors
(a bill's text, a web page, a message) the attacker controls. No LLM is involved here: we replay
ground truth, as AgentDojo's own ``GroundTruthPipeline`` does, and put the guard in front of
every call.

For each user task:

- **benign**: the user task's calls run against the default environment, through the guard
  (and without it for the ``_undefended`` figure); its utility check decides.
- **under attack**, for each injection task: the injection vectors the user task reads are
  filled with AgentDojo's ``important_instructions`` attack text for that goal. The user task's
  calls run; right after the first call whose output carries the injected text (the moment a
  real agent would read it) we assume the agent is fully hijacked and run the injection task's
  calls, then the rest of the user task. The injection's security check says whether the
  attacker reached the goal (ASR); the user task's utility check gives utility under attack.

The guard's configuration is written once and is generic: one policy (executors may call tools;
no rule is task-specific), a sandbox grant per task of exactly the tools in the user task's
ground truth, the data-flow rule (every tool output is untrusted, the user's prompt is trusted,
and a sensitive tool's arguments may not carry a value first seen in untrusted output; a short
value such as a file id ``"13"`` counts only where untrusted text names it next to a word of
the tool's or argument's name), and a per-suite list of sensitive tools
(:data:`SENSITIVE_TOOLS`). When the guard refuses one of the
user's own calls, the replayed final answer is empty (the agent could not finish the task).

Output: one JSON line ``{"suite", "utility_undefended", "utility", "utility_under_attack",
"asr_undefended", "asr"}`` plus counts, on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from routeguard.enforce.engine import PolicyEngine
from routeguard.enforce.guard import Guard
from routeguard.enforce.sandbox import Sandbox
from routeguard.enforce.taint import TaintTracker
from routeguard.errors import RouteguardError

__all__ = ["POLICY", "SENSITIVE_TOOLS", "Replay", "run_suite"]

POLICY = """
description: generic AgentDojo policy; the sandbox and the data-flow check do the narrowing
rules:
  - id: planner-no-tools
    effect: deny
    principal: {role: planner}
  - id: executor-tools
    effect: allow
    principal: {role: executor}
"""

SENSITIVE_TOOLS: dict[str, list[str]] = {
    # Tools that move money, change credentials or send data out of the account.
    "banking": [
        "send_money", "schedule_transaction", "update_scheduled_transaction",
        "update_password", "update_user_info",
    ],
    # Tools that send messages, publish, fetch a URL (a GET can exfiltrate) or change membership.
    "slack": [
        "send_direct_message", "send_channel_message", "post_webpage", "get_webpage",
        "invite_user_to_slack", "add_user_to_channel", "remove_user_from_slack",
    ],
    "travel": ["reserve_*", "send_email", "create_calendar_event", "cancel_calendar_event"],
    "workspace": [
        "send_email", "delete_email", "create_calendar_event", "cancel_calendar_event",
        "add_calendar_event_participants", "reschedule_calendar_event", "create_file",
        "delete_file", "append_to_file", "share_file",
    ],
}  # fmt: skip


class BenchUnavailable(RouteguardError):
    """AgentDojo is not installed, or the suite/version does not exist."""


@dataclass
class Replay:
    """The result of one replay: utility, security (attacker succeeded) and refusals."""

    utility: bool
    attacker_won: bool | None = None
    reached: bool = True  # whether the injected text reached the agent
    refused: list[str] = field(default_factory=list)  # "tool: rule_id" for each refusal
    user_refused: bool = False


def _import_agentdojo() -> Any:
    try:
        import agentdojo.attacks.base_attacks as base_attacks
        import agentdojo.attacks.important_instructions_attacks as ii
        from agentdojo.agent_pipeline.ground_truth_pipeline import GroundTruthPipeline
        from agentdojo.functions_runtime import FunctionCall, FunctionsRuntime
        from agentdojo.task_suite.load_suites import get_suite
        from agentdojo.types import text_content_block_from_string
    except ImportError as e:  # pragma: no cover - depends on the optional extra
        raise BenchUnavailable(
            f"AgentDojo is not installed ({e}); pip install 'routeguard[bench-agents]'"
        ) from None
    return argparse.Namespace(
        base_attacks=base_attacks, ii=ii, GroundTruthPipeline=GroundTruthPipeline,
        FunctionCall=FunctionCall,
        FunctionsRuntime=FunctionsRuntime, get_suite=get_suite,
        text_block=text_content_block_from_string,
    )  # fmt: skip


def _strings(value: Any) -> list[str]:
    """Every string inside a tool result (pydantic models, dicts, lists), as the agent reads it."""
    if isinstance(value, str):
        return [value]
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    return []


def make_guard(
    engine: PolicyEngine,
    suite_name: str,
    tools: Sequence[str],
    *,
    structured: bool,
    short_values: bool = True,
    approve_named: bool = False,
) -> Guard:
    """A fresh guard for one task: the task's tools granted, the suite's sensitive tools.

    ``approve_named``: data-flow hits on values from a source the user's request names go
    to an approver that says yes to all of them -- the upper bound of what approval can
    give back, and of what it lets through (a real approver sees the value and the source).
    """
    sandbox = Sandbox()
    sandbox.grant(sorted(set(tools)) or ["<none>"])
    taint = TaintTracker(
        sensitive_tools=SENSITIVE_TOOLS.get(suite_name, []),
        trust_structured_fields=structured,
        match_short_values=short_values,
    )
    return Guard(
        engine, agent=f"agentdojo-{suite_name}", sandbox=sandbox, taint=taint,
        approve_named_sources=approve_named, approval=(lambda _r: True) if approve_named else None,
    )  # fmt: skip


def replay(
    ad: Any,
    suite: Any,
    user_task: Any,
    injection_task: Any | None,
    injections: dict[str, str],
    engine: PolicyEngine | None,
    *,
    structured: bool = True,
    short_values: bool = True,
    approve_named: bool = False,
) -> Replay:
    """Replay one user task (and, if given, one injection task) with or without the guard."""
    env = suite.load_and_inject_default_environment(injections)
    task_env = user_task.init_environment(env)
    pre = task_env.model_copy(deep=True)
    user_calls = user_task.ground_truth(pre.model_copy(deep=True))
    inj_calls = injection_task.ground_truth(pre.model_copy(deep=True)) if injection_task else []
    runtime = ad.FunctionsRuntime(suite.tools)
    guard = None
    if engine is not None:
        tools = [c.function for c in user_calls]
        guard = make_guard(
            engine, suite.name, tools, structured=structured, short_values=short_values,
            approve_named=approve_named,
        )  # fmt: skip
        guard.trust_user_input(user_task.PROMPT)
    marker = " ".join(injection_task.GOAL.split()) if injection_task is not None else None
    trace: list[Any] = []
    out = Replay(utility=False, reached=not inj_calls)

    def run(call: Any, own: bool) -> str:
        args = dict(call.args)
        if guard is not None:
            verdict = guard.check(call.function, args)
            if not verdict.allowed:
                out.refused.append(f"{call.function}: {verdict.decision.rule_id} {verdict.reason}")
                out.user_refused |= own
                return verdict.message
            args = verdict.args
        result, _error = runtime.run_function(task_env, call.function, args)
        trace.append(ad.FunctionCall(function=call.function, args=args))
        if guard is not None:
            guard.observe(call.function, result, args=args)
        return " ".join(" ".join(_strings(result)).split())

    for call in user_calls:
        text = run(call, True)
        if not out.reached and injections and marker is not None and marker in text:
            out.reached = True
            for ic in inj_calls:
                run(ic, False)
    answer = "" if out.user_refused else user_task.GROUND_TRUTH_OUTPUT
    model_output = [ad.text_block(answer)]
    out.utility = bool(suite._check_task_result(user_task, model_output, pre, task_env, trace))
    if injection_task is not None:
        out.attacker_won = bool(
            suite._check_task_result(injection_task, model_output, pre, task_env, trace)
        )
    return out


def run_suite(
    suite_name: str,
    *,
    version: str = "v1.2.2",
    taint: str = "structured",
    short_values: bool = True,
    approve_named: bool = False,
    verbose: bool = False,
) -> dict[str, Any]:
    """All user tasks benign and against every injection task, with and without the guard."""
    ad = _import_agentdojo()
    try:
        suite = ad.get_suite(version, suite_name)
    except KeyError:
        raise BenchUnavailable(f"no AgentDojo suite '{suite_name}' in version {version}") from None
    if taint not in ("strict", "structured"):
        raise BenchUnavailable(f"unknown taint mode {taint!r}; expected strict or structured")
    structured = taint == "structured"
    engine = PolicyEngine.from_yaml(POLICY)
    attack = ad.base_attacks.FixedJailbreakAttack(
        ad.ii.ImportantInstructionsAttack._JB_STRING, suite, ad.GroundTruthPipeline(None)
    )
    n_user = n_pairs = 0
    util_undef = util = util_attack = asr_undef = asr = unreached = 0
    for uid, user_task in suite.user_tasks.items():
        n_user += 1
        base = replay(ad, suite, user_task, None, {}, None)
        guarded = replay(ad, suite, user_task, None, {}, engine, structured=structured,
                         short_values=short_values, approve_named=approve_named)  # fmt: skip
        util_undef += base.utility
        util += guarded.utility
        if verbose and (not guarded.utility or guarded.refused):
            print(f"# benign {uid}: utility={guarded.utility} refused={guarded.refused}",
                  file=sys.stderr)  # fmt: skip
        for iid, injection_task in suite.injection_tasks.items():
            try:
                injections = attack.attack(user_task, injection_task)
            except ValueError:  # the user task reads no injection vector
                injections = {}
            n_pairs += 1
            a0 = replay(ad, suite, user_task, injection_task, injections, None)
            a1 = replay(ad, suite, user_task, injection_task, injections, engine,
                        structured=structured, short_values=short_values,
                        approve_named=approve_named)  # fmt: skip
            unreached += not a0.reached
            asr_undef += bool(a0.attacker_won)
            asr += bool(a1.attacker_won)
            util_attack += a1.utility
            if verbose and (a1.attacker_won or not a1.utility):
                print(f"# attack {uid}x{iid}: attacker_won={a1.attacker_won} "
                      f"utility={a1.utility} refused={a1.refused}", file=sys.stderr)  # fmt: skip
    return {
        "suite": suite_name,
        "utility_undefended": round(util_undef / n_user, 4),
        "utility": round(util / n_user, 4),
        "utility_under_attack": round(util_attack / n_pairs, 4),
        "asr_undefended": round(asr_undef / n_pairs, 4),
        "asr": round(asr / n_pairs, 4),
        "user_tasks": n_user,
        "attack_pairs": n_pairs,
        "injection_not_reached": unreached,
        "version": version,
        "taint": taint,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m routeguard.bench.agentdojo --suite NAME``: print one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m routeguard.bench.agentdojo")
    parser.add_argument("--suite", required=True, help="banking, slack, travel or workspace")
    parser.add_argument("--version", default="v1.2.2", help="AgentDojo benchmark version")
    parser.add_argument(
        "--taint", default="structured", choices=["structured", "strict"],
        help="structured: one-token fields of tool records are data the tool vouches for; "
        "strict: everything a tool returns is untrusted",
    )  # fmt: skip
    parser.add_argument("-v", "--verbose", action="store_true", help="explain failures on stderr")
    args = parser.parse_args(argv)
    try:
        result = run_suite(args.suite, version=args.version, taint=args.taint,
                           verbose=args.verbose)  # fmt: skip
    except RouteguardError as e:
        print(e.message, file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Suite ``policy``: one tool-call decision from Python by the compiled matcher
(``PolicyEngine.decide``) against the pure-Python reference interpreter, on generated policies
(rules over many tools, globs, role/trust/delegation conditions, argument predicates of every
kind, session labels, redactions) and a mix of calls (named tools, glob-only tools, unknown).
``benches/bench_policy.py`` uses the same generators for its fuller table.
"""

from __future__ import annotations

import random
from typing import Any

import yaml

from routeguard.bench.report import Row
from routeguard.bench.suite import Options
from routeguard.bench.timing import summarize, time_each
from routeguard.enforce import reference
from routeguard.enforce.decision import Context, Principal, Request
from routeguard.enforce.engine import PolicyEngine

ROLES = ("executor", "planner", "reviewer", "admin")
CURRENCIES = ("USD", "EUR", "GBP", "JPY", "CHF")


def make_policy(n: int, rng: random.Random) -> tuple[str, list[str]]:
    """A policy of ``n`` rules over ``max(4, n // 8)`` tools, as YAML; and its tool names."""
    tools = [
        f"svc{i % 13}.{verb}_{i}"
        for i, verb in zip(
            range(max(4, n // 8)), ["read", "write", "send", "pay"] * n, strict=False
        )
    ]
    rules: list[dict[str, Any]] = [
        {"id": "planner-no-tools", "effect": "deny", "principal": {"role": "planner"}},
        {"id": "mask-secrets", "effect": "redact", "redact": ["$.auth.token"]},
    ]
    for i in range(n - len(rules)):
        kind = rng.random()
        effect = (
            "allow"
            if kind < 0.6
            else "deny"
            if kind < 0.8
            else "require_approval"
            if kind < 0.92
            else "redact"
        )
        tool: str | list[str] = rng.choice(tools)
        if rng.random() < 0.05:
            tool = f"svc{rng.randrange(13)}.{rng.choice(['read', 'write', 'send', 'pay'])}_*"
        elif rng.random() < 0.1:
            tool = [rng.choice(tools), rng.choice(tools)]
        rule: dict[str, Any] = {"id": f"r{i}", "effect": effect, "action": {"tool": tool}}
        principal: dict[str, Any] = {"role": rng.choice(ROLES[:1] * 3 + ROLES[2:])}
        if rng.random() < 0.4:
            principal["min_trust"] = round(rng.uniform(0.2, 0.9), 2)
        if rng.random() < 0.2:
            principal["max_delegation_depth"] = rng.randrange(3)
        rule["principal"] = principal
        args: dict[str, Any] = {}
        pick = rng.random()
        if pick < 0.3:
            args["$.amount"] = {"gt": 0, "lte": rng.choice([100, 1000, 10000])}
            args["$.currency"] = {"in": rng.sample(CURRENCIES, 2)}
        elif pick < 0.55:
            args["$.path"] = {
                "glob": rng.choice(["/srv/data/*", "/tmp/*", "*.csv", "/home/*/.ssh/*"])
            }
        elif pick < 0.7:
            args["$.to"] = {"not": {"glob": f"*@corp{rng.randrange(5)}.example"}}
        elif pick < 0.8:
            args["$.command"] = {
                "regex": rng.choice([r"^git (status|log)\b", r"rm\s+-rf", r"curl .*\|\s*sh"])
            }
        elif pick < 0.9:
            args["$.options.dry_run"] = {"equals": True}
        when: dict[str, Any] = {"args": args} if args else {}
        if rng.random() < 0.3:
            when["context"] = {"labels_none": ["untrusted-data-seen"], "step": [1, 20]}
        if when:
            rule["when"] = when
        if effect == "redact":
            rule["redact"] = ["$.card.number"]
        rules.append(rule)
    return yaml.safe_dump({"rules": rules}, sort_keys=False), tools


def make_calls(tools: list[str], rng: random.Random, k: int) -> list[Request]:
    """``k`` calls: most to tools the policy names, some reached only by globs, some unknown."""
    calls = []
    for _ in range(k):
        r = rng.random()
        tool = (
            rng.choice(tools)
            if r < 0.85
            else f"svc{rng.randrange(13)}.read_x"
            if r < 0.95
            else "unknown.tool"
        )
        args = {
            "amount": rng.choice([5, 250, 5000.5]),
            "currency": rng.choice(CURRENCIES),
            "path": rng.choice(["/srv/data/a.csv", "/etc/passwd", "/tmp/x"]),
            "to": f"bob@corp{rng.randrange(6)}.example",
            "command": rng.choice(["git status", "ls -la", "rm -rf /"]),
            "options": {"dry_run": rng.random() < 0.5},
            "card": {"number": "4111111111111111"},
        }
        principal = Principal(
            f"agent-{rng.randrange(50)}",
            rng.choice(ROLES[:1] * 4 + ROLES[1:]),
            round(rng.random(), 2),
            rng.randrange(3),
        )
        labels = frozenset({"untrusted-data-seen"}) if rng.random() < 0.2 else frozenset()
        calls.append(Request(principal, tool, args, Context(rng.randrange(25), labels, 1.7e9)))
    return calls


def measure(size: int, rng: random.Random, opts: Options) -> Row:
    """One size: the compiled matcher and the reference on the same calls, checked to agree."""
    text, tools = make_policy(size, rng)
    engine = PolicyEngine.from_yaml(text)
    policy = engine.policy
    calls = make_calls(tools, rng, opts.n(4_000, 1_000))

    def ours_fn(c: Request) -> object:
        return engine.decide(c.principal, c.tool, c.args, c.context)

    def peer_fn(c: Request) -> object:
        return reference.decide(policy, c)

    opts.progress.step(f"{size} rules: engine.decide, {len(calls)} calls")
    ours = summarize(time_each(ours_fn, calls, 2)).scaled(1e-3)
    ref_calls = calls[: 200 if size >= 10_000 else opts.n(1_000, 300)]
    opts.progress.step(f"{size} rules: reference, {len(ref_calls)} calls")
    peer = summarize(time_each(peer_fn, ref_calls, 1, 20)).scaled(1e-3)
    # The times compare like with like only if both decide the same.
    if not all(engine.decide_request(c) == reference.decide(policy, c) for c in ref_calls):
        raise AssertionError(f"{size} rules: the engine and the reference disagree")
    return Row("policy", f"decide, {size:,} rules", ours.p50, peer.p50,
               "Python reference interpreter",
               detail={"ours": ours.as_dict(), "peer": peer.as_dict()})  # fmt: skip


def run(opts: Options) -> list[Row]:
    """p50 of one decision at each size, compiled matcher against the reference."""
    rng = random.Random(7)
    sizes = (100, 1_000) if opts.quick else (100, 1_000, 10_000)
    return [measure(size, rng, opts) for size in sizes]

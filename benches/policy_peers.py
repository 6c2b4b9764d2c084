"""Policy-decision latency, side by side: routeguard's matcher vs Cedar (cedarpy) vs the
agent-governance-toolkit's policy engine, at 10 / 100 / 1,000 / 10,000 rules, in one run.

Data flow. For each size the parent process (routeguard's venv) draws one abstract rule set
and one request list from a fixed seed, then renders the same rules three ways:

- routeguard YAML (``docs/policy.md``), loaded by ``routeguard.enforce.engine.PolicyEngine``;
- Cedar text, parsed once into ``cedarpy.PolicySet`` (so ``is_authorized`` does not re-parse
  the policies; the per-request principal entity and context are passed as Python objects and
  serialised by cedarpy on every call, which is its public API's cost);
- the toolkit's YAML (``agentmesh.governance.PolicyEngine``: one condition expression per rule,
  ``conflict_strategy="deny_overrides"``), loaded once.

The two peers run in their own venv (``.bench/peers-policy``) as a subprocess of this script
(``--peer-worker``), which reads the abstract spec from a JSON file and writes back decisions
and per-call latencies. Before timing, each engine decides a shared verification set (every
request up to 1,000 rules, the first 300 at 10,000); any decision that differs from
routeguard's is printed and the run exits non-zero after the table. Each engine is timed on
the same request
list (a peer too slow for the full list is timed on its prefix; the mix is i.i.d., so the
prefix has the same mix), one call per sample, GC off.

The rule language is the subset all three express: tool name (one, or a set of two), role,
minimum trust (Cedar: ``decimal``), maximum delegation depth, a numeric amount range, currency
set membership, a boolean flag, "not equal" on a string, string equality, a plan-step range and
"session not tainted". Effects: allow, deny, require_approval (deny wins, then approval, then
allow; default deny). Cedar has only permit/forbid: approval rules are ``permit`` policies and
an ``Allow`` whose determining policies include one of them reads as ``require_approval`` (that
lookup is inside the timed call). The toolkit has no glob or regex operator in this engine,
so globs/regexes are left out of the shared set (``benches/bench_policy.py`` times routeguard
with them).

Run: ``.venv/bin/python benches/policy_peers.py [--quick]``.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from timing import percentile, time_each, timer_overhead_ns

SIZES = (10, 100, 1_000, 10_000)
ROLES = ("executor", "planner", "reviewer", "admin")
CURRENCIES = ("USD", "EUR", "GBP", "JPY", "CHF")
TAINT = "untrusted-data-seen"
PEER_PYTHON = Path(__file__).resolve().parent.parent / ".bench" / "peers-policy" / "bin" / "python"
EFFECTS = ("allow", "deny", "require_approval")

# --------------------------------------------------------------------------- shared spec


def make_rules(n: int, rng: random.Random) -> tuple[list[dict[str, Any]], list[str]]:
    """``n`` abstract rules over ``max(4, n // 8)`` tools; and the tool names."""
    verbs = ["read", "write", "send", "pay"]
    tools = [f"svc{i % 13}.{verbs[i % 4]}_{i}" for i in range(max(4, n // 8))]
    rules: list[dict[str, Any]] = [
        {"id": "planner-no-tools", "effect": "deny", "roles": ["planner"]}
    ]
    for i in range(n - 1):
        k = rng.random()
        effect = "allow" if k < 0.6 else "deny" if k < 0.85 else "require_approval"
        rule: dict[str, Any] = {"id": f"r{i}", "effect": effect}
        rule["tools"] = [rng.choice(tools)] if rng.random() < 0.9 else rng.sample(tools, 2)
        if rng.random() < 0.85:
            rule["roles"] = [rng.choice(("executor", "executor", "executor", "reviewer", "admin"))]
        if rng.random() < 0.4:
            rule["min_trust"] = round(rng.uniform(0.2, 0.9), 2)
        if rng.random() < 0.2:
            rule["max_depth"] = rng.randrange(3)
        pick = rng.random()
        if pick < 0.3:
            rule["amount_max"] = rng.choice([100, 1000, 10000])
            rule["currencies"] = rng.sample(CURRENCIES, 2)
        elif pick < 0.5:
            rule["dry_run"] = True
        elif pick < 0.65:
            rule["to_not"] = f"bob@corp{rng.randrange(5)}.example"
        elif pick < 0.8:
            rule["command"] = rng.choice(["git status", "ls -la", "rm -rf /"])
        if rng.random() < 0.3:
            rule["step"] = [1, 20]
            rule["untainted"] = True
        rules.append(rule)
    return rules, tools


def make_requests(tools: list[str], rng: random.Random, k: int) -> list[dict[str, Any]]:
    """``k`` abstract requests: 85% to tools the rules name, the rest to unknown tools."""
    out = []
    for _ in range(k):
        r = rng.random()
        tool = rng.choice(tools) if r < 0.85 else f"svc{rng.randrange(13)}.read_x"
        tool = "unknown.tool" if r >= 0.95 else tool
        out.append(
            {
                "agent": f"agent-{rng.randrange(50)}",
                "role": rng.choice(ROLES[:1] * 4 + ROLES[1:]),
                "trust": round(rng.random(), 2),
                "depth": rng.randrange(3),
                "tool": tool,
                "args": {
                    "amount": rng.choice([5, 250, 5000]),
                    "currency": rng.choice(CURRENCIES),
                    "path": rng.choice(["/srv/data/a.csv", "/etc/passwd", "/tmp/x"]),
                    "to": f"bob@corp{rng.randrange(6)}.example",
                    "command": rng.choice(["git status", "ls -la", "rm -rf /"]),
                    "options": {"dry_run": rng.random() < 0.5},
                },
                "step": rng.randrange(25),
                "tainted": rng.random() < 0.2,
            }
        )
    return out


# --------------------------------------------------------------------------- timing


def timed_prefix(
    fn: Callable[[Any], object],
    items: list[Any],
    budget_s: float,
    max_calls: int,
    min_calls: int = 500,
) -> list[int]:
    """Time ``fn`` on a prefix of ``items`` sized to ~``budget_s`` s (at least ``min_calls``)."""
    probe = items[: min(20, len(items))]
    t0 = time.perf_counter()
    for it in probe:
        fn(it)
    per_call = (time.perf_counter() - t0) / len(probe)
    k = int(budget_s / max(per_call, 1e-9))
    k = max(min_calls, min(k, max_calls))
    rounds = max(1, k // len(items))
    return time_each(fn, items[: min(k, len(items))], rounds, warmup=50)


# --------------------------------------------------------------------------- routeguard


def to_routeguard_yaml(rules: list[dict[str, Any]]) -> str:
    """The abstract rules as a routeguard policy (docs/policy.md)."""
    import yaml

    out = []
    for r in rules:
        rule: dict[str, Any] = {"id": r["id"], "effect": r["effect"]}
        principal: dict[str, Any] = {}
        if "roles" in r:
            principal["role"] = r["roles"]
        if "min_trust" in r:
            principal["min_trust"] = r["min_trust"]
        if "max_depth" in r:
            principal["max_delegation_depth"] = r["max_depth"]
        if principal:
            rule["principal"] = principal
        if "tools" in r:
            rule["action"] = {"tool": r["tools"]}
        args: dict[str, Any] = {}
        if "amount_max" in r:
            args["$.amount"] = {"gt": 0, "lte": r["amount_max"]}
            args["$.currency"] = {"in": r["currencies"]}
        if r.get("dry_run"):
            args["$.options.dry_run"] = {"equals": True}
        if "to_not" in r:
            args["$.to"] = {"not": {"equals": r["to_not"]}}
        if "command" in r:
            args["$.command"] = {"equals": r["command"]}
        when: dict[str, Any] = {"args": args} if args else {}
        if "step" in r:
            when["context"] = {"step": r["step"], "labels_none": [TAINT]}
        if when:
            rule["when"] = when
        out.append(rule)
    return yaml.safe_dump({"rules": out}, sort_keys=False)


def run_routeguard(
    rules: list[dict[str, Any]], requests: list[dict[str, Any]], n_verify: int, budget_s: float
) -> dict[str, Any]:
    """Load the rules into routeguard, decide the verification set, time the request list."""
    from routeguard.enforce.decision import Context, Principal
    from routeguard.enforce.engine import PolicyEngine

    text = to_routeguard_yaml(rules)  # generating the text is not loading it
    t0 = time.perf_counter()
    engine = PolicyEngine.from_yaml(text)
    load_ms = (time.perf_counter() - t0) * 1e3
    native = [
        (
            Principal(q["agent"], q["role"], q["trust"], q["depth"]),
            q["tool"],
            q["args"],
            Context(q["step"], frozenset({TAINT}) if q["tainted"] else frozenset(), 1.7e9),
        )
        for q in requests
    ]
    decide = engine.decide

    def call(x: tuple[Any, str, dict[str, Any], Any]) -> str:
        return decide(x[0], x[1], x[2], x[3]).effect

    decisions = [call(x) for x in native[:n_verify]]
    samples = timed_prefix(call, native, budget_s, 5 * len(native))
    return {"load_ms": load_ms, "decisions": decisions, "samples": samples}


# --------------------------------------------------------------------------- Cedar (peer venv)


def _cedar_str(s: str) -> str:
    """A Cedar string literal (JSON's quoting is Cedar's for the ASCII names used here)."""
    return json.dumps(s)


def to_cedar(rules: list[dict[str, Any]]) -> str:
    """The abstract rules as Cedar policies, one per rule, in rule order (policy0, policy1...)."""
    out = []
    for r in rules:
        head = "forbid" if r["effect"] == "deny" else "permit"
        resource = "resource"
        conds: list[str] = []
        tools = r.get("tools")
        if tools and len(tools) == 1:
            resource = f"resource == Tool::{_cedar_str(tools[0])}"
        elif tools:
            members = ", ".join(f"Tool::{_cedar_str(t)}" for t in tools)
            conds.append(f"[{members}].contains(resource)")
        if "roles" in r:
            conds.append(
                " || ".join(f"principal.role == {_cedar_str(x)}" for x in r["roles"]).join("()")
            )
        if "min_trust" in r:
            conds.append(f'principal.trust.greaterThanOrEqual(decimal("{r["min_trust"]:.2f}"))')
        if "max_depth" in r:
            conds.append(f"principal.depth <= {r['max_depth']}")
        if "amount_max" in r:
            conds.append(f"context.args.amount > 0 && context.args.amount <= {r['amount_max']}")
            members = ", ".join(map(_cedar_str, r["currencies"]))
            conds.append(f"[{members}].contains(context.args.currency)")
        if r.get("dry_run"):
            conds.append("context.args.options.dry_run == true")
        if "to_not" in r:
            conds.append(f"context.args.to != {_cedar_str(r['to_not'])}")
        if "command" in r:
            conds.append(f"context.args.command == {_cedar_str(r['command'])}")
        if "step" in r:
            lo, hi = r["step"]
            conds.append(f"context.step >= {lo} && context.step <= {hi}")
            conds.append(f"!context.labels.contains({_cedar_str(TAINT)})")
        when = f"\nwhen {{ {' && '.join(conds)} }}" if conds else ""
        out.append(f'{head} (principal, action == Action::"call", {resource}){when};')
    return "\n".join(out)


def run_cedar(
    rules: list[dict[str, Any]], requests: list[dict[str, Any]], n_verify: int, budget_s: float
) -> dict[str, Any]:
    """Parse the Cedar policies once, decide the verification set, time the request list."""
    import cedarpy

    text = to_cedar(rules)
    t0 = time.perf_counter()
    policies = cedarpy.PolicySet.from_str(text)
    load_ms = (time.perf_counter() - t0) * 1e3
    approval = {f"policy{i}" for i, r in enumerate(rules) if r["effect"] == "require_approval"}
    native = [
        (
            {
                "principal": {"type": "Agent", "id": q["agent"]},
                "action": {"type": "Action", "id": "call"},
                "resource": {"type": "Tool", "id": q["tool"]},
                "context": {
                    "args": q["args"],
                    "step": q["step"],
                    "labels": [TAINT] if q["tainted"] else [],
                },
            },
            [
                {
                    "uid": {"type": "Agent", "id": q["agent"]},
                    "attrs": {
                        "role": q["role"],
                        "trust": {"__extn": {"fn": "decimal", "arg": f"{q['trust']:.2f}"}},
                        "depth": q["depth"],
                    },
                    "parents": [],
                }
            ],
        )
        for q in requests
    ]
    is_authorized = cedarpy.is_authorized
    allow = cedarpy.Decision.Allow

    def call(x: tuple[dict[str, Any], list[dict[str, Any]]]) -> str:
        res = is_authorized(x[0], policies, x[1])
        if res.decision != allow:
            return "deny"
        reasons = res.diagnostics.reasons
        return "require_approval" if any(p in approval for p in reasons) else "allow"

    decisions = [call(x) for x in native[:n_verify]]
    # cedarpy's own split of one call: time inside Cedar's authorizer vs parsing the entities.
    probes = [is_authorized(x[0], policies, x[1]) for x in native[: min(n_verify, 300)]]
    errors = {e for res in probes for e in res.diagnostics.errors}
    authz_us = percentile([res.metrics["authz_duration_micros"] for res in probes], 50)
    entities_us = percentile([res.metrics["load_entities_duration_micros"] for res in probes], 50)
    samples = timed_prefix(call, native, budget_s, 5 * len(native))
    return {
        "load_ms": load_ms,
        "decisions": decisions,
        "samples": samples,
        "errors": sorted(map(str, errors))[:3],
        "authz_us": authz_us,
        "entities_us": entities_us,
    }


# --------------------------------------------------------------------------- toolkit (peer venv)


def to_toolkit_yaml(rules: list[dict[str, Any]]) -> str:
    """The abstract rules as an agentmesh ``Policy`` (condition expressions, deny_overrides)."""
    import yaml

    out = []
    for r in rules:
        conds: list[str] = []
        tools = r.get("tools")
        if tools and len(tools) == 1:
            conds.append(f"tool_name == '{tools[0]}'")
        elif tools:
            conds.append("tool_name in [" + ", ".join(f"'{t}'" for t in tools) + "]")
        if "roles" in r:
            conds.append("principal.role in [" + ", ".join(f"'{x}'" for x in r["roles"]) + "]")
        if "min_trust" in r:
            conds.append(f"principal.trust >= {r['min_trust']}")
        if "max_depth" in r:
            conds.append(f"principal.depth <= {r['max_depth']}")
        if "amount_max" in r:
            conds.append(f"args.amount > 0 and args.amount <= {r['amount_max']}")
            conds.append("args.currency in [" + ", ".join(f"'{c}'" for c in r["currencies"]) + "]")
        if r.get("dry_run"):
            conds.append("args.options.dry_run")
        if "to_not" in r:
            conds.append(f"args.to != '{r['to_not']}'")
        if "command" in r:
            conds.append(f"args.command == '{r['command']}'")
        if "step" in r:
            lo, hi = r["step"]
            conds.append(f"step >= {lo} and step <= {hi}")
            conds.append(f"taint != '{TAINT}'")
        out.append(
            {
                "name": r["id"],
                "condition": " and ".join(conds),
                "action": r["effect"],
                # deny_overrides picks a deny if any matched, else the highest priority:
                # approval above allow gives routeguard's precedence.
                "priority": 1 if r["effect"] == "require_approval" else 0,
            }
        )
    doc = {
        "apiVersion": "governance.toolkit/v1",
        "name": "bench",
        "agents": ["*"],
        "default_action": "deny",
        "rules": out,
    }
    return yaml.safe_dump(doc, sort_keys=False)


def run_toolkit(
    rules: list[dict[str, Any]], requests: list[dict[str, Any]], n_verify: int, budget_s: float
) -> dict[str, Any]:
    """Load the rules into the toolkit's engine, decide the verification set, time requests."""
    with warnings.catch_warnings():
        # The engine ships in agent-governance-toolkit-core under the old package name, whose
        # __init__ warns that "agentmesh-platform" (the old distribution) is deprecated.
        warnings.simplefilter("ignore", DeprecationWarning)
        from agentmesh.governance.policy import PolicyEngine

    text = to_toolkit_yaml(rules)
    t0 = time.perf_counter()
    engine = PolicyEngine(conflict_strategy="deny_overrides")
    engine.load_yaml(text)
    load_ms = (time.perf_counter() - t0) * 1e3
    native = [
        (
            q["agent"],
            {
                "tool_name": q["tool"],
                "principal": {"role": q["role"], "trust": q["trust"], "depth": q["depth"]},
                "args": q["args"],
                "step": q["step"],
                "taint": TAINT if q["tainted"] else "none",
            },
        )
        for q in requests
    ]
    evaluate = engine.evaluate

    def call(x: tuple[str, dict[str, Any]]) -> str:
        return str(evaluate(x[0], x[1]).action)

    decisions = [call(x) for x in native[:n_verify]]
    samples = timed_prefix(call, native, budget_s, 5 * len(native))
    return {"load_ms": load_ms, "decisions": decisions, "samples": samples}


def peer_worker(spec_path: str, out_path: str) -> None:
    """Subprocess entry (peer venv): run both peers on the spec and write their results."""
    spec = json.loads(Path(spec_path).read_text())
    args = (spec["rules"], spec["requests"], spec["n_verify"], spec["budget_s"])
    result = {"cedar": run_cedar(*args), "toolkit": run_toolkit(*args)}
    Path(out_path).write_text(json.dumps(result))


# --------------------------------------------------------------------------- report


def pct(samples: list[int], q: float) -> float:
    """The ``q`` quantile (0..1) of ``samples`` (ns) in µs."""
    return percentile(samples, q * 100) / 1000.0


def fmt_us(us: float) -> str:
    """Microseconds with a sensible number of digits."""
    return f"{us:,.2f}" if us < 100 else f"{us:,.0f}"


def main() -> None:
    """Generate, verify, time and print the table."""
    quick = "--quick" in sys.argv
    if not PEER_PYTHON.exists():
        sys.exit(
            f"peer venv missing: {PEER_PYTHON}; create it with python3 -m venv and pip install "
            "cedarpy 'agent-governance-toolkit[core]'"
        )
    load_start = os.getloadavg()
    rng = random.Random(11)
    n_requests = 1_000 if quick else 4_000
    budget_s = 3.0 if quick else 12.0
    rows = []
    mismatches_total = 0
    for n in SIZES:
        rules, tools = make_rules(n, rng)
        requests = make_requests(tools, rng, n_requests)
        n_verify = len(requests) if n <= 1_000 else (100 if quick else 300)
        ours = run_routeguard(rules, requests, n_verify, budget_s / 4)
        with tempfile.TemporaryDirectory() as tmp:
            spec_path, out_path = os.path.join(tmp, "spec.json"), os.path.join(tmp, "out.json")
            spec = {"rules": rules, "requests": requests, "n_verify": n_verify}
            spec["budget_s"] = budget_s
            Path(spec_path).write_text(json.dumps(spec))
            subprocess.run(
                [str(PEER_PYTHON), __file__, "--peer-worker", spec_path, out_path], check=True
            )
            peers = json.loads(Path(out_path).read_text())
        mism = {}
        for name in ("cedar", "toolkit"):
            pairs = zip(ours["decisions"], peers[name]["decisions"], strict=True)
            diff = [i for i, (a, b) in enumerate(pairs) if a != b]
            mism[name] = len(diff)
            mismatches_total += len(diff)
            for i in diff[:3]:
                print(
                    f"MISMATCH n={n} {name} request {i}: ours={ours['decisions'][i]} "
                    f"{name}={peers[name]['decisions'][i]} {requests[i]}",
                    file=sys.stderr,
                )
            if peers[name].get("errors"):
                errs = peers[name]["errors"]
                print(f"{name} evaluation errors at n={n}: {errs}", file=sys.stderr)
        mix = {e: ours["decisions"].count(e) for e in EFFECTS}
        rows.append((n, ours, peers, n_verify, mism, mix))
    print()
    print(
        "| rules | routeguard p50 / p99 µs | Cedar (cedarpy) p50 / p99 µs | x ours p50 / p99 "
        "| toolkit p50 / p99 µs | x ours p50 / p99 |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for n, ours, peers, *_ in rows:
        o50, o99 = pct(ours["samples"], 0.5), pct(ours["samples"], 0.99)
        cells = [f"{n:,}", f"{fmt_us(o50)} / {fmt_us(o99)}"]
        for name in ("cedar", "toolkit"):
            s = peers[name]["samples"]
            p50, p99 = pct(s, 0.5), pct(s, 0.99)
            cells += [f"{fmt_us(p50)} / {fmt_us(p99)}", f"{p50 / o50:,.0f}x / {p99 / o99:,.0f}x"]
        print("| " + " | ".join(cells) + " |")
    print()
    print(
        "rules  verified  mismatches(cedar,toolkit)  decisions allow/deny/approval  "
        "samples ours/cedar/toolkit  load ms ours/cedar/toolkit"
    )
    for n, ours, peers, n_verify, mism, mix in rows:
        print(
            f"{n:>6} {n_verify:>8}  {mism['cedar']:>5},{mism['toolkit']:<5}"
            f"               {mix['allow']}/{mix['deny']}/{mix['require_approval']:<16}"
            f"  {len(ours['samples'])}/{len(peers['cedar']['samples'])}/"
            f"{len(peers['toolkit']['samples'])}"
            f"  {ours['load_ms']:.1f}/{peers['cedar']['load_ms']:.1f}/"
            f"{peers['toolkit']['load_ms']:.1f}"
        )
    print("\ncedarpy's own metrics (median over the first 300 requests), µs inside Cedar's")
    print("authorizer / parsing the request's principal entity; the rest of a call is marshalling:")
    for n, _, peers, *_ in rows:
        c = peers["cedar"]
        print(f"{n:>6} rules: authorizer {c['authz_us']:,.0f}, entities {c['entities_us']:,.0f}")
    print(f"\ntimer: perf_counter_ns, median empty-call overhead {timer_overhead_ns():.0f} ns")
    print(f"load average at start / end: {load_start} / {os.getloadavg()} ({os.cpu_count()} CPUs)")
    if mismatches_total:
        sys.exit(f"{mismatches_total} decision mismatches: the timings compare different semantics")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--peer-worker":
        peer_worker(sys.argv[2], sys.argv[3])
    else:
        main()

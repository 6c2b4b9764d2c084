"""Latency of one tool-call policy decision from Python, at 10 to 10,000 rules.

For each size it generates a realistic policy (rules spread over many tools, a few tool globs
and rules for every tool; role, trust and delegation conditions; argument predicates of every
kind; session-label and step conditions; redactions), loads it, and times single decisions on
a mix of calls (tools named literally, tools reached only through a glob, unknown tools), each
call timed on its own so the percentiles are those of single decisions. Rows:

- ``engine.decide``: the public API, arguments as a ``dict`` read in place by Rust;
- ``engine.decide_json``: arguments as JSON bytes (as an LLM's tool call carries them);
- ``msgspec+json``: serialise the ``dict`` with msgspec first, then ``decide_json`` (the
  alternative to reading the ``dict`` in place);
- ``core.decide``: the bare Rust call, without the Python wrapper and its ``Decision``;
- ``reference``: the pure-Python interpreter (the peer the speed-ups are against).

Run: ``.venv/bin/python benches/bench_policy.py [--quick]``. Pure-Rust timings come from
``cargo bench --bench policy``. With ``--load`` it only
times loading (YAML text to a compiled engine; median of 3 at each size), split into parsing and
validating (``load_policy``) and compiling into the Rust matcher.
"""

from __future__ import annotations

import random
import sys
import time

import msgspec

from routeguard.bench.policy import make_calls, make_policy
from routeguard.bench.timing import percentile, time_each, timer_overhead_ns
from routeguard.enforce import reference
from routeguard.enforce.decision import Request
from routeguard.enforce.engine import PolicyEngine, _rust_regex_check
from routeguard.enforce.policy import load_policy

SIZES = (10, 100, 1_000, 10_000)


def pct(samples: list[int], q: float) -> float:
    """The ``q`` quantile (0..1) of ``samples`` (ns) in µs."""
    return percentile(samples, q * 100) / 1000.0


def measure(engine: PolicyEngine, calls: list[Request], rounds: int) -> dict[str, list[int]]:
    """Per-call latencies of every path on the same calls."""
    compiled = engine._compiled
    enc = msgspec.json.encode
    decide = engine.decide
    decide_json = engine.decide_json
    as_json = [(c, enc(c.args)) for c in calls]

    def raw(c: Request) -> object:
        p, x = c.principal, c.context
        return compiled.decide(
            p.agent_id, p.role, p.trust, p.delegation_depth, c.tool, c.args, x.step, x.labels, 1.7e9
        )

    rows: dict[str, list[int]] = {
        "engine.decide": time_each(
            lambda c: decide(c.principal, c.tool, c.args, c.context), calls, rounds
        ),
        "engine.decide_json": time_each(
            lambda cj: decide_json(cj[0].principal, cj[0].tool, cj[1], cj[0].context),
            as_json,
            rounds,
        ),
        "msgspec+json": time_each(
            lambda c: decide_json(c.principal, c.tool, enc(c.args), c.context), calls, rounds
        ),
        "core.decide": time_each(raw, calls, rounds),
    }
    ref_calls = calls[: (200 if len(engine) >= 10_000 else 1_000)]
    policy = engine.policy
    rows["reference"] = time_each(lambda c: reference.decide(policy, c), ref_calls, 1)
    # Sanity: the engine and the reference agree on every call the reference timed.
    assert all(engine.decide_request(c) == reference.decide(policy, c) for c in ref_calls)
    return rows


def time_loads(rounds: int = 3) -> None:
    """Median load time at every size: text -> validated policy -> compiled engine."""
    rng = random.Random(7)
    print(
        f"{'rules':>6} {'YAML lines':>10} {'load ms':>9} {'parse+check ms':>15} {'compile ms':>11}"
    )
    for n in SIZES:
        text, _ = make_policy(n, rng)
        totals, parses, compiles = [], [], []
        for _ in range(rounds):
            t0 = time.perf_counter()
            policy = load_policy(text, regex_check=_rust_regex_check)
            t1 = time.perf_counter()
            PolicyEngine(policy)
            t2 = time.perf_counter()
            totals.append(t2 - t0)
            parses.append(t1 - t0)
            compiles.append(t2 - t1)
        ms = [percentile(x, 50) * 1e3 for x in (totals, parses, compiles)]
        print(f"{n:>6} {text.count(chr(10)):>10} {ms[0]:>9.1f} {ms[1]:>15.1f} {ms[2]:>11.1f}")


def main() -> None:
    if "--load" in sys.argv:
        time_loads()
        return
    quick = "--quick" in sys.argv
    rng = random.Random(7)
    overhead = timer_overhead_ns()
    print(f"timer overhead (included below): {overhead:.0f} ns per call\n")
    header = f"{'rules':>6} {'path':<18} {'p50 µs':>8} {'p99 µs':>8} {'p99.9 µs':>9}"
    print(header)
    print("-" * len(header))
    summary = []
    for n in SIZES:
        text, tools = make_policy(n, rng)
        t0 = time.perf_counter()
        engine = PolicyEngine.from_yaml(text)
        load_ms = (time.perf_counter() - t0) * 1e3
        calls = make_calls(tools, rng, 1_000 if quick else 4_000)
        rows = measure(engine, calls, 2 if quick else 5)
        for name, samples in rows.items():
            print(
                f"{n:>6} {name:<18} {pct(samples, 0.5):>8.2f} {pct(samples, 0.99):>8.2f} "
                f"{pct(samples, 0.999):>9.2f}"
            )
        speedup = pct(rows["reference"], 0.5) / pct(rows["engine.decide"], 0.5)
        summary.append(
            f"{n:>6} rules: load+compile {load_ms:8.1f} ms; engine.decide p99 "
            f"{pct(rows['engine.decide'], 0.99):.2f} µs; {speedup:,.0f}x the reference"
        )
        print()
    print("\n".join(summary))


if __name__ == "__main__":
    main()

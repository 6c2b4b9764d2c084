"""pytest-benchmark micro benchmarks of the hot paths, each beside its peer in one group:
cosine of two 384-d vectors (Rust vs numpy), one policy decision (compiled matcher vs the
Python reference, 100 rules), one ledger reserve+settle pair (Rust ledger vs a locked Python
dict) and one learned-router score given the vector (``score_one`` vs the batch
``score``). Not part of ``make test``; run with

    .venv/bin/pytest benches/test_micro.py --benchmark-only      # or: make bench-micro
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from routeguard._native import core
from routeguard.bench.budget import LockedLedger
from routeguard.bench.policy import make_calls, make_policy
from routeguard.cache.index import cosine
from routeguard.enforce import reference
from routeguard.enforce.engine import PolicyEngine
from routeguard.routing.learned import default_model

DIM = 384


@pytest.fixture(scope="module")
def vectors() -> tuple[Any, Any]:
    rng = np.random.default_rng(1)
    return tuple(rng.standard_normal((2, DIM), dtype=np.float32))


@pytest.mark.parametrize("impl", ["rust", "numpy"])
def test_cosine(benchmark: Any, vectors: tuple[Any, Any], impl: str) -> None:
    a, b = vectors
    benchmark.group = f"cosine {DIM}-d"
    if impl == "rust":
        got = benchmark(cosine, a, b)
    else:
        got = benchmark(lambda: float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
    assert abs(got - float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))) < 1e-5


@pytest.fixture(scope="module")
def policy_case() -> tuple[PolicyEngine, Any]:
    rng = random.Random(7)
    text, tools = make_policy(100, rng)
    engine = PolicyEngine.from_yaml(text)
    return engine, make_calls(tools, rng, 1)[0]


@pytest.mark.parametrize("impl", ["compiled", "reference"])
def test_policy_decide(benchmark: Any, policy_case: tuple[PolicyEngine, Any], impl: str) -> None:
    engine, call = policy_case
    benchmark.group = "policy decide, 100 rules"
    if impl == "compiled":
        got = benchmark(engine.decide, call.principal, call.tool, call.args, call.context)
    else:
        got = benchmark(reference.decide, engine.policy, call)
    assert got == engine.decide_request(call)


@pytest.mark.parametrize("impl", ["rust", "python-locked"])
def test_ledger_pair(benchmark: Any, impl: str) -> None:
    benchmark.group = "ledger reserve+settle, 3-account chain"
    if impl == "rust":
        ledger = core.Ledger()
        cal = ledger.add_calendar(1)
        ids = [ledger.add_account(10**15, calendar=cal) for _ in range(3)]
        benchmark(lambda: ledger.settle(ledger.reserve(ids, 100, 0), 50, 0))
        assert ledger.spent(ids[0], 0) > 0
    else:
        peer = LockedLedger()
        chain = ("key", "team", "org")
        benchmark(lambda: peer.settle(peer.reserve(chain, 100), 50))
        assert peer.used["org"] > 0


@pytest.mark.parametrize("impl", ["score_one", "score-batch"])
def test_learned_score(benchmark: Any, impl: str) -> None:
    model = default_model()
    text = "What is the capital city of France, and why?"
    vector = np.random.default_rng(2).standard_normal(model.dim).astype(np.float32)
    vector /= np.linalg.norm(vector)
    benchmark.group = "learned router score, vector given"
    if impl == "score_one":
        got = benchmark(model.score_one, text, vector)
    else:
        got = float(benchmark(model.score, [text], vector[None, :])[0])
    assert abs(got - float(model.score([text], vector[None, :])[0])) < 1e-4

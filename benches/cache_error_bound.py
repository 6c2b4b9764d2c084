"""The wrong-hit bound (``cache.max_error_rate``) replayed on QQP through the gateway.

Run: ``.venv/bin/python benches/cache_error_bound.py [--dataset qqp] [--orders ab ba]
[--bound-only]``
(Markdown tables on stdout, JSON in ``.bench/cache_error_bound/``). Data is read in place
from ``../shared/data/cache`` (or ``$ROUTEGUARD_DATA/cache``); without it the bench says so
and exits 0. One core (the process pins itself); every text is embedded once with the local
MiniLM, before any configuration is timed.

Protocol. The simulated upstream answers by meaning (:mod:`routeguard.mock.meanings`): the
label-1 pairs of the dataset's file, joined transitively, make clusters, and every question
of one cluster gets that cluster's answer. A seeded sample of ``--pairs`` pairs is replayed
through ``Gateway.chat_result`` in process, one request at a time: every ``text_a`` first,
then every ``text_b`` (``ab``), the reverse (``ba``), or all of them in a seeded random
order (``shuffled``: exchangeable traffic); each request looks up, and a miss stores the
fresh answer, as in production. A served hit is *wrong* when its answer is not the one the
upstream gives the asked question (another cluster's answer). Counted after a warm-up of
``--warmup`` requests (at most half of them): semantic hits (exact-tier hits are the same
question and never wrong), their wrong share with its two-sided 95% Wilson interval, the
semantic hit rate over the requests that reached the semantic tier, and the shadow checks
(would-be hits sent upstream instead, i.e. extra upstream calls) per request.

Datasets: ``qqp`` (pairs of both labels: half the questions asked have no paraphrase in
the cache, and near-duplicates that QQP labels different are common), ``qqp-duplicates``
(label-1 pairs only: every question asked has a paraphrase to find; clusters still from the
whole file), ``gptcache-mock`` (GPTCache's 999 ``origin``/``similar`` pairs, each its own
cluster) and ``paraphrases`` (those, plus MeanCache's 128 main questions and follow-ups,
which must never get the main question's answer).

Configurations: ``max_error_rate`` in {0.02, 0.05, 0.1, 0.2} (defaults otherwise: verifier
on, ``verify_sample: 0.05``, embedding judge), the default fixed threshold (0.90, verifier
on), and two fixed thresholds found in hindsight on the same replay with the real
``SemanticCache`` (0.01 steps): the one with the same semantic hit rate as each delta that
served hits, and the one serving most with a wrong share within delta (the best any fixed
threshold could have done, knowing the answers).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from routeguard.bench.cli import find_data
from routeguard.bench.suite import one_core
from routeguard.cache.bound import wilson_lower, wilson_upper
from routeguard.cache.keys import exact_key, partition_key
from routeguard.cache.semantic import SemanticCache
from routeguard.cache.verify import HitVerifier
from routeguard.embed import default_embedder
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.mock.answers import Prompt, answer
from routeguard.mock.meanings import Meanings, _read_json

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ROUTEGUARD_DATA") or find_data(ROOT) or ROOT.parent / "shared" / "data")
DATA = DATA / "cache"
QQP = DATA / "gptcache-qqp" / "similiar_qqp_full.json.gz"
MOCK = DATA / "gptcache-qqp" / "mock_data.json"  # GPTCache's 999 paraphrase pairs
CONTEXT = DATA / "meancache-context" / "contextual_queries.json"  # 128 follow-up questions
OUT = ROOT / ".bench" / "cache_error_bound"
MODEL = "sim-qa"
F32 = npt.NDArray[np.float32]
Z95 = 1.959964


class MemoEmbedder:
    """The local MiniLM with every vector kept, so later configurations embed nothing."""

    def __init__(self) -> None:
        self.inner = default_embedder("f32")
        self.dim = self.inner.dim
        self.memo: dict[str, F32] = {}

    def embed(self, texts: Sequence[str]) -> F32:
        """Rows for ``texts``, computing only the unseen ones."""
        todo = [t for t in dict.fromkeys(texts) if t not in self.memo]
        if todo:
            for t, v in zip(todo, self.inner.embed(todo), strict=True):
                self.memo[t] = v
        return np.stack([self.memo[t] for t in texts])


@dataclass
class Row:
    """One configuration's outcome after warm-up."""

    config: str
    requests: int
    semantic_lookups: int
    exact_hits: int
    semantic_hits: int
    wrong: int
    wrong_rate: float
    wrong_low: float
    wrong_high: float
    hit_rate: float  # semantic hits / semantic lookups
    shadow_calls: int
    shadow_per_request: float
    shadow_per_would_hit: float
    final_threshold: float | None
    seconds: float


def expected(question: str, meanings: Meanings) -> str:
    """The upstream's answer to ``question`` (what a right hit must carry)."""
    prompt = Prompt(model=MODEL, prompt_tokens=1, last_user_text=question)
    return answer(prompt, meaning=meanings.of(question)).text


def traffic(pairs: Sequence[dict[str, Any]], n: int, seed: int, order: str = "ab") -> list[str]:
    """Every ``text_a`` of a seeded sample of ``n`` pairs, then every ``text_b`` (``order``
    ``ab``), the reverse (``ba``: every ``text_b`` stored first), or all of them in a seeded
    random order (``shuffled``: exchangeable traffic)."""
    rng = random.Random(seed)
    sample = rng.sample(list(pairs), min(n, len(pairs)))
    first, second = [p["text_a"] for p in sample], [p["text_b"] for p in sample]
    out = second + first if order == "ba" else first + second
    if order == "shuffled":
        rng.shuffle(out)
    return out


def _config(url: str, cache: dict[str, Any]) -> dict[str, Any]:
    dep = {"type": "openai", "api_base": url + "/v1", "api_key": "k", "model_name": "qa",
           "model": MODEL, "input_cost_per_mtok": 1.0, "output_cost_per_mtok": 2.0}  # fmt: skip
    return {"model_list": [dep], "cache": {"enabled": True, "ttl": None, **cache}}


async def replay(
    name: str,
    cache: dict[str, Any],
    questions: Sequence[str],
    truth: Sequence[str],
    url: str,
    embedder: MemoEmbedder,
    warmup: int,
) -> Row:
    """Send ``questions`` through a fresh gateway; count hits and wrong hits after warm-up."""
    gw = Gateway.from_config(_config(url, cache), embedder=embedder)
    t0 = time.perf_counter()
    exact = semantic = wrong = shadow = lookups = 0
    try:
        for i, q in enumerate(questions):
            before = gw.cache.metrics.snapshot() if gw.cache is not None else {}
            request = {"model": "qa", "messages": [{"role": "user", "content": q}]}
            res = await gw.chat_result(request)
            if gw.cache is not None and gw.cache._comparing:
                await asyncio.gather(*gw.cache._comparing)
            if i < warmup:
                continue
            after = gw.cache.metrics.snapshot() if gw.cache is not None else {}
            was_exact = after.get("exact_hits", 0) > before.get("exact_hits", 0)
            if was_exact:
                exact += 1
                continue
            lookups += 1
            if res.cache == "shadow":
                shadow += 1
            if res.cache == "hit":
                semantic += 1
                assert res.response is not None
                wrong += res.response["choices"][0]["message"]["content"] != truth[i]
        final = None
        if gw.cache is not None and gw.cache.bounds:
            final = gw.cache.bounds["qa"].estimate().threshold
            if os.environ.get("BOUND_DEBUG"):
                ev = gw.cache.bounds["qa"].evidence
                print({k: int(v) for k, v in sorted(ev.values.items())}, file=sys.stderr)
    finally:
        await gw.aclose()
    rate = wrong / semantic if semantic else 0.0
    would = semantic + shadow
    return Row(
        name, len(questions) - warmup, lookups, exact, semantic, wrong, rate,
        wilson_lower(rate, semantic, Z95), wilson_upper(rate, semantic, Z95),
        semantic / lookups if lookups else 0.0, shadow,
        shadow / (len(questions) - warmup), shadow / would if would else 0.0, final,
        time.perf_counter() - t0,
    )  # fmt: skip


def fixed_outcome(
    threshold: float,
    questions: Sequence[str],
    embedder: MemoEmbedder,
    warmup: int,
    meanings: Meanings,
) -> tuple[float, float]:
    """(semantic hit rate, wrong share of those hits) after warm-up of a fixed threshold
    (verifier on), replayed on the real SemanticCache without the gateway (what the gateway's
    cache layer does per request; a hit is wrong when the cached question means another)."""
    cache = SemanticCache(embedder, threshold=threshold, verifier=HitVerifier())
    hits = lookups = wrong = 0
    part = partition_key("default", None)
    for i, q in enumerate(questions):
        known = exact_key(part, q) in cache._state.entries
        hit = cache.get(q)
        if hit is None:
            cache.put(q, {"q": q})
        if i >= warmup and not known:
            lookups += 1
            if hit is not None and not hit.exact:
                hits += 1
                wrong += meanings.of(hit.response["q"]) != meanings.of(q)
    return (hits / lookups if lookups else 0.0), (wrong / hits if hits else 0.0)


GRID = [round(float(t), 3) for t in np.arange(0.80, 0.9951, 0.01)]


def sweep(
    questions: Sequence[str], embedder: MemoEmbedder, warmup: int, meanings: Meanings
) -> dict[float, tuple[float, float]]:
    """Every fixed threshold of :data:`GRID`: its (hit rate, wrong share) in hindsight."""
    return {t: fixed_outcome(t, questions, embedder, warmup, meanings) for t in GRID}


def tune(target: float, outcomes: dict[float, tuple[float, float]]) -> float:
    """The fixed threshold whose semantic hit rate is closest to ``target``."""
    return min(outcomes, key=lambda t: abs(outcomes[t][0] - target))


def oracle(delta: float, outcomes: dict[float, tuple[float, float]]) -> float | None:
    """The fixed threshold serving most in hindsight with a wrong share at most ``delta``
    (None when none does): what knowing the answers in advance would have chosen."""
    ok = [t for t, (hits, wrong) in outcomes.items() if hits > 0 and wrong <= delta]
    return min(ok) if ok else None


def markdown(
    rows: Sequence[Row], cpu: str, pairs: int, seed: int, warmup: int, order: str = "ab"
) -> str:
    """The results as a Markdown table."""
    how = {"ab": "every text_a, then every text_b", "ba": "every text_b, then every text_a"}.get(
        order, "in a random order"
    )
    head = (
        f"Replay through the gateway, {pairs} pairs (seed {seed}), {2 * pairs} requests "
        f"({how}), first {warmup} as warm-up; one core of {cpu}.\n\n"
        "| configuration | semantic hits | wrong | wrong-hit rate [95% CI] | semantic hit rate "
        "| shadow calls / request | shadow / would-be hit | threshold at the end | seconds |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r.config} | {r.semantic_hits} | {r.wrong} | {r.wrong_rate:.2%} "
        f"[{r.wrong_low:.2%}, {r.wrong_high:.2%}] | {r.hit_rate:.1%} | "
        f"{r.shadow_per_request:.1%} | {r.shadow_per_would_hit:.1%} | "
        f"{'-' if r.final_threshold is None else f'{r.final_threshold:.2f}'} | {r.seconds:.0f} |"
        for r in rows
    ]
    return head + "\n".join(lines) + "\n"


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo``), or ``unknown``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def load_data(dataset: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the pairs a dataset replays, the pairs its clusters are made of): ``text_a``,
    ``text_b``, ``label``."""
    if dataset in ("qqp", "qqp-duplicates"):
        every = list(_read_json(QQP))
        if dataset == "qqp-duplicates":  # every question asked has a paraphrase to find
            return [p for p in every if int(p["label"]) == 1], every
        return every, every
    raw = _read_json(MOCK)  # every pair a paraphrase: origin -> similar
    data = [{"text_a": p["origin"], "text_b": p["similar"], "label": 1} for p in raw]
    if dataset == "paraphrases":  # ... and follow-ups that must not get the first answer
        for row in _read_json(CONTEXT):
            data.append({"text_a": row["Main Query"], "text_b": row["Follow-Up Query"],
                         "label": 0})  # fmt: skip
    return data, data


async def run_order(
    args: argparse.Namespace,
    order: str,
    data: Sequence[dict[str, Any]],
    meanings: Meanings,
    embedder: MemoEmbedder,
    url: str,
) -> list[Row]:
    """Every configuration on one order of the traffic."""
    questions = traffic(data, args.pairs, args.seed, order)
    warmup = min(args.warmup, len(questions) // 2)
    truth = [expected(q, meanings) for q in questions]
    rows: list[Row] = []

    async def run(name: str, cache: dict[str, Any]) -> Row:
        row = await replay(name, cache, questions, truth, url, embedder, warmup)
        rows.append(row)
        print(markdown([row], cpu_name(), len(questions) // 2, args.seed, warmup, order),
              file=sys.stderr)  # fmt: skip
        return row

    embedder.embed(questions)  # once, before any timing
    if args.bound_only:  # the fixed thresholds' rows are the offline replay's to the hit
        for delta in args.deltas:
            await run(f"max_error_rate {delta}", {"max_error_rate": delta})
        return rows
    outcomes = sweep(questions, embedder, warmup, meanings)
    for delta in args.deltas:
        row = await run(f"max_error_rate {delta}", {"max_error_rate": delta})
        if row.semantic_hits:
            t = tune(row.hit_rate, outcomes)
            await run(f"fixed {t} (same hit rate as {delta})", {"threshold": t})
        best = oracle(delta, outcomes)
        if best is not None:
            await run(f"fixed {best} (hindsight: most hits within {delta})", {"threshold": best})
        else:
            print(f"no fixed threshold keeps within {delta} in hindsight", file=sys.stderr)
    await run("fixed 0.90 (default)", {})
    return rows


async def main_async(args: argparse.Namespace) -> dict[str, list[Row]]:
    """Every configuration on every order asked for."""
    data, truth = load_data(args.dataset)
    pairs = [(p["text_a"], p["text_b"], int(p["label"])) for p in truth]
    # every text its own meaning unless a label-1 pair joins it to another
    pairs += [(t, t, 1) for p in truth for t in (p["text_a"], p["text_b"])]
    meanings = Meanings.from_pairs(pairs)
    embedder = MemoEmbedder()
    out: dict[str, list[Row]] = {}
    with MockServer(meanings=meanings) as mock:
        for order in args.orders:
            out[order] = await run_order(args, order, data, meanings, embedder, mock.url)
    return out


def main() -> int:
    """Parse arguments, run, print and save."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=6000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2000, help="at most half the requests")
    p.add_argument("--orders", nargs="+", choices=["ab", "ba", "shuffled"], default=["ab", "ba"])
    p.add_argument("--dataset", default="qqp",
                   choices=["qqp", "qqp-duplicates", "gptcache-mock", "paraphrases"])  # fmt: skip
    p.add_argument("--deltas", type=float, nargs="+", default=[0.02, 0.05, 0.1, 0.2])
    p.add_argument("--bound-only", action="store_true", help="no fixed-threshold rows")
    args = p.parse_args()
    if not QQP.exists():
        print(f"no data at {QQP}: nothing to run", file=sys.stderr)
        return 0
    with one_core():
        results = asyncio.run(main_async(args))
    OUT.mkdir(parents=True, exist_ok=True)
    for order, rows in results.items():
        n = min(args.pairs, len(load_data(args.dataset)[0]))
        warmup = min(args.warmup, n)
        table = markdown(rows, cpu_name(), n, args.seed, warmup, order)
        print(table)
        (OUT / f"results-{args.dataset}-{order}.md").write_text(table)
        dump = json.dumps([asdict(r) for r in rows], indent=1) + "\n"
        (OUT / f"results-{args.dataset}-{order}.json").write_text(dump)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

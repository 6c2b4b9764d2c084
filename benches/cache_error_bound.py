"""The wrong-hit bound (``cache.max_error_rate``) replayed on QQP through the gateway.

Run: ``.venv/bin/python benches/cache_error_bound.py [--pairs 6000] [--seed 7]`` (Markdown
table on stdout, JSON in ``.bench/cache_error_bound/``). Data is read in place from
``../shared/data/cache/gptcache-qqp`` (or ``$ROUTEGUARD_DATA/cache``); without it the bench
says so and exits 0. One core (the process pins itself); the first run embeds every text
with the local MiniLM, later configurations reuse the vectors (a memo in the process).

Protocol. The simulated upstream answers by meaning (:mod:`routeguard.mock.meanings`): the
label-1 pairs of the whole QQP file, joined transitively, make clusters, and every question
of one cluster gets that cluster's answer. A seeded sample of ``--pairs`` pairs (both
labels) is replayed through ``Gateway.chat_result`` in process, one request at a time: every
``text_a`` first, then every ``text_b`` (``--order ab``, the default), or all of them in a
seeded random order (``--order shuffled``); each request looks up, and a miss stores the
fresh answer, as in production. A served hit is *wrong* when its answer is not the one the
upstream gives the asked question (another cluster's answer). Counted after a warm-up of
``--warmup`` requests: semantic hits (exact-tier hits are the same question and never
wrong), their wrong share with its two-sided 95% Wilson interval, the semantic hit rate over
the requests that reached the semantic tier, and the shadow checks (would-be hits sent
upstream instead, i.e. extra upstream calls) per request.

``--dataset gptcache-mock`` replays GPTCache's ``mock_data.json`` instead (999 pairs of an
``origin`` sentence and a paraphrase: clean labels, every pair its own cluster).

Configurations: ``max_error_rate`` in {0.01, 0.02, 0.05, 0.1, 0.2} (defaults otherwise:
verifier on, ``verify_sample: 0.05``, embedding judge), the default fixed threshold (0.90,
verifier on), and for each delta that served semantic hits a fixed threshold tuned (on the
same replay, offline, with the real ``SemanticCache``) to reach the same semantic hit rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
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
    ``ab``), or all of them in a seeded random order (``shuffled``: exchangeable traffic)."""
    rng = random.Random(seed)
    sample = rng.sample(list(pairs), n)
    out = [p["text_a"] for p in sample] + [p["text_b"] for p in sample]
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


def fixed_hit_rate(
    threshold: float, questions: Sequence[str], embedder: MemoEmbedder, warmup: int
) -> float:
    """The semantic hit rate after warm-up of a fixed threshold (verifier on), replayed on the
    real SemanticCache without the gateway (what the gateway's cache layer does per request)."""
    cache = SemanticCache(embedder, threshold=threshold, verifier=HitVerifier())
    hits = lookups = 0
    part = partition_key("default", None)
    for i, q in enumerate(questions):
        known = exact_key(part, q) in cache._state.entries
        hit = cache.get(q)
        if hit is None:
            cache.put(q, {"q": q})
        if i >= warmup and not known:
            lookups += 1
            hits += hit is not None and not hit.exact
    return hits / lookups if lookups else 0.0


def tune(target: float, questions: Sequence[str], embedder: MemoEmbedder, warmup: int) -> float:
    """The fixed threshold (0.005 steps) whose semantic hit rate is closest to ``target``."""
    best, gap = 0.90, math.inf
    for t in np.arange(0.80, 0.995, 0.005):
        rate = fixed_hit_rate(float(t), questions, embedder, warmup)
        if abs(rate - target) < gap:
            best, gap = round(float(t), 3), abs(rate - target)
    return best


def markdown(
    rows: Sequence[Row], cpu: str, pairs: int, seed: int, warmup: int, order: str = "ab"
) -> str:
    """The results as a Markdown table."""
    how = "every text_a, then every text_b" if order == "ab" else "in a random order"
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


async def main_async(args: argparse.Namespace) -> list[Row]:
    """Run every configuration."""
    if args.dataset == "gptcache-mock":  # every pair a paraphrase: origin -> similar
        raw = _read_json(MOCK)
        data = [{"text_a": p["origin"], "text_b": p["similar"], "label": 1} for p in raw]
    else:
        data = _read_json(QQP)
    pairs = [(p["text_a"], p["text_b"], int(p["label"])) for p in data]
    meanings = Meanings.from_pairs(pairs)
    questions = traffic(data, args.pairs, args.seed, args.order)
    truth = [expected(q, meanings) for q in questions]
    embedder = MemoEmbedder()
    rows: list[Row] = []
    with MockServer(meanings=meanings) as mock:
        for delta in args.deltas:
            name = f"max_error_rate {delta}"
            row = await replay(
                name, {"max_error_rate": delta}, questions, truth, mock.url, embedder, args.warmup
            )
            rows.append(row)
            print(markdown(rows[-1:], cpu_name(), args.pairs, args.seed, args.warmup),
                  file=sys.stderr)  # fmt: skip
            if row.semantic_hits == 0:
                continue  # nothing served: no fixed threshold to match
            t = tune(row.hit_rate, questions, embedder, args.warmup)
            rows.append(
                await replay(
                    f"fixed {t} (same hit rate as {delta})", {"threshold": t}, questions,
                    truth, mock.url, embedder, args.warmup,
                )
            )  # fmt: skip
            print(markdown(rows[-1:], cpu_name(), args.pairs, args.seed, args.warmup),
                  file=sys.stderr)  # fmt: skip
        default = await replay(
            "fixed 0.90 (default)", {}, questions, truth, mock.url, embedder, args.warmup
        )
        rows.append(default)
    return rows


def main() -> int:
    """Parse arguments, run, print and save."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=6000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2000)
    p.add_argument("--order", choices=["ab", "shuffled"], default="ab")
    p.add_argument("--dataset", choices=["qqp", "gptcache-mock"], default="qqp")
    p.add_argument("--deltas", type=float, nargs="+", default=[0.01, 0.02, 0.05, 0.1, 0.2])
    args = p.parse_args()
    if not QQP.exists():
        print(f"no data at {QQP}: nothing to run", file=sys.stderr)
        return 0
    with one_core():
        rows = asyncio.run(main_async(args))
    table = markdown(rows, cpu_name(), args.pairs, args.seed, args.warmup, args.order)
    print(table)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"results-{args.dataset}-{args.order}.md").write_text(table)
    dump = json.dumps([asdict(r) for r in rows], indent=1) + "\n"
    (OUT / f"results-{args.dataset}-{args.order}.json").write_text(dump)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

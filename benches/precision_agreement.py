"""Does a narrower embedding precision change what the layers decide? f32 against f16 (or
bf16) on the same texts, for the cache and for the learned router.

    ROUTEGUARD_SIMD=avx2 .venv/bin/python benches/precision_agreement.py [--precision f16]

Cache: a seeded sample of QQP pairs (``../shared/data/cache/gptcache-qqp``); each pair's
cosine at both precisions, the largest and mean difference, how many pairs change side of
each threshold, and pair-level precision and recall at each (hit = cosine >= threshold,
right = label 1). Router: a seeded sample of RouteLLM's MMLU prompts scored by the bundled
learned router from either precision's vectors; score differences, rank correlation, how
many routing decisions flip at the thresholds for 10%..90% strong calls, and APGR from
both. Prints the CPU, the SIMD level and the encoder's kernel path. Not part of
`make test`; skips with a message without the data.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from routeguard._native import core
from routeguard.embed import MiniLMEmbedder
from routeguard.embed.precision import cpu_model
from routeguard.routing import metrics
from routeguard.routing.learned import default_model
from routeguard.routing.outcomes import read_routellm_mmlu

DATA = Path(os.environ.get("ROUTEGUARD_DATA", Path(__file__).resolve().parents[2] / "shared/data"))
QQP = DATA / "cache" / "gptcache-qqp" / "similiar_qqp_full.json.gz"
MMLU = DATA / "routing" / "routellm-mmlu"
THRESHOLDS = (0.80, 0.85, 0.90, 0.95)


def qqp_pairs(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` QQP pairs drawn with ``seed``."""
    with tarfile.open(QQP) as tar:
        member = tar.extractfile("examples/benchmark/similiar_qqp_full.json")
        assert member is not None
        pairs: list[dict[str, Any]] = json.load(member)
    return random.Random(seed).sample(pairs, min(n, len(pairs)))


def cosines(emb: MiniLMEmbedder, a: list[str], b: list[str]) -> np.ndarray[Any, Any]:
    """Row-wise cosine of the two lists' embeddings (unit rows, so a dot product)."""
    va, vb = emb.embed(a).astype(np.float64), emb.embed(b).astype(np.float64)
    return np.einsum("ij,ij->i", va, vb)


def cache_side(narrow: MiniLMEmbedder, full: MiniLMEmbedder, n: int, seed: int) -> None:
    """Print how the pair cosines and threshold decisions move between the precisions."""
    pairs = qqp_pairs(n, seed)
    a, b = [p["text_a"] for p in pairs], [p["text_b"] for p in pairs]
    label = np.array([p["label"] == 1 for p in pairs])
    c32, cn = cosines(full, a, b), cosines(narrow, a, b)
    diff = np.abs(c32 - cn)
    print(f"\nCache, {len(pairs)} QQP pairs: |cos f32 - cos {narrow.precision}| "
          f"max {diff.max():.2e}, mean {diff.mean():.2e}")  # fmt: skip
    print(
        "| threshold | pairs that change side | precision f32 | precision "
        f"{narrow.precision} | recall f32 | recall {narrow.precision} |"
    )
    print("|---|---|---|---|---|---|")
    for t in THRESHOLDS:
        h32, hn = c32 >= t, cn >= t
        flips = int((h32 != hn).sum())
        p32 = (h32 & label).sum() / max(h32.sum(), 1)
        pn = (hn & label).sum() / max(hn.sum(), 1)
        r32, rn = (h32 & label).sum() / label.sum(), (hn & label).sum() / label.sum()
        print(f"| {t:.2f} | {flips} | {p32:.4f} | {pn:.4f} | {r32:.4f} | {rn:.4f} |")


def router_side(narrow: MiniLMEmbedder, full: MiniLMEmbedder, n: int, seed: int) -> None:
    """Print how the learned router's scores and decisions move between the precisions."""
    data = read_routellm_mmlu(MMLU)
    idx = sorted(random.Random(seed).sample(range(len(data)), min(n, len(data))))
    prompts = [data.prompts[i] for i in idx]
    cheap, strong = data.cheap[idx], data.strong[idx]
    model = default_model()
    s32 = model.score(prompts, full.embed(prompts))
    sn = model.score(prompts, narrow.embed(prompts))
    diff = np.abs(s32 - sn)
    rank = np.corrcoef(np.argsort(np.argsort(s32)), np.argsort(np.argsort(sn)))[0, 1]
    print(f"\nRouter, {len(prompts)} MMLU prompts: |score f32 - score {narrow.precision}| "
          f"max {diff.max():.2e}, mean {diff.mean():.2e}; rank correlation {rank:.6f}")  # fmt: skip
    flips = []
    for share in np.linspace(0.1, 0.9, 9):
        t = float(np.quantile(s32, 1 - share))
        flips.append(int(((s32 >= t) != (sn >= t)).sum()))
    print(f"decisions that flip at the 10%..90% strong-share thresholds: {flips}")
    a32, an = metrics.apgr(s32, cheap, strong), metrics.apgr(sn, cheap, strong)
    print(f"APGR f32 {a32:.4f}, {narrow.precision} {an:.4f} (difference {an - a32:+.4f})")


def main() -> int:
    """Compare the two precisions on both layers' data."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--precision", default="f16", choices=("f16", "bf16", "int8"))
    ap.add_argument("--pairs", type=int, default=4000, help="QQP pairs to sample")
    ap.add_argument("--prompts", type=int, default=3000, help="MMLU prompts to sample")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    if not QQP.is_file() or not MMLU.is_dir():
        print(f"no evaluation data under {DATA}: nothing to compare", file=sys.stderr)
        return 0
    full = MiniLMEmbedder(backend="rust", precision="f32")
    narrow = MiniLMEmbedder(backend="rust", precision=args.precision)
    isa = narrow.model().encoder
    assert isa is not None
    print(f"CPU: {cpu_model()}; SIMD level {core.simd_level()}; encoder path {isa.isa}")
    cache_side(narrow, full, args.pairs, args.seed)
    router_side(narrow, full, args.prompts, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

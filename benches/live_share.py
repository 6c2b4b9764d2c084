"""How well :class:`routeguard.routing.calibration.LiveShare` holds a target strong-call share
on score streams unlike the training distribution's, and what a decision costs.

Run: ``.venv/bin/python benches/live_share.py [--n 5000]``.

Data flow: seeded score streams (uniform over the model's range; all in 0..0.15, what the
MMLU-trained router gives chat prompts; bimodal; a distribution sliding by ten times its
spread; a sudden step; three distinct scores) -> one :class:`LiveShare` per stream and target
share, started from a training threshold (0.2) that is wrong for all but the first -> the
realised share after 50, 200 and all decisions, the worst share in any block of 200 decisions
after the first 200, and the mean time per decision (wall clock, this machine; printed only).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from routeguard.routing.calibration import LiveShare

SHARES = (0.1, 0.3, 0.5, 0.9)
BLOCK = 200


def stream(kind: str, n: int, rng: np.random.Generator) -> list[float]:
    """One seeded stream of scores."""
    if kind == "uniform":
        xs = rng.uniform(-1.0, 1.0, n)
    elif kind == "0..0.15":
        xs = rng.uniform(0.0, 0.15, n)
    elif kind == "bimodal":
        xs = np.where(rng.random(n) < 0.7, rng.normal(-0.5, 0.05, n), rng.normal(0.6, 0.05, n))
    elif kind == "drifting":
        xs = rng.normal(0.0, 0.1, n) + np.linspace(-0.5, 0.5, n)
    elif kind == "step":
        xs = np.concatenate([rng.normal(0.5, 0.05, n // 2), rng.normal(-0.5, 0.05, n - n // 2)])
    elif kind == "3 values":
        xs = rng.choice([0.01, 0.02, 0.05], n, p=[0.6, 0.3, 0.1])
    else:
        raise ValueError(kind)
    return [float(x) for x in xs]


def main(argv: list[str] | None = None) -> int:
    """Print the table (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=5000, help="decisions per stream")
    args = ap.parse_args(argv)
    n = max(args.n, 2 * BLOCK)
    print(f"{n} decisions per stream, window 1024, cold start 8, initial threshold 0.2")
    print(f"{'stream':<10} {'target':>6} {'after 50':>9} {'after 200':>10} {'all':>7} "
          f"{'worst block of 200':>19}")  # fmt: skip
    worst = 0.0
    for kind in ("uniform", "0..0.15", "bimodal", "drifting", "step", "3 values"):
        for share in SHARES:
            scores = stream(kind, n, np.random.default_rng(int(share * 100)))
            live = LiveShare(share, initial=0.2)
            strong = np.array([live.decide(s) for s in scores])
            done = (n - BLOCK) // BLOCK * BLOCK
            blocks = strong[BLOCK : BLOCK + done].reshape(-1, BLOCK).mean(axis=1)
            off = blocks[np.argmax(np.abs(blocks - share))]
            worst = max(worst, float(abs(strong.mean() - share)))
            print(
                f"{kind:<10} {share:>6.0%} {strong[:50].mean():>9.1%} {strong[:200].mean():>10.1%} "
                f"{strong.mean():>7.1%} {off:>19.1%}"
            )
    print(f"largest gap between realised and target share over a whole stream: {worst:.2%}")
    live = LiveShare(0.3, initial=0.0)
    xs = stream("uniform", 200_000, np.random.default_rng(9))
    started = time.perf_counter()
    for x in xs:
        live.decide(x)
    took = time.perf_counter() - started
    print(f"LiveShare.decide: {took / len(xs) * 1e6:.2f} us per decision (window 1024, full)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

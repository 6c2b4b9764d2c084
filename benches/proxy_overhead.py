"""Proxy overhead: the simulated upstream direct, through a bare passthrough, through
routeguard (master key, and a virtual key with budget and limits) and through LiteLLM's proxy,
in one run on the same machine. A thin wrapper over the ``proxy`` suite
(:mod:`routeguard.bench.proxy`), keeping this script's flags and its per-target table;
``routeguard bench --suite proxy`` gives the same comparison as ratio rows.

    .venv/bin/python benches/proxy_overhead.py [--requests 2000] [--rounds 3] [--skip-litellm]

LiteLLM is the ``litellm`` command that ``--litellm PATH`` or ``$ROUTEGUARD_BENCH_LITELLM``
names, else one importable here, else one installed pinned (``litellm[proxy]==1.108.7``) in an
isolated venv under .bench/ on first use. Not part of `make test`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from routeguard.bench import proxy
from routeguard.bench.proxy import (
    BODY,
    MASTER_KEY,
    free_port,
    start,
    stop,
    wait_ready,
    write_config,
)
from routeguard.bench.report import cpu_model

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / ".bench"
# proxy_openloop.py and bench_first_request.py import these from here.
__all__ = ["BODY", "MASTER_KEY", "ROOT", "ensure_litellm", "free_port", "start", "stop",
           "wait_ready", "write_config"]  # fmt: skip


def ensure_litellm() -> Path:
    """LiteLLM's proxy pinned in .bench/litellm (installed on first use)."""
    return proxy.install_litellm(BENCH_DIR / "litellm")


def main() -> int:
    """Drive every target at each concurrency level and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000, help="requests per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per level")
    ap.add_argument("--concurrency", default="1,10,100")
    ap.add_argument("--skip-litellm", action="store_true")
    ap.add_argument("--litellm", metavar="PATH", type=Path,
                    help="LiteLLM's `litellm` command (default: $ROUTEGUARD_BENCH_LITELLM, else "
                    "one importable here, else installed pinned under .bench/litellm)")  # fmt: skip
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    litellm = None
    if not args.skip_litellm:
        litellm, why = proxy.find_litellm(args.litellm)
        if litellm is None and args.litellm is None:
            litellm = ensure_litellm()
            why = f"LiteLLM: {litellm} (installed under .bench/)"
        print(why, flush=True)
    with proxy.targets(litellm) as found:
        print(f"CPU: {cpu_model()}", flush=True)
        results = proxy.measure(found, levels, args.requests, args.rounds)
        names = list(found)
    for c in levels:
        for name in names:
            r = results[(name, c)]
            print(f"{name:>14} c={c:<4} p50={r.p50:7.3f} ms  p99={r.p99:7.3f} ms  "
                  f"{r.rps:8.0f} req/s  errors={r.errors}")  # fmt: skip
    print("\n" + proxy.markdown(results, levels, names))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Build the shipped default router: its gain heads plus the trivial-prompt head, recalibrated.

Run: ``.venv/bin/python benches/router_default.py [--cache DIR]`` (the embeddings of
``router_families.py``). Steps, all deterministic:

1. the packaged model's two gain heads (trained on RouteLLM MMLU's random 80%, see
   ``router_quality.py``); a third head, if the packaged model has one, is dropped first;
2. :func:`routeguard.routing.trivial.add_trivial_head`: P(trivial social turn) from synthetic
   greetings/thanks/farewells against every prompt of the three outcome sets and their first
   six words, subtracted from the score with the weight of the gain score's 1-99% spread;
3. the calibration of ``router_calibration.py --write-default`` (isotonic or Platt, whichever
   has the lower leave-one-family-out ECE), fitted on the rows the gain heads never saw;
4. written over ``routeguard/routing/data/default_router.npz``; prints size and the decision
   latency given the embedding.

The spread test (``tests/test_routing_spread.py``) and ``router_families.py``'s
``shipped+trivial`` row measure the result; neither feeds back into this script.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import router_calibration as rc
from routeguard.embed import default_embedder
from routeguard.routing import learned
from routeguard.routing.learned import default_model, default_model_path
from routeguard.routing.trivial import add_trivial_head, gain_heads
from router_families import CACHE, cpu_name, latency, load


def main(argv: list[str] | None = None) -> int:
    """Write the default model (gain heads + trivial head, recalibrated)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=CACHE, help="embedding cache directory")
    args = ap.parse_args(argv)
    c = load(args.cache)
    base = gain_heads(default_model())
    model = add_trivial_head(base, c.data.prompts, c.vectors, default_embedder("f32"))
    path = default_model_path()
    model.save(path)
    learned._default = None  # the calibration step reads the model just written
    scores = default_model().score(c.data.prompts, c.vectors)
    rows = rc.shipped_rows(c, scores)
    method = rc.choose(rows)
    rc.write_default(c, scores, method, rows)
    learned._default = None
    final = default_model()
    print(f"CPU: {cpu_name()}; head weights {final.head_coef.round(4).tolist()}")
    print(f"wrote {path} ({path.stat().st_size / 1e3:.1f} KB)")
    print(f"decision given the embedding: p50 {latency(final, c) * 1e6:.1f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``routeguard router ...``: score prompts, train a router on your outcomes, evaluate, calibrate.

- ``score``: JSON lines ``{"prompt": ...}`` on stdin -> ``{"score": float, "p_cheap_ok":
  float}`` per line on stdout (higher score = more in need of the strong model; ``p_cheap_ok``
  = the calibrated P(the cheap answer is as good as the strong one's), present when the model
  carries a calibration), with the default model or ``--model``.
- ``train OUTCOMES [-o model.npz]``: outcomes as JSON lines (``{"prompt", "cheap_ok",
  "strong_ok"}`` or ``cheap_score``/``strong_score``) or a directory of RouteLLM MMLU CSVs ->
  prompts embedded with the default MiniLM -> :func:`routeguard.routing.learned.train` -> the
  ``.npz`` to name in a route's ``model``. ``--holdout F`` keeps a hashed share of prompts out of
  training and reports the model's quality on them; ``--exclude-group`` leaves a group out
  (the shipped model: ``--holdout 0.2 --exclude-group high_school_mathematics`` on RouteLLM's
  MMLU directory). Both ``train`` forms add the trivial-social-turn head
  (:mod:`routeguard.routing.trivial`) unless ``--no-trivial-head``.
- ``train --from-log LOG --config CONFIG [--feedback FILE] [--outcomes F] --out model.npz``:
  the logged requests with feedback as outcome rows (:mod:`routeguard.routing.fromlog`),
  trained on with any outcome files, reported on a held-out hash slice of the logged rows
  against the route's current model (:mod:`routeguard.routing.trainlog`).
- ``eval OUTCOMES``: APGR / CPT(50%) / CPT(80%) of a model on outcome data (by default on the
  20% hash holdout the shipped model never saw) beside random and the longer-prompt rule.
- ``calibrate``: prompts of a sample of traffic on stdin -> the threshold for a strong-call
  share or a cost ceiling, to put in the route config.

The main ``routeguard`` parser calls :func:`register`; each command returns an exit code.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from routeguard.errors import RouteguardError
from routeguard.routing import metrics
from routeguard.routing.calibration import calibrate
from routeguard.routing.learned import LearnedRouter, default_model, train
from routeguard.routing.outcomes import holdout_mask, read_outcomes
from routeguard.routing.trivial import trivial_extend
from routeguard.routing.vectors import embed_many

_BATCH = 256


def register(subparsers: Any) -> None:
    """Add the ``router`` command (with its subcommands) to the main parser's subparsers.
    The parsed namespace's ``run`` attribute is the function to call with it."""
    router = subparsers.add_parser("router", help="score, train, evaluate and calibrate routers")
    sub = router.add_subparsers(dest="router_command", required=True)

    score = sub.add_parser(
        "score", help='stdin {"prompt": ...} lines -> {"score": x, "p_cheap_ok": p} lines'
    )
    score.add_argument("--model", help="a trained .npz (default: the shipped model)")
    score.set_defaults(run=_score)

    tr = sub.add_parser("train", help="train a router on outcome labels or logged traffic")
    tr.add_argument("outcomes", nargs="?", help="JSON lines file, or a RouteLLM MMLU directory")
    tr.add_argument(
        "-o", "--output", "--out", default="router.npz", help="where to write the model"
    )
    tr.add_argument(
        "--holdout",
        type=float,
        default=None,
        help="share of prompts to hold out and report on (default 0, 0.2 with --from-log)",
    )
    tr.add_argument(
        "--from-log",
        metavar="LOG",
        help="train on this request log's requests (logged with log_content) and their feedback",
    )
    tr.add_argument(
        "--feedback",
        metavar="FILE",
        help="feedback entries: a .feedback.jsonl or the server database "
        "(default: LOG.feedback.jsonl)",
    )
    tr.add_argument(
        "--outcomes",
        dest="more_outcomes",
        action="append",
        default=[],
        metavar="FILE",
        help="more outcome rows (JSON lines) to train on with --from-log; repeatable",
    )
    tr.add_argument(
        "--config", help="the gateway config: routes.<alias>.cheap/strong and current model"
    )
    tr.add_argument("--route", help="only this route's requests (default: every routed route)")
    tr.add_argument("--l2", type=float, default=10.0, help="L2 penalty of both heads")
    tr.add_argument("--cache", help="directory to cache prompt embeddings in")
    tr.add_argument(
        "--no-trivial-head",
        action="store_true",
        help="train the two gain heads only, without the head that puts trivial social turns "
        "(greetings, thanks) below real asks",
    )
    tr.add_argument(
        "--exclude-group",
        action="append",
        default=[],
        metavar="GROUP",
        help="leave this group (e.g. an MMLU subject) out of training; repeatable",
    )
    tr.set_defaults(run=_train)

    ev = sub.add_parser("eval", help="APGR and CPT of a router on outcome data")
    ev.add_argument("outcomes", help="JSON lines file, or a RouteLLM MMLU directory")
    ev.add_argument("--model", help="a trained .npz (default: the shipped model)")
    ev.add_argument(
        "--holdout",
        type=float,
        default=0.2,
        help="evaluate on this hashed share of prompts (the shipped model's held-out 0.2); "
        "0 = every prompt",
    )
    ev.add_argument("--cache", help="directory to cache prompt embeddings in")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.set_defaults(run=_eval)

    cal = sub.add_parser("calibrate", help="threshold for a strong share or a cost ceiling")
    cal.add_argument("--model", help="a trained .npz (default: the shipped model)")
    how = cal.add_mutually_exclusive_group(required=True)
    how.add_argument("--share", type=float, help="share of calls for the strong model")
    how.add_argument("--cost-ceiling", type=float, help="mean cost per request not to exceed")
    cal.add_argument("--cheap-cost", type=float, help="mean cost of one cheap call")
    cal.add_argument("--strong-cost", type=float, help="mean cost of one strong call")
    cal.set_defaults(run=_calibrate)


def main(argv: list[str] | None = None) -> int:
    """Run ``routeguard router ...`` on its own (what the main CLI does after register)."""
    parser = argparse.ArgumentParser(prog="routeguard")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.run(args))


def _model(path: str | None) -> LearnedRouter:
    return default_model() if path is None else LearnedRouter.load(Path(path))


def _prompts(stream: TextIO) -> Iterator[list[str]]:
    """Batches of prompts from JSON lines ``{"prompt": ...}`` (blank lines skipped)."""
    batch: list[str] = []
    for n, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RouteguardError(f"stdin line {n}: not valid JSON ({exc.msg})") from None
        prompt = rec.get("prompt") if isinstance(rec, dict) else None
        if not isinstance(prompt, str):
            raise RouteguardError(f'stdin line {n}: expected {{"prompt": "<text>"}}')
        batch.append(prompt)
        if len(batch) == _BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _score(args: argparse.Namespace) -> int:
    try:
        model = _model(args.model)
        cal = model.calibration
        for batch in _prompts(sys.stdin):
            scores = model.score(batch)
            probs = cal(scores) if cal is not None else None
            for i, s in enumerate(scores):
                out = {"score": round(float(s), 6)}
                if probs is not None:
                    out["p_cheap_ok"] = round(float(probs[i]), 4)
                sys.stdout.write(json.dumps(out) + "\n")
            sys.stdout.flush()
    except RouteguardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _vectors(prompts: list[str], cache: str | None) -> np.ndarray[Any, np.dtype[np.float32]]:
    from routeguard.embed import default_embedder

    return embed_many(prompts, default_embedder(), cache_dir=cache, progress=len(prompts) > 1000)


def _train(args: argparse.Namespace) -> int:
    if args.from_log is not None:
        from routeguard.routing.trainlog import train_from_log

        return train_from_log(args)
    if args.outcomes is None:
        print("error: give an outcomes file, or --from-log LOG", file=sys.stderr)
        return 2
    args.holdout = args.holdout or 0.0
    try:
        data = read_outcomes(args.outcomes)
        held = holdout_mask(data.prompts, args.holdout)
        side = ~held & ~np.isin(np.array(data.groups), args.exclude_group)
        vectors = _vectors(data.prompts, args.cache)
        model = train(
            data.subset(side),
            vectors[side],
            l2=args.l2,
            notes={"trained_on": f"{Path(args.outcomes).name}, holdout {args.holdout}"},
            extend=trivial_extend(args.no_trivial_head),
        )
        model.save(args.output)
    except (RouteguardError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"trained on {int(side.sum())} prompts "
        f"(strong better on {model.meta['share_worse']:.1%}, cheap better on "
        f"{model.meta['share_better']:.1%}); wrote {args.output}"
    )
    if held.any():
        test = data.subset(held)
        q = _quality(model.score(test.prompts, vectors[held]), test.cheap, test.strong)
        if q is not None:
            print(f"held out {int(held.sum())} prompts: " + _line(q))
    return 0


def _quality(scores: Any, cheap: Any, strong: Any) -> metrics.Quality | None:
    try:
        return metrics.quality(scores, cheap, strong)
    except ValueError:  # both models equally good: PGR undefined
        return None


def _line(q: metrics.Quality) -> str:
    return f"APGR {q.apgr:.3f}, CPT(50%) {q.cpt50:.1%}, CPT(80%) {q.cpt80:.1%}"


def evaluate(
    outcomes: str | Path,
    model: str | None = None,
    holdout: float = 0.2,
    cache: str | None = None,
) -> tuple[metrics.Quality, metrics.Quality]:
    """The router's quality and the longer-prompt rule's on ``outcomes`` (a hashed
    ``holdout`` share of its prompts, or all at 0). Raises RouteguardError or ValueError on bad
    data, and ValueError when both models score the same on average."""
    router = _model(model)
    data = read_outcomes(outcomes)
    if holdout > 0:
        data = data.subset(holdout_mask(data.prompts, holdout))
    scores = router.score(data.prompts, _vectors(data.prompts, cache))
    lengths = np.array([len(p) for p in data.prompts], dtype=np.float64)
    return (
        metrics.quality(scores, data.cheap, data.strong),
        metrics.quality(lengths, data.cheap, data.strong),
    )


def _eval(args: argparse.Namespace) -> int:
    try:
        mine, base = evaluate(args.outcomes, args.model, args.holdout, args.cache)
    except (RouteguardError, ValueError) as exc:  # bad data, or both models equally good
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"router": mine.as_dict(), "longer_prompt_rule": base.as_dict()}))
        return 0
    print(
        f"{mine.n} prompts; cheap model {mine.q_cheap:.3f}, strong model {mine.q_strong:.3f}\n"
        f"  router             {_line(mine)}\n"
        f"  longer-prompt rule {_line(base)}\n"
        f"  random             APGR 0.500, CPT(50%) 50.0%, CPT(80%) 80.0%"
    )
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    try:
        model = _model(args.model)
        scores = np.concatenate([model.score(b) for b in _prompts(sys.stdin)] or [np.zeros(0)])
        if args.share is not None:
            t = calibrate(scores, strong_share=args.share)
        else:
            t = calibrate(
                scores,
                cost_ceiling=args.cost_ceiling,
                cheap_cost=args.cheap_cost,
                strong_cost=args.strong_cost,
            )
    except (RouteguardError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    share = float(np.mean(scores >= t))
    print(json.dumps({"threshold": round(t, 6), "strong_share": share, "n": int(scores.size)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

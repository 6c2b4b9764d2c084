"""``routeguard router train --from-log LOG``: a router trained on the gateway's own traffic.

Data flow: the config's routed routes (``routes.<alias>`` with ``cheap`` and ``strong``; only the
``routes`` section is read, so no upstream secrets are needed) and the feedback file (by
default ``LOG.feedback.jsonl``, or the server database's ``feedback`` table) -> outcome rows
(:func:`routeguard.routing.fromlog.join`) -> a hash slice of them held out (``--holdout``,
default 0.2) -> the rest, with any ``--outcomes`` files, embedded with the default MiniLM and
trained on (:func:`routeguard.routing.learned.train`, with the trivial-social-turn head of
:mod:`routeguard.routing.trivial` unless ``--no-trivial-head``) -> the model written
(``--out``) -> APGR and CPT(50%) on the held-out slice of the new model, the route's current
learned model (``routes.<alias>.model``, the shipped one by default) and the longer-prompt rule.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from routeguard.config.load import read_file
from routeguard.config.routes import RouteSettings, parse_route
from routeguard.errors import RouteguardError
from routeguard.observe.feedback import feedback_path, read_feedback
from routeguard.routing import metrics
from routeguard.routing.fromlog import join
from routeguard.routing.learned import LearnedRouter, default_model, train
from routeguard.routing.outcomes import Outcomes, holdout_mask, read_outcomes
from routeguard.routing.trivial import trivial_extend

DEFAULT_HOLDOUT = 0.2
_FEW = 20  # held-out rows below which the report says it is noisy


def routed_routes(config_path: str | Path) -> dict[str, RouteSettings]:
    """The config's routes that have ``cheap`` and ``strong`` (checked as routes)."""
    raw = read_file(config_path)
    routes = raw.get("routes") or {}
    if not isinstance(routes, dict):
        raise RouteguardError(f"{config_path}: 'routes' must be a mapping")
    out = {
        alias: parse_route(alias, spec)
        for alias, spec in routes.items()
        if isinstance(spec, dict) and spec.get("cheap") and spec.get("strong")
    }
    if not out:
        raise RouteguardError(
            f"{config_path}: no route has 'cheap' and 'strong': nothing says which served "
            "model was the cheap one"
        )
    return out


def current_model(route: RouteSettings) -> LearnedRouter:
    """The learned model a route uses now (``model``: "default" or a path)."""
    model = route.model or "default"
    return default_model() if model == "default" else LearnedRouter.load(Path(model))


def train_from_log(args: argparse.Namespace) -> int:
    """Run the command on parsed arguments; an exit code."""
    try:
        if args.config is None:
            raise RouteguardError(
                "--from-log needs --config (the gateway config: which alias of each route is "
                "the cheap one and which the strong one)"
            )
        routes = routed_routes(args.config)
        if args.route is not None and args.route not in routes:
            raise RouteguardError(
                f"--route {args.route}: not a route with cheap and strong in {args.config} "
                f"(routes: {', '.join(sorted(routes))})"
            )
        source = args.feedback or feedback_path(args.from_log)
        joined = join(args.from_log, read_feedback(source), routes, args.route)
        print(joined.summary())
        if joined.outcomes is None:
            raise RouteguardError("no outcome rows: no feedback on requests of routed routes")
        data = joined.outcomes
        holdout = DEFAULT_HOLDOUT if args.holdout is None else args.holdout
        held = holdout_mask(data.prompts, holdout)
        extra = [read_outcomes(f) for f in args.more_outcomes]
        prompts = data.prompts + [p for o in extra for p in o.prompts]
        vectors = _vectors(prompts, args.cache)
        n = len(data)
        train_set = Outcomes.concat([data.subset(~held), *extra])
        train_vectors = np.vstack([vectors[:n][~held], vectors[n:]])
        route = args.route or joined.routes[0]
        model = train(
            train_set,
            train_vectors,
            l2=args.l2,
            notes={
                "trained_on": f"{Path(args.from_log).name} with feedback ({int((~held).sum())} "
                f"rows), {len(train_set) - int((~held).sum())} rows of outcome files",
                "route": route,
            },
            extend=trivial_extend(args.no_trivial_head),
        )
        model.save(args.output)
        print(
            f"trained on {len(train_set)} rows (strong needed on {model.meta['share_worse']:.1%})"
            f"; wrote {args.output}\npoint the route at it: routes.{route}.model: {args.output}"
        )
        if held.any():
            _report(data.subset(held), vectors[:n][held], model, current_model(routes[route]))
    except (RouteguardError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _vectors(prompts: list[str], cache: str | None) -> np.ndarray[Any, np.dtype[np.float32]]:
    from routeguard.embed import default_embedder
    from routeguard.routing.vectors import embed_many

    return embed_many(prompts, default_embedder(), cache_dir=cache, progress=len(prompts) > 1000)


def _report(test: Outcomes, vectors: Any, new: LearnedRouter, current: LearnedRouter) -> None:
    """APGR / CPT(50%) on the held-out rows: the new model, the current one, the length rule."""
    lengths = np.array([len(p) for p in test.prompts], dtype=np.float64)
    rows = [("new model", new.score(test.prompts, vectors))]
    try:
        rows.append(("current model", current.score(test.prompts, vectors)))
    except RouteguardError as exc:
        print(f"(the route's current model cannot score these prompts: {exc})")
    rows.append(("longer-prompt rule", lengths))
    print(f"held out {len(test)} rows (a hash slice of the logged ones):")
    if len(test) < _FEW:
        print(f"  (fewer than {_FEW} rows: these numbers are noisy)")
    for name, scores in rows:
        try:
            q = metrics.quality(scores, test.cheap, test.strong)
        except ValueError:
            print("  the cheap and strong answers score the same on these rows: no APGR")
            return
        print(f"  {name:<18} APGR {q.apgr:.3f}, CPT(50%) {q.cpt50:.1%}")
    print("  random             APGR 0.500, CPT(50%) 50.0%")

"""routeguard.routing: which model alias serves a request, then which deployment of it.

Per request: :class:`Router` (one per route) runs explicit :mod:`~routeguard.routing.rules`,
then :mod:`~routeguard.routing.semantic` routes, then the :mod:`~routeguard.routing.learned`
cheap/strong router, and returns a :class:`RouteDecision`; the gateway then load-balances
among the chosen alias's deployments (:mod:`~routeguard.routing.balance`). Training data and
splits live in :mod:`~routeguard.routing.outcomes`, the paper's metrics in
:mod:`~routeguard.routing.metrics`, the command line in :mod:`~routeguard.routing.cli`.

``default_router().score(prompts)`` scores prompts with the shipped model (trained on
RouteLLM's MMLU outcomes): higher = more in need of the strong model.
"""

from __future__ import annotations

from routeguard.routing.calibration import LiveShare, calibrate
from routeguard.routing.learned import LearnedRouter, default_model, train
from routeguard.routing.outcomes import Outcomes, read_outcomes
from routeguard.routing.router import RouteDecision, Router, prompt_text
from routeguard.routing.rules import Rule, Rules
from routeguard.routing.semantic import SemanticRoutes


def default_router() -> LearnedRouter:
    """The shipped learned router (loaded once and shared; embeds with the default MiniLM)."""
    return default_model()


__all__ = [
    "LearnedRouter",
    "LiveShare",
    "Outcomes",
    "RouteDecision",
    "Router",
    "Rule",
    "Rules",
    "SemanticRoutes",
    "calibrate",
    "default_router",
    "prompt_text",
    "read_outcomes",
    "train",
]

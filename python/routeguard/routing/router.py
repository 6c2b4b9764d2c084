"""The router of one route: rules -> semantic routes -> learned cheap/strong -> a target alias.

Data flow per request (:meth:`Router.route`): ``mode: pinned`` returns its one target at once.
Otherwise the request's last user message (the text the semantic cache embeds, so one vector
serves both layers) and the caller's metadata go through

1. **rules** (:mod:`routeguard.routing.rules`): metadata, headers, key/team, token bounds, regex;
   the first match decides;
2. **semantic routes** (:mod:`routeguard.routing.semantic`): the nearest named route above its
   threshold decides;
3. **learned** (:mod:`routeguard.routing.learned`): a score, P(the cheap model's answer is
   worse) - P(it is better); at or above the threshold the ``strong`` alias, else ``cheap``.
   With ``strong_share`` the threshold follows live traffic
   (:class:`~routeguard.routing.calibration.LiveShare`), a fixed ``threshold`` stays put, and
   ``min_p_cheap`` is a fixed threshold read as a probability: the strong alias when the
   model's calibrated P(the cheap answer is as good) is below it;
4. else the route's ``default`` alias.

The result is a :class:`RouteDecision`; load balancing among the chosen alias's deployments
(:mod:`routeguard.routing.balance`) happens after, in the gateway. The embedding is computed
only when a semantic or learned stage needs it and the caller did not pass one (:meth:`Router.
aroute` computes it off the event loop).

A route spec (``routes.<alias>`` in the config, as plain data)::

    {"mode": "routed",                  # or "pinned" (one model, no router, no cache)
     "target": "gpt-4o",                # pinned only: the alias to pin to (default: this one)
     "cheap": "mixtral", "strong": "gpt-4",
     "model": "default",                # or a path to a `routeguard router train` artifact
     "strong_share": 0.3,               # or "threshold": 0.12, or "min_p_cheap": 0.7
                                        # (exactly one of the three)
     "rules": [...], "semantic_routes": {...},
     "default": "mixtral",              # when no stage decides (default: cheap)
     "budget_aware": 0.8}               # strong -> cheap once a budget of the caller's
                                        # is 80% used or past its soft limit (true: 0.8)

Rule and semantic-route targets may be the words ``cheap`` / ``strong``, which resolve to the
aliases above.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from routeguard.config.routes import RouteSettings, parse_route
from routeguard.embed.base import Embedder, embed_off_loop
from routeguard.errors import RouteguardError
from routeguard.messages import content_text, estimate_tokens
from routeguard.routing.calibration import LiveShare
from routeguard.routing.learned import LearnedRouter, default_model
from routeguard.routing.rules import RuleInput, Rules
from routeguard.routing.semantic import SemanticRoutes

F32 = npt.NDArray[np.float32]

_EMPTY: Mapping[str, Any] = {}


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """Where one request goes and why.

    ``reason`` is ``pinned``, ``rule:<name>``, ``semantic:<name>``, ``learned`` or ``default``;
    ``score`` is the semantic cosine or the learned score, None for the other reasons;
    ``p_cheap_ok`` is the learned model's calibrated P(the cheap answer is as good), when the
    model carries a calibration.
    """

    target_alias: str
    reason: str
    score: float | None = None
    p_cheap_ok: float | None = None


def prompt_text(request: Mapping[str, Any]) -> str:
    """The text the router looks at: the last user message (text parts joined by newlines,
    as the semantic cache builds its prompt, so the two can share one embedding); ``""`` when
    there is none."""
    messages = request.get("messages")
    if not isinstance(messages, Sequence):
        return ""
    for m in reversed(messages):
        if isinstance(m, Mapping) and m.get("role") == "user":
            return content_text(m.get("content")) or ""
    return ""


class Router:
    """Picks the target alias of requests sent to one route."""

    def __init__(
        self,
        alias: str,
        *,
        mode: str = "routed",
        target: str | None = None,
        cheap: str | None = None,
        strong: str | None = None,
        rules: Rules | None = None,
        semantic: SemanticRoutes | None = None,
        learned: LearnedRouter | None = None,
        threshold: float | None = None,
        strong_share: float | None = None,
        default: str | None = None,
        embedder: Embedder | None = None,
        budget_aware: float | None = None,
        min_p_cheap: float | None = None,
    ) -> None:
        if mode not in ("routed", "pinned"):
            raise RouteguardError(
                f"routes.{alias}.mode: expected 'routed' or 'pinned', got {mode!r}"
            )
        if learned is not None and (cheap is None or strong is None):
            raise RouteguardError(
                f"routes.{alias}: a learned router needs both 'cheap' and 'strong'"
            )
        self.alias = alias
        self.mode = mode
        self.target = target or alias
        self.cheap = cheap
        self.strong = strong
        self.rules = rules or Rules()
        self.semantic = semantic
        self.learned = learned
        if sum(x is not None for x in (threshold, strong_share, min_p_cheap)) > 1:
            raise RouteguardError(
                f"routes.{alias}: set one of 'threshold', 'strong_share' and 'min_p_cheap'"
            )
        self.threshold = threshold if threshold is not None else 0.0
        self.min_p_cheap = min_p_cheap
        if learned is not None and min_p_cheap is not None:
            if not learned.calibrated:
                raise RouteguardError(
                    f"routes.{alias}.min_p_cheap: the model has no probability calibration "
                    "(written before calibration existed): retrain it with `routeguard router "
                    "train`, or set 'threshold' or 'strong_share'"
                )
            self.threshold = learned.threshold_for_p(min_p_cheap)
        self.live: LiveShare | None = None
        if learned is not None and strong_share is not None:
            self.threshold = learned.threshold_for_share(strong_share)
            self.live = LiveShare(strong_share, self.threshold)
        self.default = default or cheap or self.target
        self._embedder = embedder
        self.budget_aware = budget_aware
        """Send to ``cheap`` instead of ``strong`` when a budget on the caller's chain has
        used this share of its hard limit or passed its soft limit (None: off)."""

    @classmethod
    def from_dict(
        cls,
        alias: str,
        spec: RouteSettings | Mapping[str, Any],
        *,
        embedder: Embedder | None = None,
    ) -> Router:
        """Build from a route spec as written in a config (checked, with key paths in the
        ConfigError); see :meth:`from_settings`."""
        return cls.from_settings(alias, parse_route(alias, spec), embedder=embedder)

    @classmethod
    def from_settings(
        cls, alias: str, route: RouteSettings, *, embedder: Embedder | None = None
    ) -> Router:
        """Build from a checked route (:func:`routeguard.config.routes.parse_route`, or a
        loaded Config). ``embedder`` embeds semantic utterances and, when the caller passes
        no vector, requests; it must be the embedder the learned model was trained with (the
        default MiniLM for the shipped model)."""
        if route.mode == "pinned":
            return cls(alias, mode="pinned", target=route.target)
        cheap, sem = route.cheap, route.semantic
        emb = embedder
        if emb is None and (sem is not None or cheap is not None):
            from routeguard.embed import default_embedder

            emb = default_embedder()
        learned = None
        if cheap is not None:
            model = route.model or "default"
            learned = default_model() if model == "default" else LearnedRouter.load(Path(model))
        semantic = None
        if sem is not None:
            assert emb is not None
            semantic = SemanticRoutes.from_settings(sem, emb)
        return cls(
            alias,
            mode="routed",
            target=route.target,
            cheap=cheap,
            strong=route.strong,
            rules=Rules.from_settings(route.rules or []),
            semantic=semantic,
            learned=learned,
            threshold=route.threshold,
            strong_share=route.strong_share,
            default=route.default,
            embedder=emb,
            budget_aware=route.budget_share,
            min_p_cheap=route.min_p_cheap,
        )

    def downgrade(self, decision: RouteDecision, account: str) -> RouteDecision:
        """``decision`` sent to the cheap alias because ``account`` is near its budget
        (unchanged unless it went to the strong alias)."""
        if self.cheap is None or decision.target_alias != self.strong:
            return decision
        return RouteDecision(self.cheap, f"budget:{account}", decision.score, decision.p_cheap_ok)

    @property
    def needs_vector(self) -> bool:
        """Whether a routed request may need the prompt's embedding."""
        return self.mode == "routed" and (self.semantic is not None or self.learned is not None)

    def targets(self) -> set[str]:
        """Every alias this router can send a request to (for config validation)."""
        if self.mode == "pinned":
            return {self.target}
        out = {self.default}
        out.update(a for a in (self.cheap, self.strong) if a is not None)
        out.update(self._resolve(r.target) for r in self.rules.rules)
        if self.semantic is not None:
            out.update(self._resolve(r.target) for r in self.semantic.routes)
        return out

    def _resolve(self, target: str) -> str:
        if target == "cheap" and self.cheap is not None:
            return self.cheap
        if target == "strong" and self.strong is not None:
            return self.strong
        return target

    def route(
        self,
        request: Mapping[str, Any],
        vector: F32 | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> RouteDecision:
        """Decide where ``request`` goes. ``vector`` is the embedding of :func:`prompt_text`
        if the caller has it (the cache layer's); ``metadata`` holds what authentication
        established (``key``, ``team``, ``user``, ...) and the request ``headers``. Embedder
        on the calling thread when a vector is needed and not given: async callers use
        :meth:`aroute`."""
        text = prompt_text(request)
        early = self._before_vector(request, text, metadata)
        if early is not None:
            return early
        return self._with_vector(text, self.embed(text) if vector is None else vector)

    async def aroute(
        self,
        request: Mapping[str, Any],
        vector: F32 | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> RouteDecision:
        """:meth:`route` for the event loop: a missing embedding is computed off the loop
        (:func:`~routeguard.embed.base.embed_off_loop`), and only if no rule decided first."""
        text = prompt_text(request)
        early = self._before_vector(request, text, metadata)
        if early is not None:
            return early
        if vector is None:
            vector = (await embed_off_loop(self._embedder_or_default(), [text]))[0]
        return self._with_vector(text, vector)

    def _before_vector(
        self, request: Mapping[str, Any], text: str, metadata: Mapping[str, Any] | None
    ) -> RouteDecision | None:
        """Pinned mode, rules, and the no-vector-needed default: None if a vector is needed."""
        if self.mode == "pinned":
            return RouteDecision(self.target, "pinned")
        if self.rules.rules:
            meta = metadata or _EMPTY
            hdrs = meta.get("headers")
            req_meta = request.get("metadata")
            rule = self.rules.match(
                RuleInput(
                    metadata=meta,
                    request_metadata=req_meta if isinstance(req_meta, Mapping) else _EMPTY,
                    headers={str(k).lower(): str(v) for k, v in hdrs.items()}
                    if isinstance(hdrs, Mapping)
                    else _EMPTY,
                    tokens=estimate_tokens(request.get("messages")),
                    text=text,
                )
            )
            if rule is not None:
                return RouteDecision(self._resolve(rule.target), f"rule:{rule.name}")
        if self.semantic is None and self.learned is None:
            return RouteDecision(self.default, "default")
        return None

    def _with_vector(self, text: str, vector: F32) -> RouteDecision:
        """Semantic routes, then the learned router, then the default."""
        if self.semantic is not None:
            hit = self.semantic.match(vector)
            if hit is not None:
                return RouteDecision(
                    self._resolve(hit.route.target), f"semantic:{hit.route.name}", hit.score
                )
        if self.learned is not None:
            assert self.cheap is not None and self.strong is not None
            learned = self.learned
            score = learned.score_one(text, vector)
            strong = score >= self.threshold if self.live is None else self.live.decide(score)
            cal = learned.calibration
            p_ok = None if cal is None else cal.one(score)
            return RouteDecision(self.strong if strong else self.cheap, "learned", score, p_ok)
        return RouteDecision(self.default, "default")

    async def warm_up(self, text: str = "warm up") -> None:
        """Load what deciding needs (the embedder's weights, the learned model's first
        scoring) so the first routed request costs what later ones do; no decision made."""
        if self.semantic is None and self.learned is None:
            return
        vector = (await embed_off_loop(self._embedder_or_default(), [text]))[0]
        if self.semantic is not None:
            self.semantic.match(vector)
        if self.learned is not None:
            self.learned.score_one(text, vector)

    def _embedder_or_default(self) -> Embedder:
        emb = self._embedder
        if emb is None:
            from routeguard.embed import default_embedder

            emb = self._embedder = default_embedder()
        return emb

    def embed(self, text: str) -> F32:
        """The embedding of ``text`` with this router's embedder (the default MiniLM if none)."""
        out: F32 = np.asarray(self._embedder_or_default().embed([text]), dtype=np.float32)[0]
        return out

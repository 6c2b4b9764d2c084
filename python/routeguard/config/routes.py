"""Routes as written in the config (``routes.<alias>``): typed rules, semantic routes and
the learned cheap/strong split, checked here once with key paths; the routing package
builds its routers from these structs without checking them again."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from routeguard._native import core
from routeguard.config.decode import decode
from routeguard.errors import ConfigError, ConfigProblem

Scalar = str | int | float | bool
Values = Scalar | list[Scalar]
BUDGET_AWARE_DEFAULT = 0.8  # `budget_aware: true`: downgrade at 80% of a hard limit


class RuleSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """One routing rule: conditions that must all hold, and the alias (or ``cheap`` /
    ``strong``) that matching requests go to (see :mod:`routeguard.routing.rules`)."""

    target: str
    name: str | None = None
    metadata: dict[str, Values] = {}
    headers: dict[str, Values] = {}
    key: Values | None = None
    team: Values | None = None
    min_tokens: int | None = None
    max_tokens: int | None = None
    regex: str | None = None


class SemanticRouteSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """One semantic route: example utterances and the alias their look-alikes go to."""

    name: str
    target: str
    utterances: list[str]
    threshold: float | None = None


class SemanticRoutesSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Semantic routes with their shared similarity threshold and matching method."""

    routes: list[SemanticRouteSettings]
    threshold: float = 0.5
    method: Literal["knn", "centroid"] = "knn"


class ShadowSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Shadow checks of a route (``routes.<alias>.shadow``): for ``share`` of the requests
    routed to the cheap alias, the strong alias answers too, in the background, and the
    ``judge`` alias says which answer is better (:mod:`routeguard.routing.shadow`)."""

    share: float
    judge: str
    max_concurrent: int = 4  # shadow checks in flight at once; more samples are skipped


class RouteSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Per-alias behaviour (``routes.<alias>``): cache overrides, an input limit, tool-call
    enforcement, and routing — ``mode: pinned`` (one model, no cache) or ``routed`` (rules ->
    semantic routes -> learned cheap/strong)."""

    cache: dict[str, Any] = {}
    mode: Literal["routed", "pinned"] | None = None
    target: str | None = None
    cheap: str | None = None
    strong: str | None = None
    default: str | None = None
    model: str | None = None  # the learned model: "default" or a file path
    threshold: float | None = None
    strong_share: float | None = None
    min_p_cheap: float | None = None  # strong model when P(cheap answer as good) is below
    rules: list[RuleSettings] | None = None
    semantic_routes: SemanticRoutesSettings | list[SemanticRouteSettings] | None = None
    budget_aware: bool | float | None = None  # near a budget: strong -> cheap
    enforce: Any = None  # tool-call policy on responses (routeguard.enforce.proxy)
    max_input_bytes: int | None = None  # larger inputs are refused (413) before any work
    shadow: ShadowSettings | None = None  # judge a share of cheap answers against strong ones

    @property
    def is_router(self) -> bool:
        """Whether any routing key is set (else the route only tunes cache, limits, policy)."""
        return any(
            getattr(self, k) is not None
            for k in ("mode", "target", "cheap", "strong", "default", "model", "threshold",
                      "strong_share", "min_p_cheap", "rules", "semantic_routes", "budget_aware",
                      "shadow")
        )  # fmt: skip

    @property
    def semantic(self) -> SemanticRoutesSettings | None:
        """The semantic routes, a bare list read as routes with the default threshold."""
        if isinstance(self.semantic_routes, list):
            return SemanticRoutesSettings(routes=self.semantic_routes)
        return self.semantic_routes

    @property
    def budget_share(self) -> float | None:
        """The share of a hard limit at which strong goes to cheap (None: off)."""
        if self.budget_aware is None or self.budget_aware is False:
            return None
        return BUDGET_AWARE_DEFAULT if self.budget_aware is True else float(self.budget_aware)


def parse_route(alias: str, spec: RouteSettings | Mapping[str, Any]) -> RouteSettings:
    """``spec`` decoded and checked as ``routes.<alias>``; ConfigError lists every problem."""
    problems: list[ConfigProblem] = []
    route: RouteSettings | None = decode(
        spec, RouteSettings, f"routes.{alias}", problems, drop_none=True
    )
    if route is not None:
        problems.extend(check_route(alias, route, as_router=True))
    if problems or route is None:
        raise ConfigError(problems, source=f"routes.{alias}")
    return route


def parse_rules(specs: Any, where: str = "rules") -> list[RuleSettings]:
    """A list of rule mappings decoded and checked; ConfigError names each problem."""
    problems: list[ConfigProblem] = []
    rules = decode(specs, list[RuleSettings], where, problems, drop_none=True) or []
    for i, rule in enumerate(rules):
        problems.extend(check_rule(rule, f"{where}[{i}]"))
    if problems:
        raise ConfigError(problems, source=where)
    return rules


def parse_semantic(spec: Any, where: str = "semantic_routes") -> SemanticRoutesSettings:
    """Semantic routes (a mapping, or a bare list of routes) decoded and checked."""
    problems: list[ConfigProblem] = []
    if isinstance(spec, list):
        spec = {"routes": spec}
    out: SemanticRoutesSettings | None = decode(
        spec, SemanticRoutesSettings, where, problems, drop_none=True
    )
    if out is not None:
        problems.extend(check_semantic(out, where))
    if problems or out is None:
        raise ConfigError(problems, source=where)
    return out


def check_rule(rule: RuleSettings, where: str) -> list[ConfigProblem]:
    """Problems with one rule: an empty target, negative token bounds, a pattern the
    linear-time regex engine cannot run."""
    problems = []
    if not rule.target:
        problems.append(ConfigProblem(f"{where}.target", "required, the alias to send matches to"))
    for k in ("min_tokens", "max_tokens"):
        v = getattr(rule, k)
        if v is not None and v < 0:
            problems.append(
                ConfigProblem(f"{where}.{k}", f"expected a non-negative integer, got {v}")
            )
    if rule.regex is not None:
        try:
            core.Regex(rule.regex)
        except core.RegexError as exc:
            why = str(exc).strip().splitlines()[-1].removeprefix("error: ")
            problems.append(
                ConfigProblem(
                    f"{where}.regex",
                    f"invalid pattern {rule.regex!r} for the linear-time regex engine "
                    f"(no look-around or backreferences): {why}",
                )
            )
    return problems


def check_semantic(sem: SemanticRoutesSettings, where: str) -> list[ConfigProblem]:
    """Problems with semantic routes: none given, empty utterances, thresholds off [-1, 1]."""
    problems = []
    if not sem.routes:
        problems.append(ConfigProblem(f"{where}.routes", "expected a non-empty list of routes"))
    if not -1.0 <= sem.threshold <= 1.0:
        problems.append(
            ConfigProblem(f"{where}.threshold", "expected a cosine similarity in [-1, 1]")
        )
    for i, r in enumerate(sem.routes):
        at = f"{where}.routes[{i}]"
        if not r.utterances or not all(r.utterances):
            problems.append(
                ConfigProblem(f"{at}.utterances", "expected a non-empty list of strings")
            )
        if not r.name:
            problems.append(ConfigProblem(f"{at}.name", "required"))
        if not r.target:
            problems.append(ConfigProblem(f"{at}.target", "required, the alias to send matches to"))
        if r.threshold is not None and not -1.0 <= r.threshold <= 1.0:
            problems.append(
                ConfigProblem(f"{at}.threshold", "expected a cosine similarity in [-1, 1]")
            )
    return problems


def check_route(
    alias: str, route: RouteSettings, *, as_router: bool = False
) -> list[ConfigProblem]:
    """Problems with the routing keys of ``routes.<alias>`` (not whether targets exist);
    ``as_router`` checks it as a router even when no routing key is set."""
    where = f"routes.{alias}"
    problems: list[ConfigProblem] = []
    if route.max_input_bytes is not None and route.max_input_bytes <= 0:
        problems.append(ConfigProblem(f"{where}.max_input_bytes", "must be positive"))
    if not (route.is_router or as_router):
        return problems
    for k in ("target", "cheap", "strong", "default", "model"):
        if getattr(route, k) == "":
            problems.append(ConfigProblem(f"{where}.{k}", "expected a model alias, got ''"))
    if route.mode == "pinned":
        return problems
    if (route.cheap is None) != (route.strong is None):
        problems.append(ConfigProblem(where, "set both 'cheap' and 'strong', or neither"))
    learned = route.cheap is not None and route.strong is not None
    picks = [route.threshold, route.strong_share, route.min_p_cheap]
    if sum(p is not None for p in picks) > 1:
        problems.append(
            ConfigProblem(
                where, "set one of 'threshold', 'strong_share' and 'min_p_cheap', not both"
            )
        )
    elif learned and all(p is None for p in picks):
        problems.append(
            ConfigProblem(
                where,
                "set 'strong_share' (the share of calls for the strong model, e.g. 0.3), "
                "a fixed 'threshold', or 'min_p_cheap' (e.g. 0.7)",
            )
        )
    if route.min_p_cheap is not None and not 0.0 <= route.min_p_cheap <= 1.0:
        problems.append(
            ConfigProblem(
                f"{where}.min_p_cheap",
                "expected a probability in [0, 1] (the strong model when P(the cheap answer "
                f"is as good) is below it), got {route.min_p_cheap!r}",
            )
        )
    if route.threshold is not None and not -1.0 <= route.threshold <= 1.0:
        problems.append(
            ConfigProblem(
                f"{where}.threshold",
                f"expected a score in [-1, 1] (from `routeguard router calibrate`), "
                f"got {route.threshold!r}",
            )
        )
    if route.strong_share is not None and not 0.0 <= route.strong_share <= 1.0:
        problems.append(
            ConfigProblem(
                f"{where}.strong_share", f"expected a share in [0, 1], got {route.strong_share!r}"
            )
        )
    if route.budget_share is not None:
        if route.cheap is None:
            problems.append(
                ConfigProblem(f"{where}.budget_aware", "needs 'cheap' and 'strong' to choose from")
            )
        elif not 0.0 < route.budget_share <= 1.0:
            problems.append(
                ConfigProblem(
                    f"{where}.budget_aware",
                    f"expected true or a share of the limit in (0, 1], got {route.budget_aware!r}",
                )
            )
    if route.shadow is not None:
        problems.extend(check_shadow(route, where))
    for i, rule in enumerate(route.rules or []):
        problems.extend(check_rule(rule, f"{where}.rules[{i}]"))
    sem = route.semantic
    if sem is not None:
        problems.extend(check_semantic(sem, f"{where}.semantic_routes"))
    if route.cheap is None and route.default is None and route.target is None:
        problems.append(
            ConfigProblem(
                where,
                "a routed route needs 'cheap' and 'strong' (learned routing) "
                "or a 'default' alias for requests no rule or semantic route claims",
            )
        )
    return problems


def check_shadow(route: RouteSettings, where: str) -> list[ConfigProblem]:
    """Problems with ``routes.<alias>.shadow`` (whether the judge exists is checked where
    the aliases are known, in :func:`routeguard.config.load`)."""
    shadow = route.shadow
    assert shadow is not None
    problems = []
    if not 0.0 <= shadow.share <= 1.0:
        problems.append(
            ConfigProblem(
                f"{where}.shadow.share",
                f"expected the share of cheap-routed requests to check, in [0, 1], "
                f"got {shadow.share!r}",
            )
        )
    if not shadow.judge:
        problems.append(ConfigProblem(f"{where}.shadow.judge", "expected a model alias"))
    if shadow.max_concurrent <= 0:
        problems.append(ConfigProblem(f"{where}.shadow.max_concurrent", "must be positive"))
    if route.cheap is None or route.strong is None:
        problems.append(ConfigProblem(f"{where}.shadow", "needs 'cheap' and 'strong' to compare"))
    return problems


def route_targets(alias: str, route: RouteSettings) -> set[str]:
    """Every alias ``route`` can send requests to (``cheap`` / ``strong`` rule targets
    resolved to the route's aliases), without building anything."""
    if route.mode == "pinned":
        return {route.target or alias}
    words = {"cheap": route.cheap, "strong": route.strong}
    out = {a for a in (route.cheap, route.strong, route.default, route.target) if a}
    targets = [r.target for r in route.rules or []]
    sem = route.semantic
    if sem is not None:
        targets += [r.target for r in sem.routes]
    out.update(words.get(t) or t for t in targets if t)
    return out

"""Loading a configuration: file (YAML / TOML / JSON) or mapping -> LiteLLM shapes
rewritten to ours (:mod:`routeguard.config.litellm`) -> each section decoded into its Struct,
collecting *every* problem with its key path -> cross-checks (fallback and route targets
exist, env vars set) -> :class:`~routeguard.config.settings.Config`."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import msgspec
import yaml

from routeguard.config.budgets import BudgetAccountConfig, check_accounts, check_limits
from routeguard.config.clouds import cloud_settings
from routeguard.config.decode import decode
from routeguard.config.litellm import from_litellm, looks_like_litellm
from routeguard.config.regions import data_region, regionless_azure
from routeguard.config.routes import RouteSettings, check_route, route_targets
from routeguard.config.settings import (
    BODY_ENDPOINTS,
    DEFAULT_API_BASES,
    DEFAULT_ENDPOINT_BODY_BYTES,
    ENV_PREFIX,
    BudgetAlerts,
    BudgetSettings,
    CacheSettings,
    Config,
    EmbeddingSettings,
    ObservabilitySettings,
    RawAzureDeployment,
    RawBudgetAlerts,
    RawConfig,
    RawDeployment,
    RawDeploymentBase,
    RawServer,
    RawVertexDeployment,
    RouterSettings,
    ServerSettings,
)
from routeguard.config.tracing import check_tracing
from routeguard.config.vertex import endpoint, vertex_target
from routeguard.config.wildcards import Wildcard, best_match
from routeguard.deployment import Deployment, Secret
from routeguard.enforce.plan import EnforcePlan, plan_enforcement
from routeguard.errors import ConfigError, ConfigProblem

T = TypeVar("T")


def read_file(path: str | Path) -> dict[str, Any]:
    """Parse a YAML, TOML or JSON config file into plain data."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        problem = ConfigProblem("", f"cannot read file: {exc.strerror}")
        raise ConfigError([problem], source=str(p)) from None
    try:
        if p.suffix == ".toml":
            data: Any = tomllib.loads(text)
        elif p.suffix == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError([ConfigProblem("", f"cannot parse: {exc}")], source=str(p)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            [ConfigProblem("", f"expected a mapping at the top level, got {type(data).__name__}")],
            source=str(p),
        )
    return data


def load(
    source: str | Path | Mapping[str, Any],
    *,
    env: Mapping[str, str] | None = None,
    origin: str | Path | None = None,
) -> Config:
    """Validate a config (a file path or an already parsed mapping) and build a Config.
    ``origin``: the file a mapping was read from (it names the config in errors and as
    ``Config.source``, and relative paths in it resolve from its directory)."""
    env = os.environ if env is None else env
    if isinstance(source, Mapping):
        data, name = dict(source), "<dict>" if origin is None else str(origin)
    else:
        data, name = read_file(source), str(source)
    problems: list[ConfigProblem] = []
    warnings: list[str] = []
    if looks_like_litellm(data):
        env = dict(env)  # the config's environment_variables fill in what the process lacks
        data = from_litellm(data, warnings, problems, env)

    raw = decode(data, RawConfig, "", problems)
    if raw is None:
        raise ConfigError(problems, source=name)
    router = decode(raw.router_settings or {}, RouterSettings, "router_settings", problems)
    server = decode(raw.server or {}, RawServer, "server", problems)

    deployments: dict[str, list[Deployment]] = {}
    patterns: dict[str, list[Deployment]] = {}  # wildcard model_name -> its templates
    seen_ids: set[str] = set()
    for i, entry in enumerate(raw.model_list):
        path = f"model_list[{i}]"
        rd: RawDeploymentBase | None = decode(entry, RawDeployment, path, problems)
        if rd is None:
            continue
        dep = _build_deployment(rd, path, env, problems, len(deployments.get(rd.model_name, [])))
        if dep is not None and router is not None:
            drop = router.drop_params if rd.drop_params is None else rd.drop_params
            dep = dataclasses.replace(dep, drop_params=drop)
        if dep is None:
            continue
        if dep.id in seen_ids:
            problems.append(ConfigProblem(f"{path}.id", f"duplicate deployment id '{dep.id}'"))
        seen_ids.add(dep.id)
        if "*" in dep.alias:
            if dep.model.count("*") > dep.alias.count("*"):
                problems.append(
                    ConfigProblem(
                        f"{path}.model",
                        f"'{dep.model}' has more '*' than the model_name '{dep.alias}' "
                        "(each '*' of the model is filled by one of the name's)",
                    )
                )
            patterns.setdefault(dep.alias, []).append(dep)
            continue
        deployments.setdefault(dep.alias, []).append(dep)
    if not raw.model_list:
        problems.append(ConfigProblem("model_list", "no models configured"))
    warnings.extend(regionless_azure(raw.model_list, deployments, patterns))

    wildcards = tuple(
        sorted((Wildcard(p, tuple(d)) for p, d in patterns.items()), key=lambda w: w.specificity)
    )

    def served(name: str) -> bool:
        return name in deployments or best_match(wildcards, name) is not None

    default_chain = {"*": list(router.default_fallbacks)} if router is not None else {}
    for section, chains in (
        ("fallbacks", raw.fallbacks),
        ("context_window_fallbacks", raw.context_window_fallbacks),
        ("content_policy_fallbacks", raw.content_policy_fallbacks),
        ("router_settings.default_fallbacks", default_chain),
    ):
        for alias, targets in chains.items():
            where = section if alias == "*" else f"{section}.{alias}"
            if alias != "*" and not served(alias):
                problems.append(ConfigProblem(where, f"unknown model '{alias}'"))
            for j, target in enumerate(targets):
                if not served(target):
                    problems.append(ConfigProblem(f"{where}[{j}]", f"unknown model '{target}'"))
                elif target == alias:
                    problems.append(
                        ConfigProblem(f"{where}[{j}]", "a model cannot fall back to itself")
                    )

    if router is not None:
        _check_router(router, problems)
    if server is not None:
        _check_server(server, problems)
    master_key = hash_secret = None
    if server is not None and server.master_key is not None:
        master_key = _resolve_secret(server.master_key, "server.master_key", env, problems)
    if server is not None and server.key_hash_secret is not None:
        hash_secret = _resolve_secret(
            server.key_hash_secret, "server.key_hash_secret", env, problems
        )

    cache = decode(raw.cache or {}, CacheSettings, "cache", problems)
    route_cache: dict[str, CacheSettings] = {}
    routing: dict[str, RouteSettings] = {}
    route_enforce: dict[str, Any] = {}
    input_limits: dict[str, int] = {}
    for alias, spec in raw.routes.items():
        path = f"routes.{alias}"
        route: RouteSettings | None = decode(spec, RouteSettings, path, problems, drop_none=True)
        if route is None:
            continue
        problems.extend(check_route(alias, route))
        if route.enforce is not None:
            route_enforce[alias] = route.enforce
        if route.max_input_bytes is not None:
            input_limits[alias] = route.max_input_bytes
        if route.is_router:
            routing[alias] = route
            _check_route_targets(alias, route, deployments, problems)
        elif alias not in deployments:
            problems.append(ConfigProblem(path, f"unknown model '{alias}'"))
        for once in _CACHE_GLOBAL_KEYS:
            if once in route.cache:
                problems.append(
                    ConfigProblem(f"{path}.cache.{once}", f"{once} is set in the top-level cache")
                )
        if route.cache and cache is not None:
            merged = {**msgspec.structs.asdict(cache), **route.cache}
            rc = decode(merged, CacheSettings, f"{path}.cache", problems)
            if rc is not None:
                route_cache[alias] = rc
    for path, cs in [("cache", cache), *((f"routes.{a}.cache", c) for a, c in route_cache.items())]:
        if cs is not None:
            _check_cache(cs, path, problems)
            if cs.judge not in ("embedding", "exact", "") and cs.judge not in deployments:
                problems.append(
                    ConfigProblem(
                        f"{path}.judge",
                        f"unknown model '{cs.judge}': expected embedding, exact or a "
                        f"configured alias ({', '.join(sorted(deployments))})",
                    )
                )

    budget = decode(raw.budget_settings or {}, BudgetSettings, "budget_settings", problems)
    embedding = decode(raw.embedding or {}, EmbeddingSettings, "embedding", problems)
    observe: ObservabilitySettings | None = decode(
        raw.observability or {}, ObservabilitySettings, "observability", problems
    )
    if observe is not None and (
        observe.request_log_max_bytes <= 0 or observe.request_log_backups < 0
    ):
        problems.append(
            ConfigProblem(
                "observability", "request_log_max_bytes must be > 0 and request_log_backups >= 0"
            )
        )
    tracing = check_tracing(observe.tracing if observe else None, env, problems)
    if observe is not None and observe.tracing is not None:
        # Only the validated form (Config.tracing, header values as secrets) is kept.
        observe = msgspec.structs.replace(observe, tracing=tracing is not None)
    if cache is not None and cache.backend == "redis":
        cache = _cache_redis(cache, budget, problems)
    if budget is not None and budget.end_user is not None:  # used at the first end user's request
        problems.extend(check_limits("budget_settings.end_user", budget.end_user))
    accounts: tuple[BudgetAccountConfig, ...] = ()
    if raw.budgets:
        try:
            accounts = check_accounts(raw.budgets, source="budgets")
        except ConfigError as exc:
            problems.extend(exc.problems)
    if (
        server is not None
        and server.key_store == "redis"
        and not (server.redis_url or (budget is not None and budget.redis_url))
    ):
        problems.append(ConfigProblem("server.redis_url", "required for key_store: redis"))
    shared_budget = budget is not None and budget.backend == "redis" and budget.redis_url
    if router is not None and router.redis_url is None and budget is not None and shared_budget:
        # Budgets shared on Redis: cooldowns and usage are shared there too.
        router = msgspec.structs.replace(router, redis_url=budget.redis_url)
    for where, url in (
        ("server", server and server.redis_url),
        ("budget_settings", budget and budget.redis_url),
        ("router_settings", router and router.redis_url),
    ):
        if url:  # one server, or redis+cluster://host:port[,...] (routeguard.redis_url)
            from routeguard.redis_url import url_problem

            if (bad := url_problem(url)) is not None:
                problems.append(ConfigProblem(f"{where}.redis_url", bad))
    for path, cs in [("cache", cache), *((f"routes.{a}.cache", c) for a, c in route_cache.items())]:
        payer = cs.judge_account if cs is not None else None
        if payer is not None and payer not in {a.name for a in accounts}:
            problems.append(
                ConfigProblem(f"{path}.judge_account", f"no budget account named '{payer}'")
            )
    if budget is not None:
        if budget.backend == "redis" and not budget.redis_url:
            problems.append(ConfigProblem("budget_settings.redis_url", "required for redis"))
        for which in ("default_account", "proxy_account"):
            account = getattr(budget, which)
            if account is not None and account not in {a.name for a in accounts}:
                problems.append(
                    ConfigProblem(
                        f"budget_settings.{which}", f"no budget account named '{account}'"
                    )
                )
        if not math.isfinite(budget.reservation_ttl):
            problems.append(
                ConfigProblem("budget_settings.reservation_ttl", "must be a finite number")
            )
        if budget.reservation_ttl <= 0 or budget.default_max_tokens < 1:
            problems.append(
                ConfigProblem("budget_settings", "reservation_ttl and default_max_tokens > 0")
            )
        if not 400 <= budget.exceeded_status_code <= 499:
            problems.append(
                ConfigProblem(
                    "budget_settings.exceeded_status_code",
                    "must be a client error status from 400 to 499 (a 5xx would be retried)",
                )
            )
        if budget.redis_wait_replicas < 0:
            problems.append(
                ConfigProblem("budget_settings.redis_wait_replicas", "must be 0 or more")
            )
        if not 1 <= budget.redis_wait_timeout_ms < 1000:
            problems.append(
                ConfigProblem(
                    "budget_settings.redis_wait_timeout_ms",
                    "must be from 1 to 999 (below the 1 s Redis connection timeout)",
                )
            )

    alerts = None
    if budget is not None and budget.alerts is not None:
        alerts = _build_alerts(budget.alerts, env, problems)

    enforce: dict[str, EnforcePlan] = {}
    if raw.enforce is not None or route_enforce:
        pinned = {a for a, s in routing.items() if s.mode == "pinned"}
        base = None if name == "<dict>" else Path(name).parent
        enforce = plan_enforcement(
            raw.enforce, route_enforce, pinned=pinned, aliases=list(deployments), base=base,
            problems=problems,
        )  # fmt: skip

    if problems:
        raise ConfigError(problems, source=name)
    assert router is not None and server is not None and cache is not None
    assert budget is not None
    return Config(
        deployments=deployments,
        router=router,
        fallbacks=dict(raw.fallbacks),
        context_window_fallbacks=dict(raw.context_window_fallbacks),
        content_policy_fallbacks=dict(raw.content_policy_fallbacks),
        wildcards=wildcards,
        server=ServerSettings(
            master_key=master_key,
            max_body_bytes=server.max_body_bytes,
            max_body_bytes_per_endpoint={
                **DEFAULT_ENDPOINT_BODY_BYTES,
                **server.max_body_bytes_per_endpoint,
            },
            header_timeout=server.header_timeout,
            body_timeout=server.body_timeout,
            write_timeout=server.write_timeout,
            max_unauthenticated_connections=server.max_unauthenticated_connections,
            database=server.database,
            key_hash_secret=hash_secret,
            key_store=server.key_store,
            redis_url=server.redis_url or budget.redis_url,
            drain_seconds=server.drain_seconds,
        ),
        cache=cache,
        route_cache=route_cache,
        routing=routing,
        accounts=accounts,
        budget=budget,
        embedding=embedding or EmbeddingSettings(),
        observability=observe or ObservabilitySettings(),
        tracing=tracing,
        warnings=warnings,
        enforce=enforce,
        input_limits=input_limits,
        source=name,
        alerts=alerts,
    )


def _check_router(r: RouterSettings, problems: list[ConfigProblem]) -> None:
    for name in ("retry_backoff", "retry_backoff_max", "timeout", "deadline", "cooldown_time",
                 "max_stream_duration"):  # fmt: skip
        if not math.isfinite(getattr(r, name)):
            problems.append(ConfigProblem(f"router_settings.{name}", "must be a finite number"))
    if not r.max_stream_duration > 0:
        problems.append(ConfigProblem("router_settings.max_stream_duration", "must be positive"))
    for name in ("retry_backoff", "retry_backoff_max", "timeout", "deadline", "cooldown_time"):
        if getattr(r, name) < 0:
            problems.append(ConfigProblem(f"router_settings.{name}", "must not be negative"))
    for name in ("num_retries", "allowed_fails"):
        if getattr(r, name) < 0:
            problems.append(ConfigProblem(f"router_settings.{name}", "must not be negative"))
    if r.timeout == 0 or r.deadline == 0:
        problems.append(ConfigProblem("router_settings", "timeout and deadline must be > 0"))
    for name in ("redis_sync_interval", "redis_timeout"):
        if not (math.isfinite(getattr(r, name)) and getattr(r, name) > 0):
            problems.append(ConfigProblem(f"router_settings.{name}", "must be a positive number"))
    if not r.redis_prefix or any(c in r.redis_prefix for c in "{}"):
        problems.append(
            ConfigProblem("router_settings.redis_prefix", "must be non-empty, without braces")
        )


def _check_route_targets(
    alias: str,
    route: RouteSettings,
    deployments: Mapping[str, list[Deployment]],
    problems: list[ConfigProblem],
) -> None:
    path = f"routes.{alias}"
    if route.mode == "pinned" and route.target is None and alias not in deployments:
        problems.append(ConfigProblem(f"{path}.target", "a pinned route needs a target model"))
        return
    for t in sorted(route_targets(alias, route)):
        if t not in deployments:
            problems.append(ConfigProblem(path, f"routes to unknown model '{t}'"))
    if route.shadow is not None and route.shadow.judge and route.shadow.judge not in deployments:
        problems.append(
            ConfigProblem(
                f"{path}.shadow.judge",
                f"unknown model '{route.shadow.judge}': the judge must be a configured alias "
                f"({', '.join(sorted(deployments))})",
            )
        )


def _check_cache(c: CacheSettings, path: str, problems: list[ConfigProblem]) -> None:
    if not 0.0 < c.threshold <= 1.0:
        problems.append(ConfigProblem(f"{path}.threshold", "must be in (0, 1]"))
    if c.ttl is not None and c.ttl <= 0:
        problems.append(ConfigProblem(f"{path}.ttl", "must be > 0 (or null for no expiry)"))
    if c.max_entries < 1:
        problems.append(ConfigProblem(f"{path}.max_entries", "must be at least 1"))
    if c.max_error_rate is not None and not 0.0 < c.max_error_rate < 0.5:
        problems.append(
            ConfigProblem(f"{path}.max_error_rate", "must be in (0, 0.5), e.g. 0.02 (or null)")
        )
    if c.max_error_rate is not None and not c.verify:
        problems.append(
            ConfigProblem(f"{path}.verify", "max_error_rate needs the verifier on (verify: true)")
        )
    if not 0.0 <= c.verify_sample <= 1.0:
        problems.append(ConfigProblem(f"{path}.verify_sample", "must be in [0, 1]"))
    if not 0.5 <= c.error_confidence < 1.0:
        problems.append(ConfigProblem(f"{path}.error_confidence", "must be in [0.5, 1)"))
    if not 0.0 < c.judge_threshold <= 1.0:
        problems.append(ConfigProblem(f"{path}.judge_threshold", "must be in (0, 1]"))
    if not c.judge:
        problems.append(
            ConfigProblem(f"{path}.judge", "expected embedding, exact or a model alias")
        )
    if c.judge_max_per_minute is not None and c.judge_max_per_minute < 0:
        problems.append(ConfigProblem(f"{path}.judge_max_per_minute", "must be >= 0 (or null)"))
    if c.judge_max_share is not None and not 0.0 <= c.judge_max_share <= 1.0:
        problems.append(ConfigProblem(f"{path}.judge_max_share", "must be in [0, 1] (or null)"))


_CACHE_GLOBAL_KEYS = ("verify", "backend", "redis_url", "redis_prefix")


def _cache_redis(
    c: CacheSettings, budget: BudgetSettings | None, problems: list[ConfigProblem]
) -> CacheSettings:
    """The redis cache backend with its URL settled (``budget_settings.redis_url`` if unset)."""
    url = c.redis_url or (budget.redis_url if budget is not None else None)
    if not url:
        problems.append(
            ConfigProblem("cache.redis_url", "required for backend: redis (or in budget_settings)")
        )
    elif not url.startswith(("redis://", "rediss://", "unix://")):
        problems.append(
            ConfigProblem("cache.redis_url", "expected a redis://, rediss:// or unix:// URL")
        )
    if not c.redis_prefix:
        problems.append(ConfigProblem("cache.redis_prefix", "must not be empty"))
    return msgspec.structs.replace(c, redis_url=url)


def _resolve_secret(
    value: str, path: str, env: Mapping[str, str], problems: list[ConfigProblem]
) -> Secret | None:
    if value.startswith(ENV_PREFIX):
        var = value[len(ENV_PREFIX) :]
        if var not in env:
            problems.append(ConfigProblem(path, f"environment variable {var} is not set"))
            return None
        return Secret(env[var])
    return Secret(value)


def _check_server(server: RawServer, problems: list[ConfigProblem]) -> None:
    """Limits of the proxy's HTTP edge: sizes and counts positive, timeouts finite."""
    if server.max_body_bytes <= 0:
        problems.append(ConfigProblem("server.max_body_bytes", "must be positive"))
    for path, limit in server.max_body_bytes_per_endpoint.items():
        where = f"server.max_body_bytes_per_endpoint.{path}"
        if path not in BODY_ENDPOINTS:
            problems.append(ConfigProblem(where, f"expected one of {', '.join(BODY_ENDPOINTS)}"))
        elif limit <= 0:
            problems.append(ConfigProblem(where, "must be positive"))
    for name in ("header_timeout", "body_timeout", "write_timeout"):
        v = getattr(server, name)
        if not 0 < v <= 3600:
            problems.append(ConfigProblem(f"server.{name}", "must be from 0 to 3600 seconds"))
    if server.max_unauthenticated_connections < 1:
        problems.append(ConfigProblem("server.max_unauthenticated_connections", "must be >= 1"))
    if not 0 <= server.drain_seconds <= 86_400:
        problems.append(ConfigProblem("server.drain_seconds", "must be from 0 to 86400 seconds"))


def _build_alerts(
    raw: RawBudgetAlerts, env: Mapping[str, str], problems: list[ConfigProblem]
) -> BudgetAlerts | None:
    """``budget_settings.alerts`` checked, its URL and header values resolved as secrets
    (a problem names the key, never the URL: a Slack webhook's path is its credential)."""
    path = "budget_settings.alerts"
    start = len(problems)
    webhook = None
    if raw.webhook is not None:
        webhook = _resolve_secret(raw.webhook, f"{path}.webhook", env, problems)
        if webhook is not None and api_base_problem(webhook.get()) is not None:
            problems.append(
                ConfigProblem(f"{path}.webhook", "expected an http(s) URL with a host name")
            )
    headers: dict[str, Secret] = {}
    for name, value in raw.headers.items():
        resolved = _resolve_secret(value, f"{path}.headers.{name}", env, problems)
        if resolved is not None:
            if any(ord(c) < 32 or ord(c) == 127 for c in name + resolved.get()):
                problems.append(
                    ConfigProblem(f"{path}.headers.{name}", "must not contain control characters")
                )
            headers[name] = resolved
    for i, t in enumerate(raw.thresholds):
        if not (math.isfinite(t) and 0 < t <= 10):
            problems.append(
                ConfigProblem(f"{path}.thresholds[{i}]", "a share of the limit, above 0 (1.0: all)")
            )
    if not (math.isfinite(raw.timeout) and 0 < raw.timeout <= 300):
        problems.append(ConfigProblem(f"{path}.timeout", "must be from 0 to 300 seconds"))
    if not 1 <= raw.max_attempts <= 100:
        problems.append(ConfigProblem(f"{path}.max_attempts", "must be from 1 to 100"))
    if not 1 <= raw.queue_size <= 1_000_000:
        problems.append(ConfigProblem(f"{path}.queue_size", "must be from 1 to 1000000"))
    if len(problems) > start:
        return None
    return BudgetAlerts(
        webhook=webhook,
        thresholds=tuple(sorted(set(raw.thresholds))),
        soft_limit=raw.soft_limit,
        headers=headers,
        timeout=raw.timeout,
        max_attempts=raw.max_attempts,
        queue_size=raw.queue_size,
    )


def api_base_problem(url: str) -> str | None:
    """Why ``url`` cannot be an upstream base URL (None when it can): checked at load, so a
    typo is a config error instead of a failed request. Userinfo (HTTP Basic credentials for
    a self-hosted server) is allowed and never repeated in the message."""
    shown = re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/?#]*@", r"\1***@", url)
    if not re.match(r"^https?://", url):
        return f"expected an http(s) URL, got {shown!r}"
    if any(c.isspace() or not c.isprintable() for c in url):
        return f"must not contain spaces or control characters, got {shown!r}"
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError when not a number in 0..65535
    except ValueError as exc:
        return f"not a valid URL ({exc}): {shown!r}"
    if not parts.hostname:
        return f"has no host name: {shown!r}"
    if port == 0:
        return f"port 0 is not a port: {shown!r}"
    if parts.query or parts.fragment:
        return f"must not have a query or fragment (the path is appended to it): {shown!r}"
    return None


def _build_deployment(
    rd: RawDeploymentBase,
    path: str,
    env: Mapping[str, str],
    problems: list[ConfigProblem],
    index: int,
) -> Deployment | None:
    provider = type(rd).__struct_config__.tag
    assert isinstance(provider, str)
    start = len(problems)
    key = _resolve_secret(rd.api_key, f"{path}.api_key", env, problems) if rd.api_key else None
    api_base = rd.api_base
    if api_base is not None and api_base.startswith(ENV_PREFIX):
        var = api_base[len(ENV_PREFIX) :]
        api_base = env.get(var)
        if api_base is None:
            problems.append(
                ConfigProblem(f"{path}.api_base", f"environment variable {var} is not set")
            )
    if api_base is not None and (bad := api_base_problem(api_base)) is not None:
        problems.append(ConfigProblem(f"{path}.api_base", bad))
    for name in ("weight", "input_cost_per_mtok", "output_cost_per_mtok", "timeout"):
        value = getattr(rd, name)
        if value is not None and not math.isfinite(value):
            problems.append(ConfigProblem(f"{path}.{name}", "must be a finite number"))
    for name, value in rd.headers.items():
        if any(ord(c) < 32 or ord(c) == 127 for c in name + value):
            problems.append(
                ConfigProblem(f"{path}.headers.{name}", "must not contain control characters")
            )
    if rd.weight <= 0:
        problems.append(ConfigProblem(f"{path}.weight", "must be > 0"))
    for name in ("rpm", "tpm", "context_window"):
        v = getattr(rd, name)
        if v is not None and v <= 0:
            problems.append(ConfigProblem(f"{path}.{name}", "must be > 0"))
    for name in ("input_cost_per_mtok", "output_cost_per_mtok"):
        if getattr(rd, name) < 0:
            problems.append(ConfigProblem(f"{path}.{name}", "must not be negative"))
    if rd.timeout is not None and rd.timeout <= 0:
        problems.append(ConfigProblem(f"{path}.timeout", "must be > 0"))
    if not rd.model_name:
        problems.append(ConfigProblem(f"{path}.model_name", "must not be empty"))
    vertex = None
    if isinstance(rd, RawVertexDeployment):
        found = vertex_target(rd, path, env, problems)
        if found is not None:
            provider, vertex = found
            api_base = api_base or endpoint(vertex.location)
    cloud = cloud_settings(
        rd, path, env, problems, lambda v, where: _resolve_secret(v, where, env, problems)
    )
    if len(problems) > start:
        return None
    base = (api_base or cloud.pop("api_base", None) or DEFAULT_API_BASES[provider]).rstrip("/")
    return Deployment(
        id=rd.id or f"{rd.model_name}#{index}",
        alias=rd.model_name,
        provider=provider,
        model=rd.model,
        api_base=base,
        api_key=cloud.pop("api_key", key),
        weight=rd.weight,
        rpm=rd.rpm,
        tpm=rd.tpm,
        input_cost_per_mtok=rd.input_cost_per_mtok,
        output_cost_per_mtok=rd.output_cost_per_mtok,
        context_window=rd.context_window,
        timeout=rd.timeout,
        headers=dict(rd.headers),
        vertex=vertex,
        responses_api=getattr(rd, "responses_api", True),
        region=data_region(
            rd.region_name,
            vertex,
            cloud.get("aws"),
            azure_base=base if isinstance(rd, RawAzureDeployment) else None,
        ),
        **cloud,
    )

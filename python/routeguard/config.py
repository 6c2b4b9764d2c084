"""Configuration: raw msgspec Structs read from a file, then one ``load()`` that validates
and builds the runtime objects.

Flow: file (YAML / TOML / JSON) or dict -> LiteLLM shapes rewritten to ours (with a warning
for each setting we do not support) -> each section decoded into its raw Struct, collecting
*every* problem with its key path -> cross-checks (fallback targets exist, env vars set) ->
:class:`Config` with ready :class:`Deployment` objects. Nothing downstream sees raw input.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import msgspec
import yaml

from routeguard import scrub
from routeguard.budget.accounts import Accounts, BudgetLimits, load_accounts
from routeguard.errors import ConfigError, ConfigProblem

PROVIDER_TYPES = ("openai", "anthropic", "gemini")
DEFAULT_API_BASES = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com",
}
ENV_PREFIX = "os.environ/"
BODY_ENDPOINTS = ("/v1/chat/completions", "/v1/messages", "/v1/embeddings", "/admin")
"""The keys of ``server.max_body_bytes_per_endpoint`` (``/admin``: the whole admin API)."""
DEFAULT_ENDPOINT_BODY_BYTES = {"/admin": 256 * 1024}  # key specs and approvals are small
T = TypeVar("T")


# --------------------------------------------------------------------------- raw structs


class _RawDeployment(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, tag_field="type"):
    model_name: str
    model: str
    api_base: str | None = None
    api_key: str | None = None
    id: str | None = None
    weight: float = 1.0
    rpm: int | None = None
    tpm: int | None = None
    input_cost_per_mtok: float = 0.0
    output_cost_per_mtok: float = 0.0
    context_window: int | None = None
    timeout: float | None = None
    headers: dict[str, str] = {}


class RawOpenAIDeployment(_RawDeployment, tag="openai"):
    """An OpenAI Chat Completions (or compatible) deployment."""


class RawAnthropicDeployment(_RawDeployment, tag="anthropic"):
    """An Anthropic Messages deployment."""


class RawGeminiDeployment(_RawDeployment, tag="gemini"):
    """A Google Gemini generateContent deployment."""


RawDeployment = RawOpenAIDeployment | RawAnthropicDeployment | RawGeminiDeployment

Strategy = Literal["weighted", "least-busy", "lowest-latency"]


class RouterSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """How deployments are picked and how failures are retried (read as is: only plain
    values, checked by ``_check_router``)."""

    strategy: Strategy = "weighted"
    num_retries: int = 2
    retry_backoff: float = 0.25
    retry_backoff_max: float = 8.0
    timeout: float = 60.0
    deadline: float = 300.0
    allowed_fails: int = 3
    cooldown_time: float = 30.0
    # The longest a stream may run, from its request's start: then it ends with an error
    # and is charged for what it sent (its budget hold lives at least this long).
    max_stream_duration: float = 1800.0


class RawServer(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Proxy settings."""

    master_key: str | None = None
    max_body_bytes: int = 8 * 1024 * 1024
    # Per endpoint (a path of BODY_ENDPOINTS), overriding max_body_bytes for it.
    max_body_bytes_per_endpoint: dict[str, int] = {}
    header_timeout: float = 10.0  # seconds from connect (or the previous response) to headers
    body_timeout: float = 30.0  # seconds to receive a whole request body
    max_unauthenticated_connections: int = 512  # open connections no request has authenticated
    database: str | None = None  # SQLite file for virtual keys; None keeps them in memory
    key_hash_secret: str | None = None
    key_store: Literal["sqlite", "redis"] = "sqlite"  # redis: keys shared by instances
    redis_url: str | None = None  # for key_store: redis (default: budget_settings.redis_url)


class CacheSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Semantic cache settings: the top-level ``cache`` holds the defaults, a route's
    ``cache`` overrides them key by key."""

    enabled: bool = False
    threshold: float = 0.90
    ttl: float | None = 3600.0
    max_entries: int = 100_000
    verify: bool = True  # second look at close calls: numbers, negation, entities, roles...
    # Who shares entries: everyone in the tenant (org/team; a key without one is its own
    # tenant), one virtual key, or one key's end user (the request's `user`).
    scope: Literal["team", "key", "user"] = "team"
    # Where entries live (top-level only): memory (this process) or redis (shared by every
    # instance on the same redis_url + redis_prefix; default URL: budget_settings.redis_url).
    backend: Literal["memory", "redis"] = "memory"
    redis_url: str | None = None
    redis_prefix: str = "rg:cache"


class BudgetSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Where budgets and rate limits are kept and how requests are charged."""

    backend: Literal["memory", "redis"] = "memory"
    redis_url: str | None = None
    fail_open: bool = False  # Redis unreachable: refuse (default) or admit unmetered
    reservation_ttl: float = 600.0  # a crashed instance's holds expire after this
    default_max_tokens: int = 4096  # worst-case completion when a request sets no max
    default_account: str | None = None  # charged for requests without a virtual key
    end_user: BudgetLimits | None = None  # a budget per end user (the request's `user`)
    # Redis replicas that must have each hold and settlement before it returns (WAIT), so a
    # failover cannot forget them; a replica slower than the timeout costs that much latency.
    redis_wait_replicas: int = 0
    redis_wait_timeout_ms: int = 50


class RouteSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Per-alias behaviour (``routes.<alias>``): cache overrides, and routing — ``mode:
    pinned`` (one model, no cache) or ``routed`` (rules -> semantic routes -> learned
    cheap/strong); see ``routeguard.routing.router`` for the routing keys."""

    cache: dict[str, Any] = {}
    mode: Literal["routed", "pinned"] | None = None
    target: str | None = None
    cheap: str | None = None
    strong: str | None = None
    default: str | None = None
    model: str | None = None
    threshold: float | None = None
    strong_share: float | None = None
    rules: list[dict[str, Any]] | None = None
    semantic_routes: dict[str, Any] | None = None
    budget_aware: bool | float | None = None  # near a budget: strong -> cheap
    enforce: Any = None  # tool-call policy on responses (routeguard.enforce.proxy)
    max_input_bytes: int | None = None  # larger inputs are refused (413) before any work

    def routing_spec(self) -> dict[str, Any] | None:
        """The routing keys that are set, or None when this route only tunes the cache."""
        spec = {
            k: v
            for k, v in msgspec.structs.asdict(self).items()
            if k not in ("cache", "enforce", "max_input_bytes") and v is not None
        }
        return spec or None


class EmbeddingSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """The local embedder shared by the cache and the routers (``embedding``): ``f32`` matches
    sentence-transformers to ~1e-12; ``f16`` to ~3e-7 in half the memory; ``bf16`` is ~2x
    faster at ~3.5e-5 cosine distance; ``int8`` ~2x faster on AVX2-only CPUs, loosest;
    ``auto`` (the default) is bf16 on CPUs with AVX-512 BF16 and f32 on the others."""

    precision: Literal["auto", "f32", "f16", "bf16", "int8"] = "auto"


class RawConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The whole file, as written."""

    model_list: list[Any] = []
    router_settings: Any = None
    fallbacks: dict[str, list[str]] = {}
    context_window_fallbacks: dict[str, list[str]] = {}
    server: Any = None
    cache: Any = None
    routes: dict[str, Any] = {}
    budgets: list[Any] = []
    budget_settings: Any = None
    enforce: Any = None  # routeguard.enforce.proxy.EnforceSettings
    embedding: Any = None


# --------------------------------------------------------------------------- runtime objects


class Secret:
    """A credential that never shows itself in reprs, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        scrub.remember(value)  # masked wherever upstream text or a log line repeats it

    def get(self) -> str:
        """The secret value, for building an auth header."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('****')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class Deployment:
    """One concrete upstream model behind an alias."""

    id: str
    alias: str
    provider: str
    model: str
    api_base: str
    api_key: Secret | None
    weight: float = 1.0
    rpm: int | None = None
    tpm: int | None = None
    input_cost_per_mtok: float = 0.0
    output_cost_per_mtok: float = 0.0
    context_window: int | None = None
    timeout: float | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """Dollar cost of one call from its token usage."""
        return (
            prompt_tokens * self.input_cost_per_mtok + completion_tokens * self.output_cost_per_mtok
        ) / 1_000_000


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """Validated proxy settings."""

    master_key: Secret | None = None
    max_body_bytes: int = 8 * 1024 * 1024
    max_body_bytes_per_endpoint: Mapping[str, int] = field(
        default_factory=lambda: dict(DEFAULT_ENDPOINT_BODY_BYTES)
    )
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_unauthenticated_connections: int = 512
    database: str | None = None
    key_hash_secret: Secret | None = None
    key_store: Literal["sqlite", "redis"] = "sqlite"
    redis_url: str | None = None


@dataclass(frozen=True)
class Config:
    """A validated configuration, ready to build a Gateway from."""

    deployments: dict[str, list[Deployment]]
    router: RouterSettings = field(default_factory=RouterSettings)
    fallbacks: dict[str, list[str]] = field(default_factory=dict)
    context_window_fallbacks: dict[str, list[str]] = field(default_factory=dict)
    server: ServerSettings = ServerSettings()
    cache: CacheSettings = field(default_factory=CacheSettings)
    route_cache: dict[str, CacheSettings] = field(default_factory=dict)
    routing: dict[str, dict[str, Any]] = field(default_factory=dict)
    accounts: Accounts | None = None
    budget: BudgetSettings = field(default_factory=BudgetSettings)
    embedding: EmbeddingSettings = field(default_factory=EmbeddingSettings)
    warnings: list[str] = field(default_factory=list)
    enforce: dict[str, Any] = field(default_factory=dict)  # alias -> ResponseEnforcer
    input_limits: dict[str, int] = field(default_factory=dict)  # alias -> max input bytes
    source: str = "<dict>"

    def cache_for(self, alias: str) -> CacheSettings:
        """The cache settings in force for requests to ``alias``."""
        return self.route_cache.get(alias, self.cache)

    @property
    def aliases(self) -> list[str]:
        """Every model alias clients may ask for."""
        return list(self.deployments)


# --------------------------------------------------------------------------- loading


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


def load(source: str | Path | Mapping[str, Any], *, env: Mapping[str, str] | None = None) -> Config:
    """Validate a config (a file path or an already parsed mapping) and build a Config."""
    env = os.environ if env is None else env
    if isinstance(source, Mapping):
        data, name = dict(source), "<dict>"
    else:
        data, name = read_file(source), str(source)
    problems: list[ConfigProblem] = []
    warnings: list[str] = []
    data = _from_litellm(data, warnings) if _looks_like_litellm(data) else data

    raw = _convert(data, RawConfig, "", problems)
    if raw is None:
        raise ConfigError(problems, source=name)
    router = _convert(raw.router_settings or {}, RouterSettings, "router_settings", problems)
    server = _convert(raw.server or {}, RawServer, "server", problems)

    deployments: dict[str, list[Deployment]] = {}
    seen_ids: set[str] = set()
    for i, entry in enumerate(raw.model_list):
        path = f"model_list[{i}]"
        rd: _RawDeployment | None = _convert(entry, RawDeployment, path, problems)  # type: ignore[arg-type]
        if rd is None:
            continue
        dep = _build_deployment(rd, path, env, problems, len(deployments.get(rd.model_name, [])))
        if dep is None:
            continue
        if dep.id in seen_ids:
            problems.append(ConfigProblem(f"{path}.id", f"duplicate deployment id '{dep.id}'"))
        seen_ids.add(dep.id)
        deployments.setdefault(dep.alias, []).append(dep)
    if not raw.model_list:
        problems.append(ConfigProblem("model_list", "no models configured"))

    for section, chains in (
        ("fallbacks", raw.fallbacks),
        ("context_window_fallbacks", raw.context_window_fallbacks),
    ):
        for alias, targets in chains.items():
            if alias not in deployments:
                problems.append(ConfigProblem(f"{section}.{alias}", f"unknown model '{alias}'"))
            for j, target in enumerate(targets):
                if target not in deployments:
                    problems.append(
                        ConfigProblem(f"{section}.{alias}[{j}]", f"unknown model '{target}'")
                    )
                elif target == alias:
                    problems.append(
                        ConfigProblem(
                            f"{section}.{alias}[{j}]", "a model cannot fall back to itself"
                        )
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

    cache = _convert(raw.cache or {}, CacheSettings, "cache", problems)
    route_cache: dict[str, CacheSettings] = {}
    routing: dict[str, dict[str, Any]] = {}
    route_enforce: dict[str, Any] = {}
    input_limits: dict[str, int] = {}
    for alias, spec in raw.routes.items():
        path = f"routes.{alias}"
        route = _convert(spec, RouteSettings, path, problems)
        if route is not None and route.enforce is not None:
            route_enforce[alias] = route.enforce
        if route is not None and route.max_input_bytes is not None:
            if route.max_input_bytes <= 0:
                problems.append(ConfigProblem(f"{path}.max_input_bytes", "must be positive"))
            input_limits[alias] = route.max_input_bytes
        rspec = route.routing_spec() if route is not None else None
        if rspec is not None:
            routing[alias] = rspec
            _check_route_targets(alias, rspec, deployments, problems)
        elif alias not in deployments:
            problems.append(ConfigProblem(path, f"unknown model '{alias}'"))
        for once in _CACHE_GLOBAL_KEYS:
            if route is not None and once in route.cache:
                problems.append(
                    ConfigProblem(f"{path}.cache.{once}", f"{once} is set in the top-level cache")
                )
        if route is not None and route.cache and cache is not None:
            merged = {**msgspec.structs.asdict(cache), **route.cache}
            rc = _convert(merged, CacheSettings, f"{path}.cache", problems)
            if rc is not None:
                route_cache[alias] = rc
    for path, cs in [("cache", cache), *((f"routes.{a}.cache", c) for a, c in route_cache.items())]:
        if cs is not None:
            _check_cache(cs, path, problems)

    budget = _convert(raw.budget_settings or {}, BudgetSettings, "budget_settings", problems)
    embedding = _convert(raw.embedding or {}, EmbeddingSettings, "embedding", problems)
    if cache is not None and cache.backend == "redis":
        cache = _cache_redis(cache, budget, problems)
    accounts = None
    if raw.budgets:
        try:
            accounts = load_accounts(raw.budgets, source="budgets")
        except ConfigError as exc:
            problems.extend(exc.problems)
    if (
        server is not None
        and server.key_store == "redis"
        and not (server.redis_url or (budget is not None and budget.redis_url))
    ):
        problems.append(ConfigProblem("server.redis_url", "required for key_store: redis"))
    for where, url in (
        ("server", server and server.redis_url),
        ("budget_settings", budget and budget.redis_url),
    ):
        if url:  # one server, or redis+cluster://host:port[,...] (routeguard.budget.redis_url)
            from routeguard.budget.redis_url import url_problem

            if (bad := url_problem(url)) is not None:
                problems.append(ConfigProblem(f"{where}.redis_url", bad))
    if budget is not None:
        if budget.backend == "redis" and not budget.redis_url:
            problems.append(ConfigProblem("budget_settings.redis_url", "required for redis"))
        if budget.default_account is not None and (
            accounts is None or budget.default_account not in accounts.by_name
        ):
            problems.append(
                ConfigProblem(
                    "budget_settings.default_account",
                    f"no budget account named '{budget.default_account}'",
                )
            )
        if budget.reservation_ttl <= 0 or budget.default_max_tokens < 1:
            problems.append(
                ConfigProblem("budget_settings", "reservation_ttl and default_max_tokens > 0")
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

    enforce: dict[str, Any] = {}
    if raw.enforce is not None or route_enforce:
        from routeguard.enforce.proxy import load_enforcement

        pinned = {a for a, s in routing.items() if s.get("mode") == "pinned"}
        base = None if isinstance(source, Mapping) else Path(source).parent
        enforce = load_enforcement(
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
        server=ServerSettings(
            master_key=master_key,
            max_body_bytes=server.max_body_bytes,
            max_body_bytes_per_endpoint={
                **DEFAULT_ENDPOINT_BODY_BYTES,
                **server.max_body_bytes_per_endpoint,
            },
            header_timeout=server.header_timeout,
            body_timeout=server.body_timeout,
            max_unauthenticated_connections=server.max_unauthenticated_connections,
            database=server.database,
            key_hash_secret=hash_secret,
            key_store=server.key_store,
            redis_url=server.redis_url or budget.redis_url,
        ),
        cache=cache,
        route_cache=route_cache,
        routing=routing,
        accounts=accounts,
        budget=budget,
        embedding=embedding or EmbeddingSettings(),
        warnings=warnings,
        enforce=enforce,
        input_limits=input_limits,
        source=name,
    )


def _convert(data: Any, typ: type[T], path: str, problems: list[ConfigProblem]) -> T | None:
    try:
        return msgspec.convert(data, typ, strict=True)
    except msgspec.ValidationError as exc:
        problems.append(_problem_from_msgspec(str(exc), path))
        return None


_MSGSPEC_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")


def _problem_from_msgspec(message: str, prefix: str) -> ConfigProblem:
    m = _MSGSPEC_PATH.search(message)
    sub = ""
    if m:
        sub = m.group("path")
        message = message[: m.start()]
    path = (prefix + sub).lstrip(".")
    message = message.replace("Object contains unknown field", "unknown key").replace(
        "Object missing required field", "missing required key"
    )
    if message.startswith("Invalid value") and path.endswith(".type"):
        message = f"{message}: unknown provider type; expected one of {', '.join(PROVIDER_TYPES)}"
    return ConfigProblem(path, message)


def _check_router(r: RouterSettings, problems: list[ConfigProblem]) -> None:
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


def _check_route_targets(
    alias: str,
    spec: dict[str, Any],
    deployments: Mapping[str, list[Deployment]],
    problems: list[ConfigProblem],
) -> None:
    from routeguard.errors import RouteguardError
    from routeguard.routing.router import route_targets

    path = f"routes.{alias}"
    if spec.get("mode") == "pinned" and "target" not in spec and alias not in deployments:
        problems.append(ConfigProblem(f"{path}.target", "a pinned route needs a target model"))
        return
    try:
        targets = route_targets(spec, alias)
    except RouteguardError as exc:
        problems.append(ConfigProblem(path, exc.message))
        return
    for t in sorted(targets):
        if t not in deployments:
            problems.append(ConfigProblem(path, f"routes to unknown model '{t}'"))


def _check_cache(c: CacheSettings, path: str, problems: list[ConfigProblem]) -> None:
    if not 0.0 < c.threshold <= 1.0:
        problems.append(ConfigProblem(f"{path}.threshold", "must be in (0, 1]"))
    if c.ttl is not None and c.ttl <= 0:
        problems.append(ConfigProblem(f"{path}.ttl", "must be > 0 (or null for no expiry)"))
    if c.max_entries < 1:
        problems.append(ConfigProblem(f"{path}.max_entries", "must be at least 1"))


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
    for name in ("header_timeout", "body_timeout"):
        v = getattr(server, name)
        if not 0 < v <= 3600:
            problems.append(ConfigProblem(f"server.{name}", "must be from 0 to 3600 seconds"))
    if server.max_unauthenticated_connections < 1:
        problems.append(ConfigProblem("server.max_unauthenticated_connections", "must be >= 1"))


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
    rd: _RawDeployment,
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
    if len(problems) > start:
        return None
    return Deployment(
        id=rd.id or f"{rd.model_name}#{index}",
        alias=rd.model_name,
        provider=provider,
        model=rd.model,
        api_base=(api_base or DEFAULT_API_BASES[provider]).rstrip("/"),
        api_key=key,
        weight=rd.weight,
        rpm=rd.rpm,
        tpm=rd.tpm,
        input_cost_per_mtok=rd.input_cost_per_mtok,
        output_cost_per_mtok=rd.output_cost_per_mtok,
        context_window=rd.context_window,
        timeout=rd.timeout,
        headers=dict(rd.headers),
    )


# --------------------------------------------------------------------------- LiteLLM


def _looks_like_litellm(data: Mapping[str, Any]) -> bool:
    models = data.get("model_list")
    if isinstance(models, list) and any(
        isinstance(m, dict) and "litellm_params" in m for m in models
    ):
        return True
    return any(k in data for k in ("litellm_settings", "general_settings"))


_LITELLM_STRATEGY: dict[str, Strategy] = {
    "simple-shuffle": "weighted",
    "least-busy": "least-busy",
    "latency-based-routing": "lowest-latency",
}
_LITELLM_PARAMS_OURS = {"api_base", "api_key", "rpm", "tpm", "timeout", "weight"}
_LITELLM_PARAMS_IGNORED_QUIETLY = {"model", "stream_timeout", "max_retries"}
_LITELLM_ROUTER_OURS = {
    "num_retries": "num_retries",
    "timeout": "timeout",
    "allowed_fails": "allowed_fails",
    "cooldown_time": "cooldown_time",
}


def _from_litellm(data: dict[str, Any], warnings: list[str]) -> dict[str, Any]:
    """Rewrite a LiteLLM proxy config into ours; warn about each setting we do not honour."""
    out: dict[str, Any] = {"model_list": []}
    for i, entry in enumerate(data.get("model_list") or []):
        if not isinstance(entry, dict) or "litellm_params" not in entry:
            out["model_list"].append(entry)
            continue
        params = dict(entry.get("litellm_params") or {})
        info = dict(entry.get("model_info") or {})
        model = str(params.get("model", ""))
        provider, _, name = model.partition("/")
        if not name:
            provider, name = _infer_provider(model), model
        dep: dict[str, Any] = {
            "type": provider,
            "model_name": entry.get("model_name"),
            "model": name,
        }
        for k in _LITELLM_PARAMS_OURS:
            if k in params:
                dep[k] = params[k]
        for k in ("input_cost_per_token", "output_cost_per_token"):
            v = params.get(k, info.get(k))
            if isinstance(v, int | float):
                dep[k.replace("_per_token", "_per_mtok")] = v * 1_000_000
        if isinstance(info.get("max_input_tokens"), int):
            dep["context_window"] = info["max_input_tokens"]
        if isinstance(info.get("id"), str):
            dep["id"] = info["id"]
        extra = set(params) - _LITELLM_PARAMS_OURS - _LITELLM_PARAMS_IGNORED_QUIETLY
        extra -= {"input_cost_per_token", "output_cost_per_token"}
        for k in sorted(extra):
            warnings.append(f"model_list[{i}].litellm_params.{k} is not supported and is ignored")
        out["model_list"].append(dep)

    rs = dict(data.get("router_settings") or {})
    ls = dict(data.get("litellm_settings") or {})
    router: dict[str, Any] = {}
    strategy = rs.pop("routing_strategy", None)
    if strategy is not None:
        if strategy in _LITELLM_STRATEGY:
            router["strategy"] = _LITELLM_STRATEGY[strategy]
        else:
            warnings.append(
                f"router_settings.routing_strategy '{strategy}' is not supported; using weighted"
            )
    for section_name, section in (("litellm_settings", ls), ("router_settings", rs)):
        if "request_timeout" in section:
            router["timeout"] = section.pop("request_timeout")
        for theirs, ours in _LITELLM_ROUTER_OURS.items():
            if theirs in section:
                router[ours] = section.pop(theirs)
        for key in ("fallbacks", "context_window_fallbacks"):
            chains = section.pop(key, None)
            if chains:
                out.setdefault(key, {}).update(_litellm_chains(chains))
        for k in sorted(section):
            warnings.append(f"{section_name}.{k} is not supported and is ignored")
    if router:
        out["router_settings"] = router
    gs = dict(data.get("general_settings") or {})
    if "master_key" in gs:
        out["server"] = {"master_key": gs.pop("master_key")}
    for k in sorted(gs):
        warnings.append(f"general_settings.{k} is not supported and is ignored")
    for k in sorted(
        set(data) - {"model_list", "router_settings", "litellm_settings", "general_settings"}
    ):
        out[k] = data[k]
    return out


def _litellm_chains(chains: Any) -> dict[str, list[str]]:
    # LiteLLM writes fallbacks as a list of one-key dicts: [{"gpt-4": ["gpt-3.5"]}].
    result: dict[str, list[str]] = {}
    items = chains if isinstance(chains, list) else [chains]
    for item in items:
        if isinstance(item, dict):
            for k, v in item.items():
                result[str(k)] = list(v) if isinstance(v, list) else [v]
    return result


def _infer_provider(model: str) -> str:
    if model.startswith("claude"):
        return "anthropic"
    if model.startswith("gemini"):
        return "gemini"
    return "openai"

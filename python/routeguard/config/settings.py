"""The configuration's types: the raw sections as written (msgspec Structs, decoded
strictly), the settings each layer reads, and :class:`Config`, the validated whole. Pure
data: nothing here opens a connection or builds a layer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from routeguard.config.budgets import BudgetAccountConfig, BudgetLimits
from routeguard.config.routes import RouteSettings
from routeguard.config.wildcards import Wildcard
from routeguard.defaults import CACHE_MAX_ENTRIES, CACHE_THRESHOLD, CACHE_TTL, CACHE_VERIFY
from routeguard.deployment import Deployment, Secret
from routeguard.enforce.plan import EnforcePlan

DEFAULT_API_BASES = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com",
}
VERTEX_DEFAULT_LOCATION = "us-central1"  # LiteLLM's default too
ENV_PREFIX = "os.environ/"
BODY_ENDPOINTS = (
    "/v1/chat/completions",
    "/v1/messages",
    "/v1/embeddings",
    "/v1/feedback",
    "/admin",
)
"""The keys of ``server.max_body_bytes_per_endpoint`` (``/admin``: the whole admin API)."""
# Key specs, approvals and feedback are small.
DEFAULT_ENDPOINT_BODY_BYTES = {"/admin": 256 * 1024, "/v1/feedback": 64 * 1024}


# --------------------------------------------------------------------------- raw structs


class RawDeploymentBase(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, tag_field="type"):
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
    drop_params: bool | None = None  # None: router_settings.drop_params
    # Where the deployment processes data (LiteLLM's region_name: "eu", "us"); None: the
    # region of a bedrock or vertex_ai deployment, else unknown. Customers with an
    # allowed_model_region are served only by deployments of that region.
    region_name: str | None = None


class RawOpenAIDeployment(RawDeploymentBase, tag="openai"):
    """An OpenAI Chat Completions (or compatible) deployment."""

    # /v1/responses requests pass through to the server's own Responses API (OpenAI's does);
    # false: translated to chat, for compatible servers that serve chat completions only.
    responses_api: bool = True


class RawAnthropicDeployment(RawDeploymentBase, tag="anthropic"):
    """An Anthropic Messages deployment."""


class RawGeminiDeployment(RawDeploymentBase, tag="gemini"):
    """A Google Gemini generateContent deployment."""


class RawVertexDeployment(RawDeploymentBase, tag="vertex_ai"):
    """A Google Vertex AI deployment: Gemini, or Claude when the model is ``claude-*``.
    Authenticates with Google credentials, not an api_key (routeguard.providers.vertex)."""

    vertex_project: str | None = None  # default: VERTEXAI_PROJECT, then the credentials'
    vertex_location: str | None = None  # default: VERTEXAI_LOCATION, then us-central1
    # A service-account JSON file, or its JSON text; default: Application Default Credentials
    vertex_credentials: str | dict[str, Any] | None = None


class RawAzureDeployment(RawDeploymentBase, tag="azure"):
    """An Azure OpenAI deployment: ``model`` is the deployment name (see config/clouds.py)."""

    api_version: str | None = None
    azure_ad_token: str | None = None
    azure_ad_token_provider: bool = False  # Entra ID tokens from azure-identity


class RawBedrockDeployment(RawDeploymentBase, tag="bedrock"):
    """An AWS Bedrock deployment: ``model`` is the model or inference-profile id."""

    aws_region_name: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    aws_session_token: str | None = None
    aws_profile_name: str | None = None


RawDeployment = (
    RawOpenAIDeployment
    | RawAnthropicDeployment
    | RawGeminiDeployment
    | RawAzureDeployment
    | RawBedrockDeployment
    | RawVertexDeployment
)

Strategy = Literal["weighted", "least-busy", "lowest-latency", "usage-based", "lowest-cost"]


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
    # Drop request fields a deployment's provider cannot honour instead of refusing with a
    # 400 (a deployment's own drop_params wins); responses name them in a header.
    drop_params: bool = False
    # Fallbacks of every alias that has none of its own (LiteLLM's default_fallbacks).
    default_fallbacks: tuple[str, ...] = ()
    # Where every instance shares cooldowns and per-minute usage (routeguard.routing.shared);
    # None: budget_settings.redis_url when its backend is redis, else each process alone.
    redis_url: str | None = None
    redis_prefix: str = "rg:router"  # the keys' hash tag: one Redis Cluster slot
    redis_sync_interval: float = 0.2  # seconds between two reads of the shared state
    redis_timeout: float = 0.25  # seconds a Redis round trip may take (off the request path)


class RawServer(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Proxy settings."""

    master_key: str | None = None
    max_body_bytes: int = 8 * 1024 * 1024
    # Per endpoint (a path of BODY_ENDPOINTS), overriding max_body_bytes for it.
    max_body_bytes_per_endpoint: dict[str, int] = {}
    header_timeout: float = 10.0  # seconds from connect (or the previous response) to headers
    body_timeout: float = 30.0  # seconds to receive a whole request body
    write_timeout: float = 60.0  # seconds a client may leave its answer's bytes unread
    max_unauthenticated_connections: int = 512  # open connections no request has authenticated
    database: str | None = None  # SQLite file for virtual keys; None keeps them in memory
    key_hash_secret: str | None = None
    key_store: Literal["sqlite", "redis"] = "sqlite"  # redis: keys shared by instances
    redis_url: str | None = None  # for key_store: redis (default: budget_settings.redis_url)
    # On SIGTERM: how long in-flight requests and streams may run on before they are cut.
    drain_seconds: float = 30.0


class CacheSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Semantic cache settings: the top-level ``cache`` holds the defaults, a route's
    ``cache`` overrides them key by key."""

    enabled: bool = False
    threshold: float = CACHE_THRESHOLD  # these four: routeguard.defaults, shared with the library
    ttl: float | None = CACHE_TTL
    max_entries: int = CACHE_MAX_ENTRIES
    verify: bool = CACHE_VERIFY  # second look at close calls: numbers, negation, entities, roles...
    # Who shares entries: everyone in the tenant (org/team; a key without one is its own
    # tenant), one virtual key, or one key's end user (the request's `user`).
    scope: Literal["team", "key", "user"] = "team"
    # Where entries live (top-level only): memory (this process) or redis (shared by every
    # instance on the same redis_url + redis_prefix; default URL: budget_settings.redis_url).
    backend: Literal["memory", "redis"] = "memory"
    redis_url: str | None = None
    redis_prefix: str = "rg:cache"
    # The wrong-hit bound (docs/cache.md, "Bounding wrong hits"): the share of served
    # semantic hits whose answer is wrong stays <= max_error_rate (None: the fixed threshold).
    max_error_rate: float | None = None
    verify_sample: float = 0.05  # the least share of would-be hits shadow-checked upstream
    error_confidence: float = 0.95  # of the bound's one-sided confidence interval
    # How a cached answer is compared with a fresh one: embedding (cosine of the answers),
    # exact (same text), or a configured model alias asked SAME/DIFFERENT.
    judge: str = "embedding"
    judge_threshold: float = 0.90  # embedding judge: the least cosine of two right answers
    # Who pays a judge model's calls: this budget account (and its ancestors), or, when
    # None, the accounts the compared request was charged to.
    judge_account: str | None = None
    # Caps on a judge model's calls, per route and instance (None: no cap): at most this many
    # in any 60 s, and at most this share of the route's semantic lookups.
    judge_max_per_minute: int | None = None
    judge_max_share: float | None = None


class RawBudgetAlerts(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """``budget_settings.alerts`` as written: where to POST an alert when an account's spend
    crosses its soft limit or a share of its limit (once per account, level and period)."""

    webhook: str | None = None  # an http(s) URL or os.environ/VAR; None: log lines only
    thresholds: list[float] = msgspec.field(default_factory=lambda: [0.5, 0.8, 1.0])
    soft_limit: bool = True  # also alert when spend crosses the account's soft_limit
    headers: dict[str, str] = {}  # sent with each POST (values may be os.environ/VAR)
    timeout: float = 5.0  # seconds per POST
    max_attempts: int = 5  # POSTs per alert before it is given up (logged)
    queue_size: int = 1000  # alerts waiting to be sent; past it new ones are dropped (logged)


class BudgetSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Where budgets and rate limits are kept and how requests are charged."""

    backend: Literal["memory", "redis"] = "memory"
    redis_url: str | None = None
    fail_open: bool = False  # Redis unreachable: refuse (default) or admit unmetered
    reservation_ttl: float = 600.0  # a crashed instance's holds expire after this
    default_max_tokens: int = 4096  # worst-case completion when a request sets no max
    default_account: str | None = None  # charged for requests without a virtual key
    # The proxy-wide account (LiteLLM's litellm_settings.max_budget): every request is
    # charged to it, a key's own account going under it when no user/team/org account is
    # configured for the key.
    proxy_account: str | None = None
    end_user: BudgetLimits | None = None  # a budget per end user (the request's `user`)
    # Redis replicas that must have each hold and settlement before it returns (WAIT), so a
    # failover cannot forget them; a replica slower than the timeout costs that much latency.
    redis_wait_replicas: int = 0
    redis_wait_timeout_ms: int = 50
    alerts: RawBudgetAlerts | None = None  # see BudgetAlerts for the validated form
    # The HTTP status and error ``code`` of a budget refusal (its ``type`` is always
    # budget_exceeded). A LiteLLM config defaults to LiteLLM's: 422 and the status as code.
    exceeded_status_code: int = 429
    exceeded_error_code: str = "budget_exceeded"


class EmbeddingSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """The local embedder shared by the cache and the routers (``embedding``): ``f32``
    matches sentence-transformers closest; ``f16`` halves the weights' memory; ``bf16`` is
    fast where the CPU has AVX-512 BF16; ``int8`` is fast on AVX2 at the loosest accuracy;
    ``auto`` (the default) is bf16 on CPUs with AVX-512 BF16 (int8 where they also have
    AVX-512 VNNI and int8 times clearly faster), elsewhere the fastest of f32, f16 and int8
    as timed on the CPU (see docs/configuration.md for the figures)."""

    precision: Literal["auto", "f32", "f16", "bf16", "int8"] = "auto"


class OtlpExporterSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """One OTLP destination for traces (``observability.tracing.exporters[i]``)."""

    # The OTLP base URL (``/v1/traces`` is added for http unless the path ends with it);
    # None: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT.
    endpoint: str | None = None
    protocol: Literal["http", "grpc"] | None = None  # None: OTEL_EXPORTER_OTLP_*PROTOCOL, else http
    headers: dict[str, str] = {}  # values may be os.environ/VAR; {}: OTEL_EXPORTER_OTLP_*HEADERS


class TracingSettings(OtlpExporterSettings, frozen=True):
    """OpenTelemetry traces (``observability.tracing``; the ``routeguard[otel]`` extra): the
    first destination inline, any more under ``exporters``."""

    sample_ratio: float | None = None  # None: OTEL_TRACES_SAMPLER(_ARG), else every trace
    service_name: str | None = None  # None: OTEL_SERVICE_NAME, else "routeguard"
    stages: bool = False  # INTERNAL spans for the cache lookup and the routing decision
    exporters: list[OtlpExporterSettings] = []


class ObservabilitySettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """What the proxy records (``observability``): the request log, one JSON line per
    request in the format ``routeguard analyze`` reads (``serve --request-log`` sets the path),
    the Prometheus samples served at ``/metrics``, and OpenTelemetry traces (``tracing``:
    a mapping, or ``true`` for the OTEL_* environment alone)."""

    request_log: str | None = None  # a file path; None: no request log
    log_content: bool = False  # messages and answers in the log (secrets scrubbed)
    request_log_max_bytes: int = 100 * 1024 * 1024  # rotate past this size
    request_log_backups: int = 5  # rotated files kept (PATH.1 ... PATH.N)
    metrics: bool = True  # record Prometheus samples and serve GET /metrics
    # /metrics without a key; otherwise it needs the master key (when the proxy asks for keys)
    metrics_public: bool = False
    # None/false: no traces. After load only true/None stays here: Config.tracing has the rest.
    tracing: TracingSettings | bool | None = None


class RawConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The whole file, as written."""

    model_list: list[Any] = []
    router_settings: Any = None
    fallbacks: dict[str, list[str]] = {}
    context_window_fallbacks: dict[str, list[str]] = {}
    # Where to go when an upstream refuses a request on content policy (ContentPolicyViolation).
    content_policy_fallbacks: dict[str, list[str]] = {}
    server: Any = None
    cache: Any = None
    routes: dict[str, Any] = {}
    budgets: list[Any] = []
    budget_settings: Any = None
    enforce: Any = None  # routeguard.enforce.proxy.EnforceSettings
    embedding: Any = None
    observability: Any = None


# --------------------------------------------------------------------------- runtime objects


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
    write_timeout: float = 60.0
    max_unauthenticated_connections: int = 512
    database: str | None = None
    key_hash_secret: Secret | None = None
    key_store: Literal["sqlite", "redis"] = "sqlite"
    redis_url: str | None = None
    drain_seconds: float = 30.0


@dataclass(frozen=True, slots=True)
class BudgetAlerts:
    """Validated ``budget_settings.alerts``: levels as shares of the hard limit, secrets
    resolved (the webhook URL and header values never appear in logs or errors)."""

    webhook: Secret | None = None
    thresholds: tuple[float, ...] = (0.5, 0.8, 1.0)
    soft_limit: bool = True
    headers: Mapping[str, Secret] = field(default_factory=dict)
    timeout: float = 5.0
    max_attempts: int = 5
    queue_size: int = 1000


@dataclass(frozen=True, slots=True)
class OtlpTarget:
    """A validated OTLP destination: the full traces URL (None: the exporter reads the
    OTEL_EXPORTER_OTLP_* environment), the protocol and the headers (secret values)."""

    endpoint: str | None
    protocol: Literal["http", "grpc"] = "http"
    headers: tuple[tuple[str, Secret], ...] | None = None  # None: from the environment


@dataclass(frozen=True, slots=True)
class TracingConfig:
    """Validated ``observability.tracing``: where spans go and how many are kept."""

    targets: tuple[OtlpTarget, ...]
    sample_ratio: float | None = None
    service_name: str | None = None
    stages: bool = False  # INTERNAL spans per request stage (cache lookup, routing)


@dataclass(frozen=True)
class Config:
    """A validated configuration, ready to build a Gateway from."""

    deployments: dict[str, list[Deployment]]
    router: RouterSettings = field(default_factory=RouterSettings)
    fallbacks: dict[str, list[str]] = field(default_factory=dict)
    context_window_fallbacks: dict[str, list[str]] = field(default_factory=dict)
    content_policy_fallbacks: dict[str, list[str]] = field(default_factory=dict)
    # Patterns serving any matching model name, most specific first (config.wildcards).
    wildcards: tuple[Wildcard, ...] = ()
    server: ServerSettings = ServerSettings()
    cache: CacheSettings = field(default_factory=CacheSettings)
    route_cache: dict[str, CacheSettings] = field(default_factory=dict)
    routing: dict[str, RouteSettings] = field(default_factory=dict)  # routed/pinned routes
    accounts: tuple[BudgetAccountConfig, ...] = ()  # checked; the budget layer builds them
    budget: BudgetSettings = field(default_factory=BudgetSettings)
    embedding: EmbeddingSettings = field(default_factory=EmbeddingSettings)
    warnings: list[str] = field(default_factory=list)
    enforce: dict[str, EnforcePlan] = field(default_factory=dict)  # alias -> its enforcement
    input_limits: dict[str, int] = field(default_factory=dict)  # alias -> max input bytes
    observability: ObservabilitySettings = field(default_factory=ObservabilitySettings)
    tracing: TracingConfig | None = None  # observability.tracing, validated
    source: str = "<dict>"
    alerts: BudgetAlerts | None = None  # budget_settings.alerts, validated

    def cache_for(self, alias: str) -> CacheSettings:
        """The cache settings in force for requests to ``alias``."""
        return self.route_cache.get(alias, self.cache)

    @property
    def aliases(self) -> list[str]:
        """Every model alias clients may ask for."""
        return list(self.deployments)

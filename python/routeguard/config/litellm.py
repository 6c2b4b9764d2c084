"""LiteLLM proxy configs, read unchanged: ``model_list`` entries with ``litellm_params``,
``router_settings``, ``litellm_settings`` and ``general_settings`` rewritten into our shapes,
with a warning for each setting we do not honour."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from routeguard.config.budgets import period_from_duration
from routeguard.config.callbacks import map_callbacks
from routeguard.config.settings import ENV_PREFIX, Strategy
from routeguard.errors import ConfigProblem
from routeguard.pricing import list_price

# LiteLLM prefixes served by our OpenAI adapter: (default api_base or None when the config must
# give one, the environment variable LiteLLM reads the key from, or None for keyless servers).
OPENAI_COMPATIBLE: dict[str, tuple[str | None, str | None]] = {
    "openai_compatible": (None, None),
    "hosted_vllm": (None, None),
    "ollama": ("http://localhost:11434/v1", None),
    "ollama_chat": ("http://localhost:11434/v1", None),
    "lm_studio": ("http://localhost:1234/v1", None),
    "groq": ("https://api.groq.com/openai/v1", "GROQ_API_KEY"),
    "together_ai": ("https://api.together.xyz/v1", "TOGETHERAI_API_KEY"),
    "openrouter": ("https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
    "mistral": ("https://api.mistral.ai/v1", "MISTRAL_API_KEY"),
    "deepseek": ("https://api.deepseek.com/v1", "DEEPSEEK_API_KEY"),
    "fireworks_ai": ("https://api.fireworks.ai/inference/v1", "FIREWORKS_AI_API_KEY"),
    "xai": ("https://api.x.ai/v1", "XAI_API_KEY"),
    "perplexity": ("https://api.perplexity.ai", "PERPLEXITYAI_API_KEY"),
    "cohere": ("https://api.cohere.ai/compatibility/v1", "COHERE_API_KEY"),
}
DEFAULT_OPENAI_BASE = "https://api.openai.com/v1"
NATIVE = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "gemini": "GEMINI_API_KEY"}
# Google Vertex AI (Gemini, and Claude for claude-* models): Google credentials, no api key.
VERTEX = "vertex_ai"
VERTEX_PARAMS = ("vertex_project", "vertex_location", "vertex_credentials")
# Cloud providers and the litellm_params they take beyond api_base/api_key (their keys and
# regions otherwise come from the environment: config/clouds.py).
CLOUD_PARAMS: dict[str, frozenset[str]] = {
    "azure": frozenset({"api_version", "azure_ad_token"}),
    "bedrock": frozenset(
        {"aws_region_name", "aws_access_key_id", "aws_secret_access_key", "aws_session_token",
         "aws_profile_name"}
    ),
}  # fmt: skip
SUPPORTED_PREFIXES = sorted([*NATIVE, *CLOUD_PARAMS, *OPENAI_COMPATIBLE, VERTEX])
# Top-level keys of a LiteLLM file that are routeguard sections too, read as ours.
_OUR_SECTIONS = {
    "routes", "cache", "budgets", "budget_settings", "enforce", "embedding", "observability",
    "server", "fallbacks", "context_window_fallbacks",
}  # fmt: skip


def looks_like_litellm(data: Mapping[str, Any]) -> bool:
    """Whether ``data`` is written in LiteLLM's proxy config format."""
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
    "usage-based-routing": "usage-based",
    "usage-based-routing-v2": "usage-based",
    "cost-based-routing": "lowest-cost",
}
_LITELLM_PARAMS_OURS = {"api_base", "api_key", "rpm", "tpm", "timeout", "weight", "drop_params",
                        "responses_api", "region_name"}  # fmt: skip
_LITELLM_PARAMS_IGNORED_QUIETLY = {"model", "stream_timeout", "max_retries"}
# model_info keys read (or, being descriptions of the model, with nothing to honour).
_MODEL_INFO_READ = {"id", "max_input_tokens", "input_cost_per_token", "output_cost_per_token",
                    "base_model", "mode", "description", "max_tokens", "max_output_tokens",
                    "litellm_provider", "metadata"}  # fmt: skip
_LITELLM_ROUTER_OURS = {
    "drop_params": "drop_params",
    "num_retries": "num_retries",
    "timeout": "timeout",
    "allowed_fails": "allowed_fails",
    "cooldown_time": "cooldown_time",
}


def from_litellm(
    data: dict[str, Any],
    warnings: list[str],
    problems: list[ConfigProblem] | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Rewrite a LiteLLM proxy config into ours; warn about each setting we do not honour.
    A provider prefix we do not serve is a problem naming the key the user wrote (added to
    ``problems``); ``environment_variables`` fill ``env`` (a copy of the environment the
    config resolves against) where it has no value, and keys default to the variable LiteLLM
    reads for the provider."""
    problems = [] if problems is None else problems
    env_vars = data.get("environment_variables")
    if isinstance(env_vars, dict) and env is not None:
        for k, v in env_vars.items():
            if v is not None:  # a null placeholder is not the string "None"
                env.setdefault(str(k), str(v))
    out: dict[str, Any] = {"model_list": []}
    # LiteLLM's switch for Entra ID tokens (DefaultAzureCredential) on azure/ deployments.
    settings = data.get("litellm_settings")
    azure_ad_refresh = (
        isinstance(settings, dict) and settings.get("enable_azure_ad_token_refresh") is True
    )
    for i, entry in enumerate(data.get("model_list") or []):
        if not isinstance(entry, dict) or "litellm_params" not in entry:
            out["model_list"].append(entry)
            continue
        params = _mapping(entry.get("litellm_params"), f"model_list[{i}].litellm_params", problems)
        info = _mapping(entry.get("model_info"), f"model_list[{i}].model_info", problems)
        model = str(params.get("model", ""))
        where = f"model_list[{i}].litellm_params.model"
        if "*" in model and "*" not in str(entry.get("model_name", "")):
            warnings.append(
                f"model_list[{i}]: '{model}' is a wildcard but model_name "
                f"'{entry.get('model_name')}' is not a pattern; this entry is ignored "
                '(write model_name: "*" or "openai/*" to serve every matching name)'
            )
            continue
        provider, _, name = model.partition("/")
        if not name:
            provider, name = _infer_provider(model), model
        cloud = CLOUD_PARAMS.get(provider, frozenset())
        if provider == "bedrock":
            route, slash, rest = name.partition("/")
            if slash and route in ("converse", "invoke"):
                name = rest  # LiteLLM's route prefix: both are served through Converse
        dep: dict[str, Any] = {"model_name": entry.get("model_name"), "model": name}
        key_var: str | None
        if provider in NATIVE:
            dep["type"] = provider
            key_var = NATIVE[provider]
        elif provider == VERTEX:
            dep["type"] = VERTEX
            key_var = None
            dep.update({k: params[k] for k in VERTEX_PARAMS if params.get(k) is not None})
        elif provider in CLOUD_PARAMS:
            dep["type"] = provider
            key_var = None  # keys, tokens, regions: read from the environment at load
            dep.update({k: params[k] for k in cloud if k in params})
            if "aws_bedrock_runtime_endpoint" in params and "api_base" not in params:
                dep["api_base"] = params["aws_bedrock_runtime_endpoint"]
            keyless = "api_key" not in params and "azure_ad_token" not in params
            if provider == "azure" and azure_ad_refresh and keyless:
                dep["azure_ad_token_provider"] = True
        elif provider in OPENAI_COMPATIBLE:
            dep["type"] = "openai"
            # Not every compatible server has the Responses API: translate to chat unless
            # litellm_params says responses_api: true.
            dep["responses_api"] = False
            base, key_var = OPENAI_COMPATIBLE[provider]
            if base is not None:
                dep["api_base"] = base
            elif "api_base" not in params:
                problems.append(
                    ConfigProblem(
                        f"model_list[{i}].litellm_params.api_base",
                        f"required for {provider}/ models (the server's URL)",
                    )
                )
        else:
            problems.append(
                ConfigProblem(
                    where,
                    f"provider {provider!r} is not supported; supported prefixes: "
                    f"{', '.join(SUPPORTED_PREFIXES)} (an OpenAI-compatible server works as "
                    "openai/<model> with api_base)",
                )
            )
            continue
        for k in _LITELLM_PARAMS_OURS:
            if k in params:
                dep[k] = params[k]
        for k in ("rpm", "tpm"):  # LiteLLM's Router also reads them beside litellm_params
            if k in entry and k not in dep:
                dep[k] = entry[k]
        for k in sorted(set(entry) - {"model_name", "litellm_params", "model_info", "rpm", "tpm"}):
            warnings.append(f"model_list[{i}].{k} is not supported and is ignored")
        base = dep.get("api_base")
        # LiteLLM's Ollama api_base is the server's root; its OpenAI API is under /v1.
        ollama = provider in ("ollama", "ollama_chat")
        if ollama and isinstance(base, str) and not base.rstrip("/").endswith("/v1"):
            dep["api_base"] = base.rstrip("/") + "/v1"
        if provider == "openai" and dep.get("api_base") not in (None, DEFAULT_OPENAI_BASE):
            key_var = None  # OPENAI_API_KEY is OpenAI's: never sent to another server
            if "api_key" not in dep:
                warnings.append(
                    f"model_list[{i}]: openai/ model on {dep['api_base']} with no api_key: "
                    "sent without one (OPENAI_API_KEY is only used for api.openai.com)"
                )
        if "api_key" not in dep and key_var is not None:
            if env is not None and env.get(key_var):
                dep["api_key"] = f"os.environ/{key_var}"  # where LiteLLM reads it from
            else:
                warnings.append(
                    f"model_list[{i}]: no api_key and {key_var} is not set; "
                    "its upstream will refuse the calls"
                )
        for k in ("input_cost_per_token", "output_cost_per_token"):
            v = params.get(k, info.get(k))
            if isinstance(v, int | float):
                dep[k.replace("_per_token", "_per_mtok")] = v * 1_000_000
        if "input_cost_per_mtok" not in dep and "output_cost_per_mtok" not in dep:
            # LiteLLM prices from its model map: the list price of the model (or of its
            # base_model) when we know it; the wildcard's concrete names are priced per name.
            price = list_price(str(info.get("base_model") or name))
            if price is not None:
                dep["input_cost_per_mtok"], dep["output_cost_per_mtok"] = price
        if isinstance(info.get("max_input_tokens"), int):
            dep["context_window"] = info["max_input_tokens"]
        if isinstance(info.get("id"), str):
            dep["id"] = info["id"]
        for k in sorted(set(info) - _MODEL_INFO_READ):
            if not k.startswith("supports_"):
                warnings.append(f"model_list[{i}].model_info.{k} is not supported and is ignored")
        extra = set(params) - _LITELLM_PARAMS_OURS - _LITELLM_PARAMS_IGNORED_QUIETLY - cloud
        if provider == "bedrock":
            extra.discard("aws_bedrock_runtime_endpoint")
        extra -= {"input_cost_per_token", "output_cost_per_token"}
        if provider == VERTEX:
            extra -= set(VERTEX_PARAMS)
        for k in sorted(extra):
            warnings.append(f"model_list[{i}].litellm_params.{k} is not supported and is ignored")
        out["model_list"].append(dep)

    rs = _mapping(data.get("router_settings"), "router_settings", problems)
    ls = _mapping(data.get("litellm_settings"), "litellm_settings", problems)
    ls_given = dict(ls)  # as written (the sections below are consumed as they are read)
    observability = map_callbacks(ls, env if env is not None else {}, warnings)
    if observability:
        out["observability"] = observability
    router: dict[str, Any] = {}
    strategy = rs.pop("routing_strategy", None)
    if strategy is not None:
        if isinstance(strategy, str) and strategy in _LITELLM_STRATEGY:
            router["strategy"] = _LITELLM_STRATEGY[strategy]
        else:
            warnings.append(
                f"router_settings.routing_strategy '{strategy}' is not supported; using weighted"
            )
    _model_group_alias(rs.pop("model_group_alias", None), out, problems)
    budget_settings: dict[str, Any] = {}
    redis_url = _redis_url(rs, "router_settings", env, problems, prefix="redis_")
    if redis_url is not None:  # LiteLLM shares usage and cooldowns there: so do we
        budget_settings.update(backend="redis", redis_url=redis_url)
        router["redis_url"] = redis_url
    ls.pop("enable_azure_ad_token_refresh", None)  # read above, per azure/ deployment
    for section_name, section in (("litellm_settings", ls), ("router_settings", rs)):
        if "request_timeout" in section:
            router["timeout"] = section.pop("request_timeout")
        for theirs, ours in _LITELLM_ROUTER_OURS.items():
            if theirs in section:
                router[ours] = section.pop(theirs)
        for key in ("fallbacks", "context_window_fallbacks", "content_policy_fallbacks"):
            chains = section.pop(key, None)
            if chains:
                out.setdefault(key, {}).update(_litellm_chains(chains))
        default = section.pop("default_fallbacks", None)
        if default:
            router["default_fallbacks"] = list(default) if isinstance(default, list) else [default]
        if section_name == "litellm_settings":
            _cache_settings(section, out, warnings, problems, env)
            _budget_settings(section, out, budget_settings, problems)
        for k in sorted(section):
            warnings.append(f"{section_name}.{k} is not supported and is ignored")
    if router:
        out["router_settings"] = router
    given = data.get("budget_settings")
    if (
        isinstance(given, dict)
        and any(k in given for k in _BUDGET_STYLE)
        and "budget_exceeded_status_code" not in ls_given
    ):  # our own setting of the refusal's status wins over LiteLLM's default
        for k in _BUDGET_STYLE:
            budget_settings.pop(k, None)
    if budget_settings:
        out["budget_settings"] = budget_settings
    gs = _mapping(data.get("general_settings"), "general_settings", problems)
    if "master_key" in gs:
        out["server"] = {"master_key": gs.pop("master_key")}
    alerts = _litellm_alerts(gs, warnings, env)
    if alerts is not None:
        out.setdefault("budget_settings", {})["alerts"] = alerts  # beside max_budget & co.
    for k in sorted(gs):
        warnings.append(f"general_settings.{k} is not supported and is ignored")
    litellm_keys = {"model_list", "router_settings", "litellm_settings", "general_settings"}
    for k in sorted(set(data) - litellm_keys):
        if k not in _OUR_SECTIONS:
            if k != "environment_variables":
                warnings.append(f"{k} is not supported and is ignored")
            continue
        given, translated = data[k], out.get(k)
        if isinstance(translated, dict) and isinstance(given, dict):
            # Both formats set this section (general_settings.master_key and server:,
            # router fallbacks and top-level fallbacks): merged, and a key set twice is a
            # problem rather than one side silently lost.
            for name in sorted(set(translated) & set(given)):
                if translated[name] != given[name]:
                    problems.append(
                        ConfigProblem(
                            f"{k}.{name}", "set both here and in LiteLLM's settings: keep one"
                        )
                    )
            out[k] = {**translated, **given}
        else:
            out[k] = given
    return out


LITELLM_BUDGET_STATUS = 422
"""The status LiteLLM refuses an over-budget request with unless
``litellm_settings.budget_exceeded_status_code`` says otherwise."""
_BUDGET_STYLE = ("exceeded_status_code", "exceeded_error_code")
PROXY_ACCOUNT = "litellm-proxy"
"""The budget account ``litellm_settings.max_budget`` becomes (every request is charged to it)."""
# LiteLLM cache types and what they become: (our backend, exact match only).
_CACHE_TYPES = {"local": ("memory", True), "redis": ("redis", True),
                "redis-semantic": ("redis", False)}  # fmt: skip
_CACHE_PARAMS_OURS = {"type", "host", "port", "password", "url", "redis_url", "ssl", "ttl",
                      "default_in_redis_ttl", "default_in_memory_ttl", "namespace",
                      "similarity_threshold", "supported_call_types"}  # fmt: skip
_CHAT_CALL_TYPES = {"completion", "acompletion"}


def _cache_settings(
    ls: dict[str, Any],
    out: dict[str, Any],
    warnings: list[str],
    problems: list[ConfigProblem],
    env: Mapping[str, str] | None,
) -> None:
    """``litellm_settings.cache`` and ``cache_params`` (popped from ``ls``) as our ``cache``."""
    on = ls.pop("cache", None)
    params = _mapping(ls.pop("cache_params", None), "litellm_settings.cache_params", problems)
    if not on:
        for k in sorted(params):
            warnings.append(f"litellm_settings.cache_params.{k} is ignored: cache is not on")
        return
    where = "litellm_settings.cache_params"
    kind = str(params.get("type", "local"))
    if kind not in _CACHE_TYPES:
        warnings.append(
            f"{where}.type '{kind}' is not supported (local, redis and redis-semantic are); "
            "the cache is off"
        )
        return
    backend, exact = _CACHE_TYPES[kind]
    cache: dict[str, Any] = {"enabled": True, "backend": backend}
    if exact:  # LiteLLM's redis and local caches answer only the same request
        cache["threshold"] = 1.0
    elif "similarity_threshold" in params:
        cache["threshold"] = params["similarity_threshold"]
    else:
        problems.append(
            ConfigProblem(f"{where}.similarity_threshold", "required for redis-semantic")
        )
    ttl = params.get(
        "ttl", params.get(f"default_in_{'redis' if backend == 'redis' else 'memory'}_ttl")
    )
    if ttl is not None:
        cache["ttl"] = ttl
    if backend == "redis":
        url = _redis_url(params, where, env, problems, prefix="")
        if url is None and env is not None:  # LiteLLM reads these when cache_params has none
            url = _redis_url(
                {k.lower(): v for k, v in env.items() if k.startswith("REDIS_")},
                "environment (REDIS_HOST...)", env, problems, prefix="redis_",
            )  # fmt: skip
        if url is None:
            problems.append(
                ConfigProblem(
                    f"{where}.host", f"required for type: {kind} (or REDIS_HOST / REDIS_URL)"
                )
            )
            cache["backend"] = "memory"  # the problem above is the one to report
        else:
            cache["redis_url"] = url
        if params.get("namespace"):
            cache["redis_prefix"] = str(params["namespace"])
    elif params.get("namespace"):
        cache["redis_prefix"] = str(params["namespace"])  # harmless: kept for a later redis
    types = params.get("supported_call_types")
    if isinstance(types, list):
        if not _CHAT_CALL_TYPES & set(types):
            warnings.append(
                f"{where}.supported_call_types has no completion type: only chat completions "
                "are cached, so the cache is off"
            )
            return
        if set(types) - _CHAT_CALL_TYPES:
            others = ", ".join(sorted(set(types) - _CHAT_CALL_TYPES))
            warnings.append(
                f"{where}.supported_call_types: only chat completions are cached, not {others}"
            )
    for k in sorted(set(params) - _CACHE_PARAMS_OURS):
        warnings.append(f"{where}.{k} is not supported and is ignored")
    out["cache"] = cache


def _redis_url(
    params: dict[str, Any],
    where: str,
    env: Mapping[str, str] | None,
    problems: list[ConfigProblem],
    *,
    prefix: str,
) -> str | None:
    """A redis:// URL from ``<prefix>url`` or ``<prefix>host``/``port``/``password``
    (popped from ``params``; ``os.environ/NAME`` values resolved), or None without a host."""
    vals = {k: params.pop(prefix + k, None) for k in ("url", "host", "port", "password", "ssl")}
    for k, v in vals.items():
        if isinstance(v, str) and v.startswith(ENV_PREFIX):
            var = v[len(ENV_PREFIX) :]
            if env is None or var not in env:
                problems.append(
                    ConfigProblem(f"{where}.{prefix}{k}", f"environment variable {var} is not set")
                )
                return None
            vals[k] = env[var]
    if vals["url"]:
        return str(vals["url"])
    if not vals["host"]:
        return None
    auth = f":{quote(str(vals['password']), safe='')}@" if vals["password"] else ""
    scheme = "rediss" if str(vals["ssl"]).lower() in ("true", "1") else "redis"
    return f"{scheme}://{auth}{vals['host']}:{vals['port'] or 6379}"


def _budget_settings(
    ls: dict[str, Any],
    out: dict[str, Any],
    budget_settings: dict[str, Any],
    problems: list[ConfigProblem],
) -> None:
    """``max_budget``/``budget_duration`` (the proxy-wide budget) and ``max_end_user_budget``
    (popped from ``ls``) as our budget account and settings."""
    limit = ls.pop("max_budget", None)
    duration = ls.pop("budget_duration", None)
    period = "total"
    if duration is not None:
        try:
            period = period_from_duration(str(duration))
        except ValueError as exc:
            problems.append(ConfigProblem("litellm_settings.budget_duration", str(exc)))
    if limit is not None:
        out.setdefault("budgets", []).append(
            {"name": PROXY_ACCOUNT, "limit": limit, "period": period}
        )
        budget_settings["proxy_account"] = PROXY_ACCOUNT
    end_user = ls.pop("max_end_user_budget", None)
    if end_user is not None:
        budget_settings["end_user"] = {"limit": end_user, "period": "total"}
    status = ls.pop("budget_exceeded_status_code", LITELLM_BUDGET_STATUS)
    if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 499:
        problems.append(
            ConfigProblem(
                "litellm_settings.budget_exceeded_status_code",
                f"expected a client error status from 400 to 499, got {status!r}",
            )
        )
    else:  # refused as LiteLLM refuses: that status, and it (as text) for the error's code
        budget_settings.update(exceeded_status_code=status, exceeded_error_code=str(status))


def _model_group_alias(aliases: Any, out: dict[str, Any], problems: list[ConfigProblem]) -> None:
    """``router_settings.model_group_alias`` ({"gpt-4": "gpt-4o"} or {"gpt-4": {"model":
    "gpt-4o", "hidden": true}}): the aliased name served by copies of its target's entries."""
    if aliases is None:
        return
    if not isinstance(aliases, dict):
        problems.append(ConfigProblem("router_settings.model_group_alias", "expected a mapping"))
        return
    for name, target in aliases.items():
        if isinstance(target, dict):
            target = target.get("model")
        entries = [
            e for e in out["model_list"] if isinstance(e, dict) and e.get("model_name") == target
        ]
        if not entries:
            problems.append(
                ConfigProblem(
                    f"router_settings.model_group_alias.{name}", f"unknown model '{target}'"
                )
            )
            continue
        for e in entries:
            copy = {**e, "model_name": str(name)}
            if "id" in copy:
                copy["id"] = f"{copy['id']}@{name}"
            out["model_list"].append(copy)


# LiteLLM's alerting backends we serve as budget_settings.alerts.webhook, and the variable
# each reads its URL from.
_ALERT_WEBHOOKS = {"slack": "SLACK_WEBHOOK_URL", "webhook": "WEBHOOK_URL"}


def _litellm_alerts(
    gs: dict[str, Any], warnings: list[str], env: Mapping[str, str] | None
) -> dict[str, Any] | None:
    """``general_settings.alerting`` / ``alert_types`` / ``alert_to_webhook_url`` (popped from
    ``gs``) as our ``budget_settings.alerts``: budget alerts only, to the Slack or generic
    webhook LiteLLM would use (our payload carries Slack's ``text``); the rest is warned.
    With the webhook's variable unset (``env`` given), alerts are log lines only (warned)."""
    alerting = gs.pop("alerting", None)
    types = gs.pop("alert_types", None)
    urls = gs.pop("alert_to_webhook_url", None)
    for k in ("alerting_threshold", "alerting_args"):
        if k in gs:
            gs.pop(k)
            warnings.append(
                f"general_settings.{k} is not supported (only budget alerts) and is ignored"
            )
    if alerting is None:
        return None
    channels = [alerting] if isinstance(alerting, str) else list(alerting or [])
    served = [c for c in channels if c in _ALERT_WEBHOOKS]
    for c in channels:
        if c not in _ALERT_WEBHOOKS:
            warnings.append(f"general_settings.alerting '{c}' is not supported and is ignored")
    if types is not None:
        wanted = types if isinstance(types, list) else [types]
        for t in wanted:
            if t != "budget_alerts":
                warnings.append(
                    f"general_settings.alert_types '{t}' is not supported (only budget_alerts)"
                )
        if "budget_alerts" not in wanted:
            return None
    if not served:
        return None
    if len(served) > 1:
        warnings.append(f"general_settings.alerting: budget alerts go to '{served[0]}' only")
    var = _ALERT_WEBHOOKS[served[0]]
    if isinstance(urls, dict) and isinstance(urls.get("budget_alerts"), str):
        return {"webhook": urls["budget_alerts"]}
    if env is not None and not env.get(var):
        warnings.append(
            f"general_settings.alerting '{served[0]}': {var} is not set, so budget alerts "
            "are log lines only"
        )
        return {}
    return {"webhook": f"os.environ/{var}"}


def _mapping(value: Any, path: str, problems: list[ConfigProblem]) -> dict[str, Any]:
    """``value`` as a dict (None: empty); anything else is a problem at ``path``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(ConfigProblem(path, f"expected a mapping, got {type(value).__name__}"))
        return {}
    return dict(value)


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

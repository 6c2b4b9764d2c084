"""LiteLLM proxy configs, read unchanged: ``model_list`` entries with ``litellm_params``,
``router_settings``, ``litellm_settings`` and ``general_settings`` rewritten into our shapes,
with a warning for each setting we do not honour."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from routeguard.config.settings import Strategy
from routeguard.errors import ConfigProblem

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
SUPPORTED_PREFIXES = sorted([*NATIVE, *OPENAI_COMPATIBLE])
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
}
_LITELLM_PARAMS_OURS = {"api_base", "api_key", "rpm", "tpm", "timeout", "weight", "drop_params"}
_LITELLM_PARAMS_IGNORED_QUIETLY = {"model", "stream_timeout", "max_retries"}
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
    for i, entry in enumerate(data.get("model_list") or []):
        if not isinstance(entry, dict) or "litellm_params" not in entry:
            out["model_list"].append(entry)
            continue
        params = _mapping(entry.get("litellm_params"), f"model_list[{i}].litellm_params", problems)
        info = _mapping(entry.get("model_info"), f"model_list[{i}].model_info", problems)
        model = str(params.get("model", ""))
        where = f"model_list[{i}].litellm_params.model"
        if "*" in str(entry.get("model_name", "")) or model.endswith("*"):
            warnings.append(
                f"model_list[{i}]: wildcard deployments ({entry.get('model_name')!r} -> "
                f"{model!r}) are not supported yet; this entry is ignored"
            )
            continue
        provider, _, name = model.partition("/")
        if not name:
            provider, name = _infer_provider(model), model
        dep: dict[str, Any] = {"model_name": entry.get("model_name"), "model": name}
        key_var: str | None
        if provider in NATIVE:
            dep["type"] = provider
            key_var = NATIVE[provider]
        elif provider in OPENAI_COMPATIBLE:
            dep["type"] = "openai"
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
        if isinstance(info.get("max_input_tokens"), int):
            dep["context_window"] = info["max_input_tokens"]
        if isinstance(info.get("id"), str):
            dep["id"] = info["id"]
        extra = set(params) - _LITELLM_PARAMS_OURS - _LITELLM_PARAMS_IGNORED_QUIETLY
        extra -= {"input_cost_per_token", "output_cost_per_token"}
        for k in sorted(extra):
            warnings.append(f"model_list[{i}].litellm_params.{k} is not supported and is ignored")
        out["model_list"].append(dep)

    rs = _mapping(data.get("router_settings"), "router_settings", problems)
    ls = _mapping(data.get("litellm_settings"), "litellm_settings", problems)
    router: dict[str, Any] = {}
    strategy = rs.pop("routing_strategy", None)
    if strategy is not None:
        if isinstance(strategy, str) and strategy in _LITELLM_STRATEGY:
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
    gs = _mapping(data.get("general_settings"), "general_settings", problems)
    if "master_key" in gs:
        out["server"] = {"master_key": gs.pop("master_key")}
    alerts = _litellm_alerts(gs, warnings)
    if alerts is not None:
        out["budget_settings"] = {"alerts": alerts}
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


# LiteLLM's alerting backends we serve as budget_settings.alerts.webhook, and the variable
# each reads its URL from.
_ALERT_WEBHOOKS = {"slack": "SLACK_WEBHOOK_URL", "webhook": "WEBHOOK_URL"}


def _litellm_alerts(gs: dict[str, Any], warnings: list[str]) -> dict[str, Any] | None:
    """``general_settings.alerting`` / ``alert_types`` / ``alert_to_webhook_url`` (popped from
    ``gs``) as our ``budget_settings.alerts``: budget alerts only, to the Slack or generic
    webhook LiteLLM would use (our payload carries Slack's ``text``); the rest is warned."""
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
    webhook = f"os.environ/{_ALERT_WEBHOOKS[served[0]]}"
    if isinstance(urls, dict) and isinstance(urls.get("budget_alerts"), str):
        webhook = urls["budget_alerts"]
    return {"webhook": webhook}


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

"""The embedded default configuration: what ``routeguard serve`` runs with no ``--config``.

Each provider whose API key is in the environment contributes its real models; with no
key at all, the same aliases point at the bundled simulated upstream (started in-process
by the CLI), so ``make run`` works on a fresh machine and behaves like the real thing:
three wire formats, streaming, tool calls, and a fallback chain across providers.
Prices are list prices per 1M tokens (input / output) as published by each provider.
The semantic cache's defaults live here too (``CACHE_*``): the one place both the library's
``SemanticCache()`` and the proxy's ``cache:`` section take them from.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

# alias -> (provider type, upstream model, env var, $/1M input, $/1M output, context window)
MODELS: dict[str, tuple[str, str, str, float, float, int]] = {
    "gpt-4o-mini": ("openai", "gpt-4o-mini", "OPENAI_API_KEY", 0.15, 0.60, 128_000),
    "claude-3-5-haiku": (
        "anthropic",
        "claude-3-5-haiku-latest",
        "ANTHROPIC_API_KEY",
        0.80,
        4.00,
        200_000,
    ),
    "gemini-2.0-flash": ("gemini", "gemini-2.0-flash", "GEMINI_API_KEY", 0.10, 0.40, 1_000_000),
}


def has_provider_keys(env: Mapping[str, str] | None = None) -> bool:
    """Whether any real provider key is set."""
    env = os.environ if env is None else env
    return any(env.get(spec[2]) for spec in MODELS.values())


def missing_keys(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The default aliases whose provider key is not set, with that key's variable."""
    env = os.environ if env is None else env
    return {alias: spec[2] for alias, spec in MODELS.items() if not env.get(spec[2])}


def default_config(
    simulated_base: str | None = None, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The default config dict: the real provider for each alias whose key is set, the
    simulated upstream at ``simulated_base`` for the others (left out when it is None).
    Fallbacks stay within each side: a real request never falls back to a simulated
    answer, nor a simulated one to a paid call."""
    env = os.environ if env is None else env
    entries: list[dict[str, Any]] = []
    real: list[str] = []
    simulated: list[str] = []
    for alias, (kind, model, key_var, price_in, price_out, window) in MODELS.items():
        entry: dict[str, Any] = {
            "model_name": alias,
            "type": kind,
            "model": model,
            "input_cost_per_mtok": price_in,
            "output_cost_per_mtok": price_out,
            "context_window": window,
        }
        if env.get(key_var):
            entry["api_key"] = f"os.environ/{key_var}"
            real.append(alias)
        elif simulated_base is not None:
            entry["api_key"] = "simulated"
            entry["api_base"] = simulated_base + ("/v1" if kind == "openai" else "")
            simulated.append(alias)
        else:
            continue
        entries.append(entry)
    fallbacks = {
        a: [b for b in side if b != a] for side in (real, simulated) if len(side) > 1 for a in side
    }
    return {"model_list": entries, "fallbacks": fallbacks}


def served_lines(
    deployments: Mapping[str, Any], simulated_base: str | None, left_out: Mapping[str, str]
) -> list[str]:
    """What ``serve`` prints at start: one line per alias (its deployments and where they
    are), then each configured alias left out and why."""
    lines = []
    for alias, deps in deployments.items():
        where = []
        for d in deps:
            simulated = simulated_base is not None and d.api_base.startswith(simulated_base)
            place = "the simulated upstream" if simulated else d.api_base
            where.append(f"{d.provider} {d.model} at {place}")
        lines.append(f"  {alias} -> {'; '.join(where)}")
    for alias, why in left_out.items():
        lines.append(f"  {alias}: left out ({why})")
    return lines


# The semantic cache's defaults, read by both `SemanticCache()` (the library) and the proxy's
# `cache:` settings (config.settings.CacheSettings), so the two behave alike out of the box.
CACHE_THRESHOLD = 0.90  # cosine a semantic hit needs
CACHE_TTL: float | None = 3600.0  # seconds an entry lives (None: until evicted)
CACHE_MAX_ENTRIES = 100_000  # entries kept (least recently used evicted past it)
CACHE_VERIFY = True  # the HitVerifier's second look at close calls

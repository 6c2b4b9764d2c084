"""Configuration: :func:`load` reads a file (YAML / TOML / JSON, ours or LiteLLM's) or a
mapping and returns a validated :class:`Config` of plain typed data, naming every problem
with its key path; :class:`~routeguard.gateway.Gateway` builds the layers from it.

Modules: :mod:`.settings` (the types), :mod:`.load` (reading and checking),
:mod:`.litellm` (LiteLLM's format), :mod:`.budgets` (budget accounts).
"""

from __future__ import annotations

from routeguard.config.budgets import BudgetAccountConfig, BudgetLimits
from routeguard.config.decode import PROVIDER_TYPES
from routeguard.config.load import api_base_problem, load, read_file
from routeguard.config.routes import RouteSettings, RuleSettings, SemanticRoutesSettings
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
    RouterSettings,
    ServerSettings,
    Strategy,
)
from routeguard.deployment import Deployment, Secret
from routeguard.errors import ConfigError, ConfigProblem

__all__ = [
    "BODY_ENDPOINTS",
    "DEFAULT_API_BASES",
    "DEFAULT_ENDPOINT_BODY_BYTES",
    "ENV_PREFIX",
    "PROVIDER_TYPES",
    "BudgetAccountConfig",
    "BudgetAlerts",
    "BudgetLimits",
    "BudgetSettings",
    "CacheSettings",
    "Config",
    "ConfigError",
    "ConfigProblem",
    "Deployment",
    "EmbeddingSettings",
    "ObservabilitySettings",
    "RouteSettings",
    "RouterSettings",
    "RuleSettings",
    "Secret",
    "SemanticRoutesSettings",
    "ServerSettings",
    "Strategy",
    "api_base_problem",
    "load",
    "read_file",
]

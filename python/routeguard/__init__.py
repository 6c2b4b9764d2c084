"""routeguard: a layered runtime for multi-model LLM production.

``Gateway`` is the one object users hold; the proxy (``routeguard.server``) is a thin ASGI
adapter over it.
"""

from __future__ import annotations

from routeguard._version import __version__
from routeguard.errors import (
    AllAttemptsFailed,
    AuthenticationError,
    BudgetExceeded,
    BudgetUnavailable,
    ConfigError,
    InvalidRequest,
    ModelNotFound,
    ProviderError,
    RateLimited,
    RequestNotFound,
    RouteguardError,
)
from routeguard.gateway import Gateway
from routeguard.result import ChatResult

__all__ = [
    "AllAttemptsFailed",
    "AuthenticationError",
    "BudgetExceeded",
    "BudgetUnavailable",
    "ChatResult",
    "ConfigError",
    "Gateway",
    "InvalidRequest",
    "ModelNotFound",
    "ProviderError",
    "RateLimited",
    "RequestNotFound",
    "RouteguardError",
    "__version__",
]

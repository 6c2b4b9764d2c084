"""List prices of well-known models, for deployments whose config sets none: a wildcard
deployment (``model_name: "*"``) serves model names nobody listed, and a budget needs their
price. A name is matched by its longest known prefix (``gpt-4o-2024-08-06`` is ``gpt-4o``),
after any ``provider/`` part. A model not here has no price: see docs/configuration.md
(Wildcard deployments) for what budgets do then."""

from __future__ import annotations

# Dollars per million tokens (input, output), as published by each provider.
LIST_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4-turbo": (10.00, 30.00),
    "gpt-3.5-turbo": (0.50, 1.50),
    "o1": (15.00, 60.00),
    "o1-mini": (1.10, 4.40),
    "o3": (2.00, 8.00),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
    "text-embedding-3-small": (0.02, 0.0),
    "text-embedding-3-large": (0.13, 0.0),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-3-5-sonnet": (3.00, 15.00),
    "claude-3-7-sonnet": (3.00, 15.00),
    "claude-3-haiku": (0.25, 1.25),
    "claude-3-opus": (15.00, 75.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-opus-4": (15.00, 75.00),
    "gemini-1.5-flash": (0.075, 0.30),
    "gemini-1.5-pro": (1.25, 5.00),
    "gemini-2.0-flash": (0.10, 0.40),
    "gemini-2.0-flash-lite": (0.075, 0.30),
    "gemini-2.5-flash": (0.30, 2.50),
    "gemini-2.5-pro": (1.25, 10.00),
}


def list_price(model: str) -> tuple[float, float] | None:
    """``(input, output)`` dollars per million tokens of ``model``, or None when unknown."""
    name = model.rsplit("/", 1)[-1].lower()
    best: str | None = None
    for known in LIST_PRICES:
        if (name == known or name.startswith(known + "-")) and (
            best is None or len(known) > len(best)
        ):
            best = known
    return None if best is None else LIST_PRICES[best]

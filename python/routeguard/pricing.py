"""List prices of well-known models, for deployments whose config sets none: a wildcard
deployment (``model_name: "*"``) serves model names nobody listed, a LiteLLM entry without
``input_cost_per_token`` is priced from the model, and a budget needs their price. A name is
matched by its longest known prefix (``gpt-4o-2024-08-06`` is ``gpt-4o``), after any
``provider/`` part; a Bedrock id is matched without its geography and version
(``us.amazon.nova-pro-v1:0`` is ``amazon.nova-pro``), and Claude on Bedrock at Anthropic's
own price. A model not here has no price: see docs/configuration.md (Wildcard deployments)
for what budgets do then."""

from __future__ import annotations

from routeguard.model_ids import bedrock_model

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
    "claude-opus-4-5": (5.00, 25.00),
    "claude-haiku-4-5": (1.00, 5.00),
    "gemini-1.5-flash": (0.075, 0.30),
    "gemini-1.5-pro": (1.25, 5.00),
    "gemini-2.0-flash": (0.10, 0.40),
    "gemini-2.0-flash-lite": (0.075, 0.30),
    "gemini-2.5-flash": (0.30, 2.50),
    "gemini-2.5-pro": (1.25, 10.00),
    # AWS Bedrock on-demand prices in us-east-1, from https://aws.amazon.com/bedrock/pricing/
    # (per 1,000 tokens there, per million here; cross-region inference profiles cost the
    # source region's price, other regions may differ). Claude on Bedrock costs Anthropic's
    # list prices above and is matched there; these ids keep Bedrock's publisher part.
    "amazon.nova-micro": (0.035, 0.14),
    "amazon.nova-lite": (0.06, 0.24),
    "amazon.nova-pro": (0.80, 3.20),
    "amazon.nova-premier": (2.50, 12.50),
    "amazon.titan-text-lite": (0.15, 0.20),
    "amazon.titan-text-express": (0.20, 0.60),
    "amazon.titan-text-premier": (0.50, 1.50),
    "amazon.titan-embed-text-v1": (0.10, 0.0),
    "amazon.titan-embed-text-v2": (0.02, 0.0),
    "cohere.embed-english-v3": (0.10, 0.0),
    "cohere.embed-multilingual-v3": (0.10, 0.0),
    "meta.llama3-8b-instruct": (0.30, 0.60),
    "meta.llama3-70b-instruct": (2.65, 3.50),
    "meta.llama3-1-8b-instruct": (0.22, 0.22),
    "meta.llama3-1-70b-instruct": (0.72, 0.72),
    "meta.llama3-1-405b-instruct": (2.40, 2.40),
    "meta.llama3-2-1b-instruct": (0.10, 0.10),
    "meta.llama3-2-3b-instruct": (0.15, 0.15),
    "meta.llama3-2-11b-instruct": (0.16, 0.16),
    "meta.llama3-2-90b-instruct": (0.72, 0.72),
    "meta.llama3-3-70b-instruct": (0.72, 0.72),
    "meta.llama4-scout-17b-instruct": (0.17, 0.66),
    "meta.llama4-maverick-17b-instruct": (0.24, 0.97),
    "mistral.mistral-7b-instruct": (0.15, 0.20),
    "mistral.mixtral-8x7b-instruct": (0.45, 0.70),
    "mistral.mistral-small-2402": (1.00, 3.00),
    "mistral.mistral-large-2402": (4.00, 12.00),
    "mistral.mistral-large-2407": (2.00, 6.00),
}


def list_price(model: str) -> tuple[float, float] | None:
    """``(input, output)`` dollars per million tokens of ``model``, or None when unknown."""
    name = model.rsplit("/", 1)[-1].lower()
    publisher, base = bedrock_model(name)
    if publisher == "anthropic":  # Claude on Bedrock: Anthropic's price, by Anthropic's name
        base = base.removeprefix("anthropic.")
    for candidate in dict.fromkeys((name, base)):
        best = _longest_prefix(candidate)
        if best is not None:
            return LIST_PRICES[best]
    return None


def _longest_prefix(name: str) -> str | None:
    best: str | None = None
    for known in LIST_PRICES:
        if (name == known or name.startswith(known + "-")) and (
            best is None or len(known) > len(best)
        ):
            best = known
    return best

"""How many tokens a request can cost at most, from byte counts alone (no tokenizer).

``measure(request)`` walks what the model reads once -- every message field (text parts,
earlier assistant ``tool_calls``, tool results, names), the system prompt, tool and
function definitions, ``response_format`` and every other request field -- and returns an
:class:`InputSize`: UTF-8 bytes of JSON-encoded input, plus the images counted apart. A
byte-level BPE or SentencePiece token covers at least one byte, so ``bytes`` bounds the
text tokens of any provider; an image is billed by its size, not its base64, so each one
counts at the provider's per-image maximum (:func:`image_tokens`). ``InputSize.tokens``
is the upper bound budgets hold; ``InputSize.estimate`` the usual high guess (~2 bytes a
token) rate limits consume; ``InputSize.typical`` (~4 bytes a token) what an aborted stream
is charged for its prompt when the provider never reported usage.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import msgspec

from routeguard._native import core

_encoder = msgspec.json.Encoder()
_FRAMING = 4  # tokens a message's separators may add beyond its JSON bytes
# Tool use adds a hidden system prompt (Anthropic: up to ~530 tokens; OpenAI: tens).
_TOOL_PROMPT = 600
# Request fields no provider reads as prompt text (controls, ids and numbers).
_NOT_READ = frozenset(
    {"model", "user", "metadata", "stream_options", "logit_bias", "stop", "service_tier",
     "reasoning_effort", "modalities", "store", "safety_identifier", "prompt_cache_key"}
)  # fmt: skip
_IMAGE_PARTS = frozenset({"image_url", "image", "input_image"})

# Tokens of the largest image one call bills, per provider (an image is resized first):
# OpenAI high detail 85 + 170 x 8 tiles (768x2048 after scaling); Anthropic ~1.15 MP / 750
# plus margin; Gemini 1120 at the highest media resolution. Some OpenAI models bill an
# image in inflated tokens at a lower price (patch multipliers): those get their own row.
_IMAGE_TOKENS = {
    "openai": 1_445, "anthropic": 1_650, "gemini": 1_120,
    "vertex_ai": 1_120, "vertex_ai_anthropic": 1_650,  # the same models on Vertex AI
}  # fmt: skip
_OPENAI_IMAGE_TOKENS = (
    ("gpt-4o-mini", 48_169),  # 2833 + 5667 x 8 tiles
    ("gpt-4.1-nano", 3_779),  # 1536 patches x 2.46
    ("gpt-4.1-mini", 2_489),  # 1536 patches x 1.62
    ("o4-mini", 2_642),  # 1536 patches x 1.72
)
_DEFAULT_IMAGE_TOKENS = 2_000


def image_tokens(provider: str, model: str = "") -> int:
    """The most tokens one image costs on ``provider``'s ``model``."""
    if provider == "openai":
        for prefix, tokens in _OPENAI_IMAGE_TOKENS:
            if model.startswith(prefix) or f"/{prefix}" in model:
                return tokens
    return _IMAGE_TOKENS.get(provider, _DEFAULT_IMAGE_TOKENS)


class InputSize(NamedTuple):
    """What a request gives the model to read: JSON bytes, images apart, and messages."""

    bytes: int
    images: int = 0
    messages: int = 0
    text_bytes: int = 0  # the message text alone (for the typical estimate)
    tools: bool = False  # tool definitions given (a hidden tool prompt is added)

    def tokens(self, provider: str = "", model: str = "") -> int:
        """An upper bound of prompt tokens on ``provider``'s ``model``."""
        images = self.images * image_tokens(provider, model) if self.images else 0
        return (
            self.bytes
            + images
            + _FRAMING * (self.messages + 2)
            + (_TOOL_PROMPT if self.tools else 0)
        )

    def estimate(self) -> int:
        """A high estimate of prompt tokens (~2 bytes a token), for RPM/TPM limits."""
        return (self.bytes + 16 * self.messages) // 2 + self.images * 1024 + 8

    def typical(self, provider: str = "", model: str = "") -> int:
        """A typical count (~4 bytes of text a token, never above :meth:`tokens`), what a
        prompt is charged when the provider never said."""
        text = (self.text_bytes + 3) // 4 + 4 * self.messages
        return min(self.tokens(provider, model), text + self.images * image_tokens(provider, model))


def _size(value: Any) -> int:
    """UTF-8 bytes of ``value`` as JSON (a string: its bytes, without encoding a copy when
    it is ASCII)."""
    if isinstance(value, str):
        return len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))
    if value is None or isinstance(value, bool | int | float):
        return 8
    try:
        return len(_encoder.encode(value))
    except (TypeError, msgspec.EncodeError, OverflowError, UnicodeEncodeError):
        return len(str(value).encode("utf-8", "surrogatepass"))


def _is_image(part: Mapping[str, Any]) -> bool:
    kind = part.get("type")
    if isinstance(kind, str) and kind in _IMAGE_PARTS:  # a list is not hashable
        return True
    return kind is None and ("image_url" in part or "image" in part)


def measure(request: Mapping[str, Any]) -> InputSize:
    """The :class:`InputSize` of a chat request (every field the model may read)."""
    counts = _native_measure(request)
    if counts is not None:
        return InputSize._make(counts)
    return _measure(request)


def _measure(request: Mapping[str, Any]) -> InputSize:
    """:func:`measure` in Python: every request the native walk leaves to it (see
    ``core.ChatMeasure``), and the reference the native walk is tested against."""
    total = images = count = text = 0
    messages = request.get("messages")
    if isinstance(messages, list):
        for m in messages:
            count += 1
            if not isinstance(m, Mapping):
                total += _size(m)
                continue
            for k, v in m.items():
                if k == "content" and isinstance(v, list):
                    for part in v:
                        if isinstance(part, Mapping) and _is_image(part):
                            images += 1
                            continue
                        n = _size(part)
                        total += n
                        if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                            text += _size(part["text"])
                        else:
                            text += n
                    continue
                n = _size(v) + len(k) + 4
                total += n
                if k != "role":
                    text += n
    for k, v in request.items():
        if k == "messages" or k in _NOT_READ or v is None or isinstance(v, bool | int | float):
            continue
        n = _size(v) + len(k) + 4
        total += n
        if k in ("tools", "functions", "system", "response_format"):
            text += n
    tools = bool(request.get("tools") or request.get("functions"))
    return InputSize(total, images, count, text, tools)


_native_measure = core.ChatMeasure(_NOT_READ, _IMAGE_PARTS, _size)


def quote(
    request: Mapping[str, Any], prices: core.PriceTable, default_max_tokens: int
) -> tuple[int, int] | None:
    """What a budget holds for a chat request on the deployments of ``prices``, in one
    native call: ``(micro-dollars, estimated tokens)``, as the worst case of
    :func:`measure` and :func:`completion_bound` over them and :meth:`InputSize.estimate`
    give; None when they must be worked out in Python (see ``core.ChatMeasure.quote``)."""
    return _native_measure.quote(request, prices, default_max_tokens)


def measure_embeddings(request: Mapping[str, Any]) -> InputSize:
    """The :class:`InputSize` of an embeddings request: its input texts (a token-id array
    counts one token per id)."""
    raw = request.get("input")
    items = raw if isinstance(raw, list) else [raw]
    total = 0
    for item in items:
        if isinstance(item, str):
            total += _size(item)
        elif isinstance(item, int):
            total += 1
        elif isinstance(item, list):
            total += len(item)
        else:
            total += _size(item)
    return InputSize(total, 0, 0, total)


def completion_bound(request: Mapping[str, Any], default_max_tokens: int) -> int:
    """The most completion tokens a chat request may be billed: ``n`` choices of the
    request's ``max_completion_tokens``/``max_tokens`` (else ``default_max_tokens``)."""
    most = None
    for key in ("max_completion_tokens", "max_tokens"):
        v = request.get(key)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            most = v if most is None else max(most, v)
    n = request.get("n")
    choices = n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1
    return choices * (most if most is not None else default_max_tokens)

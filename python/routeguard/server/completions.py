"""The proxy's legacy text completions (``POST /v1/completions``), translated to chat.

Flow: the request -> :func:`completion_request_to_chat` (the prompt becomes one user
message; sampling fields carry over; ``max_tokens`` defaults to 16 as the legacy API's
does) -> the gateway's chat path with every layer -> :func:`chat_to_completion`, or
:class:`CompletionStreamEncoder` for ``text_completion`` chunks ending in ``data: [DONE]``.
What a chat model cannot do is refused with a 400 naming the field: ``echo``,
``logprobs``, ``best_of`` > 1, ``suffix``, several prompts or token-id prompts.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgspec

from routeguard.errors import InvalidRequest
from routeguard.providers.base import Json

_encode = msgspec.json.Encoder().encode
DEFAULT_MAX_TOKENS = 16  # the legacy API's own default
_COPIED = ("temperature", "top_p", "n", "stop", "presence_penalty", "frequency_penalty",
           "logit_bias", "user", "seed", "stream_options")  # fmt: skip
_FINISH = {"length": "length", "content_filter": "content_filter"}


def _invalid(param: str, problem: str) -> InvalidRequest:
    return InvalidRequest(f"{param}: {problem}", param=param)


def completion_request_to_chat(body: Json) -> Json:
    """Validate a legacy completions request and translate it into a chat request."""
    if body.get("echo"):
        raise _invalid("echo", "not supported: chat models cannot echo the prompt")
    if body.get("logprobs") is not None:
        raise _invalid("logprobs", "not supported on /v1/completions by this gateway")
    best_of = body.get("best_of")
    if best_of is not None and best_of != 1:
        raise _invalid("best_of", f"only 1 is supported (got {best_of!r}); use 'n' for choices")
    if body.get("suffix"):
        raise _invalid("suffix", "not supported: chat models have no insert mode")
    known = {"model", "prompt", "max_tokens", "stream", "echo", "logprobs", "best_of", "suffix"}
    for key, value in body.items():
        if value is not None and key not in known and key not in _COPIED:
            raise _invalid(key, "not supported by this gateway's /v1/completions")
    model = body.get("model")
    if not isinstance(model, str):
        raise _invalid("model", "field required" if model is None else "expected a string")
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, list):
        raise _invalid(
            "prompt",
            "only one text prompt per request is supported (not a list of prompts or token ids)",
        )
    if not isinstance(prompt, str):
        raise _invalid("prompt", "field required" if prompt is None else "expected a string")
    max_tokens = body.get("max_tokens")
    chat: Json = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens,
    }
    for key in _COPIED:
        if body.get(key) is not None:
            chat[key] = body[key]
    if body.get("stream") is not None:
        chat["stream"] = body["stream"]
    return chat


def _finish(reason: Any) -> str:
    return _FINISH.get(str(reason), "stop")


def _usage(usage: Any) -> Json | None:
    if not isinstance(usage, dict):
        return None
    keys = ("prompt_tokens", "completion_tokens", "total_tokens")
    return {k: usage[k] for k in keys if isinstance(usage.get(k), int)}


def completion_id(upstream_id: Any) -> str:
    """A ``cmpl-`` id, derived from the upstream's chat id when there is one."""
    if isinstance(upstream_id, str) and upstream_id:
        return "cmpl-" + upstream_id.removeprefix("chatcmpl-")
    return f"cmpl-{uuid.uuid4().hex}"


def chat_to_completion(resp: Json, model: str) -> Json:
    """Translate an OpenAI ``chat.completion`` into a ``text_completion``."""
    choices = []
    for i, choice in enumerate(resp.get("choices") or []):
        if not isinstance(choice, dict):
            continue
        message = choice.get("message") or {}
        text = message.get("content")
        if isinstance(text, list):
            text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
        choices.append(
            {
                "index": choice.get("index", i),
                "text": text if isinstance(text, str) else "",
                "logprobs": None,
                "finish_reason": _finish(choice.get("finish_reason")),
            }
        )
    out: Json = {
        "id": completion_id(resp.get("id")),
        "object": "text_completion",
        "created": resp.get("created") or int(time.time()),
        "model": model,
        "choices": choices,
    }
    usage = _usage(resp.get("usage"))
    if usage is not None:
        out["usage"] = usage
    return out


class CompletionStreamEncoder:
    """Chat chunks in, ``text_completion`` SSE frames out; ``finish`` sends ``[DONE]``."""

    def __init__(self, model: str) -> None:
        self._model = model
        self._id = ""
        self._created = int(time.time())

    def feed(self, chunk: Json) -> bytes:
        """The frame for one ``chat.completion.chunk`` (nothing if it carries no text,
        finish or usage)."""
        if not self._id:
            self._id = completion_id(chunk.get("id"))
        choices = []
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            text = (choice.get("delta") or {}).get("content")
            finish = choice.get("finish_reason")
            if not text and not finish:
                continue
            choices.append(
                {
                    "index": choice.get("index", 0),
                    "text": text if isinstance(text, str) else "",
                    "logprobs": None,
                    "finish_reason": _finish(finish) if finish else None,
                }
            )
        usage = _usage(chunk.get("usage"))
        if not choices and usage is None:
            return b""
        out: Json = {"id": self._id, "object": "text_completion", "created": self._created,
                     "model": self._model, "choices": choices}  # fmt: skip
        if usage is not None:
            out["usage"] = usage
        return b"data: " + _encode(out) + b"\n\n"

    def finish(self) -> bytes:
        """The stream's terminator."""
        return b"data: [DONE]\n\n"

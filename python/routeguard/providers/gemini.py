"""Google Gemini (``generateContent``, ``streamGenerateContent``, ``batchEmbedContents``)
behind the OpenAI-shaped Provider.

Flow: an OpenAI chat request -> :func:`request_to_gemini` (system -> ``systemInstruction``,
turns -> ``contents`` with roles user/model, tool calls -> ``functionCall`` parts, tool results
-> ``functionResponse`` parts named after the call they answer, params -> ``generationConfig``)
-> upstream -> :func:`response_from_gemini` back to a ``chat.completion``. Streams are SSE
(``?alt=sse``) of whole GenerateContentResponse objects, each turned into chunks by
:class:`StreamDecoder`. Embeddings go out as one ``batchEmbedContents`` call per 100 inputs.

The API key travels only in the ``x-goog-api-key`` header, never in the URL, so no log line
that prints a URL can leak it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import mimetypes
import struct
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from routeguard.deployment import Deployment
from routeguard.errors import ProviderError, UpstreamBadRequest
from routeguard.providers import http, wire
from routeguard.providers.base import (
    CAPABILITIES,
    Json,
    check_params,
    refuse_unsupported,
    thinking_budget,
)
from routeguard.providers.parts import parse_arguments, parse_data_url
from routeguard.providers.wire import is_count, token_count

FINISH_REASON_MAP: dict[str, str] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "LANGUAGE": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
}
TOOL_CHOICE_MODE: dict[str, str] = {"auto": "AUTO", "required": "ANY", "none": "NONE"}
# Gemini 3 rejects replayed functionCall parts without a thought signature. We do not keep
# the real one (tool call ids must stay portable across providers), so replayed calls carry
# the validator-skip value Google documents for history built outside the model.
SKIP_THOUGHT_SIGNATURE = "skip_thought_signature_validator"
EMBED_BATCH = 100  # batchEmbedContents takes at most 100 requests
_AUDIO_MIME = {"wav": "audio/wav", "mp3": "audio/mp3"}


def _bad(message: str, param: str | None = None) -> UpstreamBadRequest:
    err = UpstreamBadRequest(f"gemini: {message}")
    err.param = param
    return err


def model_path(model: str) -> str:
    """``models/<name>`` for a deployment model given with or without the prefix."""
    return model if model.startswith(("models/", "tunedModels/")) else f"models/{model}"


# --------------------------------------------------------------------------- request


# OpenAI request fields this adapter translates (``user`` has no Gemini counterpart and does
# not change the answer: ignored); others are refused or, with drop_params, dropped.
PARAMS: frozenset[str] = frozenset(
    {
        "model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens",
        "temperature", "top_p", "seed", "presence_penalty", "frequency_penalty", "n", "stop",
        "response_format", "tools", "tool_choice", "reasoning_effort", "user", "logprobs",
        "top_logprobs",
    }
)  # fmt: skip
MAX_TOP_LOGPROBS = 20  # OpenAI's bound on top_logprobs (Gemini's ``logprobs`` takes it too)


def request_to_gemini(request: Json) -> Json:
    """Translate an OpenAI chat request into a Gemini ``generateContent`` body."""
    messages = request.get("messages")
    if not isinstance(messages, list):
        raise _bad("'messages' must be a list")
    system: list[Json] = []
    contents: list[Json] = []
    call_names: dict[str, str] = {}  # tool_call id -> function name, for functionResponse
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise _bad(f"{where} must be an object")
        role = m.get("role")
        if role in ("system", "developer"):
            system.extend(_parts(m.get("content"), where, text_only=True))
        elif role == "user":
            _append(contents, "user", _parts(m.get("content"), where))
        elif role == "assistant":
            parts = _parts(m.get("content"), where, text_only=True)
            for k, call in enumerate(m.get("tool_calls") or []):
                fn = call.get("function") if isinstance(call, dict) else None
                if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                    raise _bad(f"{where}.tool_calls[{k}].function.name is missing")
                assert isinstance(call, dict)
                if isinstance(call.get("id"), str):
                    call_names[call["id"]] = fn["name"]
                args = parse_arguments(fn.get("arguments"), f"{where}.tool_calls[{k}]")
                parts.append(
                    {
                        "functionCall": {"name": fn["name"], "args": args},
                        "thoughtSignature": SKIP_THOUGHT_SIGNATURE,
                    }
                )
            _append(contents, "model", parts)
        elif role == "tool":
            _append(contents, "user", [_function_response(m, where, call_names)])
        else:
            raise _bad(f"{where}.role {role!r} is not supported (use system/user/assistant/tool)")

    body: Json = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    config = _generation_config(request)
    if config:
        body["generationConfig"] = config
    tools = request.get("tools")
    if tools:
        body["tools"] = [
            {"functionDeclarations": [_declaration(t, i) for i, t in enumerate(tools)]}
        ]
        tool_config = _tool_config(request.get("tool_choice"))
        if tool_config is not None:
            body["toolConfig"] = tool_config
    return body


def _append(contents: list[Json], role: str, parts: list[Json]) -> None:
    # Parallel tool results must share one turn; merging same-role neighbours does that.
    if not parts:
        return
    if contents and contents[-1]["role"] == role:
        contents[-1]["parts"].extend(parts)
    else:
        contents.append({"role": role, "parts": parts})


def _parts(content: Any, where: str, *, text_only: bool = False) -> list[Json]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    if not isinstance(content, list):
        raise _bad(f"{where}.content must be a string or a list of parts")
    parts: list[Json] = []
    for j, p in enumerate(content):
        kind = p.get("type") if isinstance(p, dict) else None
        at = f"{where}.content[{j}]"
        if kind in ("text", "refusal"):
            assert isinstance(p, dict)
            text = p.get("text") if kind == "text" else p.get("refusal")
            if isinstance(text, str) and text:
                parts.append({"text": text})
        elif text_only:
            raise _bad(f"{at} must be a text part here")
        elif kind == "image_url":
            assert isinstance(p, dict)
            image = p.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str):
                raise _bad(f"{at}.image_url.url must be a string")
            parts.append(_media_part(url))
        elif kind == "input_audio":
            assert isinstance(p, dict)
            audio = p.get("input_audio") or {}
            fmt = audio.get("format")
            if not isinstance(fmt, str) or not isinstance(audio.get("data"), str):
                raise _bad(f"{at}.input_audio needs 'data' and 'format'")
            mime = _AUDIO_MIME.get(fmt, f"audio/{fmt}")
            parts.append({"inlineData": {"mimeType": mime, "data": audio.get("data")}})
        elif kind == "file":
            assert isinstance(p, dict)
            file = p.get("file") or {}
            data = file.get("file_data")
            parsed = parse_data_url(data) if isinstance(data, str) else None
            if parsed is None:
                raise _bad(f"{at}: only inline files (file.file_data as a data URL) are supported")
            parts.append({"inlineData": {"mimeType": parsed[0], "data": parsed[1]}})
        else:
            raise _bad(f"{at}: content part type {kind!r} is not supported")
    return parts


def _media_part(url: str) -> Json:
    parsed = parse_data_url(url)
    if parsed is not None:
        return {"inlineData": {"mimeType": parsed[0], "data": parsed[1]}}
    mime = mimetypes.guess_type(url.split("?", 1)[0])[0] or "image/jpeg"
    return {"fileData": {"mimeType": mime, "fileUri": url}}


def _function_response(m: Json, where: str, call_names: dict[str, str]) -> Json:
    call_id = m.get("tool_call_id")
    name = call_names.get(call_id) if isinstance(call_id, str) else None
    if name is None:
        raise _bad(
            f"{where}.tool_call_id {call_id!r} matches no earlier assistant tool call "
            "(Gemini needs the function name a result answers)"
        )
    content = m.get("content")
    if isinstance(content, list):
        content = "".join(p["text"] for p in _parts(content, where, text_only=True))
    text = content if isinstance(content, str) else json.dumps(content)
    # Gemini wants an object; a JSON-object result is passed as is, anything else under
    # "output", the key Google's SDKs use for a function's result.
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    response = value if isinstance(value, dict) else {"output": text}
    return {"functionResponse": {"name": name, "response": response}}


def _generation_config(request: Json) -> Json:
    config: Json = {}
    max_tokens = request.get("max_completion_tokens") or request.get("max_tokens")
    if isinstance(max_tokens, int):
        config["maxOutputTokens"] = max_tokens
    pairs = (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
        ("n", "candidateCount"),
    )
    for ours, theirs in pairs:
        if request.get(ours) is not None:
            config[theirs] = request[ours]
    stop = request.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    effort = request.get("reasoning_effort")
    if effort is not None:
        config["thinkingConfig"] = {"thinkingBudget": thinking_budget(effort, "gemini")}
    top = request.get("top_logprobs")
    if request.get("logprobs") is True:
        config["responseLogprobs"] = True
        if top is not None:
            if (
                not isinstance(top, int)
                or isinstance(top, bool)
                or not 0 <= top <= MAX_TOP_LOGPROBS
            ):
                raise _bad(f"top_logprobs must be an integer from 0 to {MAX_TOP_LOGPROBS}",
                           "top_logprobs")  # fmt: skip
            config["logprobs"] = top
    elif top is not None:
        raise _bad("top_logprobs needs logprobs: true", "top_logprobs")
    fmt = request.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        schema = (fmt.get("json_schema") or {}).get("schema")
        if isinstance(schema, dict):
            config["responseJsonSchema"] = schema
    return config


def _declaration(t: Any, i: int) -> Json:
    fn = t.get("function") if isinstance(t, dict) and t.get("type") == "function" else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise _bad(f"tools[{i}]: only function tools with a name are supported")
    decl: Json = {"name": fn["name"], "description": fn.get("description") or ""}
    if fn.get("parameters"):
        # parametersJsonSchema takes full JSON Schema; `parameters` only an OpenAPI subset
        # that rejects common keys such as additionalProperties.
        decl["parametersJsonSchema"] = fn["parameters"]
    return decl


def _tool_config(choice: Any) -> Json | None:
    if choice is None:
        return None
    if isinstance(choice, str) and choice in TOOL_CHOICE_MODE:
        return {"functionCallingConfig": {"mode": TOOL_CHOICE_MODE[choice]}}
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}
    raise _bad(f"tool_choice {choice!r} is not supported")


# --------------------------------------------------------------------------- response


def new_call_id() -> str:
    """A fresh OpenAI-style tool call id (Gemini's function calls usually carry none)."""
    return f"call_{uuid.uuid4().hex[:24]}"


def usage_from_gemini(meta: Any) -> Json | None:
    """OpenAI ``usage`` from Gemini's ``usageMetadata`` (thinking tokens count as output);
    None unless the prompt and candidate counts are given and every count is one (made-up
    zeros would lower the charge, which the gateway then estimates instead)."""
    m = meta if isinstance(meta, dict) else {}
    parts = ("toolUsePromptTokenCount", "thoughtsTokenCount", "cachedContentTokenCount")
    if not (is_count(m.get("promptTokenCount")) and is_count(m.get("candidatesTokenCount"))):
        return None
    if not all(m.get(k) is None or is_count(m.get(k)) for k in parts):
        return None
    prompt = token_count(m.get("promptTokenCount")) + token_count(m.get("toolUsePromptTokenCount"))
    thoughts = token_count(m.get("thoughtsTokenCount"))
    completion = token_count(m.get("candidatesTokenCount")) + thoughts
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": token_count(m.get("totalTokenCount")) or prompt + completion,
        "prompt_tokens_details": {"cached_tokens": token_count(m.get("cachedContentTokenCount"))},
        "completion_tokens_details": {"reasoning_tokens": thoughts},
    }


def _finish(reason: Any, has_calls: bool) -> str:
    finish = FINISH_REASON_MAP.get(str(reason), "stop")
    # Gemini says STOP when it calls a function; OpenAI clients loop on "tool_calls".
    return "tool_calls" if has_calls and finish == "stop" else finish


def _split_parts(candidate: Json) -> tuple[str, list[Json]]:
    texts: list[str] = []
    calls: list[Json] = []
    for part in (candidate.get("content") or {}).get("parts") or []:
        if not isinstance(part, dict) or part.get("thought"):
            continue  # thought summaries are not answer text
        if isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif isinstance(part.get("functionCall"), dict):
            fc = part["functionCall"]
            calls.append(
                {
                    "id": fc.get("id") or new_call_id(),
                    "type": "function",
                    "function": {
                        "name": fc.get("name"),
                        "arguments": json.dumps(fc.get("args") or {}, ensure_ascii=False),
                    },
                }
            )
    return "".join(texts), calls


def _token(c: Any) -> Json | None:
    """One Gemini logprobs candidate as an OpenAI token logprob (None if malformed)."""
    if not isinstance(c, dict) or not isinstance(c.get("token"), str):
        return None
    lp = c.get("logProbability")
    logprob = float(lp) if isinstance(lp, int | float) and not isinstance(lp, bool) else 0.0
    token: str = c["token"]
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


def logprobs_from_gemini(candidate: Json) -> Json | None:
    """A candidate's ``logprobsResult`` as an OpenAI choice's ``logprobs`` (None without)."""
    result = candidate.get("logprobsResult")
    if not isinstance(result, dict):
        return None
    chosen = result.get("chosenCandidates") or []
    tops = result.get("topCandidates") or []
    content = []
    for i, c in enumerate(chosen):
        token = _token(c)
        if token is None:
            continue
        top = tops[i].get("candidates") if i < len(tops) and isinstance(tops[i], dict) else None
        alts = [t for t in (_token(x) for x in top or ()) if t is not None]
        content.append({**token, "top_logprobs": alts})
    return {"content": content, "refusal": None}


def response_from_gemini(data: Json, model: str) -> Json:
    """Translate a GenerateContentResponse into an OpenAI ``chat.completion``."""
    choices: list[Json] = []
    for pos, cand in enumerate(data.get("candidates") or []):
        text, calls = _split_parts(cand)
        message: Json = {"role": "assistant", "content": text if text or not calls else None}
        if calls:
            message["tool_calls"] = calls
        choices.append(
            {
                "index": cand.get("index", pos),
                "message": message,
                "finish_reason": _finish(cand.get("finishReason"), bool(calls)),
                "logprobs": logprobs_from_gemini(cand),
            }
        )
    if not choices:  # the prompt itself was blocked (promptFeedback.blockReason)
        choices.append(
            {
                "index": 0,
                "message": {"role": "assistant", "content": ""},
                "finish_reason": "content_filter",
                "logprobs": None,
            }
        )
    out: Json = {
        "id": data.get("responseId") or f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": data.get("modelVersion") or model,
        "choices": choices,
    }
    counted = usage_from_gemini(data.get("usageMetadata"))
    if counted is not None:  # no made-up zeros: the gateway estimates then
        out["usage"] = counted
    return out


class StreamDecoder:
    """Gemini SSE payloads (whole GenerateContentResponse objects) in, OpenAI chunks out.

    ``feed`` each event; ``finish`` once the body ended, for the usage chunk. Gemini sends
    no end-of-stream event: the stream is ``complete`` when every candidate it started has
    a finish reason, and is read to the end of the body (usage may come last).
    """

    terminator = "a finishReason"
    done = False

    def __init__(self, model: str) -> None:
        self._model = model
        self._id = f"chatcmpl-{uuid.uuid4().hex}"
        self._created = int(time.time())
        self._started: set[int] = set()
        self._tool_count: dict[int, int] = {}
        self._finished: set[int] = set()
        self._usage: Any = None

    @property
    def complete(self) -> bool:
        """Whether every candidate started so far (at least one) has a finish reason."""
        return bool(self._finished) and not self._started - self._finished

    def feed(self, event: str, data: bytes) -> list[Json]:
        """Translate one streamed response object into chunks."""
        payload = http.decode(data, "gemini stream event")
        if isinstance(payload, list) and payload:
            payload = payload[0]
        if not isinstance(payload, dict):
            raise ProviderError("gemini stream event: expected a JSON object")
        if "error" in payload:
            err = payload["error"]
            code = err.get("code") if isinstance(err, dict) else None
            raise ERRORS.from_body(code if isinstance(code, int) else 500, payload)
        if payload.get("responseId"):
            self._id = payload["responseId"]
        self._model = payload.get("modelVersion") or self._model
        if payload.get("usageMetadata"):
            self._usage = payload["usageMetadata"]
        out: list[Json] = []
        candidates = payload.get("candidates") or []
        if not candidates and (payload.get("promptFeedback") or {}).get("blockReason"):
            out.append(self._chunk(0, {"role": "assistant", "content": ""}))
            out.append(self._chunk(0, {}, "content_filter"))
            self._finished.add(0)
        for pos, cand in enumerate(candidates):
            idx = cand.get("index", pos)
            if idx not in self._started:
                self._started.add(idx)
                out.append(self._chunk(idx, {"role": "assistant", "content": ""}))
            text, calls = _split_parts(cand)
            if text:
                out.append(self._chunk(idx, {"content": text}, logprobs=logprobs_from_gemini(cand)))
            if calls:
                first = self._tool_count.get(idx, 0)
                self._tool_count[idx] = first + len(calls)
                indexed = [{"index": first + k, **c} for k, c in enumerate(calls)]
                out.append(self._chunk(idx, {"tool_calls": indexed}))
            if cand.get("finishReason"):
                self._finished.add(idx)
                finish = _finish(cand["finishReason"], self._tool_count.get(idx, 0) > 0)
                out.append(self._chunk(idx, {}, finish))
        return out

    def finish(self) -> list[Json]:
        """The closing usage chunk (none if upstream reported no usage)."""
        counted = usage_from_gemini(self._usage)
        if counted is None:
            return []  # no made-up zero usage: the gateway charges from what was sent
        chunk = self._chunk(0, None)
        chunk["usage"] = counted
        return [chunk]

    def _chunk(
        self, index: int, delta: Json | None, finish: str | None = None, logprobs: Any = None
    ) -> Json:
        choices = (
            []
            if delta is None
            else [{"index": index, "delta": delta, "finish_reason": finish, "logprobs": logprobs}]
        )
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": choices,
        }


# --------------------------------------------------------------------------- embeddings


def embed_requests(request: Json, model: str) -> list[Json]:
    """The ``batchEmbedContents`` bodies (100 inputs each) for an OpenAI embeddings request."""
    raw = request.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not inputs:
        raise _bad("embeddings 'input' must be a string or a non-empty list of strings")
    if not all(isinstance(x, str) for x in inputs):
        raise _bad("embeddings take text; token-id arrays are not supported")
    path = model_path(model)
    items: list[Json] = []
    for text in inputs:
        item: Json = {"model": path, "content": {"parts": [{"text": text}]}}
        if isinstance(request.get("dimensions"), int):
            item["outputDimensionality"] = request["dimensions"]
        items.append(item)
    return [{"requests": items[i : i + EMBED_BATCH]} for i in range(0, len(items), EMBED_BATCH)]


def embeddings_to_openai(batches: list[Json], request: Json, model: str) -> Json:
    """OpenAI's embeddings response from the ``batchEmbedContents`` answers, in input order."""
    as_base64 = request.get("encoding_format") == "base64"
    data: list[Json] = []
    prompt_tokens, reported = 0, False
    for batch in batches:
        embeddings = batch.get("embeddings")
        if not isinstance(embeddings, list):
            raise ProviderError("gemini embeddings: upstream response has no 'embeddings'")
        for e in embeddings:
            values = e.get("values") if isinstance(e, dict) else None
            if not isinstance(values, list):
                raise ProviderError("gemini embeddings: an embedding has no 'values'")
            vector: Any = values
            if as_base64:  # OpenAI's base64 format: little-endian float32
                packed = struct.pack(f"<{len(values)}f", *values)
                vector = base64.b64encode(packed).decode()
            data.append({"object": "embedding", "index": len(data), "embedding": vector})
        meta = batch.get("usageMetadata")
        if isinstance(meta, dict) and "promptTokenCount" in meta:
            reported = True
            prompt_tokens += token_count(meta["promptTokenCount"])
    out: Json = {"object": "list", "data": data, "model": model}
    if reported:  # batchEmbedContents usually reports none: the gateway then estimates
        out["usage"] = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return out


# --------------------------------------------------------------------------- errors


def _refine(status: int, err: Json, retry_after: float | None) -> tuple[int, float | None]:
    """Gemini's error details: google.rpc.RetryInfo's wait, and a bad key said as 400."""
    if retry_after is None:
        retry_after = _retry_delay(err.get("details"))
    if status == 400 and _reason(err.get("details")) == "API_KEY_INVALID":
        status = 401  # the deployment's fault, not the request's
    return status, retry_after


def _reason(details: Any) -> str | None:
    # google.rpc.ErrorInfo names the reason, e.g. API_KEY_INVALID.
    for d in details if isinstance(details, list) else []:
        if isinstance(d, dict) and isinstance(d.get("reason"), str):
            return str(d["reason"])
    return None


def _retry_delay(details: Any) -> float | None:
    # google.rpc.RetryInfo carries the wait as a Duration string such as "37s".
    for d in details if isinstance(details, list) else []:
        delay = d.get("retryDelay") if isinstance(d, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return max(0.0, float(delay[:-1]))
            except ValueError:
                return None
    return None


# Error bodies are ``{"error": {"code", "message", "status", "details"}}``; the streaming
# endpoint wraps them in an array.
ERRORS = wire.ErrorFormat(
    context_hints=("input token count", "exceeds the maximum number of tokens", "context window"),
    unwrap_list=True,
    refine=_refine,
)


# --------------------------------------------------------------------------- provider


def _headers(dep: Deployment) -> dict[str, str]:
    h = dict(dep.headers)
    if dep.api_key is not None:
        h["x-goog-api-key"] = dep.api_key.get()
    return h


class GeminiProvider:
    """Provider for the Gemini generateContent wire format."""

    name = "gemini"
    capabilities = CAPABILITIES
    params = PARAMS

    async def chat(self, request: Json, deployment: Deployment, timeout: float) -> Json:
        """One non-streaming chat completion."""
        refuse_unsupported(self, "chat", request)
        request = check_params(self, request, deployment.drop_params)
        url = f"{deployment.api_base}/v1beta/{model_path(deployment.model)}:generateContent"
        body = request_to_gemini(request)
        data = await wire.post(
            url, _headers(deployment), body, timeout, errors=ERRORS, what="gemini response"
        )
        return response_from_gemini(data, deployment.model)

    def stream(self, request: Json, deployment: Deployment, timeout: float) -> AsyncIterator[Json]:
        """A streaming chat completion; the last chunk carries usage."""

        def build() -> wire.Exchange:
            refuse_unsupported(self, "stream", request)
            req = check_params(self, request, deployment.drop_params)
            url = (
                f"{deployment.api_base}/v1beta/{model_path(deployment.model)}"
                ":streamGenerateContent?alt=sse"
            )
            return wire.Exchange(url, _headers(deployment), request_to_gemini(req))

        decoder = StreamDecoder(deployment.model)
        return wire.stream(self.name, build, decoder, timeout, errors=ERRORS)

    async def embed(self, request: Json, deployment: Deployment, timeout: float) -> Json:
        """Embeddings through ``batchEmbedContents``, in OpenAI's response shape."""
        refuse_unsupported(self, "embeddings")
        url = f"{deployment.api_base}/v1beta/{model_path(deployment.model)}:batchEmbedContents"
        headers = _headers(deployment)
        batches = await asyncio.gather(
            *(
                wire.post(url, headers, body, timeout, errors=ERRORS, what="gemini embeddings")
                for body in embed_requests(request, deployment.model)
            )
        )
        return embeddings_to_openai(list(batches), request, deployment.model)

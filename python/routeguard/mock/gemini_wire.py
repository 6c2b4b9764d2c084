"""The Gemini (Generative Language API) wire format of the simulated upstream.

``POST /v1beta/models/{model}:generateContent`` and ``:streamGenerateContent`` bodies
(camelCase or snake_case fields, as the real API accepts both) are parsed into a neutral
:class:`~routeguard.mock.answers.Prompt`. Answers are ``GenerateContentResponse``
objects with ``usageMetadata``; streams are SSE ``data:`` frames with ``?alt=sse`` and
otherwise one JSON array sent element by element, as the real API does. Errors are
``{"error": {"code", "message", "status"}}``. ``:embedContent``, ``:batchEmbedContents``
and ``:countTokens`` are served too. With ``generationConfig.responseLogprobs`` each candidate
carries a deterministic ``logprobsResult`` (chosen and top tokens) and ``avgLogprobs``.
"""

from __future__ import annotations

import zlib
from typing import Any

from routeguard.mock.answers import (
    Answer,
    JsonOutput,
    Prompt,
    Tool,
    ToolMode,
    ToolResult,
    count_tokens,
    default_dimensions,
    embedding,
    new_id,
    schema_text,
)
from routeguard.mock.faults import Fault, midstream_message
from routeguard.mock.transport import (
    JSON_HEADERS,
    PIECE,
    FrameTemplate,
    Headers,
    StreamPlan,
    encode,
)

_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool": "STOP"}


def _get(obj: dict[str, Any], camel: str, snake: str) -> Any:
    value = obj.get(camel)
    return obj.get(snake) if value is None else value


def _invalid(message: str) -> Fault:
    return Fault(400, message)


def _parts_text(parts: Any, where: str) -> tuple[str, ToolResult | None]:
    """Text of a content's parts for counting, and its last functionResponse if any."""
    if not isinstance(parts, list):
        raise _invalid(f"Invalid value at '{where}.parts': expected a list of \"Part\"")
    texts: list[str] = []
    result = None
    for part in parts:
        if not isinstance(part, dict):
            raise _invalid(f"Invalid value at '{where}.parts': expected an object")
        text = part.get("text")
        if isinstance(text, str):
            texts.append(text)
        call = _get(part, "functionCall", "function_call")
        if isinstance(call, dict):
            texts.append(str(call.get("name", "")) + schema_text(call.get("args", {})))
        response = _get(part, "functionResponse", "function_response")
        if isinstance(response, dict):
            content = schema_text(response.get("response", {}))
            texts.append(content)
            result = ToolResult(str(response.get("name", "function")), content)
    return "\n".join(texts), result


def parse_generate(body: Any, model: str, *, stream: bool) -> Prompt:
    """Validate a ``generateContent`` body for ``model`` (from the path) and parse it."""
    if not isinstance(body, dict):
        raise _invalid("Invalid JSON payload received. Expected an object.")
    contents = body.get("contents")
    if not contents:
        raise _invalid("* GenerateContentRequest.contents: contents is not specified\n")
    if not isinstance(contents, list):
        raise _invalid("Invalid value at 'contents': expected a list of \"Content\"")
    chars = 0
    system = _get(body, "systemInstruction", "system_instruction")
    if isinstance(system, dict):
        chars += len(_parts_text(system.get("parts", []), "system_instruction")[0])
    last_user = ""
    result = None
    for i, content in enumerate(contents):
        if not isinstance(content, dict):
            raise _invalid(f"Invalid value at 'contents[{i}]': expected an object")
        role = content.get("role", "user")
        if role not in ("user", "model", "function", "tool"):
            raise _invalid(
                f"Please use a valid role: user, model. (got {role!r} at contents[{i}].role)"
            )
        text, result = _parts_text(content.get("parts"), f"contents[{i}]")
        chars += len(text)
        if role == "user" and result is None:
            last_user = text
    tools, tool_chars = _parse_tools(body.get("tools"))
    mode, forced = _parse_tool_config(_get(body, "toolConfig", "tool_config"))
    config = _get(body, "generationConfig", "generation_config")
    max_tokens = None
    json_output = None
    logprobs = None
    if isinstance(config, dict):
        if _get(config, "responseLogprobs", "response_logprobs") is True:
            logprobs = _get(config, "logprobs", "logprobs") or 0
            if (
                not isinstance(logprobs, int)
                or isinstance(logprobs, bool)
                or not 0 <= logprobs <= 20
            ):
                raise _invalid(
                    "Invalid value at 'generation_config.logprobs': expected an integer from 0 "
                    "to 20"
                )
        mime = _get(config, "responseMimeType", "response_mime_type")
        if mime == "application/json":
            schema = _get(config, "responseJsonSchema", "response_json_schema")
            if schema is None:
                schema = _get(config, "responseSchema", "response_schema")
            json_output = JsonOutput(schema)
            tool_chars += len(schema_text(schema)) if schema is not None else 0
        max_tokens = _get(config, "maxOutputTokens", "max_output_tokens")
        if max_tokens is not None and (
            not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
        ):
            raise _invalid(
                "Invalid value at 'generation_config.max_output_tokens': expected a positive "
                "integer"
            )
    return Prompt(
        model=model,
        prompt_tokens=count_tokens(chars + tool_chars),
        last_user_text=last_user,
        tool_result=result,
        tools=tools,
        tool_mode=mode,
        forced_tool=forced,
        max_tokens=max_tokens,
        stream=stream,
        json_output=json_output,
        logprobs=logprobs,
    )


def _logprob(token: str, rank: int = 0) -> float:
    """A deterministic log probability for ``token`` (lower for later alternatives)."""
    return -((zlib.crc32(token.encode()) % 2000) + 1) / 1000 - rank * 0.5


def _logprobs_result(pieces: tuple[str, ...], top: int) -> dict[str, Any]:
    """Gemini's ``logprobsResult`` for text ``pieces`` (one token each): the chosen token
    first among its ``top`` alternatives."""
    chosen = [{"token": p, "logProbability": _logprob(p)} for p in pieces]
    tops = []
    for p in pieces:
        alts = [{"token": p if j == 0 else f"{p}~{j}", "logProbability": _logprob(p, j)}
                for j in range(top)]  # fmt: skip
        tops.append({"candidates": alts})
    return {"topCandidates": tops, "chosenCandidates": chosen}


def _parse_tools(raw: Any) -> tuple[list[Tool], int]:
    if raw is None:
        return [], 0
    if not isinstance(raw, list):
        raise _invalid("Invalid value at 'tools': expected a list of \"Tool\"")
    tools: list[Tool] = []
    chars = 0
    for tool in raw:
        if not isinstance(tool, dict):
            raise _invalid("Invalid value at 'tools': expected an object")
        decls = _get(tool, "functionDeclarations", "function_declarations")
        if not isinstance(decls, list):
            continue  # googleSearch, codeExecution...: nothing for the client to run
        for j, decl in enumerate(decls):
            if (
                not isinstance(decl, dict)
                or not isinstance(decl.get("name"), str)
                or not decl["name"]
            ):
                raise _invalid(
                    f"* GenerateContentRequest.tools[0].function_declarations[{j}].name: "
                    "Name cannot be empty.\n"
                )
            name: str = decl["name"]
            schema = decl.get("parameters")
            if schema is None:
                schema = _get(decl, "parametersJsonSchema", "parameters_json_schema")
            schema = schema if schema is not None else {"type": "object", "properties": {}}
            description = decl.get("description")
            chars += len(name) + len(schema_text(schema))
            chars += len(description) if isinstance(description, str) else 0
            tools.append(Tool(name, schema))
    return tools, chars


def _parse_tool_config(raw: Any) -> tuple[ToolMode, str | None]:
    if not isinstance(raw, dict):
        return "auto", None
    config = _get(raw, "functionCallingConfig", "function_calling_config")
    if not isinstance(config, dict):
        return "auto", None
    mode = str(config.get("mode", "AUTO")).upper()
    if mode == "NONE":
        return "none", None
    if mode == "ANY":
        allowed = _get(config, "allowedFunctionNames", "allowed_function_names")
        if isinstance(allowed, list) and allowed and isinstance(allowed[0], str):
            return "any", allowed[0]
        return "any", None
    return "auto", None


def _usage(prompt_tokens: int, candidates: int | None) -> dict[str, Any]:
    usage: dict[str, Any] = {"promptTokenCount": prompt_tokens}
    if candidates is not None:
        usage["candidatesTokenCount"] = candidates
    usage["totalTokenCount"] = prompt_tokens + (candidates or 0)
    usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt_tokens}]
    return usage


def _parts(ans: Answer, pieces: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    call = ans.tool_call
    if call is None:
        return [{"text": "".join(ans.pieces if pieces is None else pieces)}]
    return [{"functionCall": {"name": call.name, "args": call.arguments}}]


def _response(
    prompt: Prompt, ans: Answer, response_id: str, parts: Any, final: bool, usage: bool = True
) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}}
    if prompt.logprobs is not None and ans.tool_call is None:
        pieces = tuple(p["text"] for p in parts if isinstance(p.get("text"), str))
        if len(pieces) == 1 and pieces[0] == ans.text and len(ans.pieces) > 1:
            pieces = ans.pieces  # the whole answer: one entry per token
        result = _logprobs_result(pieces, prompt.logprobs)
        candidate["logprobsResult"] = result
        lps = [c["logProbability"] for c in result["chosenCandidates"]]
        candidate["avgLogprobs"] = sum(lps) / len(lps) if lps else 0.0
    if final:
        candidate["finishReason"] = _FINISH[ans.finish]
    candidate["index"] = 0
    out: dict[str, Any] = {"candidates": [candidate]}
    if usage:
        candidates = ans.completion_tokens if final else None
        out["usageMetadata"] = _usage(prompt.prompt_tokens, candidates)
    out["modelVersion"] = prompt.model
    out["responseId"] = response_id
    return out


def generate_body(prompt: Prompt, ans: Answer) -> bytes:
    """A ``GenerateContentResponse`` body."""
    return encode(_response(prompt, ans, new_id("", 22), _parts(ans), final=True))


def generate_stream(prompt: Prompt, ans: Answer, *, sse: bool, usage: bool = True) -> StreamPlan:
    """The ``streamGenerateContent`` answer: SSE frames, or one JSON array sent piecewise
    (without ``usageMetadata`` if ``usage`` is False)."""
    response_id = new_id("", 22)
    before, after = (b"data: ", b"\r\n\r\n") if sse else (b",\r\n", b"")
    template = FrameTemplate(
        _response(prompt, ans, response_id, [{"text": PIECE}], final=False, usage=usage),
        before=before,
        after=after,
    )
    content: list[bytes] = []
    if ans.tool_call is None and ans.pieces and prompt.logprobs is not None:
        content = [before + encode(_response(prompt, ans, response_id, [{"text": p}], False, usage))
                   + after for p in ans.pieces[:-1]]  # fmt: skip
        last = _parts(ans, ans.pieces[-1:])
    elif ans.tool_call is None and ans.pieces:
        content = [template.fill(p) for p in ans.pieces[:-1]]
        last = _parts(ans, ans.pieces[-1:])
    else:
        last = _parts(ans)
    tail = [before + encode(_response(prompt, ans, response_id, last, True, usage)) + after]
    error = {
        "error": {
            "code": 500,
            "message": midstream_message(
                "An internal error has occurred. Please retry or report in "
                "https://developers.generativeai.google/guide/troubleshooting"
            ),
            "status": "INTERNAL",
        }
    }
    if sse:
        return StreamPlan([], content, tail, before + encode(error) + after)
    # The array form: "[" then elements joined by ",\r\n", then "]".
    frames = [*content, *tail]
    frames[0] = b"[" + frames[0][len(before) :]
    frames[-1] += b"]"
    return StreamPlan(
        [], frames[:-1], frames[-1:], before + encode(error) + b"]", headers=JSON_HEADERS
    )


# --- embeddings and token counting ------------------------------------------------------------


def _embed_one(request: Any, model: str, where: str) -> tuple[dict[str, Any], int]:
    if not isinstance(request, dict) or not isinstance(request.get("content"), dict):
        raise _invalid(f"* {where}.content: content is not specified\n")
    text, _ = _parts_text(request["content"].get("parts"), f"{where}.content")
    if not text:
        raise _invalid(f"* {where}.content: text content is empty\n")
    dims = _get(request, "outputDimensionality", "output_dimensionality")
    if dims is None:
        dims = default_dimensions(model)
    if not isinstance(dims, int) or isinstance(dims, bool) or dims < 1:
        raise _invalid(f"Invalid value at '{where}.output_dimensionality': expected a positive int")
    values: list[float] = embedding(text, dims).tolist()
    return {"values": values}, count_tokens(len(text))


def embed_body(body: Any, model: str, ctx: int | None) -> bytes:
    """The ``:embedContent`` response."""
    vector, tokens = _embed_one(body, model, "EmbedContentRequest")
    _check_ctx(tokens, ctx)
    return encode({"embedding": vector})


def batch_embed_body(body: Any, model: str, ctx: int | None) -> bytes:
    """The ``:batchEmbedContents`` response."""
    requests = body.get("requests") if isinstance(body, dict) else None
    if not isinstance(requests, list) or not requests:
        raise _invalid("* BatchEmbedContentsRequest.requests: requests is not specified\n")
    vectors = []
    for i, r in enumerate(requests):
        vector, tokens = _embed_one(r, model, f"BatchEmbedContentsRequest.requests[{i}]")
        _check_ctx(tokens, ctx)
        vectors.append(vector)
    return encode({"embeddings": vectors})


def count_tokens_body(body: Any, model: str) -> bytes:
    """The ``:countTokens`` response (``contents`` or a whole ``generateContentRequest``)."""
    if isinstance(body, dict):
        inner = _get(body, "generateContentRequest", "generate_content_request")
        if isinstance(inner, dict):
            body = inner
    prompt = parse_generate(body, model, stream=False)
    return encode(
        {
            "totalTokens": prompt.prompt_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt.prompt_tokens}],
        }
    )


def _check_ctx(tokens: int, ctx: int | None) -> None:
    if ctx is not None:
        fault = context_fault(tokens, ctx, None)
        if fault is not None:
            raise fault


# --- errors ------------------------------------------------------------------------------------


def context_fault(prompt_tokens: int, limit: int, max_tokens: int | None) -> Fault | None:
    """Gemini's input-too-long error if the prompt does not fit ``limit`` (output not counted)."""
    del max_tokens  # Gemini checks the input alone; the output is capped, not refused.
    if prompt_tokens <= limit:
        return None
    return Fault(
        400,
        f"The input token count ({prompt_tokens}) exceeds the maximum number of tokens "
        f"allowed ({limit}).",
    )


_STOCK: dict[int, tuple[str, str]] = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", "API key not valid. Please pass a valid API key."),
    403: ("PERMISSION_DENIED", "The caller does not have permission"),
    429: ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    500: (
        "INTERNAL",
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
    ),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
}


def render_fault(fault: Fault, model: str | None) -> tuple[int, Headers, bytes]:
    """Status, headers and ``{"error": {code, message, status}}`` body of ``fault``."""
    if fault.status == 404:
        status = "NOT_FOUND"
        message = (
            f"models/{model or 'unknown'} is not found for API version v1beta, or is not "
            "supported for generateContent. Call ListModels to see the list of available "
            "models and their supported methods."
        )
    else:
        status, message = _STOCK.get(fault.status) or (
            ("UNAVAILABLE", "The service is currently unavailable.")
            if fault.status >= 500
            else ("INVALID_ARGUMENT", "Request contains an invalid argument.")
        )
    if fault.message is not None:
        message = fault.message
    error: dict[str, Any] = {
        "code": fault.status,
        "message": message + fault.hint(),
        "status": status,
    }
    if fault.status == 401:
        error["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
            }
        ]
    elif fault.status == 429:
        error["details"] = [
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0s"}
        ]
    return fault.status, list(JSON_HEADERS), encode({"error": error})

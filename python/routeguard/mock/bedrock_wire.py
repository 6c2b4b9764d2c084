"""The AWS Bedrock runtime wire format of the simulated upstream.

``POST /model/{modelId}/converse`` and ``/converse-stream`` (Converse bodies validated as
the real API does: alternating turns starting with the user, ``toolConfig`` whenever tool
blocks appear), ``/invoke`` for Titan and Cohere embeddings. Every request is
authenticated: a SigV4 signature is recomputed here from the raw path, query, signed
headers and body with the secret the mock knows for the access key id
(:data:`SIM_AWS_CREDENTIALS`), independently of the client's signer, and a mismatch answers
AWS's 403 ``InvalidSignatureException``; a Bedrock API key travels as a bearer token.
Streams use the AWS event-stream framing (``application/vnd.amazon.eventstream``): each
message a prelude of lengths and CRC32s, string headers, a JSON payload, a CRC32.
Errors are ``x-amzn-ErrorType`` plus ``{"message": ...}``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import struct
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote

from routeguard.mock.answers import (
    Answer,
    JsonOutput,
    Prompt,
    Tool,
    ToolMode,
    ToolResult,
    count_tokens,
    embedding,
    new_id,
    schema_text,
)
from routeguard.mock.faults import Fault, midstream_message
from routeguard.mock.transport import Headers, StreamPlan, encode

SIM_AWS_ACCESS_KEY_ID = "AKIAROUTEGUARDSIM0001"
SIM_AWS_SECRET_ACCESS_KEY = "routeguard-simulated-aws-secret-key"
SIM_AWS_CREDENTIALS: dict[str, str] = {SIM_AWS_ACCESS_KEY_ID: SIM_AWS_SECRET_ACCESS_KEY}
"""Access key id -> secret the simulated Bedrock verifies signatures with."""

EVENTSTREAM_HEADERS: Headers = [(b"content-type", b"application/vnd.amazon.eventstream")]
_STOP = {"stop": "end_turn", "length": "max_tokens", "tool": "tool_use"}
_ACTIONS = frozenset({"converse", "converse-stream", "invoke"})
_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, ?SignedHeaders=(?P<signed>[a-z0-9;-]+), ?"
    r"Signature=(?P<sig>[0-9a-f]{64})$"
)
_MAX_SKEW = timedelta(minutes=15)
_METADATA = re.compile(r"^[a-zA-Z0-9\s:_@$#=/+,\-.]{0,256}$")


def route(path: str) -> tuple[str, str | None]:
    """(action, model id) of a ``/model/{id}/{action}`` path; action "" if unknown."""
    rest = path[len("/model/") :]
    model, _, action = rest.rpartition("/")
    return (action if action in _ACTIONS and model else ""), (model or None)


# --- auth ------------------------------------------------------------------------------------


def check_auth(
    method: str,
    raw_path: str,
    query: bytes,
    headers: dict[str, str],
    body: bytes,
    credentials: dict[str, str],
    bad_key: str,
) -> None:
    """Raise AWS's 403 unless the request carries a valid SigV4 signature (or an API key
    other than ``bad_key``)."""
    auth = headers.get("authorization", "")
    if auth.startswith("Bearer "):
        if auth == f"Bearer {bad_key}":
            raise Fault(403, "Authentication failed: Please make sure your API Key is valid.",
                        code="AccessDeniedException")  # fmt: skip
        return
    m = _AUTH.match(auth)
    if m is None:
        raise Fault(403, "Missing Authentication Token", code="MissingAuthenticationTokenException")
    secret = credentials.get(m["key"])
    if secret is None:
        raise Fault(403, "The security token included in the request is invalid.",
                    code="UnrecognizedClientException")  # fmt: skip
    signed = m["signed"].split(";")
    amz_date = headers.get("x-amz-date", "")
    if "host" not in signed or "x-amz-date" not in signed or not amz_date.startswith(m["date"]):
        raise _signature_mismatch()
    try:
        when = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise _signature_mismatch() from None
    if abs(datetime.now(UTC) - when) > _MAX_SKEW:
        raise Fault(403, "Signature expired: the request time is too far from the server's.",
                    code="InvalidSignatureException")  # fmt: skip
    scope = (m["date"], m["region"], m["service"])
    expected = signature(secret, scope, amz_date, method, raw_path, query, headers, signed, body)
    if m["service"] != "bedrock" or not hmac.compare_digest(expected, m["sig"]):
        raise _signature_mismatch()


def signature(
    secret: str,
    scope: tuple[str, str, str],
    amz_date: str,
    method: str,
    raw_path: str,
    query: bytes,
    headers: dict[str, str],
    signed: list[str],
    body: bytes,
) -> str:
    """The SigV4 signature (hex) of a request as received: ``scope`` is (date, region,
    service), ``raw_path`` the path as sent, ``signed`` the signed header names in order."""
    canonical = "\n".join(
        [
            method,
            quote(raw_path, safe="/~"),  # the path as sent, encoded once more (not S3)
            _canonical_query(query),
            "".join(f"{h}:{' '.join(headers.get(h, '').split())}\n" for h in signed),
            ";".join(signed),
            hashlib.sha256(body).hexdigest(),
        ]
    )
    date, region, service = scope
    to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            amz_date,
            f"{date}/{region}/{service}/aws4_request",
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def _canonical_query(query: bytes) -> str:
    pairs = []
    for item in query.decode("latin-1").split("&") if query else []:
        k, _, v = item.partition("=")
        pairs.append((quote(unquote(k), safe="-_.~"), quote(unquote(v), safe="-_.~")))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def _signature_mismatch() -> Fault:
    return Fault(
        403,
        "The request signature we calculated does not match the signature you provided. "
        "Check your AWS Secret Access Key and signing method. Consult the service "
        "documentation for details.",
        code="InvalidSignatureException",
    )


# --- event-stream framing ----------------------------------------------------------------------


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message with string-valued headers."""
    raw_headers = b"".join(
        bytes([len(k)]) + k.encode() + b"\x07" + struct.pack(">H", len(v)) + v.encode()
        for k, v in headers.items()
    )
    total = 12 + len(raw_headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(raw_headers))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + raw_headers + payload
    return message + struct.pack(">I", zlib.crc32(message))


def event(name: str, payload: Any) -> bytes:
    """A ConverseStream event message."""
    headers = {":event-type": name, ":content-type": "application/json", ":message-type": "event"}
    return frame(headers, encode(payload))


def exception(kind: str, message: str) -> bytes:
    """An in-stream exception message (``throttlingException``...)."""
    headers = {
        ":exception-type": kind,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return frame(headers, encode({"message": message}))


# --- converse --------------------------------------------------------------------------------


def _invalid(message: str) -> Fault:
    return Fault(400, message)


def parse_converse(body: Any, model: str, stream: bool) -> Prompt:
    """Validate a Converse body and parse it into a Prompt."""
    if not isinstance(body, dict):
        raise _invalid("Malformed input request, please reformat your input and try again.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid("The model returned the following errors: messages: at least one message")
    chars = 0
    for block in body.get("system") or []:
        if isinstance(block, dict) and isinstance(block.get("text"), str):
            chars += len(block["text"])
    has_tool_blocks = False
    last_user = ""
    names: dict[str, str] = {}
    tool_result: ToolResult | None = None
    for i, m in enumerate(messages):
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ("user", "assistant"):
            raise _invalid(f"messages.{i}.role: must be user or assistant")
        if i == 0 and role != "user":
            raise _invalid("A conversation must start with a user message. Try again with a "
                           "conversation that starts with a user message.")  # fmt: skip
        if i > 0 and messages[i - 1].get("role") == role:
            raise _invalid("A conversation must alternate between user and assistant roles. "
                           "Make sure the conversation alternates between user and assistant "
                           "roles and try again.")  # fmt: skip
        content = m.get("content")
        if not isinstance(content, list) or not content:
            raise _invalid(f"messages.{i}.content: must be a non-empty list of content blocks")
        texts = []
        tool_result = None
        for j, block in enumerate(content):
            if not isinstance(block, dict) or len(block) != 1:
                raise _invalid(f"messages.{i}.content.{j}: exactly one content type per block")
            ((kind, value),) = block.items()
            if kind == "text" and isinstance(value, str):
                texts.append(value)
            elif kind == "image":
                src = value.get("source") if isinstance(value, dict) else None
                if value.get("format") not in ("png", "jpeg", "gif", "webp") or not (
                    isinstance(src, dict) and isinstance(src.get("bytes"), str)
                ):
                    raise _invalid(f"messages.{i}.content.{j}.image: format and source.bytes")
            elif kind in ("document", "cachePoint"):
                continue
            elif kind == "toolUse" and isinstance(value, dict):
                has_tool_blocks = True
                names[str(value.get("toolUseId"))] = str(value.get("name"))
                texts.append(str(value.get("name")) + schema_text(value.get("input", {})))
            elif kind == "toolResult" and isinstance(value, dict):
                has_tool_blocks = True
                result = "\n".join(
                    str(c.get("text", ""))
                    for c in value.get("content") or []
                    if isinstance(c, dict)
                )
                texts.append(result)
                name = names.get(str(value.get("toolUseId")), "tool")
                tool_result = ToolResult(name, result)
            else:
                raise _invalid(f"messages.{i}.content.{j}: unknown content block {kind!r}")
        text = "\n".join(texts)
        chars += len(text)
        if role == "user":
            last_user = text
    if messages[-1].get("role") != "user":
        tool_result = None
    config = body.get("toolConfig")
    if has_tool_blocks and not isinstance(config, dict):
        raise _invalid("The toolConfig field must be defined when using toolUse and toolResult "
                       "content blocks.")  # fmt: skip
    tools: list[Tool] = []
    mode: ToolMode = "auto"
    forced: str | None = None
    json_output: JsonOutput | None = None
    if isinstance(config, dict):
        for t in config.get("tools") or []:
            spec = t.get("toolSpec") if isinstance(t, dict) else None
            schema = (spec.get("inputSchema") or {}).get("json") if isinstance(spec, dict) else None
            if (
                not isinstance(spec, dict)
                or not isinstance(spec.get("name"), str)
                or schema is None
            ):
                raise _invalid(
                    "toolConfig.tools: each tool needs toolSpec.name and inputSchema.json"
                )
            chars += len(spec["name"]) + len(schema_text(schema))
            tools.append(Tool(spec["name"], schema))
        choice = config.get("toolChoice")
        if isinstance(choice, dict) and "any" in choice:
            mode = "any"
        elif isinstance(choice, dict) and isinstance(choice.get("tool"), dict):
            mode, forced = "any", str(choice["tool"].get("name"))
    metadata = body.get("requestMetadata")
    if metadata is not None and (
        not isinstance(metadata, dict)
        or not all(isinstance(v, str) and _METADATA.match(v) for v in metadata.values())
    ):
        raise _invalid("requestMetadata: values must match [a-zA-Z0-9\\s:_@$#=/+,-.]{0,256}")
    inference = body.get("inferenceConfig") or {}
    max_tokens = inference.get("maxTokens") if isinstance(inference, dict) else None
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise _invalid("inferenceConfig.maxTokens: must be an integer >= 1")
    return Prompt(
        model=model,
        prompt_tokens=count_tokens(chars),
        last_user_text=last_user,
        tool_result=tool_result,
        tools=tools,
        tool_mode=mode,
        forced_tool=forced,
        max_tokens=max_tokens,
        stream=stream,
        json_output=json_output,
    )


def _usage(prompt: Prompt, ans: Answer) -> dict[str, int]:
    out = ans.completion_tokens
    return {"inputTokens": prompt.prompt_tokens, "outputTokens": out,
            "totalTokens": prompt.prompt_tokens + out}  # fmt: skip


def converse_body(prompt: Prompt, ans: Answer) -> bytes:
    """A Converse response body."""
    call = ans.tool_call
    content: list[dict[str, Any]]
    if call is None:
        content = [{"text": ans.text}]
    else:
        content = [{"toolUse": {"toolUseId": call.call_id, "name": call.name,
                                "input": call.arguments}}]  # fmt: skip
    return encode(
        {
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": _STOP[ans.finish],
            "usage": _usage(prompt, ans),
            "metrics": {"latencyMs": 1},
        }
    )


def converse_stream(prompt: Prompt, ans: Answer, usage: bool = True) -> StreamPlan:
    """The ConverseStream messages of ``ans`` (no ``metadata`` event without ``usage``)."""
    head = [event("messageStart", {"role": "assistant"})]
    call = ans.tool_call
    if call is not None:
        start = {"toolUse": {"toolUseId": call.call_id, "name": call.name}}
        head.append(event("contentBlockStart", {"contentBlockIndex": 0, "start": start}))

    def delta(piece: str) -> dict[str, Any]:
        return {"text": piece} if call is None else {"toolUse": {"input": piece}}

    content = [
        event("contentBlockDelta", {"contentBlockIndex": 0, "delta": delta(p)})
        for p in ans.streamed
    ]
    tail = [
        event("contentBlockStop", {"contentBlockIndex": 0}),
        event("messageStop", {"stopReason": _STOP[ans.finish]}),
    ]
    if usage:
        tail.append(event("metadata", {"usage": _usage(prompt, ans), "metrics": {"latencyMs": 1}}))
    error = exception(
        "serviceUnavailableException",
        midstream_message("Bedrock is unable to process your request."),
    )
    return StreamPlan(head, content, tail, error, headers=EVENTSTREAM_HEADERS)


# --- embeddings (InvokeModel) ------------------------------------------------------------------


def invoke_embeddings(body: Any, model: str, ctx: int | None) -> tuple[bytes, Headers]:
    """A Titan or Cohere embeddings answer, and its token-count headers."""
    if not isinstance(body, dict):
        raise _invalid("Malformed input request, please reformat your input and try again.")
    if "cohere." in model:
        texts = body.get("texts")
        if not isinstance(texts, list) or not texts or len(texts) > 96:
            raise _invalid("Malformed input request: #: required key [texts] not found")
        if body.get("input_type") is None:
            raise _invalid("Malformed input request: #: required key [input_type] not found")
        tokens = sum(count_tokens(len(str(t))) for t in texts)
        _fits(tokens, ctx)
        vectors = [embedding(str(t), 1024).tolist() for t in texts]
        embeddings: Any = {"float": vectors} if body.get("embedding_types") else vectors
        out = {"id": new_id("emb-"), "texts": texts, "embeddings": embeddings,
               "response_type": "embeddings_by_type" if body.get("embedding_types")
               else "embeddings_floats"}  # fmt: skip
        return encode(out), [(b"x-amzn-bedrock-input-token-count", str(tokens).encode())]
    if "titan-embed" not in model:
        raise _invalid(f"The provided model identifier is invalid: {model} takes no embeddings")
    text = body.get("inputText")
    if not isinstance(text, str):
        raise _invalid("Malformed input request: #: required key [inputText] not found")
    dims = body.get("dimensions", 1024 if "v2" in model else 1536)
    if dims not in (256, 512, 1024, 1536):
        raise _invalid("Malformed input request: #/dimensions: 256, 512 or 1024")
    tokens = count_tokens(len(text))
    _fits(tokens, ctx)
    return encode({"embedding": embedding(text, dims).tolist(), "inputTextTokenCount": tokens}), [
        (b"x-amzn-bedrock-input-token-count", str(tokens).encode())
    ]


def _fits(tokens: int, ctx: int | None) -> None:
    if ctx is not None and tokens > ctx:
        raise _invalid("Input is too long for requested model.")


# --- errors ------------------------------------------------------------------------------------


def context_fault(prompt_tokens: int, limit: int, max_tokens: int | None) -> Fault | None:
    """Bedrock's context-length ValidationException if the prompt does not fit ``limit``."""
    if prompt_tokens > limit:
        return Fault(400, "Input is too long for requested model.")
    return None


_STOCK: dict[int, tuple[str, str]] = {
    400: ("ValidationException", "Malformed input request, please reformat your input."),
    401: ("UnrecognizedClientException", "The security token included in the request is invalid."),
    403: ("AccessDeniedException",
          "You don't have access to the model with the specified model ID."),
    404: ("ResourceNotFoundException", "Could not resolve the foundation model from the provided "
          "model identifier."),
    408: ("ModelTimeoutException", "Model has timed out in processing the request."),
    424: ("ModelErrorException", "The model produced an error while processing the request."),
    429: ("ThrottlingException", "Too many requests, please wait before trying again."),
    500: ("InternalServerException", "The server encountered an internal error."),
    503: ("ServiceUnavailableException", "Bedrock is unable to process your request."),
}  # fmt: skip


def render_fault(fault: Fault, model: str | None) -> tuple[int, Headers, bytes]:
    """Status, headers (``x-amzn-ErrorType``) and ``{"message"}`` body of ``fault``."""
    kind, message = _STOCK.get(fault.status) or (
        ("InternalServerException", "The server encountered an internal error.")
        if fault.status >= 500
        else ("ValidationException", "Malformed input request.")
    )
    if fault.code is not None and fault.code.endswith("Exception"):
        kind = fault.code
    if fault.message is not None:
        message = fault.message
    headers: Headers = [
        (b"content-type", b"application/json"),
        (
            b"x-amzn-errortype",
            f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/".encode(),
        ),
        (b"x-amzn-requestid", new_id("", 36).encode()),
    ]
    return fault.status, headers, encode({"message": message + fault.hint()})

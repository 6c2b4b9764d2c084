"""Azure OpenAI and AWS Bedrock beyond the shared contract matrix: the AWS event-stream
decoder against botocore's parser, the Converse translation (reasoning, structured output,
sampling), Bedrock's and Azure's own error shapes, every way of authenticating (SigV4 from
config or the standard chain, a Bedrock API key, Azure api-key / Entra ID token / token
provider), the v1 Azure path, config loading (LiteLLM's ``azure/`` and ``bedrock/``
prefixes, a missing extra), and `routeguard serve` driven by the openai and anthropic SDKs
against the simulated upstreams."""

from __future__ import annotations

import itertools
import json
import struct
import subprocess
import sys
import uuid
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from botocore.eventstream import EventStreamBuffer
from hypothesis import given, settings
from hypothesis import strategies as st

from routeguard import config
from routeguard.config import clouds
from routeguard.deployment import AwsSettings, AzureSettings, Deployment, Secret
from routeguard.errors import (
    ConfigError,
    ContentPolicyViolation,
    ContextWindowExceeded,
    ProviderError,
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamRateLimited,
    UpstreamServerError,
    UpstreamTimeout,
)
from routeguard.mock import BAD_KEY, MockServer, bedrock_wire
from routeguard.mock.bedrock_wire import (
    SIM_AWS_ACCESS_KEY_ID,
    SIM_AWS_SECRET_ACCESS_KEY,
    event,
    exception,
    frame,
)
from routeguard.providers import aws, azure, http
from routeguard.providers.bedrock import BedrockProvider, StreamDecoder, error_from
from routeguard.providers.converse import family, request_to_converse
from routeguard.providers.eventstream import EventStreamDecoder
from serving import serve

HELLO = {"messages": [{"role": "user", "content": "Hello"}]}
CLAUDE = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"]},
        },
    }
]  # fmt: skip


@pytest.fixture(autouse=True)
async def _fresh() -> AsyncIterator[None]:
    aws.forget()
    yield
    aws.forget()
    await http.close_session()


def _sim_aws(secret: str = SIM_AWS_SECRET_ACCESS_KEY) -> AwsSettings:
    return AwsSettings("us-east-1", Secret(SIM_AWS_ACCESS_KEY_ID), Secret(secret))


def _bedrock(mock: MockServer, model: str = CLAUDE, **extra: Any) -> Deployment:
    extra.setdefault("aws", _sim_aws())
    return Deployment(id="b", alias="b", provider="bedrock", model=model, api_base=mock.url,
                      api_key=extra.pop("api_key", None), **extra)  # fmt: skip


def _azure(mock: MockServer, version: str = "2024-10-21", **extra: Any) -> Deployment:
    key = extra.pop("api_key", Secret("azure-test-key"))
    return Deployment(id="a", alias="a", provider="azure", model=extra.pop("model", "gpt-4o"),
                      api_base=mock.url, api_key=key,
                      azure=AzureSettings(version, **extra))  # fmt: skip


# --------------------------------------------------------------------------- event stream


def _odd_frame(payload: bytes) -> bytes:
    """A frame with every header value type, built by hand (the mock writes strings only)."""
    u = uuid.UUID(int=7)
    headers = (
        b"\x01t\x00" + b"\x01f\x01" + b"\x01b\x02\xfe" + b"\x01s\x03" + struct.pack(">h", -300)
        + b"\x01i\x04" + struct.pack(">i", 70000) + b"\x01l\x05" + struct.pack(">q", 1 << 40)
        + b"\x01y\x06" + struct.pack(">H", 3) + b"abc" + b"\x01d\x08" + struct.pack(">q", 1234)
        + b"\x01u\x09" + u.bytes + b"\x01w\x07" + struct.pack(">H", 2) + b"hi"
    )  # fmt: skip
    total = 12 + len(headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(headers))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    body = prelude + headers + payload
    return body + struct.pack(">I", zlib.crc32(body))


FRAMES = [
    event("messageStart", {"role": "assistant"}),
    event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "héllo"}}),
    exception("throttlingException", "slow down"),
    _odd_frame(b'{"x": 1}'),
    frame({":event-type": "empty"}, b""),
]


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=sum(map(len, FRAMES))), max_size=12))
def test_event_stream_decoder_matches_botocore_at_any_chunking(cuts: list[int]) -> None:
    data = b"".join(FRAMES)
    reference = EventStreamBuffer()
    reference.add_data(data)
    expected = [(m.headers, m.payload) for m in reference]
    decoder = EventStreamDecoder()
    got = []
    bounds = [0, *sorted(cuts), len(data)]
    for a, b in itertools.pairwise(bounds):
        got += [(m.headers, m.payload) for m in decoder.feed(data[a:b])]
    assert decoder.pending == 0
    assert len(got) == len(expected) == len(FRAMES)
    for (h, p), (rh, rp) in zip(got, expected, strict=True):
        assert p == rp
        # botocore keeps a UUID as its 16 bytes; ours is a uuid.UUID
        assert {k: v.bytes if isinstance(v, uuid.UUID) else v for k, v in h.items()} == rh
    assert got[3][0]["d"] == 1234 and got[3][0]["u"] == uuid.UUID(int=7)


@pytest.mark.parametrize("where", [4, 9, -2])  # prelude length, prelude CRC, message CRC
def test_a_corrupt_frame_is_refused(where: int) -> None:
    data = bytearray(FRAMES[1])
    data[where] ^= 0x40
    with pytest.raises(ProviderError, match="corrupt"):
        EventStreamDecoder().feed(bytes(data))


def test_stream_exceptions_map_to_their_classes() -> None:
    cases = {
        "throttlingException": UpstreamRateLimited,
        "serviceUnavailableException": UpstreamServerError,
        "modelStreamErrorException": UpstreamServerError,
        "validationException": UpstreamBadRequest,
    }
    for kind, cls in cases.items():
        (msg,) = EventStreamDecoder().feed(exception(kind, "it failed"))
        with pytest.raises(cls) as info:
            StreamDecoder("m").feed(msg)
        assert type(info.value) is cls, kind


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "kind", "message", "cls", "retryable"),
    [
        (429, "ThrottlingException", "Too many requests", UpstreamRateLimited, True),
        (429, "ModelNotReadyException", "Model is not ready", UpstreamRateLimited, True),
        (400, "ServiceQuotaExceededException", "quota", UpstreamRateLimited, True),
        (424, "ModelErrorException", "the model failed", UpstreamServerError, True),
        (503, "ServiceUnavailableException", "unavailable", UpstreamServerError, True),
        (408, "ModelTimeoutException", "timed out", UpstreamTimeout, True),
        (403, "AccessDeniedException", "no access", UpstreamAuthError, False),
        (403, "UnrecognizedClientException", "invalid token", UpstreamAuthError, False),
        (400, "ValidationException", "Input is too long for requested model.",
         ContextWindowExceeded, False),
        (400, "ValidationException", "prompt is too long: 210000 tokens > 200000 maximum",
         ContextWindowExceeded, False),
        (400, "ValidationException", "temperature: must be <= 1", UpstreamBadRequest, False),
    ],
)  # fmt: skip
def test_bedrock_errors_map_to_our_classes(
    status: int, kind: str, message: str, cls: type[ProviderError], retryable: bool
) -> None:
    err = error_from(status, kind, message, {"message": message})
    assert type(err) is cls and err.retryable is retryable


async def test_azure_content_filter_is_a_content_policy_error(mock: MockServer) -> None:
    dep = _azure(mock, model="gpt-4o-content-filter")
    for call in ("chat", "stream"):
        with pytest.raises(ContentPolicyViolation) as info:
            if call == "chat":
                await azure.AzureProvider().chat(HELLO, dep, 10.0)
            else:
                [c async for c in azure.AzureProvider().stream(HELLO, dep, 10.0)]
        err = info.value
        assert err.status_code == 400 and not err.retryable
        assert "content management policy" in err.message
        assert err.to_openai()["error"]["code"] == "content_policy_violation"


async def test_azure_rate_limit_keeps_retry_after(mock: MockServer) -> None:
    with pytest.raises(UpstreamRateLimited) as info:
        await azure.AzureProvider().chat(HELLO, _azure(mock, model="d-error-429"), 10.0)
    assert info.value.retry_after == 0.0


# --------------------------------------------------------------------------- azure auth, paths


async def test_azure_paths_and_credentials(mock: MockServer, monkeypatch: Any) -> None:
    p = azure.AzureProvider()
    mock.reset()
    await p.chat(HELLO, _azure(mock), 10.0)
    sent = mock.requests[-1]
    assert sent.path == "/openai/deployments/gpt-4o/chat/completions"
    assert sent.query == {"api-version": "2024-10-21"} and sent.model == "gpt-4o"
    assert sent.headers["api-key"] == "azure-test-key" and "authorization" not in sent.headers

    await p.chat(HELLO, _azure(mock, "v1", api_key=None, ad_token=Secret("entra-tok")), 10.0)
    sent = mock.requests[-1]
    assert sent.path == "/openai/v1/chat/completions" and sent.query == {}
    assert sent.body["model"] == "gpt-4o"
    assert sent.headers["authorization"] == "Bearer entra-tok"

    await p.embed({"input": "x"}, _azure(mock, "preview", model="text-embedding-3-small"), 10.0)
    sent = mock.requests[-1]
    assert sent.path == "/openai/v1/embeddings" and sent.query == {"api-version": "preview"}

    class Token:
        token = "from-provider"
        expires_on = 4_000_000_000

    class Credential:
        calls = 0

        async def get_token(self, scope: str) -> Token:
            Credential.calls += 1
            assert scope == azure.SCOPE
            return Token()

    monkeypatch.setattr(azure, "_tokens", azure._EntraTokens())
    azure._tokens._credential = Credential()
    dep = _azure(mock, api_key=None, token_provider=True)
    for _ in range(2):
        await p.chat(HELLO, dep, 10.0)
        assert mock.requests[-1].headers["authorization"] == "Bearer from-provider"
    assert Credential.calls == 1  # cached until close to expiry

    with pytest.raises(UpstreamAuthError):
        await p.chat(HELLO, _azure(mock, api_key=Secret(BAD_KEY)), 10.0)


# --------------------------------------------------------------------------- bedrock


def test_request_translation() -> None:
    body = request_to_converse(
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "user", "content": "there"},
            ],
            "temperature": 0.2, "top_p": 0.9, "max_tokens": 50, "stop": "END", "user": "u-1 (ü)",
        },
        CLAUDE,
    )  # fmt: skip
    assert body["system"] == [{"text": "Be brief."}]
    assert body["messages"] == [{"role": "user", "content": [{"text": "Hi"}, {"text": "there"}]}]
    assert body["inferenceConfig"] == {
        "maxTokens": 50, "temperature": 0.2, "topP": 0.9, "stopSequences": ["END"]}  # fmt: skip
    assert body["requestMetadata"] == {"user": "u-1 ___"}  # only the characters AWS allows

    thinking = request_to_converse({**HELLO, "reasoning_effort": "low"}, CLAUDE)
    assert thinking["additionalModelRequestFields"] == {
        "thinking": {"type": "enabled", "budget_tokens": 1024}}  # fmt: skip
    assert thinking["inferenceConfig"]["maxTokens"] > 1024
    with pytest.raises(UpstreamBadRequest) as info:
        request_to_converse({**HELLO, "reasoning_effort": "low"}, "meta.llama3-1-70b-instruct-v1:0")
    assert info.value.param == "reasoning_effort"
    assert family("arn:aws:bedrock:us-east-1::foundation-model/mistral.mistral-large") == "mistral"
    assert family(CLAUDE) == "anthropic" and family("cohere.embed-english-v3") == "cohere"


async def test_structured_output_through_a_forced_tool(mock: MockServer) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"},
              "days": {"type": "integer"}}, "required": ["city", "days"]}  # fmt: skip
    fmt = {"type": "json_schema", "json_schema": {"name": "trip", "schema": schema}}
    request = {**HELLO, "response_format": fmt}
    p = BedrockProvider()
    out = await p.chat(request, _bedrock(mock), 10.0)
    sent = mock.requests[-1].body["toolConfig"]
    assert sent["toolChoice"] == {"tool": {"name": "structured_output"}}
    answer = json.loads(out["choices"][0]["message"]["content"])
    assert set(answer) == {"city", "days"} and out["choices"][0]["finish_reason"] == "stop"
    streamed = [c async for c in p.stream(request, _bedrock(mock), 10.0)]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in streamed if c["choices"])
    assert json.loads(text) == answer


async def test_unsupported_parameter_is_refused_or_dropped(mock: MockServer) -> None:
    p = BedrockProvider()
    mock.reset()
    with pytest.raises(UpstreamBadRequest) as info:
        await p.chat({**HELLO, "seed": 7}, _bedrock(mock), 10.0)
    assert info.value.param == "seed" and "bedrock" in info.value.message
    assert mock.request_count == 0
    out = await p.chat({**HELLO, "seed": 7}, _bedrock(mock, drop_params=True), 10.0)
    assert out["choices"][0]["message"]["content"]


async def test_bedrock_credentials(mock: MockServer, monkeypatch: Any) -> None:
    p = BedrockProvider()
    # the standard chain: environment variables, with a session token (signed too)
    for var in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", SIM_AWS_ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SIM_AWS_SECRET_ACCESS_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-token-1")
    await p.chat(HELLO, _bedrock(mock, aws=AwsSettings("us-east-1")), 10.0)
    sent = mock.requests[-1]
    assert sent.headers["x-amz-security-token"] == "session-token-1"
    assert sent.path == f"/model/{CLAUDE}/converse"  # the ':' travelled as %3A, and verified
    # a Bedrock API key: a bearer token, no signature
    await p.chat(HELLO, _bedrock(mock, api_key=Secret("bedrock-api-key"), aws=None), 10.0)
    assert mock.requests[-1].headers["authorization"] == "Bearer bedrock-api-key"
    with pytest.raises(UpstreamAuthError):
        await p.chat(HELLO, _bedrock(mock, api_key=Secret(BAD_KEY), aws=None), 10.0)


async def test_a_wrong_secret_is_an_auth_error_that_leaks_nothing(mock: MockServer) -> None:
    secret = "wrong-secret-for-the-simulated-bedrock-9"
    dep = _bedrock(mock, model=f"{CLAUDE}-echo-headers", aws=_sim_aws(secret))
    for call in ("chat", "stream"):
        with pytest.raises(UpstreamAuthError) as info:
            if call == "chat":
                await BedrockProvider().chat(HELLO, dep, 10.0)
            else:
                [c async for c in BedrockProvider().stream(HELLO, dep, 10.0)]
        err = info.value
        assert "signature we calculated does not match" in err.detail  # AWS's 403, verified
        assert err.fallback_ok and not err.retryable
        for text in (err.message, err.detail, json.dumps(err.body)):
            assert secret not in text


async def test_cohere_embeddings(mock: MockServer) -> None:
    dep = _bedrock(mock, model="cohere.embed-english-v3")
    out = await BedrockProvider().embed({"input": ["a cat", "a cat", "a dog"]}, dep, 10.0)
    vectors = [d["embedding"] for d in out["data"]]
    assert vectors[0] == vectors[1] != vectors[2] and len(vectors[0]) == 1024
    assert out["usage"]["prompt_tokens"] > 0  # from InvokeModel's token-count header
    with pytest.raises(UpstreamBadRequest, match="titan-embed"):
        await BedrockProvider().embed({"input": "x"}, _bedrock(mock), 10.0)


# --------------------------------------------------------------------------- config


def test_a_cloud_sdk_missing_fails_at_load_with_the_pip_command(monkeypatch: Any) -> None:
    monkeypatch.setattr(clouds, "installed", lambda module: False)
    signed = {"model_name": "c", "type": "bedrock", "model": CLAUDE, "aws_region_name": "us-east-1"}
    with pytest.raises(ConfigError) as info:
        config.load({"model_list": [signed]}, env={})
    assert "pip install 'routeguard[bedrock]'" in str(info.value)
    # a Bedrock API key needs no SDK
    keyed = config.load({"model_list": [{**signed, "api_key": "k"}]}, env={})
    assert keyed.deployments["c"][0].aws is not None
    entra = {"model_name": "a", "type": "azure", "model": "d", "api_base": "https://r.example",
             "azure_ad_token_provider": True}  # fmt: skip
    with pytest.raises(ConfigError) as info:
        config.load({"model_list": [entra]}, env={})
    assert "pip install 'routeguard[azure]'" in str(info.value)


def test_cloud_settings_come_from_the_environment() -> None:
    cfg = config.load(
        {"model_list": [{"model_name": "a", "type": "azure", "model": "d"},
                        {"model_name": "b", "type": "bedrock", "model": CLAUDE}]},
        env={"AZURE_API_BASE": "https://res.openai.azure.com", "AZURE_API_KEY": "ak",
             "AZURE_API_VERSION": "2025-04-01-preview", "AWS_REGION": "eu-west-1"},
    )  # fmt: skip
    a, b = cfg.deployments["a"][0], cfg.deployments["b"][0]
    assert a.api_base == "https://res.openai.azure.com" and a.api_key is not None
    assert a.azure is not None and a.azure.api_version == "2025-04-01-preview"
    assert b.api_base == "https://bedrock-runtime.eu-west-1.amazonaws.com"
    with pytest.raises(ConfigError) as info:
        config.load({"model_list": [{"model_name": "a", "type": "azure", "model": "d"}]}, env={})
    assert [p.path for p in info.value.problems] == ["model_list[0].api_base"]


LITELLM = """
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: azure/gpt-4o
      api_base: {base}
      api_version: "2024-10-21"
      api_key: os.environ/AZURE_API_KEY
  - model_name: claude
    litellm_params:
      model: bedrock/converse/{claude}
      aws_bedrock_runtime_endpoint: {base}
      aws_region_name: us-east-1
      aws_access_key_id: os.environ/SIM_AWS_ACCESS_KEY_ID
      aws_secret_access_key: os.environ/SIM_AWS_SECRET_ACCESS_KEY
  - model_name: titan
    litellm_params:
      model: bedrock/amazon.titan-embed-text-v2:0
      aws_bedrock_runtime_endpoint: {base}
      aws_region_name: us-east-1
      aws_access_key_id: os.environ/SIM_AWS_ACCESS_KEY_ID
      aws_secret_access_key: os.environ/SIM_AWS_SECRET_ACCESS_KEY
environment_variables:
  AZURE_API_KEY: azure-from-config
  SIM_AWS_ACCESS_KEY_ID: {key_id}
  SIM_AWS_SECRET_ACCESS_KEY: {secret}
"""


@pytest.fixture
def litellm_file(mock: MockServer, tmp_path: Path) -> Path:
    path = tmp_path / "litellm.yaml"
    path.write_text(LITELLM.format(base=mock.url, claude=CLAUDE, key_id=SIM_AWS_ACCESS_KEY_ID,
                                   secret=SIM_AWS_SECRET_ACCESS_KEY))  # fmt: skip
    return path


def test_a_litellm_config_with_azure_and_bedrock_passes_check_config(litellm_file: Path) -> None:
    exe = Path(sys.executable).with_name("routeguard")
    done = subprocess.run([str(exe), "check-config", str(litellm_file)], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "3 models" in done.stdout and "warning" not in done.stderr


def test_serve_azure_and_bedrock_with_the_sdks(mock: MockServer, litellm_file: Path) -> None:
    with (
        serve("--config", str(litellm_file)) as proxy,
        openai.OpenAI(base_url=proxy.url + "/v1", api_key="x", max_retries=0) as client,
        anthropic.Anthropic(base_url=proxy.url, api_key="x", max_retries=0) as claude,
    ):
        for alias in ("gpt-4o", "claude"):
            out = client.chat.completions.create(model=alias, messages=[
                {"role": "user", "content": "Hello"}])  # fmt: skip
            assert out.choices[0].message.content
            assert out.usage is not None and out.usage.prompt_tokens > 0
            pieces = []
            usage = None
            for chunk in client.chat.completions.create(
                model=alias,
                messages=[{"role": "user", "content": "Hello"}],
                stream=True,
                stream_options={"include_usage": True},
            ):
                if chunk.choices:
                    pieces.append(chunk.choices[0].delta.content or "")
                usage = chunk.usage or usage
            assert "".join(pieces) == out.choices[0].message.content, alias
            assert usage is not None and usage.completion_tokens > 0
            tool = client.chat.completions.create(
                model=alias, messages=[{"role": "user", "content": "Weather?"}],
                tools=TOOLS, tool_choice="required",  # type: ignore[arg-type]
            )  # fmt: skip
            (call,) = tool.choices[0].message.tool_calls or []
            assert call.function.name == "get_weather"  # type: ignore[union-attr]
        vectors = client.embeddings.create(model="titan", input=["a cat", "a dog"])
        assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 1024

        msg = claude.messages.create(model="claude", max_tokens=100,
                                     messages=[{"role": "user", "content": "Hello"}])  # fmt: skip
        assert msg.content[0].type == "text" and msg.content[0].text.startswith("Simulated")
        assert msg.usage.input_tokens > 0
        with claude.messages.stream(
            model="claude", max_tokens=100, messages=[{"role": "user", "content": "Hello"}]
        ) as s:
            final = s.get_final_message()  # fmt: skip
        assert final.content[0].type == "text" and final.content[0].text == msg.content[0].text
    assert "azure gpt-4o" in proxy.output and f"bedrock {CLAUDE}" in proxy.output
    assert SIM_AWS_SECRET_ACCESS_KEY not in proxy.output


def test_serve_reports_a_wrong_aws_secret_as_an_auth_error(
    mock: MockServer, litellm_file: Path
) -> None:
    text = litellm_file.read_text().replace(SIM_AWS_SECRET_ACCESS_KEY, "not-the-right-secret-5")
    litellm_file.write_text(text)
    with (
        serve("--config", str(litellm_file)) as proxy,
        openai.OpenAI(base_url=proxy.url + "/v1", api_key="x", max_retries=0) as client,
    ):
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(model="claude", messages=[
                {"role": "user", "content": "Hello"}])  # fmt: skip
        assert info.value.status_code == 503  # every attempt failed: the gateway's answer
        body = json.dumps(info.value.body)
        assert "UpstreamAuthError" in body and "status 403" in body
        assert "not-the-right-secret-5" not in body
    assert "not-the-right-secret-5" not in proxy.output


def test_litellm_entra_refresh_and_cloud_params_load_without_warnings(monkeypatch: Any) -> None:
    monkeypatch.setattr(clouds, "installed", lambda module: True)
    data = {
        "model_list": [
            {"model_name": "a", "litellm_params": {"model": "azure/d", "api_version": "v1",
                                                   "api_base": "https://r.openai.azure.com"}},
            {"model_name": "b", "litellm_params": {"model": "bedrock/invoke/meta.llama3-8b",
                                                   "aws_profile_name": "prod",
                                                   "aws_region_name": "us-west-2"}},
        ],
        "litellm_settings": {"enable_azure_ad_token_refresh": True},
    }  # fmt: skip
    cfg = config.load(data, env={})
    a, b = cfg.deployments["a"][0], cfg.deployments["b"][0]
    assert a.azure is not None and a.azure.token_provider and a.azure.api_version == "v1"
    assert b.model == "meta.llama3-8b" and b.aws is not None and b.aws.profile == "prod"
    assert cfg.warnings == []


async def test_a_failing_azure_deployment_falls_back_to_bedrock(mock: MockServer) -> None:
    from routeguard.gateway import Gateway

    cfg = {
        "model_list": [
            {"model_name": "gpt", "type": "azure", "model": "gpt-error-503", "api_key": "k",
             "api_base": mock.url},
            {"model_name": "claude", "type": "bedrock", "model": CLAUDE, "api_base": mock.url,
             "aws_region_name": "us-east-1", "aws_access_key_id": SIM_AWS_ACCESS_KEY_ID,
             "aws_secret_access_key": SIM_AWS_SECRET_ACCESS_KEY},
        ],
        "fallbacks": {"gpt": ["claude"]},
        "router_settings": {"num_retries": 0},
    }  # fmt: skip
    gw = Gateway.from_config(cfg)
    try:
        out = await gw.chat({"model": "gpt", **HELLO})
        assert out["choices"][0]["message"]["content"].startswith(f"Simulated answer from {CLAUDE}")
    finally:
        await gw.aclose()


def test_tool_choice_none_leaves_the_tools_out_unless_the_history_needs_them() -> None:
    body = request_to_converse({**HELLO, "tools": TOOLS, "tool_choice": "none"}, CLAUDE)
    assert "toolConfig" not in body
    call = {"id": "t1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}  # fmt: skip
    history = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "t1", "content": "cold"},
    ]
    body = request_to_converse({"messages": history, "tools": TOOLS, "tool_choice": "none"}, CLAUDE)
    assert body["toolConfig"]["toolChoice"] == {"auto": {}}
    assert body["messages"][1]["content"][0]["toolUse"]["input"] == {"city": "Oslo"}
    assert body["messages"][2]["content"][0]["toolResult"]["toolUseId"] == "t1"


async def test_no_aws_credentials_is_an_auth_error_naming_the_fixes(
    mock: MockServer, monkeypatch: Any, tmp_path: Path
) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    mock.reset()
    with pytest.raises(UpstreamAuthError, match="no AWS credentials found"):
        await BedrockProvider().chat(HELLO, _bedrock(mock, aws=AwsSettings("us-east-1")), 10.0)
    with pytest.raises(UpstreamAuthError, match="cannot load AWS credentials"):
        await BedrockProvider().chat(
            HELLO, _bedrock(mock, aws=AwsSettings("us-east-1", profile="absent")), 10.0
        )
    assert mock.request_count == 0


async def test_prompt_caching_marks_become_cache_points(mock: MockServer) -> None:
    cached = {"type": "text", "text": "A long, stable system prompt.", "cache_control": {
        "type": "ephemeral"}}  # fmt: skip
    request = {
        "messages": [
            {"role": "system", "content": [cached]},
            {"role": "user", "content": [{**cached, "text": "Hello"}, {"type": "text",
                                          "text": "and more"}]},
        ]
    }  # fmt: skip
    body = request_to_converse(request, CLAUDE)
    point = {"cachePoint": {"type": "default"}}
    assert body["system"] == [{"text": "A long, stable system prompt."}, point]
    assert body["messages"][0]["content"] == [{"text": "Hello"}, point, {"text": "and more"}]
    out = await BedrockProvider().chat(request, _bedrock(mock), 10.0)  # the simulator takes it
    assert out["choices"][0]["message"]["content"]


def _framed(headers: bytes, payload: bytes) -> bytes:
    total = 12 + len(headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(headers))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    body = prelude + headers + payload
    return body + struct.pack(">I", zlib.crc32(body))


@settings(max_examples=300, deadline=None)
@given(headers=st.binary(max_size=64), payload=st.binary(max_size=16), noise=st.binary(max_size=40))
def test_any_bytes_decode_or_raise_a_provider_error(
    headers: bytes, payload: bytes, noise: bytes
) -> None:
    # well-framed messages with arbitrary header bytes, then arbitrary bytes: never a crash
    decoder = EventStreamDecoder()
    for data in (_framed(headers, payload), noise):
        try:
            for msg in decoder.feed(data):
                assert msg.payload == payload
        except ProviderError as exc:
            assert "corrupt" in exc.message
            return


async def test_titan_embeds_many_texts_in_order(mock: MockServer) -> None:
    dep = _bedrock(mock, model="amazon.titan-embed-text-v2:0")
    texts = [f"text number {i}" for i in range(20)]
    mock.reset()
    out = await BedrockProvider().embed({"input": texts, "dimensions": 256}, dep, 10.0)
    assert mock.request_count == len(texts)  # Titan: one text a call
    assert [d["index"] for d in out["data"]] == list(range(20))
    for i in (0, 7, 19):
        alone = await BedrockProvider().embed({"input": texts[i], "dimensions": 256}, dep, 10.0)
        assert out["data"][i]["embedding"] == alone["data"][0]["embedding"]
    assert len(out["data"][0]["embedding"]) == 256


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (b"", "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
        (b"Param2=value2&Param1=value1",
         "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"),
    ],
)  # fmt: skip
def test_the_simulated_bedrock_verifies_with_aws_published_test_vectors(
    query: bytes, expected: str
) -> None:
    # AWS's SigV4 test suite (get-vanilla, get-vanilla-query-order-key-case): the simulator's
    # verifier is checked against AWS's own figures, not against the signer it verifies.
    headers = {"host": "example.amazonaws.com", "x-amz-date": "20150830T123600Z"}
    got = bedrock_wire.signature(
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", ("20150830", "us-east-1", "service"),
        "20150830T123600Z", "GET", "/", query, headers, ["host", "x-amz-date"], b"",
    )  # fmt: skip
    assert got == expected


@pytest.mark.parametrize(
    ("path", "headers", "status", "code"),
    [
        ("/openai/deployments/d/chat/completions", {"api-key": "k"}, 404, "404"),
        ("/openai/deployments/d/chat/completions?api-version=latest", {"api-key": "k"}, 400,
         "BadRequest"),
        ("/openai/deployments/d/chat/completions?api-version=2024-10-21", {}, 401, "401"),
        ("/openai/deployments/d/completions?api-version=2024-10-21", {"api-key": "k"}, 404,
         "404"),
        ("/openai/deployments/d/chat/completions?api-version=2024-10-21", {"api-key": "k"}, 200,
         None),
    ],
)  # fmt: skip
async def test_the_simulated_azure_checks_paths_versions_and_keys(
    mock: MockServer, path: str, headers: dict[str, str], status: int, code: str | None
) -> None:
    resp = await http.post_json(mock.url + path, headers, HELLO, 10.0)
    assert resp.status == status
    if code is not None:
        assert resp.json()["error"]["code"] == code


async def test_the_simulated_bedrock_refuses_unsigned_and_malformed_requests(
    mock: MockServer,
) -> None:
    url = f"{mock.url}/model/{CLAUDE}/converse"
    resp = await http.post_json(url, {}, HELLO, 10.0)
    assert resp.status == 403 and resp.headers["x-amzn-errortype"].startswith(
        "MissingAuthenticationTokenException")  # fmt: skip
    # signed, but Converse wants alternating turns starting with the user
    body = {"messages": [{"role": "assistant", "content": [{"text": "hi"}]}]}
    resp = await http.post_json(url, {"authorization": "Bearer api-key"}, body, 10.0)
    assert resp.status == 400 and "start with a user message" in resp.json()["message"]

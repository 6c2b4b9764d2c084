"""Google Vertex AI: the OAuth token life cycle through the real google-auth flow (a fresh
RSA key, a service-account file whose token_uri is the simulated endpoint, which verifies
the signed assertion), error bodies as Vertex sends them, the ``vertex_ai`` config (native
and LiteLLM's), and the proxy serving Gemini and Claude on Vertex to the openai and
anthropic SDKs. The shared provider matrix is ``test_provider_contract.py``."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import yaml

from gcp import PROJECT, service_account
from routeguard import config as config_mod
from routeguard import scrub
from routeguard.deployment import Deployment, VertexTarget
from routeguard.errors import (
    ConfigError,
    ContextWindowExceeded,
    UpstreamAuthError,
    UpstreamRateLimited,
    UpstreamServerError,
    UpstreamTimeout,
)
from routeguard.mock import MockServer
from routeguard.providers import gemini, get_provider, http, vertex
from serving import serve

HELLO = {"messages": [{"role": "user", "content": "Hello"}]}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


@pytest.fixture(autouse=True)
async def _close_http_session() -> AsyncIterator[None]:
    yield
    await http.close_session()


def _dep(mock: MockServer, creds: Path, model: str = "gemini-2.5-flash") -> Deployment:
    kind = "vertex_ai_anthropic" if model.startswith("claude") else "vertex_ai"
    return Deployment(
        id=f"v-{model}",
        alias="v",
        provider=kind,
        model=model,
        api_base=mock.url,
        api_key=None,
        vertex=VertexTarget(PROJECT, "us-central1", str(creds)),
    )


def _bearers(mock: MockServer, last: int) -> list[str]:
    """The bearer tokens of the last ``last`` requests the simulated Vertex received."""
    return [r.headers["authorization"] for r in mock.requests[-last:]]


# --------------------------------------------------------------------------- tokens


async def test_concurrent_first_requests_share_one_token(mock: MockServer, tmp_path: Path) -> None:
    dep = _dep(mock, service_account(mock, tmp_path))
    before = mock.app.oauth.grants
    provider = get_provider("vertex_ai")
    answers = await asyncio.gather(*(provider.chat(HELLO, dep, 10.0) for _ in range(16)))
    assert all(a["choices"][0]["message"]["content"] for a in answers)
    assert mock.app.oauth.grants - before == 1
    assert len(set(_bearers(mock, 16))) == 1


async def test_an_expired_token_is_replaced_once_under_concurrency(
    mock: MockServer, tmp_path: Path
) -> None:
    dep = _dep(mock, service_account(mock, tmp_path))
    provider = get_provider("vertex_ai")
    mock.app.oauth.lifetimes.extend([10])  # under the expiry margin: stale at once
    before = mock.app.oauth.grants
    await provider.chat(HELLO, dep, 10.0)
    (first,) = _bearers(mock, 1)
    answers = await asyncio.gather(*(provider.chat(HELLO, dep, 10.0) for _ in range(16)))
    assert len(answers) == 16
    assert mock.app.oauth.grants - before == 2  # the first token, then one replacement
    (second,) = set(_bearers(mock, 16))
    assert second != first


async def test_a_token_near_expiry_is_refreshed_ahead_while_it_still_serves(
    mock: MockServer, tmp_path: Path
) -> None:
    dep = _dep(mock, service_account(mock, tmp_path))
    provider = get_provider("vertex_ai")
    lifetime = int(vertex.gcp_auth.REFRESH_AHEAD) // 2  # valid, but inside the refresh window
    mock.app.oauth.lifetimes.extend([lifetime])
    before = mock.app.oauth.grants
    await provider.chat(HELLO, dep, 10.0)
    (first,) = _bearers(mock, 1)
    await provider.chat(HELLO, dep, 10.0)  # starts the refresh, and does not wait for it
    assert _bearers(mock, 1) == [first]
    await asyncio.gather(*(provider.chat(HELLO, dep, 10.0) for _ in range(8)))
    assert dep.vertex is not None
    source = vertex.gcp_auth.source_for(dep.vertex)
    for _ in range(500):  # the background refresh lands: granted, and stored client-side
        held = source._token
        if mock.app.oauth.grants - before == 2 and held and f"Bearer {held.value}" != first:
            break
        await asyncio.sleep(0.01)
    assert mock.app.oauth.grants - before == 2  # one refresh for every request in the window
    await provider.chat(HELLO, dep, 10.0)
    (second,) = _bearers(mock, 1)
    assert second != first  # the new token serves now


async def test_only_the_live_tokens_stay_in_the_scrubber(mock: MockServer, tmp_path: Path) -> None:
    dep = _dep(mock, service_account(mock, tmp_path))
    provider = get_provider("vertex_ai")
    mock.app.oauth.lifetimes.extend([10, 10])  # each stale at once: three tokens in a row
    for _ in range(3):
        await provider.chat(HELLO, dep, 10.0)
    tokens = [b.removeprefix("Bearer ") for b in _bearers(mock, 3)]
    assert len(set(tokens)) == 3
    masked = [scrub.scrub(f"echo {t}") for t in tokens]
    assert masked == [f"echo {tokens[0]}", f"echo {scrub.MASK}", f"echo {scrub.MASK}"]


async def test_a_quota_project_is_sent_with_the_token(mock: MockServer, tmp_path: Path) -> None:
    creds = service_account(mock, tmp_path)
    dep = _dep(mock, creds)
    assert dep.vertex is not None
    source = vertex.gcp_auth.source_for(dep.vertex)
    await get_provider("vertex_ai").chat(HELLO, dep, 10.0)
    assert "x-goog-user-project" not in mock.requests[-1].headers  # a service account: none
    source.quota_project = "billing-project-1"  # what user credentials with one carry
    await get_provider("vertex_ai").chat(HELLO, dep, 10.0)
    assert mock.requests[-1].headers["x-goog-user-project"] == "billing-project-1"


async def test_the_refresh_runs_off_the_event_loop(mock: MockServer, tmp_path: Path) -> None:
    dep = _dep(mock, service_account(mock, tmp_path))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    mock.app.oauth.delay = 0.3  # a slow token endpoint
    task = asyncio.create_task(ticker())
    try:
        await get_provider("vertex_ai").chat(HELLO, dep, 10.0)
    finally:
        mock.app.oauth.delay = 0.0
        task.cancel()
    assert ticks > 0  # the loop kept running while google-auth waited on the endpoint


async def test_a_slow_token_endpoint_times_the_attempt_out_not_the_refresh(
    mock: MockServer, tmp_path: Path
) -> None:
    dep = _dep(mock, service_account(mock, tmp_path))
    before = mock.app.oauth.grants
    mock.app.oauth.delay = 1.0
    try:
        with pytest.raises(UpstreamTimeout) as info:
            await get_provider("vertex_ai").chat(HELLO, dep, 0.2)
        assert info.value.retryable
        for _ in range(500):  # the refresh went on without the caller
            if mock.app.oauth.grants > before:
                break
            await asyncio.sleep(0.01)
    finally:
        mock.app.oauth.delay = 0.0
    await get_provider("vertex_ai").chat(HELLO, dep, 10.0)  # served by that token
    assert mock.app.oauth.grants - before == 1


async def test_a_refused_token_is_dropped_and_the_next_call_gets_a_new_one(
    mock: MockServer, tmp_path: Path
) -> None:
    dep = _dep(mock, service_account(mock, tmp_path), "claude-sonnet-4-5@20250929")
    provider = get_provider("vertex_ai_anthropic")
    await provider.chat(HELLO, dep, 10.0)
    mock.app.oauth.revoke()
    with pytest.raises(UpstreamAuthError) as info:
        await provider.chat(HELLO, dep, 10.0)
    assert info.value.fallback_ok and not info.value.retryable
    before = mock.app.oauth.grants
    out = await provider.chat(HELLO, dep, 10.0)
    assert out["choices"][0]["message"]["content"]
    assert mock.app.oauth.grants - before == 1


async def test_untrusted_credentials_fail_as_the_deployments_fault(
    mock: MockServer, tmp_path: Path
) -> None:
    dep = _dep(mock, service_account(mock, tmp_path, trusted=False))
    mock.reset()
    with pytest.raises(UpstreamAuthError) as info:
        await get_provider("vertex_ai").chat(HELLO, dep, 10.0)
    assert info.value.fallback_ok and not info.value.retryable
    assert "private_key" not in info.value.detail and "BEGIN" not in info.value.detail
    assert mock.request_count == 0  # no token, no call


async def test_wire_shapes_reach_the_simulated_vertex(mock: MockServer, tmp_path: Path) -> None:
    creds = service_account(mock, tmp_path)
    await get_provider("vertex_ai_anthropic").chat(
        HELLO, _dep(mock, creds, "claude-haiku-4-5@20251001"), 10.0
    )
    sent = mock.requests[-1]
    assert sent.path == (
        f"/v1/projects/{PROJECT}/locations/us-central1/publishers/anthropic/models/"
        "claude-haiku-4-5@20251001:rawPredict"
    )
    assert sent.body["anthropic_version"] == vertex.ANTHROPIC_VERSION and "model" not in sent.body
    out = await get_provider("vertex_ai").embed(
        {"input": ["a b", "c d e"], "dimensions": 256}, _dep(mock, creds, "text-embedding-005"), 10
    )
    sent = mock.requests[-1]
    assert sent.path.endswith("/publishers/google/models/text-embedding-005:predict")
    assert sent.body == {
        "instances": [{"content": "a b"}, {"content": "c d e"}],
        "parameters": {"outputDimensionality": 256},
    }
    assert [len(d["embedding"]) for d in out["data"]] == [256, 256]
    assert out["usage"]["prompt_tokens"] > 0  # from the predictions' statistics


def test_gemini_embedding_models_get_one_instance_per_call() -> None:
    bodies = vertex.predict_requests({"input": ["a", "b", "c"]}, "gemini-embedding-001")
    assert [len(b["instances"]) for b in bodies] == [1, 1, 1]
    bodies = vertex.predict_requests({"input": ["x"] * 300}, "text-embedding-005")
    assert [len(b["instances"]) for b in bodies] == [
        vertex.PREDICT_BATCH,
        300 - vertex.PREDICT_BATCH,
    ]


# --------------------------------------------------------------------------- error bodies

# Error bodies as Vertex AI sends them (Google's shape; Claude's request errors in Anthropic's).
QUOTA = {
    "error": {
        "code": 429,
        "message": "Quota exceeded for aiplatform.googleapis.com/"
        "generate_content_requests_per_minute_per_project_per_base_model with base model: "
        "gemini-2.5-flash. Please submit a quota increase request.",
        "status": "RESOURCE_EXHAUSTED",
    }
}
TOO_LONG = {
    "error": {
        "code": 400,
        "message": "The input token count (1048577) exceeds the maximum number of tokens "
        "allowed (1048576).",
        "status": "INVALID_ARGUMENT",
    }
}
UNAUTHENTICATED = {
    "error": {
        "code": 401,
        "message": "Request had invalid authentication credentials. Expected OAuth 2 access "
        "token, login cookie or other valid authentication credential.",
        "status": "UNAUTHENTICATED",
    }
}
DENIED = {
    "error": {
        "code": 403,
        "message": "Permission 'aiplatform.endpoints.predict' denied on resource "
        "'//aiplatform.googleapis.com/projects/p/locations/us-central1/publishers/google/"
        "models/gemini-2.5-flash' (or it may not exist).",
        "status": "PERMISSION_DENIED",
    }
}
UNAVAILABLE = {"error": {"code": 503, "message": "The service is currently unavailable.",
                         "status": "UNAVAILABLE"}}  # fmt: skip
CLAUDE_TOO_LONG = {
    "type": "error",
    "error": {"type": "invalid_request_error", "message": "prompt is too long: 210000 tokens > "
              "200000 maximum"},
}  # fmt: skip


@pytest.mark.parametrize("errors", [gemini.ERRORS, vertex.CLAUDE_ERRORS], ids=["gemini", "claude"])
@pytest.mark.parametrize(
    ("status", "body", "cls", "retryable"),
    [
        (429, QUOTA, UpstreamRateLimited, True),
        (400, TOO_LONG, ContextWindowExceeded, False),
        (401, UNAUTHENTICATED, UpstreamAuthError, False),
        (403, DENIED, UpstreamAuthError, False),
        (503, UNAVAILABLE, UpstreamServerError, True),
    ],
)
def test_vertex_error_bodies_map_onto_our_errors(
    errors: Any, status: int, body: Any, cls: type, retryable: bool
) -> None:
    err = errors.from_body(status, body)
    assert type(err) is cls and err.retryable is retryable


def test_claude_prompt_too_long_through_vertex_is_a_context_error() -> None:
    err = vertex.CLAUDE_ERRORS.from_body(400, CLAUDE_TOO_LONG)
    assert isinstance(err, ContextWindowExceeded) and not err.fallback_ok


# --------------------------------------------------------------------------- config


def _vertex_entry(creds: Path | str, **extra: Any) -> dict[str, Any]:
    return {"model_name": "g", "type": "vertex_ai", "model": "gemini-2.5-flash",
            "vertex_credentials": str(creds), **extra}  # fmt: skip


@pytest.mark.parametrize(
    ("location", "base"),
    [
        ("us-east5", "https://us-east5-aiplatform.googleapis.com"),
        ("global", "https://aiplatform.googleapis.com"),
    ],
)
def test_the_endpoint_follows_the_location(
    mock: MockServer, tmp_path: Path, location: str, base: str
) -> None:
    creds = service_account(mock, tmp_path)
    cfg = config_mod.load({"model_list": [_vertex_entry(creds, vertex_location=location)]})
    (dep,) = cfg.deployments["g"]
    assert dep.api_base == base and dep.provider == "vertex_ai"
    assert dep.vertex is not None and dep.vertex.project == PROJECT  # from the key file


def test_claude_models_go_to_the_anthropic_publisher(mock: MockServer, tmp_path: Path) -> None:
    entry = _vertex_entry(service_account(mock, tmp_path), model="claude-opus-4-1@20250805")
    (dep,) = config_mod.load({"model_list": [entry]}).deployments["g"]
    assert dep.provider == "vertex_ai_anthropic"


def test_project_and_location_come_from_litellms_variables(mock: MockServer) -> None:
    entry = {"model_name": "g", "type": "vertex_ai", "model": "gemini-2.5-pro"}
    env = {"VERTEXAI_PROJECT": "env-project-1", "VERTEXAI_LOCATION": "europe-west4"}
    (dep,) = config_mod.load({"model_list": [entry]}, env=env).deployments["g"]
    assert dep.vertex == VertexTarget("env-project-1", "europe-west4")  # and ADC
    assert dep.api_base == "https://europe-west4-aiplatform.googleapis.com"


def test_credentials_json_text_is_a_secret(mock: MockServer, tmp_path: Path) -> None:
    text = service_account(mock, tmp_path).read_text()
    (dep,) = config_mod.load({"model_list": [_vertex_entry(text)]}).deployments["g"]
    assert dep.vertex is not None and dep.vertex.credentials_json is not None
    assert "PRIVATE KEY" not in repr(dep)


@pytest.mark.parametrize(
    ("extra", "where", "says"),
    [
        ({"vertex_credentials": "/nonexistent/key.json"}, "vertex_credentials", "cannot read"),
        ({"vertex_credentials": '{"type": "external_account"}'}, "vertex_credentials",
         "GOOGLE_APPLICATION_CREDENTIALS"),
        ({"vertex_credentials": "{not json"}, "vertex_credentials", "not JSON"),
        ({"vertex_location": "us central"}, "vertex_location", "region"),
        ({"vertex_project": "Bad/Project"}, "vertex_project", "project id"),
        ({"api_key": "AIza-something"}, "api_key", "Google credentials"),
    ],
)  # fmt: skip
def test_bad_vertex_settings_name_their_key(extra: dict[str, Any], where: str, says: str) -> None:
    entry = {"model_name": "g", "type": "vertex_ai", "model": "gemini-2.5-flash",
             "vertex_project": "my-project-1", **extra}  # fmt: skip
    with pytest.raises(ConfigError) as info:
        config_mod.load({"model_list": [entry]})
    assert f"model_list[0].{where}" in info.value.message and says in info.value.message


def test_without_the_extra_check_config_says_what_to_install(tmp_path: Path) -> None:
    path = tmp_path / "litellm.yaml"
    entry = {"model_name": "g", "litellm_params": {"model": "vertex_ai/gemini-2.5-flash",
                                                  "vertex_project": "my-project-1"}}  # fmt: skip
    path.write_text(yaml.safe_dump({"model_list": [entry]}))
    # A Python where google-auth cannot be imported (sys.modules[name] = None blocks it).
    script = (
        "import sys; sys.modules['google.auth'] = None; from routeguard.cli import main; "
        f"sys.exit(main(['check-config', {str(path)!r}]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert "model_list[0]" in done.stderr
    assert "pip install 'routeguard[vertex]'" in done.stderr


# --------------------------------------------------------------------------- through serve


def _litellm_config(mock: MockServer, creds: Path) -> dict[str, Any]:
    """A LiteLLM proxy config as its docs write Vertex AI entries, on the simulated upstream."""
    params = {"vertex_project": PROJECT, "vertex_location": "us-central1",
              "vertex_credentials": str(creds), "api_base": mock.url}  # fmt: skip
    return {
        "model_list": [
            {"model_name": "gemini-flash",
             "litellm_params": {"model": "vertex_ai/gemini-2.5-flash", **params}},
            {"model_name": "claude-sonnet",
             "litellm_params": {"model": "vertex_ai/claude-sonnet-4-5@20250929", **params}},
            {"model_name": "embedder",
             "litellm_params": {"model": "vertex_ai/text-embedding-005", **params}},
        ],
        "litellm_settings": {"drop_params": True},
        "general_settings": {"master_key": "sk-vertex-test-master"},
    }  # fmt: skip


def test_a_litellm_vertex_config_checks_clean(mock: MockServer, tmp_path: Path) -> None:
    path = tmp_path / "litellm.yaml"
    path.write_text(yaml.safe_dump(_litellm_config(mock, service_account(mock, tmp_path))))
    exe = Path(sys.executable).with_name("routeguard")
    done = subprocess.run(
        [str(exe), "check-config", str(path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "ok (3 models, 3 deployments)" in done.stdout
    assert "warning" not in done.stderr  # every vertex_* parameter is understood


def test_serve_answers_sdks_through_vertex(mock: MockServer, tmp_path: Path) -> None:
    creds = service_account(mock, tmp_path)
    path = tmp_path / "litellm.yaml"
    path.write_text(yaml.safe_dump(_litellm_config(mock, creds)))
    key = "sk-vertex-test-master"
    with (
        serve("--config", str(path)) as served,
        openai.OpenAI(base_url=served.url + "/v1", api_key=key, max_retries=0) as client,
        anthropic.Anthropic(base_url=served.url, api_key=key, max_retries=0) as claude,
    ):  # the clients closed with the test: an open socket left to the GC fails a later one
        for model in ("gemini-flash", "claude-sonnet"):
            msgs: Any = HELLO["messages"]
            plain = client.chat.completions.create(model=model, messages=msgs)
            text = plain.choices[0].message.content or ""
            assert text.startswith("Simulated answer from")
            pieces = [
                c.choices[0].delta.content or ""
                for c in client.chat.completions.create(model=model, messages=msgs, stream=True)
                if c.choices
            ]
            assert "".join(pieces) == text
            called = client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": "Weather in Paris?"}],
                tools=TOOLS,  # type: ignore[arg-type]
                tool_choice="required",
            )
            call = called.choices[0].message.tool_calls[0]  # type: ignore[index]
            assert call.function.name == "get_weather"  # type: ignore[union-attr]
            assert json.loads(call.function.arguments) == {"city": "example"}  # type: ignore[union-attr]
        emb = client.embeddings.create(model="embedder", input=["the cat sat", "quantum flux"])
        assert len(emb.data) == 2 and len(emb.data[0].embedding) == 768
        message = claude.messages.create(
            model="claude-sonnet",
            max_tokens=256,
            messages=[{"role": "user", "content": "Hello"}],
        )
        assert message.content[0].text.startswith("Simulated answer from")  # type: ignore[union-attr]
        with claude.messages.stream(
            model="claude-sonnet", max_tokens=256, messages=[{"role": "user", "content": "Hi"}]
        ) as stream:
            assert "".join(stream.text_stream).startswith("Simulated answer from")
        counted = claude.messages.with_raw_response.count_tokens(
            model="claude-sonnet",
            messages=[{"role": "user", "content": "Hello"}],
            extra_headers={"anthropic-beta": "token-counting-2024-11-01"},
        )
        assert counted.parse().input_tokens > 0
        assert counted.headers["x-routeguard-count"] == "upstream"  # Vertex counted it
        (sent,) = [r for r in mock.requests if r.path.endswith("count-tokens:rawPredict")]
        assert sent.body["model"] == "claude-sonnet-4-5@20250929"  # in the body, not the path
        assert sent.body["anthropic_version"] == vertex.ANTHROPIC_VERSION
        assert sent.headers["anthropic-beta"] == "token-counting-2024-11-01"
        assert sent.headers["authorization"].startswith("Bearer ")
    paths = {r.path for r in mock.requests}
    base = f"/v1/projects/{PROJECT}/locations/us-central1/publishers"
    assert {
        f"{base}/google/models/gemini-2.5-flash:generateContent",
        f"{base}/google/models/gemini-2.5-flash:streamGenerateContent",
        f"{base}/anthropic/models/claude-sonnet-4-5@20250929:rawPredict",
        f"{base}/anthropic/models/claude-sonnet-4-5@20250929:streamRawPredict",
        f"{base}/anthropic/models/count-tokens:rawPredict",
        f"{base}/google/models/text-embedding-005:predict",
    } <= paths
    # Startup names each alias's provider; no token or key material is printed.
    assert "gemini-flash -> vertex_ai gemini-2.5-flash" in served.output
    assert "claude-sonnet -> vertex_ai_anthropic claude-sonnet-4-5@20250929" in served.output
    for token in mock.app.oauth.issued:
        assert token not in served.output
    assert "PRIVATE KEY" not in served.output

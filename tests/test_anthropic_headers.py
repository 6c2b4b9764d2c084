"""A client's ``anthropic-beta`` and ``anthropic-version`` reach Claude wherever it is served:
Anthropic's API as the same headers, Claude on Vertex AI as the ``anthropic-beta`` header,
Bedrock Converse as ``additionalModelRequestFields.anthropic_beta``; never an OpenAI-format
upstream. Checked on what the simulated upstreams received, through the proxy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from gcp import service_account
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.mock.bedrock_wire import SIM_AWS_ACCESS_KEY_ID, SIM_AWS_SECRET_ACCESS_KEY
from routeguard.server import create_app
from routeguard.server.thread import ServerThread

CLAUDE = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
BETAS = "context-1m-2025-08-07, token-efficient-tools-2025-02-19"


@pytest.fixture(scope="module")
def proxy(mock: MockServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    creds = service_account(mock, tmp_path_factory.mktemp("gcp"))
    cfg: dict[str, Any] = {"model_list": [
        {"model_name": "an", "type": "anthropic", "model": "claude-sim", "api_key": "k",
         "api_base": mock.url, "headers": {"anthropic-beta": "deployment-beta"}},
        {"model_name": "vx", "type": "vertex_ai", "model": "claude-sonnet-4@20250514",
         "vertex_credentials": str(creds), "vertex_location": "us-east5", "api_base": mock.url},
        {"model_name": "br", "type": "bedrock", "model": CLAUDE, "api_base": mock.url,
         "aws_region_name": "us-east-1", "aws_access_key_id": SIM_AWS_ACCESS_KEY_ID,
         "aws_secret_access_key": SIM_AWS_SECRET_ACCESS_KEY},
        {"model_name": "oa", "type": "openai", "model": "sim-oa", "api_key": "k",
         "api_base": mock.url + "/v1"},
    ]}  # fmt: skip
    with ServerThread(create_app(Gateway.from_config(cfg))) as server:
        yield server.url


def _messages(proxy: str, alias: str, *, stream: bool = False) -> None:
    with anthropic.Anthropic(base_url=proxy, api_key="x", max_retries=0) as c:
        headers = {"anthropic-beta": BETAS, "anthropic-version": "2023-06-01"}
        kw: Any = {"model": alias, "max_tokens": 50, "extra_headers": headers,
                   "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
        if stream:
            with c.messages.stream(**kw) as s:
                s.get_final_message()
        else:
            c.messages.create(**kw)


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_gets_the_headers_merged_with_the_deployments(
    proxy: str, mock: MockServer, stream: bool
) -> None:
    mock.reset()
    _messages(proxy, "an", stream=stream)
    (sent,) = mock.requests
    assert sent.headers["anthropic-beta"] == (
        "deployment-beta,context-1m-2025-08-07,token-efficient-tools-2025-02-19"
    )
    assert sent.headers["anthropic-version"] == "2023-06-01"


@pytest.mark.parametrize("stream", [False, True])
def test_vertex_claude_gets_the_beta_header(proxy: str, mock: MockServer, stream: bool) -> None:
    mock.reset()
    _messages(proxy, "vx", stream=stream)
    sent = mock.requests[-1]
    assert sent.path.endswith(":streamRawPredict" if stream else ":rawPredict")
    assert (
        sent.headers["anthropic-beta"] == "context-1m-2025-08-07,token-efficient-tools-2025-02-19"
    )
    assert sent.body["anthropic_version"] == "vertex-2023-10-16"  # Vertex's own, unchanged


@pytest.mark.parametrize("stream", [False, True])
def test_bedrock_converse_gets_anthropic_beta_in_the_body(
    proxy: str, mock: MockServer, stream: bool
) -> None:
    mock.reset()
    _messages(proxy, "br", stream=stream)
    (sent,) = mock.requests
    extra = sent.body["additionalModelRequestFields"]
    assert extra["anthropic_beta"] == ["context-1m-2025-08-07", "token-efficient-tools-2025-02-19"]


def test_openai_format_upstreams_never_see_them(proxy: str, mock: MockServer) -> None:
    mock.reset()
    with openai.OpenAI(base_url=proxy + "/v1", api_key="x", max_retries=0) as c:
        c.chat.completions.create(
            model="oa", messages=[{"role": "user", "content": "hi"}],
            extra_headers={"anthropic-beta": BETAS},
        )  # fmt: skip
    (sent,) = mock.requests
    assert "anthropic-beta" not in sent.headers and "anthropic_beta" not in sent.body


def test_no_header_no_beta(proxy: str, mock: MockServer, tmp_path: Path) -> None:
    mock.reset()
    with anthropic.Anthropic(base_url=proxy, api_key="x", max_retries=0) as c:
        c.messages.create(model="br", max_tokens=20, messages=[{"role": "user", "content": "hi"}])
    (sent,) = mock.requests
    assert "additionalModelRequestFields" not in sent.body

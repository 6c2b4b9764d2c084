"""Hostile input at the proxy's edge: bodies nested past any sane depth, bytes that are not
UTF-8, token counts no model serves, per-endpoint body limits, the single-model endpoint's
authentication and methods, and upstream base URLs that can never work (refused at load)."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routeguard.config import load
from routeguard.errors import ConfigError
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.server import create_app
from routeguard.server.thread import ServerThread

MASTER = "sk-master-edge"
MAX_DEPTH = 64  # routeguard.schema's limits (literal here, so the test also runs on old code)
MAX_TOKENS = 2**31 - 1
MSG = [{"role": "user", "content": "hi"}]


def _cfg(url: str, **server: Any) -> dict[str, Any]:
    dep = {"type": "openai", "api_base": url + "/v1", "api_key": "k",
           "input_cost_per_mtok": 1000.0, "output_cost_per_mtok": 20000.0}  # fmt: skip
    return {
        "model_list": [{**dep, "model_name": "a", "model": "m-a"},
                       {**dep, "model_name": "b", "model": "m-b"}],
        "budgets": [{"name": "acme", "limit": 100.0}],
        "budget_settings": {"default_account": "acme"},
        "server": {"master_key": MASTER, **server},
    }  # fmt: skip


@pytest.fixture(scope="module")
def proxy(mock: MockServer) -> Iterator[str]:
    with ServerThread(create_app(Gateway.from_config(_cfg(mock.url)))) as srv:
        yield srv.url


def _post(url: str, body: bytes, key: str = MASTER, method: str = "POST") -> tuple[int, Any]:
    headers = {"content-type": "application/json", "authorization": f"Bearer {key}"}
    req = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read())


def _error_message(path: str, data: Any) -> str:
    """The message of an error body, checking it has the caller's protocol's shape."""
    if path == "/v1/messages":
        assert data["type"] == "error" and data["error"]["type"] == "invalid_request_error"
    else:
        assert data["error"]["type"] == "invalid_request_error"
    return str(data["error"]["message"])


def _nested(depth: int) -> bytes:
    return (
        b'{"model": "a", "max_tokens": 5, "input": "x", "messages": [{"role": "user", '
        b'"content": "hi"}], "metadata": ' + b"[" * depth + b"]" * depth + b"}"
    )


BAD_UTF8 = b'{"model": "a", "max_tokens": 5, "input": "h\xff\xfei", "messages": [{"role": "user", "content": "h\xff\xfei"}]}'  # noqa: E501
PATHS = ["/v1/chat/completions", "/v1/messages", "/v1/embeddings"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    ("body", "expect"),
    [
        (_nested(2000), "nested too deeply"),  # past the decoder's recursion limit
        (_nested(MAX_DEPTH + 1), "nested too deeply"),  # decodes, but deeper than allowed
        (BAD_UTF8, "not valid UTF-8"),
    ],
    ids=["deep-2000", "deep-limit", "utf8"],
)
def test_malformed_bodies_are_4xx_in_the_callers_protocol(
    proxy: str, path: str, body: bytes, expect: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="routeguard.server"):
        status, data = _post(proxy + path, body)
    assert status == 400, data
    assert expect in _error_message(path, data)
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


def test_nesting_within_the_limit_is_served(proxy: str) -> None:
    status, data = _post(proxy + "/v1/chat/completions", _nested(MAX_DEPTH - 3))
    assert status == 200 and data["choices"]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
@pytest.mark.parametrize("value", [10**15, 10**20, MAX_TOKENS + 1])
def test_absurd_max_tokens_is_400_not_a_ledger_crash(
    proxy: str, path: str, value: int, caplog: pytest.LogCaptureFixture
) -> None:
    body = {"model": "a", "max_tokens": value, "messages": MSG}
    with caplog.at_level(logging.ERROR, logger="routeguard.server"):
        status, data = _post(proxy + path, json.dumps(body).encode())
    assert status == 400, data
    assert "max_tokens" in _error_message(path, data)
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


def test_absurd_max_tokens_through_the_sdks(proxy: str) -> None:
    with (
        openai.OpenAI(base_url=proxy + "/v1", api_key=MASTER, max_retries=0) as oai,
        pytest.raises(openai.BadRequestError, match="max_completion_tokens"),
    ):
        oai.chat.completions.create(model="a", messages=MSG, max_completion_tokens=10**15)  # type: ignore[arg-type]
    with (
        anthropic.Anthropic(base_url=proxy, api_key=MASTER, max_retries=0) as ant,
        pytest.raises(anthropic.BadRequestError, match="max_tokens"),
    ):
        ant.messages.create(model="a", max_tokens=10**15, messages=MSG, timeout=10)  # type: ignore[arg-type]


def test_single_model_endpoint_needs_a_key_and_get(proxy: str) -> None:
    with (
        openai.OpenAI(base_url=proxy + "/v1", api_key="wrong", max_retries=0) as bad,
        pytest.raises(openai.AuthenticationError),
    ):
        bad.models.retrieve("a")
    req = urllib.request.Request(proxy + "/v1/models/a")  # no key at all
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=10)
    with info.value as e:
        assert e.code == 401
    for method in ("POST", "DELETE", "PUT"):
        status, data = _post(proxy + "/v1/models/a", b"{}", method=method)
        assert status == 405 and data["error"]["code"] == "method_not_allowed"
    with openai.OpenAI(base_url=proxy + "/v1", api_key=MASTER, max_retries=0) as ok:
        assert ok.models.retrieve("a").id == "a"


def test_single_model_endpoint_follows_the_keys_scope(proxy: str) -> None:
    status, made = _post(proxy + "/admin/keys", json.dumps({"models": ["a"]}).encode())
    assert status == 201
    with openai.OpenAI(base_url=proxy + "/v1", api_key=made["key"], max_retries=0) as c:
        assert c.models.retrieve("a").id == "a"
        with pytest.raises(openai.NotFoundError):
            c.models.retrieve("b")


@pytest.mark.parametrize(
    "base",
    [
        "http://",
        "http:///v1",
        "http://exa mple.com/v1",
        "http://host:abc/v1",
        "http://host:70000/v1",
        "https://[::1/v1",
        "http://a\x00b/v1",
        "http://127.0.0.1:9/v1?x=1",
        "http://user:hunter2@127.0.0.1:x/v1",
    ],
)
def test_bad_api_base_is_a_config_problem_at_load(base: str) -> None:
    cfg = {"model_list": [{"model_name": "a", "type": "openai", "model": "m", "api_base": base}]}
    with pytest.raises(ConfigError) as info:
        load(cfg)
    assert [p.path for p in info.value.problems] == ["model_list[0].api_base"]
    assert "hunter2" not in str(info.value)


def test_good_api_bases_still_load() -> None:
    # Userinfo is HTTP Basic auth for a self-hosted server (sent as a header, scrubbed from
    # every error: tests/test_upstream_secrets.py).
    for base in ("http://127.0.0.1:9/v1", "https://api.example.com", "http://[::1]:8080/x/",
                 "http://user:hunter2@127.0.0.1:9/v1"):  # fmt: skip
        dep = {"model_name": "a", "type": "openai", "model": "m", "api_base": base}
        assert load({"model_list": [dep]}).deployments["a"][0].api_base == base.rstrip("/")


def test_the_limits_match_the_schema() -> None:
    from routeguard import schema

    assert (schema.MAX_DEPTH, schema.MAX_TOKENS) == (MAX_DEPTH, MAX_TOKENS)


def _depth(v: Any) -> int:
    if isinstance(v, dict):
        return 1 + max(map(_depth, v.values()), default=0)
    if isinstance(v, list):
        return 1 + max(map(_depth, v), default=0)
    return 0


_text = st.text(alphabet=st.sampled_from('ab"\\/[]{}\n\t\u00e9\u2028\U0001f600 tfnu'), max_size=8)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=40,
)


@settings(max_examples=400, deadline=None)
@given(value=_json, limit=st.integers(0, 12), indent=st.booleans())
def test_byte_level_nesting_check_equals_the_depth_of_the_value(
    value: Any, limit: int, indent: bool
) -> None:
    from routeguard.schema import nesting_exceeds

    body = json.dumps(value, indent=1 if indent else None, ensure_ascii=indent).encode()
    assert nesting_exceeds(body, limit) == (_depth(value) > limit)

"""Upstream error text never hands a caller (or a log line) a credential or an internal host.

Through the proxy, with the official SDKs as clients and the simulated upstream as a
careless upstream: a wrong deployment key it repeats ("Incorrect API key provided: ..."),
error bodies echoing the request headers (``echo-headers``: the deployment's
``Authorization``/``x-api-key``/``x-goog-api-key`` and the upstream host), and an
``api_base`` with credentials in its userinfo that cannot be reached. Callers get status,
type and a safe message; logs get what upstream said, with every secret masked.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from ports import free_port
from routeguard import scrub
from routeguard.config import Secret
from routeguard.errors import UpstreamAuthError, UpstreamBadRequest
from routeguard.gateway import Gateway
from routeguard.mock import BAD_KEY, MockServer
from routeguard.providers import gemini
from routeguard.providers import openai as openai_provider
from routeguard.server import create_app
from routeguard.server.thread import ServerThread

MASTER = "sk-master-routeguard-7f3a9c"
OPENAI_KEY = "sk-proj-TESTSECRET0123456789abcdef"
ANTHROPIC_KEY = "configured-anthropic-credential-42"  # not key-shaped: masked as configured
GEMINI_KEY = "AIzaSyTESTSECRET0123456789abcdefghijk"
PASSWORD = "hunter2-userinfo-pass"
SECRETS = (MASTER, OPENAI_KEY, ANTHROPIC_KEY, GEMINI_KEY, PASSWORD, BAD_KEY)


@pytest.fixture(scope="module")
def proxy(mock: MockServer) -> Iterator[tuple[str, str]]:
    """(proxy URL, the closed port the userinfo deployment points at)."""
    closed = free_port()

    def dep(alias: str, kind: str, model: str, key: str, **extra: Any) -> dict[str, Any]:
        base = mock.url + ("/v1" if kind == "openai" else "")
        return {"model_name": alias, "type": kind, "model": model, "api_key": key,
                "api_base": base, **extra}  # fmt: skip

    cfg = {
        "model_list": [
            dep("wrong-key", "openai", "sim", BAD_KEY),
            dep("echo-400", "openai", "sim-error-400-echo-headers", OPENAI_KEY),
            dep("echo-503", "openai", "sim-error-503-echo-headers", OPENAI_KEY),
            dep("anthropic-400", "anthropic", "claude-error-400-echo-headers", ANTHROPIC_KEY),
            dep("anthropic-529", "anthropic", "claude-error-529-echo-headers", ANTHROPIC_KEY),
            dep("gemini-429", "gemini", "gemini-error-429-echo-headers", GEMINI_KEY),
            dep(
                "userinfo",
                "openai",
                "sim",
                OPENAI_KEY,
                api_base=f"http://admin:{PASSWORD}@127.0.0.1:{closed}/v1",
            ),
        ],
        "router_settings": {"num_retries": 0, "allowed_fails": 1000},
        "server": {"master_key": MASTER},
    }
    with ServerThread(create_app(Gateway.from_config(cfg))) as srv:
        yield srv.url, str(closed)


def _assert_clean(text: str, mock: MockServer, closed: str) -> None:
    for secret in SECRETS:
        assert secret not in text
    assert "Bearer sk" not in text
    # Internal addresses: neither the simulated upstream's nor the unreachable one.
    assert f":{mock.port}" not in text and f":{closed}" not in text
    assert "127.0.0.1" not in text


@pytest.mark.parametrize(
    ("alias", "status"),
    [
        ("wrong-key", 503),
        ("echo-400", 400),
        ("echo-503", 503),
        ("anthropic-400", 400),
        ("anthropic-529", 503),
        ("gemini-429", 429),
        ("userinfo", 503),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_callers_read_status_type_and_a_safe_message(
    proxy: tuple[str, str],
    mock: MockServer,
    caplog: pytest.LogCaptureFixture,
    alias: str,
    status: int,
    stream: bool,
) -> None:
    url, closed = proxy
    with (
        caplog.at_level(logging.INFO),
        openai.OpenAI(base_url=url + "/v1", api_key=MASTER, max_retries=0) as client,
        pytest.raises(openai.APIStatusError) as info,
    ):
        client.chat.completions.create(
            model=alias,
            messages=[{"role": "user", "content": "hello"}],
            stream=stream,
        )
    err = info.value
    assert err.status_code == status
    body: Any = err.body
    assert body["type"] and body["message"]
    _assert_clean(err.response.text, mock, closed)
    if status == 400:  # the caller's own request was refused: it reads why
        assert "nvalid request" in body["message"]
        assert "[request headers:" in body["message"]  # the echo, with its secrets masked
    else:
        assert len(body["attempts"]) == 1
    # The operator's log says what upstream said and where, with every secret masked.
    _assert_secrets_out_of(caplog.text)
    assert alias in caplog.text


def _assert_secrets_out_of(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text
    assert "Bearer sk" not in text


def test_the_wrong_key_is_named_in_the_log_not_to_callers(
    proxy: tuple[str, str], mock: MockServer, caplog: pytest.LogCaptureFixture
) -> None:
    url, _ = proxy
    with (
        caplog.at_level(logging.INFO),
        openai.OpenAI(base_url=url + "/v1", api_key=MASTER, max_retries=0) as client,
        pytest.raises(openai.APIStatusError) as info,
    ):
        client.chat.completions.create(
            model="wrong-key", messages=[{"role": "user", "content": "hi"}]
        )
    assert "Incorrect API key" not in info.value.response.text
    assert "credentials" in info.value.response.text
    assert f"Incorrect API key provided: {scrub.MASK}" in caplog.text
    assert f"admin:{PASSWORD}" not in caplog.text


def test_anthropic_clients_read_the_same_safe_errors(
    proxy: tuple[str, str], mock: MockServer
) -> None:
    url, closed = proxy
    with anthropic.Anthropic(base_url=url, api_key=MASTER, max_retries=0) as client:
        for alias in ("anthropic-400", "anthropic-529", "userinfo"):
            with pytest.raises(anthropic.APIStatusError) as info:
                client.messages.create(
                    model=alias, max_tokens=10, messages=[{"role": "user", "content": "hi"}]
                )
            _assert_clean(info.value.response.text, mock, closed)
            assert json.loads(info.value.response.text)["type"] == "error"


def test_scrub_masks_configured_secrets_and_key_shapes() -> None:
    scrub.remember("a-configured-value-xyz")
    text = (
        "Authorization: Bearer sk-live-abcdefgh1234; x-api-key: anykindofvalue; "
        '{"x-goog-api-key": "whatever-it-is"} url=https://user:pw123@host.example/v1?key=AIzaB '
        "aws AKIAIOSFODNN7EXAMPLE gkey AIzaSyA0123456789012345678901234567890 "
        "echo a-configured-value-xyz sk-ant-api03-abcdefghij Bearer abcdef123456"
    )
    clean = scrub.scrub(text)
    for leaked in (
        "sk-live-abcdefgh1234",
        "anykindofvalue",
        "whatever-it-is",
        "pw123",
        "AIzaB",
        "AKIAIOSFODNN7EXAMPLE",
        "AIzaSyA0123456789012345678901234567890",
        "a-configured-value-xyz",
        "sk-ant-api03-abcdefghij",
        "abcdef123456",
    ):
        assert leaked not in clean
    assert "host.example" in clean  # scrub() is for logs: hosts stay; for_caller() hides them
    prose = "no master key: the proxy accepts any bearer token; max_tokens: 12"
    assert scrub.scrub(prose) == prose


def test_for_caller_hides_upstream_hosts_as_whole_names() -> None:
    scrub.remember_upstream("http://svc:pw-abcdef@gpu7.internal:8080/v1")
    scrub.remember_upstream("http://x/v1")  # too short a name to mask anywhere
    text = "from gpu7.internal:8080 (gpu7.internal) not gpu7.internals; x marks pw-abcdef"
    assert scrub.for_caller(text) == (
        "from <upstream> (<upstream>) not gpu7.internals; x marks ***"
    )
    assert scrub.safe_url("http://svc:pw@gpu7.internal:8080/v1?key=k") == (
        "http://gpu7.internal:8080"
    )
    assert scrub.scrub("prompt is too long: 208310 tokens > 200000 maximum") == (
        "prompt is too long: 208310 tokens > 200000 maximum"
    )


def test_upstream_bodies_are_scrubbed_on_the_error() -> None:
    body = {"error": {"message": f"bad header Authorization: Bearer {OPENAI_KEY}", "code": None}}
    err = openai_provider.ERRORS.from_body(400, body)
    assert isinstance(err, UpstreamBadRequest)
    assert OPENAI_KEY not in json.dumps(err.body) and OPENAI_KEY not in err.message
    assert OPENAI_KEY not in err.detail and "bad header" in err.message


def test_gemini_invalid_key_is_a_deployment_fault_not_the_callers() -> None:
    body = {
        "error": {
            "code": 400,
            "message": "API key not valid. Please pass a valid API key.",
            "status": "INVALID_ARGUMENT",
            "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                         "reason": "API_KEY_INVALID"}],
        }
    }  # fmt: skip
    err = gemini.ERRORS.from_body(400, body)
    assert isinstance(err, UpstreamAuthError) and err.fallback_ok


def test_log_records_and_tracebacks_are_scrubbed() -> None:
    Secret(BAD_KEY)  # configured: registered for scrubbing by being a Secret
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("test.scrub.handlers")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        scrub.guard_handlers(logger)
        try:
            raise RuntimeError(f"upstream said Authorization: Bearer {OPENAI_KEY}")
        except RuntimeError:
            logger.exception("calling %s with key %s failed", "http://u:pw-123456@h/v1", BAD_KEY)
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert "RuntimeError" in out and "failed" in out
    for leaked in (OPENAI_KEY, BAD_KEY, "pw-123456"):
        assert leaked not in out

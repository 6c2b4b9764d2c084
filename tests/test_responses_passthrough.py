"""``POST /v1/responses`` passed through to OpenAI and Azure deployments: the official openai
SDK (``responses.create``, ``responses.stream``) -> the proxy -> the simulated upstream's own
Responses API. The body reaches the upstream as sent (the deployment's model), the answer and
its events come back unchanged (reasoning items, built-in tools, ``previous_response_id``,
``store``), while budgets, fallback (translating to a chat-only deployment, or a 400 naming
what cannot be translated), enforcement of function calls and the cache still apply."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pydantic
import pytest
from openai.types.responses import Response, ResponseStreamEvent

from policies import PAYMENTS
from routeguard.budget.keys import KeySpec
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.server import create_app
from routeguard.server.thread import ServerThread
from serving import serve

EVENT: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ResponseStreamEvent)


def _pay(recipient: str) -> list[Any]:
    schema = {"type": "object", "properties": {"recipient": {"type": "string", "const": recipient}},
              "required": ["recipient"]}  # fmt: skip
    return [{"type": "function", "name": "send_money", "parameters": schema}]


def _config(base: str, policy: Path) -> dict[str, Any]:
    price = {"input_cost_per_mtok": 1000.0, "output_cost_per_mtok": 2000.0, "api_key": "k"}
    models = [
        {"model_name": "oa", "type": "openai", "model": "sim-oa", "api_base": base + "/v1"},
        {"model_name": "az", "type": "azure", "model": "dep-v1", "api_base": base,
         "api_version": "v1"},
        {"model_name": "az-dated", "type": "azure", "model": "dep-dated", "api_base": base,
         "api_version": "2025-04-01-preview"},
        {"model_name": "an", "type": "anthropic", "model": "sim-an", "api_base": base},
        {"model_name": "down", "type": "openai", "model": "sim-error-503",
         "api_base": base + "/v1"},
    ]  # fmt: skip
    return {
        "model_list": [{**m, **price} for m in models],
        "fallbacks": {"down": ["an"]},
        "routes": {"safe": {"mode": "pinned", "target": "oa"}},
        "enforce": {"policy": str(policy)},
        "router_settings": {"num_retries": 0},
        "server": {"master_key": "sk-master"},
    }


@pytest.fixture(scope="module")
def gateway(mock: MockServer, tmp_path_factory: pytest.TempPathFactory) -> Gateway:
    policy = tmp_path_factory.mktemp("policy") / "policy.yaml"
    policy.write_text(PAYMENTS)
    return Gateway.from_config(_config(mock.url, policy))


@pytest.fixture(scope="module")
def proxy(gateway: Gateway) -> Iterator[str]:
    with ServerThread(create_app(gateway)) as server:
        yield server.url


@pytest.fixture
def oai(proxy: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=proxy + "/v1", api_key="sk-master", max_retries=0) as c:
        yield c


def _raw_stream(url: str, body: Any) -> list[Any]:
    """The events of a raw streamed answer, each validated against the SDK's types."""
    req = urllib.request.Request(
        url + "/v1/responses",
        data=json.dumps({**body, "stream": True}).encode(),
        headers={"content-type": "application/json", "authorization": "Bearer sk-master"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        raw = r.read().decode()
    out = []
    for frame in raw.split("\n\n"):
        if frame.strip():
            name, data = frame.split("\n", 1)
            event = EVENT.validate_python(json.loads(data.removeprefix("data: ")))
            assert name == f"event: {event.type}"
            out.append(event)
    return out


# --------------------------------------------------------------------------- as OpenAI defines it


def test_body_reaches_openai_as_sent(oai: openai.OpenAI, mock: MockServer) -> None:
    mock.reset()
    tools: Any = [{"type": "web_search"}, *_pay("GB1")]
    raw = oai.responses.with_raw_response.create(
        model="oa", input="hello", tools=tools, store=True, reasoning={"effort": "low"},
        include=["reasoning.encrypted_content"], metadata={"run": "p1"},
    )  # fmt: skip
    resp = raw.parse()
    (sent,) = mock.requests
    assert sent.path == "/v1/responses" and sent.body["model"] == "sim-oa"
    assert sent.body["tools"] == tools and sent.body["store"] is True
    assert sent.body["include"] == ["reasoning.encrypted_content"]
    assert [o.type for o in resp.output] == ["reasoning", "function_call"]
    assert resp.output[0].encrypted_content  # type: ignore[union-attr]
    assert resp.usage is not None and resp.usage.output_tokens_details.reasoning_tokens > 0
    assert raw.headers["x-routeguard-deployment"] == "oa#0"
    assert float(raw.headers["x-routeguard-overhead-ms"]) >= 0


def test_previous_response_id_continues_the_stored_conversation(oai: openai.OpenAI) -> None:
    first = oai.responses.create(model="oa", input="Remember the word falcon.")
    second = oai.responses.create(model="oa", input="Which word?", previous_response_id=first.id)
    assert second.previous_response_id == first.id
    assert first.usage is not None and second.usage is not None
    # The upstream read the stored turn: more input than the new message alone.
    alone = oai.responses.create(model="oa", input="Which word?", store=False)
    assert alone.usage is not None and second.usage.input_tokens > alone.usage.input_tokens
    with pytest.raises(openai.BadRequestError) as info:
        oai.responses.create(model="oa", input="x", previous_response_id="resp_unknown")
    assert "not found" in info.value.message  # OpenAI's own answer, relayed


def test_stream_through_the_sdk_helper(oai: openai.OpenAI) -> None:
    whole = oai.responses.create(model="oa", input="stream me please", store=False)
    with oai.responses.stream(model="oa", input="stream me please", store=False) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds
    assert final.output_text == whole.output_text
    assert final.usage is not None and whole.usage is not None
    assert final.usage.output_tokens == whole.usage.output_tokens


def test_events_relayed_unchanged(proxy: str, mock: MockServer) -> None:
    body = {"model": "oa", "input": "count my events", "reasoning": {"effort": "low"}}
    events = _raw_stream(proxy, body)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].response.output[0].type == "reasoning"
    assert mock.requests[-1].body["stream"] is True


AZURE = [("az", "/openai/v1/responses", "dep-v1"), ("az-dated", "/openai/responses", "dep-dated")]


@pytest.mark.parametrize(("alias", "path", "model"), AZURE)
def test_azure_passthrough(
    oai: openai.OpenAI, mock: MockServer, alias: str, path: str, model: str
) -> None:
    mock.reset()
    resp = oai.responses.create(model=alias, input="hello azure")
    with oai.responses.stream(model=alias, input="hello azure") as stream:
        final = stream.get_final_response()
    assert final.output_text == resp.output_text
    sent = mock.requests[0]
    assert (sent.path, sent.body["model"]) == (path, model)
    assert ("api-version" in sent.query) == (alias == "az-dated")


# --------------------------------------------------------------------------- the layers


def test_budget_settled_from_responses_usage(gateway: Gateway, proxy: str) -> None:
    key, rec = gateway.keys.create(KeySpec(max_budget=100.0, models=["oa"]))
    with openai.OpenAI(base_url=proxy + "/v1", api_key=key, max_retries=0) as c:
        resp = c.responses.create(model="oa", input="charge me")
        with c.responses.stream(model="oa", input="charge me") as stream:
            streamed = stream.get_final_response()
    req = urllib.request.Request(
        f"{proxy}/admin/keys/{rec.key_id}", headers={"authorization": "Bearer sk-master"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        body = json.loads(r.read())
    expected = 0.0
    for u in (resp.usage, streamed.usage):
        assert u is not None
        expected += (u.input_tokens * 1000 + u.output_tokens * 2000) / 1e6
    assert body["spend"] == pytest.approx(expected, rel=1e-6)
    assert body["reserved"] == pytest.approx(0.0, abs=1e-9)  # every hold settled


def test_fallback_to_a_chat_only_deployment_translates(oai: openai.OpenAI) -> None:
    raw = oai.responses.with_raw_response.create(model="down", input="hello")
    assert raw.headers["x-routeguard-model"] == "an" and raw.headers["x-routeguard-attempts"] == "2"
    assert raw.parse().output_text.startswith("Simulated answer from sim-an")
    with oai.responses.stream(model="down", input="hello") as stream:
        final = stream.get_final_response()
    assert final.output_text == raw.parse().output_text


@pytest.mark.parametrize(
    ("extra", "param", "fragment"),
    [
        ({"previous_response_id": "STORED"}, "previous_response_id", "stored upstream"),
        ({"tools": [{"type": "web_search"}]}, "tools", "built-in tools ('web_search')"),
    ],
)
def test_untranslatable_feature_on_a_chat_fallback_is_a_400(
    oai: openai.OpenAI, proxy: str, extra: dict[str, Any], param: str, fragment: str
) -> None:
    if extra.get("previous_response_id") == "STORED":  # one the OpenAI side does know
        extra = {"previous_response_id": oai.responses.create(model="oa", input="hi").id}
    for stream in (False, True):
        body = json.dumps({"model": "down", "input": "hi", "stream": stream, **extra}).encode()
        req = urllib.request.Request(proxy + "/v1/responses", data=body, headers={
            "content-type": "application/json", "authorization": "Bearer sk-master"})  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=10)
        with info.value as e:
            assert e.code == 400
            err = json.loads(e.read())["error"]
        assert err["param"] == param and fragment in err["message"], err
        assert "an#0" in err["message"] and "serves chat only" in err["message"]


def test_denied_function_call_is_replaced_by_a_note(oai: openai.OpenAI) -> None:
    bad = oai.responses.create(model="safe", input="pay", tools=_pay("US123"), store=False)
    assert [o.type for o in bad.output] == ["message"]
    assert "no-us-transfers" in bad.output_text
    ok = oai.responses.create(model="safe", input="pay", tools=_pay("GB123"), store=False)
    assert [o.type for o in ok.output] == ["function_call"]
    assert json.loads(ok.output[0].arguments) == {"recipient": "GB123"}  # type: ignore[union-attr]


def test_denied_streamed_function_call_is_replaced_by_a_note(proxy: str) -> None:
    events = _raw_stream(proxy, {"model": "safe", "input": "pay", "tools": _pay("US9")})
    kinds = [e.type for e in events]
    assert "response.function_call_arguments.delta" not in kinds
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = events[-1].response
    assert [o.type for o in final.output] == ["message"] and "no-us-transfers" in final.output_text
    ok = _raw_stream(proxy, {"model": "safe", "input": "pay", "tools": _pay("GB9")})
    done = [e for e in ok if e.type == "response.function_call_arguments.done"]
    assert len(done) == 1 and json.loads(done[0].arguments) == {"recipient": "GB9"}
    assert ok[-1].response.output[0].type == "function_call"


def test_cache_keeps_a_passed_through_answer_in_chat_form(mock: MockServer) -> None:
    cfg = {"model_list": [{"model_name": "oa", "type": "openai", "model": "sim-oa",
                           "api_base": mock.url + "/v1", "api_key": "k"}],
           "cache": {"enabled": True}}  # fmt: skip
    from embedders import WideWordsEmbedder

    gw = Gateway.from_config(cfg, embedder=WideWordsEmbedder())
    with (
        ServerThread(create_app(gw)) as server,
        openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) as c,
    ):
        first = c.responses.with_raw_response.create(model="oa", input="cache this one")
        again = c.responses.with_raw_response.create(model="oa", input="cache this one")
        stateful = c.responses.with_raw_response.create(
            model="oa", input="cache this one", previous_response_id=first.parse().id
        )
    assert first.headers["x-routeguard-cache"] == "miss"
    assert again.headers["x-routeguard-cache"] == "hit"
    assert again.parse().output_text == first.parse().output_text
    assert again.parse().store is False  # served here: not in OpenAI's store
    assert stateful.headers["x-routeguard-cache"] == "off"  # a stored turn: never from cache


# --------------------------------------------------------------------------- through serve


def test_default_config_under_serve() -> None:
    with (
        serve() as served,
        openai.OpenAI(base_url=served.url + "/v1", api_key="x", max_retries=0) as c,
    ):
        raw = c.responses.with_raw_response.create(model="gpt-4o-mini", input="hello")
        resp = raw.parse()
        Response.model_validate(resp.model_dump())
        assert resp.output_text and raw.headers["x-routeguard-model"] == "gpt-4o-mini"
        nxt = c.responses.create(model="gpt-4o-mini", input="again", previous_response_id=resp.id)
        assert nxt.previous_response_id == resp.id
        with c.responses.stream(model="gpt-4o-mini", input="hello") as stream:
            final = stream.get_final_response()
        assert final.output_text == resp.output_text


def test_request_log_and_spend_record_a_passed_through_answer(
    mock: MockServer, tmp_path: Path
) -> None:
    cfg = {"model_list": [{"model_name": "oa", "type": "openai", "model": "sim-oa",
                           "api_base": mock.url + "/v1", "api_key": "k",
                           "input_cost_per_mtok": 1000.0, "output_cost_per_mtok": 2000.0}],
           "observability": {"request_log": str(tmp_path / "requests.jsonl"),
                             "log_content": True}}  # fmt: skip
    gw = Gateway.from_config(cfg)
    app = create_app(gw)
    with (
        ServerThread(app) as server,
        openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) as c,
    ):
        resp = c.responses.create(model="oa", input="pay", tools=_pay("GB1"))
    (entry,) = [json.loads(line) for line in (tmp_path / "requests.jsonl").read_text().splitlines()]
    assert entry["endpoint"] == "/v1/responses" and entry["deployment"] == "oa#0"
    assert entry["response"]["tool_calls"] == ["send_money"]
    assert entry["response"]["output"][0]["type"] == "function_call"
    assert resp.usage is not None
    cost = (resp.usage.input_tokens * 1000 + resp.usage.output_tokens * 2000) / 1e6
    assert entry["cost_usd"] == pytest.approx(cost, rel=1e-6)


def test_compatible_servers_are_translated_unless_they_say_otherwise(mock: MockServer) -> None:
    from routeguard import config as config_mod

    base = mock.url + "/v1"
    cfg = config_mod.load({"model_list": [
        {"model_name": "vllm", "litellm_params": {"model": "hosted_vllm/sim", "api_base": base}},
        {"model_name": "vllm-r", "litellm_params": {"model": "hosted_vllm/sim", "api_base": base,
                                                    "responses_api": True}},
        {"model_name": "oa", "litellm_params": {"model": "openai/sim", "api_base": base,
                                                "api_key": "k"}},
    ]})  # fmt: skip
    assert [cfg.deployments[a][0].responses_api for a in ("vllm", "vllm-r", "oa")] == [
        False, True, True]  # fmt: skip
    gw = Gateway(cfg)
    with (
        ServerThread(create_app(gw)) as server,
        openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) as c,
    ):
        for alias, path in (("vllm", "/v1/chat/completions"), ("vllm-r", "/v1/responses")):
            mock.reset()
            assert c.responses.create(model=alias, input="hello").output_text
            assert [r.path for r in mock.requests] == [path]


@pytest.mark.parametrize("token", ["truncate", "no-usage"])
def test_broken_or_usage_less_stream_still_settles(mock: MockServer, token: str) -> None:
    """A passed-through stream cut before its final event ends in ``response.failed``; one
    whose final response has no usage is charged an estimate; both settle their hold."""
    cfg = {"model_list": [{"model_name": "x", "type": "openai", "model": f"sim-{token}",
                           "api_base": mock.url + "/v1", "api_key": "k",
                           "input_cost_per_mtok": 1000.0, "output_cost_per_mtok": 2000.0}],
           "server": {"master_key": "sk-master"}}  # fmt: skip
    gw = Gateway.from_config(cfg)
    key, rec = gw.keys.create(KeySpec(max_budget=100.0))
    with ServerThread(create_app(gw)) as server:
        req = urllib.request.Request(
            server.url + "/v1/responses",
            data=json.dumps({"model": "x", "input": "hi", "stream": True}).encode(),
            headers={"content-type": "application/json", "authorization": f"Bearer {key}"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            frames = [f for f in r.read().decode().split("\n\n") if f.strip()]
        events = [EVENT.validate_python(json.loads(f.split("\n", 1)[1][6:])) for f in frames]
        admin = urllib.request.Request(
            f"{server.url}/admin/keys/{rec.key_id}", headers={"authorization": "Bearer sk-master"}
        )
        with urllib.request.urlopen(admin, timeout=10) as r:
            body = json.loads(r.read())
    if token == "truncate":
        assert events[-1].type == "response.failed" and events[-1].response.error is not None
    else:
        assert events[-1].type == "response.completed" and events[-1].response.usage is None
    assert body["spend"] > 0 and body["reserved"] == pytest.approx(0.0, abs=1e-9)

"""``POST /v1/responses`` end to end: the official openai SDK (and the OpenAI Agents SDK's
default model class) -> the proxy -> the simulated upstream in each wire format. Plain and
streamed answers (every raw event validated against the SDK's types), function tools and
their results, structured output, budgets on a virtual key, a routed alias, mid-stream
failures and 400s that name the field."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pydantic
import pytest
from openai.types.responses import Response, ResponseStreamEvent

from embedders import WideWordsEmbedder
from routeguard.budget.keys import KeySpec
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.server import create_app
from routeguard.server.thread import ServerThread

FORMATS = ["oa", "an", "ge"]
KINDS = {"oa": "openai", "an": "anthropic", "ge": "gemini"}
EVENT: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ResponseStreamEvent)
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
QUESTION = "What is the capital of France?"


class City(pydantic.BaseModel):
    name: str
    population: int
    landmarks: list[str]


def _dep(alias: str, kind: str, model: str, base: str) -> dict[str, Any]:
    return {"model_name": alias, "type": kind, "model": model,
            "api_base": base + ("/v1" if kind == "openai" else ""), "api_key": "k",
            "input_cost_per_mtok": 1000.0, "output_cost_per_mtok": 2000.0}  # fmt: skip


def _config(base: str, **extra: Any) -> dict[str, Any]:
    models = [_dep(a, k, f"sim-{a}", base) for a, k in KINDS.items()]
    models += [_dep(f"mid-{a}", k, "midstream-error", base) for a, k in KINDS.items()]
    routes = {"smart": {"mode": "routed", "cheap": "oa", "strong": "an", "threshold": -1.0,
                        "rules": [{"name": "easy", "regex": "(?i)\\beasy\\b",
                                   "target": "cheap"}]}}  # fmt: skip
    return {"model_list": models, "routes": routes,
            "router_settings": {"num_retries": 0}, **extra}  # fmt: skip


@pytest.fixture(scope="module")
def proxy(mock: MockServer) -> Iterator[str]:
    gw = Gateway.from_config(_config(mock.url), embedder=WideWordsEmbedder())
    with ServerThread(create_app(gw)) as server:
        yield server.url


@pytest.fixture
def oai(proxy: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=proxy + "/v1", api_key="any", max_retries=0) as c:
        yield c


def _post(url: str, body: Any) -> tuple[int, bytes]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read()


def _events(raw: bytes) -> list[Any]:
    """Every SSE event of a raw Responses stream, validated against the SDK's types; each
    frame's ``event:`` line names its type."""
    out = []
    for frame in raw.decode().split("\n\n"):
        if not frame.strip():
            continue
        name, data = frame.split("\n", 1)
        event = EVENT.validate_python(json.loads(data.removeprefix("data: ")))
        assert name == f"event: {event.type}"
        out.append(event)
    return out


# --------------------------------------------------------------------------- answers


@pytest.mark.parametrize("fmt", FORMATS)
def test_create_plain_matches_chat(oai: openai.OpenAI, proxy: str, fmt: str) -> None:
    resp = oai.responses.create(model=fmt, input=QUESTION, instructions="Be brief.",
                                metadata={"run": "t1"}, store=False)  # fmt: skip
    chat = oai.chat.completions.create(
        model=fmt,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": QUESTION},
        ],
    )
    assert resp.output_text == chat.choices[0].message.content
    assert resp.output_text.startswith(f"Simulated answer from sim-{fmt}:")
    # Passed through to OpenAI: the upstream's model name, as on chat; translated: the alias.
    model = f"sim-{fmt}" if fmt == "oa" else fmt
    assert (resp.status, resp.model, resp.instructions) == ("completed", model, "Be brief.")
    assert resp.metadata == {"run": "t1"}
    assert resp.usage is not None and chat.usage is not None
    assert resp.usage.input_tokens == chat.usage.prompt_tokens
    assert resp.usage.output_tokens == chat.usage.completion_tokens
    assert resp.usage.total_tokens == chat.usage.total_tokens
    status, raw = _post(proxy + "/v1/responses", {"model": fmt, "input": QUESTION})
    assert status == 200
    Response.model_validate_json(raw, strict=False)  # every required field, right types


@pytest.mark.parametrize("fmt", ["oa", "an"])
def test_input_items_and_parameters_reach_upstream(
    oai: openai.OpenAI, mock: MockServer, fmt: str
) -> None:
    mock.reset()
    items: Any = [
        {"role": "developer", "content": "dev note"},
        {"role": "user", "content": [{"type": "input_text", "text": "first"}]},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "reply", "annotations": []}],
        },
        {"role": "user", "content": "second"},
    ]
    resp = oai.responses.create(
        model=fmt,
        instructions="sys",
        input=items,
        max_output_tokens=3,
        temperature=0.5,
        top_p=0.9,
    )
    assert resp.status == "incomplete"
    assert resp.incomplete_details is not None
    assert resp.incomplete_details.reason == "max_output_tokens"
    assert resp.usage is not None and resp.usage.output_tokens == 3
    sent = mock.requests[-1].body
    if fmt == "oa":  # passed through: the body as sent, the deployment's model
        assert mock.requests[-1].path == "/v1/responses"
        assert (sent["model"], sent["instructions"], sent["input"]) == ("sim-oa", "sys", items)
        assert (sent["max_output_tokens"], sent["temperature"], sent["top_p"]) == (3, 0.5, 0.9)
        return
    assert sent["system"] == "sys\n\ndev note"  # translated: Anthropic's system prompt
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert (sent["max_tokens"], sent["temperature"], sent["top_p"]) == (3, 0.5, 0.9)


@pytest.mark.parametrize("fmt", FORMATS)
def test_stream_events_and_text_match_non_stream(oai: openai.OpenAI, proxy: str, fmt: str) -> None:
    whole = oai.responses.create(model=fmt, input=QUESTION)
    events = list(oai.responses.create(model=fmt, input=QUESTION, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:5] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added",
                         "response.output_text.delta"]  # fmt: skip
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.completed"]  # fmt: skip
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == whole.output_text
    done = events[-1]
    assert done.type == "response.completed"
    assert done.response.output_text == text
    assert done.response.usage is not None and whole.usage is not None
    assert done.response.usage.output_tokens == whole.usage.output_tokens
    status, raw = _post(proxy + "/v1/responses", {"model": fmt, "input": QUESTION, "stream": True})
    assert status == 200
    assert [e.type for e in _events(raw)] == kinds
    with oai.responses.stream(model=fmt, input=QUESTION) as stream:  # the SDK's accumulator
        assert stream.get_final_response().output_text == whole.output_text


@pytest.mark.parametrize("fmt", FORMATS)
def test_function_tool_round_trip(oai: openai.OpenAI, fmt: str) -> None:
    first = oai.responses.create(model=fmt, input="Weather in Paris?", tools=[WEATHER])
    calls = [o for o in first.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments) == {"city": "example"}
    assert first.tools[0].type == "function" and first.tools[0].name == "get_weather"
    history: Any = [
        {"role": "user", "content": "Weather in Paris?"},
        *[o.model_dump(exclude_none=True) for o in first.output],
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny, 21C"},
    ]
    second = oai.responses.create(model=fmt, input=history, tools=[WEATHER])
    assert "the tool get_weather returned" in second.output_text  # Gemini wraps it: {"output":...}
    assert "sunny, 21C" in second.output_text
    assert not [o for o in second.output if o.type == "function_call"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_streamed_function_call(oai: openai.OpenAI, proxy: str, fmt: str) -> None:
    body = {"model": fmt, "input": "Weather?", "tools": [WEATHER], "stream": True}
    status, raw = _post(proxy + "/v1/responses", body)
    assert status == 200
    events = _events(raw)
    kinds = [e.type for e in events]
    assert "response.function_call_arguments.delta" in kinds
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert len(done) == 1 and done[0].arguments == args
    assert json.loads(args) == {"city": "example"}
    final = events[-1]
    assert final.type == "response.completed"
    assert [(o.type, o.arguments) for o in final.response.output] == [("function_call", args)]
    with oai.responses.stream(model=fmt, input="Weather?", tools=[WEATHER]) as stream:
        out = stream.get_final_response().output
    assert out[0].type == "function_call" and out[0].arguments == args


@pytest.mark.parametrize("fmt", ["oa", "ge"])
def test_responses_parse_with_a_pydantic_model(oai: openai.OpenAI, fmt: str) -> None:
    parsed = oai.responses.parse(model=fmt, input="Describe Paris", text_format=City)
    assert isinstance(parsed.output_parsed, City)
    assert parsed.text is not None and parsed.text.format is not None
    assert parsed.text.format.type == "json_schema"


def test_json_object_format(oai: openai.OpenAI) -> None:
    resp = oai.responses.create(model="oa", input="JSON please",
                                text={"format": {"type": "json_object"}})  # fmt: skip
    assert isinstance(json.loads(resp.output_text)["answer"], str)


def test_structured_output_reaches_anthropic_as_a_forced_tool(oai: openai.OpenAI) -> None:
    parsed = oai.responses.parse(model="an", input="Describe Paris", text_format=City)
    assert isinstance(parsed.output_parsed, City)


@pytest.mark.parametrize("fmt", ["an", "ge"])
def test_midstream_failure_ends_with_response_failed(proxy: str, fmt: str) -> None:
    body = {"model": f"mid-{fmt}", "input": "hi", "stream": True}
    status, raw = _post(proxy + "/v1/responses", body)
    assert status == 200
    events = _events(raw)
    assert events[0].type == "response.created"
    assert events[-1].type == "response.failed"
    assert events[-1].response.error is not None
    assert events[-1].response.status == "failed"


def test_midstream_error_event_from_openai_is_relayed(proxy: str) -> None:
    body = {"model": "mid-oa", "input": "hi", "stream": True}
    status, raw = _post(proxy + "/v1/responses", body)
    events = _events(raw)
    assert status == 200 and events[0].type == "response.created"
    assert events[-1].type == "error" and "midstream-error" in events[-1].message


# --------------------------------------------------------------------------- layers


def test_routed_alias_through_responses(oai: openai.OpenAI) -> None:
    raw = oai.responses.with_raw_response.create(model="smart", input="an easy one")
    assert raw.headers["x-routeguard-model"] == "oa"
    assert raw.headers["x-routeguard-route"].startswith("rule")
    assert raw.parse().output_text.startswith("Simulated answer from sim-oa:")
    raw = oai.responses.with_raw_response.create(model="smart", input="a hard question")
    assert raw.headers["x-routeguard-model"] == "an"
    assert raw.parse().model == "smart"


def test_budget_charged_on_a_virtual_key(mock: MockServer) -> None:
    gw = Gateway.from_config(_config(mock.url, server={"master_key": "sk-master"}),
                             embedder=WideWordsEmbedder())  # fmt: skip
    key, rec = gw.keys.create(KeySpec(max_budget=100.0, models=["oa"]))
    with ServerThread(create_app(gw)) as server:
        c = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
        with c:
            resp = c.responses.create(model="oa", input=QUESTION)
            streamed = list(c.responses.create(model="oa", input=QUESTION, stream=True))
            with pytest.raises(openai.NotFoundError):  # out of scope: as if missing
                c.responses.create(model="an", input=QUESTION)
        req = urllib.request.Request(
            f"{server.url}/admin/keys/{rec.key_id}", headers={"authorization": "Bearer sk-master"}
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            spend = json.loads(r.read())["spend"]
    assert resp.usage is not None
    one = (resp.usage.input_tokens * 1000 + resp.usage.output_tokens * 2000) / 1e6
    assert streamed[-1].type == "response.completed"
    assert spend == pytest.approx(2 * one, rel=1e-6)


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ({"model": "an"}, "input", "field required"),
        ({"model": "an", "input": 5}, "input", "expected a string or a list"),
        ({"input": "hi"}, "model", "field required"),
        ({"model": "an", "input": "hi", "previous_response_id": "resp_1"},
         "previous_response_id", "continues a conversation stored upstream"),
        ({"model": "an", "input": "hi", "conversation": "conv_1"}, "conversation",
         "continues a conversation stored upstream"),
        ({"model": "an", "input": "hi", "tools": [{"type": "web_search"}]},
         "tools", "built-in tools ('web_search') run on OpenAI's servers"),
        ({"model": "an", "input": [{"type": "item_reference", "id": "msg_1"}]},
         "input", "'item_reference' have no chat equivalent"),
        ({"model": "an", "input": [{"role": "tool", "content": "x"}]},
         "input[0].role", "expected one of"),
        ({"model": "an", "input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
         "input[0].call_id", "field required"),
        ({"model": "an", "input": "hi", "text": {"format": {"type": "json_schema"}}},
         "text.format.name", "field required"),
        ({"model": "an", "input": "hi", "max_output_tokens": "9"},
         "max_output_tokens", "expected an integer"),
        ({"model": "an", "input": "hi", "prompt": {"id": "pmpt_1"}},
         "prompt", "no chat equivalent"),
        ({"model": "an", "input": "hi", "background": True}, "background", "response store"),
        ({"model": "an", "input": [{"role": "user", "content": [{"type": "input_image",
                                                                  "file_id": "f"}]}]},
         "input[0].content[0].image_url", "data URL"),
    ],
)  # fmt: skip
def test_bad_input_is_a_400_naming_the_field(
    proxy: str, body: dict[str, Any], param: str, fragment: str
) -> None:
    status, raw = _post(proxy + "/v1/responses", body)
    assert status == 400
    err = json.loads(raw)["error"]
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param and fragment in err["message"]


def test_unknown_model_and_bad_json(proxy: str) -> None:
    status, raw = _post(proxy + "/v1/responses", {"model": "nope", "input": "hi"})
    assert status == 404 and json.loads(raw)["error"]["code"] == "model_not_found"
    status, raw = _post(proxy + "/v1/responses", b"{not json")
    assert status == 400 and "not valid JSON" in json.loads(raw)["error"]["message"]


def test_cache_serves_responses_whole_and_streamed(mock: MockServer) -> None:
    cfg = _config(mock.url, cache={"enabled": True})
    gw = Gateway.from_config(cfg, embedder=WideWordsEmbedder())
    with ServerThread(create_app(gw)) as server:
        c = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        with c:
            first = c.responses.with_raw_response.create(model="oa", input="cache me please")
            again = c.responses.with_raw_response.create(model="oa", input="cache me please")
            status, raw = _post(
                server.url + "/v1/responses",
                {"model": "oa", "input": "cache me please", "stream": True},
            )
    assert (first.headers["x-routeguard-cache"], again.headers["x-routeguard-cache"]) == (
        "miss",
        "hit",
    )
    text = first.parse().output_text
    assert again.parse().output_text == text
    events = _events(raw)
    assert status == 200 and events[-1].type == "response.completed"
    assert events[-1].response.output_text == text

"""Tool calls in model responses checked in the gateway (``enforce:`` config)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from routeguard.config import load
from routeguard.enforce import PolicyEngine
from routeguard.enforce.proxy import ResponseEnforcer, ToolCallsRefused
from routeguard.errors import ConfigError, EnforcementError
from routeguard.gateway import Gateway
from routeguard.mock import MockServer

POLICY = """
rules:
  - id: reads
    effect: allow
    action: {tool: "read_*"}
  - id: pay
    effect: allow
    action: {tool: send_money}
  - id: no-us-transfers
    effect: deny
    action: {tool: send_money}
    when: {args: {$.recipient: {glob: "US*"}}}
    reason: US transfers are blocked
  - id: mask
    effect: redact
    action: {tool: send_money}
    redact: [$.memo]
"""


def response(*calls: tuple[str, str], content: str | None = None) -> dict[str, Any]:
    return {
        "id": "r1",
        "choices": [{
            "index": 0, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": content, "tool_calls": [
                {"id": f"c{i}", "type": "function", "function": {"name": n, "arguments": a}}
                for i, (n, a) in enumerate(calls)
            ]},
        }],
    }  # fmt: skip


def test_denied_calls_are_removed_and_redactions_applied() -> None:
    enf = ResponseEnforcer(PolicyEngine.from_yaml(POLICY))
    resp = response(
        ("read_file", '{"path": "a"}'),
        ("send_money", '{"recipient": "US1", "amount": 5}'),
        ("send_money", '{"recipient": "GB1", "memo": "card 4111"}'),
    )
    out = enf.apply(resp, {"headers": {"x-routeguard-agent": "bot-1"}})
    calls = out["choices"][0]["message"]["tool_calls"]
    assert [c["id"] for c in calls] == ["c0", "c2"]
    assert '"[REDACTED]"' in calls[1]["function"]["arguments"]
    assert "rule 'no-us-transfers'" in out["choices"][0]["message"]["content"]
    assert out["choices"][0]["finish_reason"] == "tool_calls"
    assert resp["choices"][0]["message"]["tool_calls"][1]["id"] == "c1"  # input untouched
    assert "bot-1" in enf._guards


def test_all_removed_turns_into_a_stop() -> None:
    enf = ResponseEnforcer(PolicyEngine.from_yaml(POLICY))
    out = enf.apply(response(("delete_all", "{}"), ("x", "not json")), None)
    msg = out["choices"][0]["message"]
    assert "tool_calls" not in msg and out["choices"][0]["finish_reason"] == "stop"
    assert "<default-deny>" in msg["content"] and "<invalid-arguments>" in msg["content"]
    malformed = {"choices": [{"message": {"tool_calls": [{"id": "z"}]}}]}
    assert "malformed" in enf.apply(malformed, None)["choices"][0]["message"]["content"]


def test_refuse_mode_and_untouched_responses() -> None:
    enf = ResponseEnforcer(PolicyEngine.from_yaml(POLICY), on_deny="refuse")
    with pytest.raises(ToolCallsRefused, match="no-us-transfers") as info:
        enf.apply(response(("send_money", '{"recipient": "US9"}')), {"key": "k1"})
    assert info.value.status_code == 403
    plain = {"choices": [{"message": {"role": "assistant", "content": "hi"}}]}
    assert enf.apply(plain, None) is plain
    assert "key:k1" in enf._guards


def _cfg(url: str, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    (tmp_path / "policy.yaml").write_text(POLICY)
    return {
        "model_list": [{"model_name": "fast", "type": "openai", "model": "sim",
                        "api_base": url + "/v1", "api_key": "k"}],
        "routes": {"safe": {"mode": "pinned", "target": "fast"}},
        "enforce": {"policy": str(tmp_path / "policy.yaml")},
        **extra,
    }  # fmt: skip


def test_config_pinned_routes_get_enforcement(tmp_path: Path) -> None:
    cfg = load(_cfg("http://x", tmp_path))
    assert set(cfg.enforce) == {"safe"}
    cfg = load(_cfg("http://x", tmp_path, enforce={"policy": str(tmp_path / "policy.yaml"),
                                                    "apply_to": "all"}))  # fmt: skip
    assert set(cfg.enforce) == {"safe", "fast"}
    data = _cfg("http://x", tmp_path)
    data["routes"]["safe"]["enforce"] = False
    assert load(data).enforce == {}
    (tmp_path / "bad.yaml").write_text("rules:\n  - id: a\n    effect: alow\n")
    data = _cfg("http://x", tmp_path)
    data["routes"]["fast"] = {"enforce": {"policy": "bad.yaml", "on_deny": "refuse"}}
    data_file = tmp_path / "config.yaml"
    import yaml

    data_file.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as info:
        load(data_file)
    assert any(p.path == "routes.fast.enforce.policy" and "alow" in p.message
               for p in info.value.problems)  # fmt: skip
    data["enforce"] = {"policy": "p.yaml", "on_deny": "drop"}
    with pytest.raises(ConfigError, match="enforce"):
        load(data)


def _tools(recipient: str) -> list[dict[str, Any]]:
    schema = {"type": "object", "properties": {"recipient": {"type": "string", "const": recipient}}}
    return [{"type": "function", "function": {"name": "send_money", "parameters": schema}}]


async def test_gateway_removes_denied_tool_calls(mock: MockServer, tmp_path: Path) -> None:
    gw = Gateway.from_config(_cfg(mock.url, tmp_path))
    try:
        msgs = [{"role": "user", "content": "pay"}]
        bad = await gw.chat({"model": "safe", "messages": msgs, "tools": _tools("US123")})
        assert isinstance(bad, dict)
        msg = bad["choices"][0]["message"]
        assert "tool_calls" not in msg and "no-us-transfers" in msg["content"]
        ok = await gw.chat({"model": "safe", "messages": msgs, "tools": _tools("GB123")})
        assert isinstance(ok, dict)
        assert ok["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "send_money"
        unchecked = await gw.chat({"model": "fast", "messages": msgs, "tools": _tools("US123")})
        assert isinstance(unchecked, dict)
        assert "tool_calls" in unchecked["choices"][0]["message"]  # routed alias: not enforced
    finally:
        await gw.aclose()


async def _collect(stream: Any) -> list[dict[str, Any]]:
    return [c async for c in stream]


async def test_gateway_enforces_streamed_tool_calls(mock: MockServer, tmp_path: Path) -> None:
    gw = Gateway.from_config(_cfg(mock.url, tmp_path))
    try:
        msgs = [{"role": "user", "content": "pay"}]
        req = {"model": "safe", "messages": msgs, "stream": True}
        bad = await _collect(await gw.chat({**req, "tools": _tools("US123")}))
        deltas = [ch["delta"] for c in bad for ch in c.get("choices", [])]
        assert not any("tool_calls" in d for d in deltas)
        assert any("no-us-transfers" in (d.get("content") or "") for d in deltas)
        assert bad[-1]["choices"][0]["finish_reason"] == "stop"
        ok = await _collect(await gw.chat({**req, "tools": _tools("GB123")}))
        calls = [tc for c in ok for ch in c.get("choices", [])
                 for tc in ch["delta"].get("tool_calls", [])]  # fmt: skip
        assert len(calls) == 1 and calls[0]["index"] == 0
        assert calls[0]["function"]["name"] == "send_money"
        assert json.loads(calls[0]["function"]["arguments"]) == {"recipient": "GB123"}
        assert [ch["finish_reason"] for c in ok for ch in c.get("choices", [])
                if ch.get("finish_reason")] == ["tool_calls"]  # fmt: skip
    finally:
        await gw.aclose()


APPROVAL_POLICY = """
rules:
  - id: big-pay-needs-a-human
    effect: require_approval
    action: {tool: send_money}
"""


async def test_approval_through_the_admin_api(mock: MockServer, tmp_path: Path) -> None:
    import asyncio

    from routeguard.server import admin

    (tmp_path / "approve.yaml").write_text(APPROVAL_POLICY)
    cfg = _cfg(mock.url, tmp_path)
    cfg["enforce"] = {"policy": str(tmp_path / "approve.yaml"), "approval_timeout": 30}
    gw = Gateway.from_config(cfg)
    try:
        (queue,) = gw.approval_queues()
        submitted = asyncio.Event()
        queue.on_submit = lambda _: submitted.set()
        msgs = [{"role": "user", "content": "pay"}]

        async def ask() -> Any:
            return await gw.chat({"model": "safe", "messages": msgs, "tools": _tools("GB1")})

        for verb in ("approve", "deny"):
            submitted.clear()
            task = asyncio.create_task(ask())
            await submitted.wait()
            status, listed = admin.handle(gw.keys, "GET", "/admin/approvals", None,
                                          gw.approval_queues())  # fmt: skip
            assert status == 200 and listed["data"][0]["tool"] == "send_money"
            rid = listed["data"][0]["id"]
            status, out = admin.handle(gw.keys, "POST", f"/admin/approvals/{rid}/{verb}",
                                       {"by": "ops"}, gw.approval_queues())  # fmt: skip
            assert status == 200 and out["approved"] == (verb == "approve")
            msg = (await task)["choices"][0]["message"]
            assert ("tool_calls" in msg) == (verb == "approve")
        with pytest.raises(EnforcementError, match="no pending approval"):
            admin.handle(gw.keys, "POST", "/admin/approvals/nope/approve", None,
                         gw.approval_queues())  # fmt: skip
        assert admin.is_admin_path("/admin/approvals")
    finally:
        await gw.aclose()


def test_sync_apply_cannot_wait_for_approval(tmp_path: Path) -> None:
    enf = ResponseEnforcer(PolicyEngine.from_yaml(APPROVAL_POLICY))
    out = enf.apply(response(("send_money", '{"recipient": "GB1"}')), None)
    assert "no approval handler" in out["choices"][0]["message"]["content"]


async def test_astream_reassembles_fragmented_calls() -> None:
    enf = ResponseEnforcer(PolicyEngine.from_yaml(POLICY))

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": "s", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    def call(i: int, fn: dict[str, str], cid: str | None = None) -> dict[str, Any]:
        head = {"id": cid, "type": "function"} if cid else {}
        return chunk({"tool_calls": [{"index": i, **head, "function": fn}]})

    async def upstream() -> Any:
        yield chunk({"role": "assistant", "content": "Paying. "})
        yield call(0, {"name": "send_", "arguments": '{"recip'}, "a")
        yield call(0, {"name": "money", "arguments": 'ient": "US1"}'})
        yield call(1, {"name": "read_file", "arguments": "{}"}, "b")
        yield chunk({}, "tool_calls")
        yield {"id": "s", "choices": [], "usage": {"total_tokens": 3}}

    out = [c async for c in enf.astream(upstream(), None)]
    assert out[0]["choices"][0]["delta"]["content"] == "Paying. "
    final = out[-2]["choices"][0]
    assert [c["function"]["name"] for c in final["delta"]["tool_calls"]] == ["read_file"]
    assert final["delta"]["tool_calls"][0]["index"] == 0
    assert "no-us-transfers" in final["delta"]["content"]
    assert final["finish_reason"] == "tool_calls"
    assert out[-1]["usage"] == {"total_tokens": 3}

    async def cut_off() -> Any:  # the stream breaks before the call is finished: never sent
        yield call(0, {"name": "read_file", "arguments": "{}"}, "a")

    assert [c async for c in enf.astream(cut_off(), None)] == []

"""Issue #11 item 15 end to end: the simulated upstream answers with tool calls whose arguments
have the wrong type or whose names are look-alikes, and the gateway's enforcement (a pinned
route with an ``enforce:`` policy) removes them instead of passing them to the agent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from routeguard.gateway import Gateway
from routeguard.mock import MockServer

POLICY = """
rules:
  - id: big-payments
    effect: deny
    action: {tool: send_money}
    when: {args: {$.amount: {gt: 1000}}}
  - id: no-email
    effect: deny
    action: {tool: send_email}
  - id: rest
    effect: allow
"""


def _gateway(url: str, tmp_path: Path) -> Gateway:
    (tmp_path / "policy.yaml").write_text(POLICY)
    return Gateway.from_config({
        "model_list": [{"model_name": "fast", "type": "openai", "model": "sim",
                        "api_base": url + "/v1", "api_key": "k"}],
        "routes": {"safe": {"mode": "pinned", "target": "fast"}},
        "enforce": {"policy": str(tmp_path / "policy.yaml")},
    })  # fmt: skip


def _tool(name: str, **consts: Any) -> list[dict[str, Any]]:
    """One tool; the simulated model calls it with these argument values."""
    props = {k: {"const": v} for k, v in consts.items()}
    schema = {"type": "object", "properties": props}
    return [{"type": "function", "function": {"name": name, "parameters": schema}}]


async def _calls(gw: Gateway, tools: list[dict[str, Any]]) -> tuple[list[Any], str]:
    msgs = [{"role": "user", "content": "go"}]
    out = await gw.chat({"model": "safe", "messages": msgs, "tools": tools})
    assert isinstance(out, dict)
    msg = out["choices"][0]["message"]
    return msg.get("tool_calls", []), msg.get("content") or ""


async def test_wrong_typed_amounts_are_removed_by_the_deny(
    mock: MockServer, tmp_path: Path
) -> None:
    gw = _gateway(mock.url, tmp_path)
    try:
        for amount in ["5000", [5000], True, None, {"value": 5000}, "5e3"]:
            calls, content = await _calls(gw, _tool("send_money", to="GB1", amount=amount))
            assert calls == [], amount
            assert "big-payments" in content, amount
        calls, _ = await _calls(gw, _tool("send_money", to="GB1", amount="50"))
        assert [json.loads(c["function"]["arguments"])["amount"] for c in calls] == ["50"]
    finally:
        await gw.aclose()


async def test_look_alike_tool_names_are_removed(mock: MockServer, tmp_path: Path) -> None:
    gw = _gateway(mock.url, tmp_path)
    try:
        for name, rule in [
            ("SEND_EMAIL", "no-email"),
            ("send_email\u200b", "no-email"),
            ("Send_Email", "no-email"),
            ("send_ema\u0456l", "<tool-name>"),  # a Cyrillic i
        ]:
            calls, content = await _calls(gw, _tool(name, to="x@evil.example"))
            assert calls == [], name
            assert rule in content, (name, content)
        calls, _ = await _calls(gw, _tool("read_file", path="a"))
        assert [c["function"]["name"] for c in calls] == ["read_file"]
    finally:
        await gw.aclose()

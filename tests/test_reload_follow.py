"""After ``POST /admin/reload`` the proxy's observers follow the reloaded gateway
(``ProxyApp.use_gateway``): the dashboard's budgets, the metrics' route labels, the shared
approvals (a tool call the new config's policy holds is listed and can be approved) and the
span names of tracing all reflect the new configuration, on a real ``routeguard serve``."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from otlp_receiver import OtlpReceiver
from proxy_clients import call, wait_for
from routeguard.mock import MockServer
from scrapes import scrape, value
from serving import serve

MASTER = "sk-master-reload-follow"
POLICY = """
rules:
  - id: {rule}
    effect: require_approval
    action: {{tool: {tool}}}
"""
SERVER = 2  # OTLP span kind


@pytest.fixture
def upstream() -> Iterator[MockServer]:
    with MockServer() as mock:
        yield mock


def _write(path: Path, mock: MockServer, receiver: OtlpReceiver, after: bool) -> None:
    """Before the reload: alias ``m``, budget ``before-team``, a policy holding ``fax`` calls
    for approval; after it, also alias ``fresh``, a routed route ``auto`` with a strong-share
    target, budget ``after-team``, and a policy holding ``wire`` calls instead."""
    dep = {"type": "openai", "api_base": mock.url + "/v1", "api_key": "sk-up",
           "input_cost_per_mtok": 1.0, "output_cost_per_mtok": 2.0}  # fmt: skip
    cfg: dict[str, Any] = {
        "model_list": [{**dep, "model_name": "m", "model": "sim-m"}],
        "budgets": [{"name": "before-team", "limit": 10.0}],
        "server": {"master_key": MASTER, "database": str(path.parent / "spend.db")},
        "observability": {"tracing": {"endpoint": receiver.url}},
        "routes": {"pay": {"mode": "pinned", "target": "m"}},
    }
    policy = path.parent / f"policy-{'after' if after else 'before'}.yaml"
    policy.write_text(POLICY.format(rule="wires-need-a-human", tool="wire") if after
                      else POLICY.format(rule="faxes-need-a-human", tool="fax"))  # fmt: skip
    cfg["enforce"] = {"policy": str(policy), "approval_timeout": 60}
    if after:
        cfg["model_list"] += [{**dep, "model_name": "fresh", "model": "sim-fresh"},
                              {**dep, "model_name": "big", "model": "sim-big"}]  # fmt: skip
        cfg["budgets"] = [{"name": "after-team", "limit": 20.0}]
        cfg["routes"]["auto"] = {"mode": "routed", "cheap": "m", "strong": "big",
                                 "strong_share": 0.25}  # fmt: skip
    path.write_text(json.dumps(cfg))


def _summary(url: str) -> dict[str, Any]:
    status, body = call(url + "/ui/api/summary", key=MASTER)
    assert status == 200, body
    return body


def test_dashboard_metrics_approvals_and_tracing_follow_a_reload(
    tmp_path: Path, upstream: MockServer
) -> None:
    cfg = tmp_path / "routeguard.json"
    with OtlpReceiver() as receiver:
        _write(cfg, upstream, receiver, after=False)
        with serve("--config", str(cfg), env={"OTEL_BSP_SCHEDULE_DELAY": "50"}) as served:
            url = served.url
            assert [b["name"] for b in _summary(url)["budgets"]] == ["before-team"]
            _write(cfg, upstream, receiver, after=True)
            status, body = call(url + "/admin/reload", body={}, key=MASTER)
            assert status == 200 and body["status"] == "reloaded", body

            with openai.OpenAI(base_url=url + "/v1", api_key=MASTER, max_retries=0) as c:
                for model in ("fresh", "auto"):
                    c.chat.completions.create(
                        model=model, messages=[{"role": "user", "content": "hello"}]
                    )
            # The dashboard reads routes (and budgets) from the new gateway.
            summary = _summary(url)
            assert "after-team" in [b["name"] for b in summary["budgets"]]
            (auto,) = [r for r in summary["routes"] if r["route"] == "auto"]
            assert auto["strong"] == "big" and auto["strong_target"] == pytest.approx(0.25)
            # Metrics label the new alias as a route, not as "other".
            s = scrape(url, key=MASTER)
            req = "routeguard_requests_total"
            assert value(s, req, route="fresh", alias="fresh", status="200") == 1
            assert value(s, req, route="auto", status="200") == 1
            assert value(s, req, route="other") == 0

            # Tracing names the request's span after the new alias.
            def chats(got: list[Any]) -> list[str]:
                return [x.name for x in got if x.kind == SERVER and x.name.startswith("chat")]

            assert sorted(chats(receiver.wait_for(lambda g: len(chats(g)) == 2))) == [
                "chat auto",
                "chat fresh",
            ]

            # The new policy holds a tool call; the dashboard lists it and approves it.
            done: dict[str, Any] = {}

            def ask() -> None:
                with openai.OpenAI(base_url=url + "/v1", api_key=MASTER, max_retries=0,
                                   timeout=60) as c:  # fmt: skip
                    done["response"] = c.chat.completions.create(
                        model="pay", messages=[{"role": "user", "content": "wire it"}],
                        tools=[{"type": "function",
                                "function": {"name": "wire", "parameters": {}}}],
                    )  # fmt: skip

            asker = threading.Thread(target=ask)
            asker.start()
            pending: list[Any] = []

            def listed() -> bool:
                pending[:] = _summary(url)["approvals"]
                return bool(pending)

            wait_for(listed, "the held tool call in the dashboard's approvals")
            (item,) = pending
            assert item["tool"] == "wire" and item["rule_id"] == "wires-need-a-human"
            req_ = urllib.request.Request(
                url + f"/ui/api/approvals/{item['id']}/approve", data=b"{}", method="POST",
                headers={"authorization": f"Bearer {MASTER}", "content-type": "application/json"},
            )  # fmt: skip
            with urllib.request.urlopen(req_, timeout=10) as r:
                assert json.loads(r.read())["approved"] is True
            asker.join(30)
            assert not asker.is_alive(), "the approved call did not return"
            calls = done["response"].choices[0].message.tool_calls
            assert calls and calls[0].function.name == "wire"

"""Budget alerts (``budget_settings.alerts``): a log line and one webhook POST per account,
level (soft limit, each threshold) and period, sent to a real local HTTP receiver off the
request path; retried on failures, never failing a request, never logging the URL or header
secrets; deduplicated across two gateway instances sharing one real redis-server."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from ports import free_port
from routeguard import config as config_mod
from routeguard.budget.accounts import load_accounts
from routeguard.budget.alerts import BudgetAlerter
from routeguard.budget.layer import BudgetLayer
from routeguard.budget.memory import MemoryBudget
from routeguard.config import Deployment
from routeguard.errors import BudgetExceeded
from routeguard.gateway import Gateway
from routeguard.mock import MockServer

HOOK_SECRET = "hook-token-5f2e9"


class Receiver:
    """A local HTTP server recording the JSON POSTs it gets; fails the first ``failures``."""

    def __init__(self, failures: int = 0) -> None:
        self.posts: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.failures = failures
        self.attempts = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                with receiver.lock:
                    receiver.attempts += 1
                    fail = receiver.attempts <= receiver.failures
                    if not fail:
                        receiver.posts.append(json.loads(body))
                        receiver.headers.append(dict(self.headers))
                self.send_response(500 if fail else 204)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/budget-{HOOK_SECRET}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def levels(self) -> list[tuple[str, str]]:
        """(account, level) of every alert received, in order."""
        with self.lock:
            return [(p["account"], p["level"]) for p in self.posts]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


class Clock:
    """A settable clock (unix seconds)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# A dollar per prompt token: a settlement of n tokens costs exactly $n.
DOLLAR_A_TOKEN = Deployment(
    id="d", alias="m", provider="openai", model="sim-m", api_base="http://127.0.0.1:9",
    api_key=None, input_cost_per_mtok=1_000_000.0,
)  # fmt: skip
DAY = 86_400.0
NOON = 1_796_515_200.0 + DAY / 2  # 2026-12-06 12:00 UTC


def _layer(
    hook: str, clock: Clock, *, thresholds: list[float], **alerts: Any
) -> tuple[BudgetLayer, BudgetAlerter]:
    raw = {
        "model_list": [{"type": "openai", "model_name": "m", "model": "sim-m", "api_key": "k"}],
        "budgets": [{"name": "acct", "limit": 10.0, "soft_limit": 3.0, "period": "daily"}],
        "budget_settings": {
            "alerts": {
                "webhook": "os.environ/TEST_ALERT_HOOK",
                "thresholds": thresholds,
                "headers": {"x-alert-token": "os.environ/TEST_ALERT_TOKEN"},
                **alerts,
            }
        },
    }
    cfg = config_mod.load(raw, env={"TEST_ALERT_HOOK": hook, "TEST_ALERT_TOKEN": HOOK_SECRET})
    assert cfg.alerts is not None
    backend = MemoryBudget(load_accounts(cfg.accounts), clock=clock)
    alerter = BudgetAlerter(cfg.alerts, backend, clock=clock)
    return BudgetLayer(cfg, backend, alerter=alerter), alerter


async def _spend(layer: BudgetLayer, dollars: int) -> None:
    res = await layer.backend.reserve(("acct",), dollars * 1_000_000, uuid.uuid4().hex)
    await layer.settle(res, DOLLAR_A_TOKEN, {"prompt_tokens": dollars, "completion_tokens": 0})


async def test_each_level_alerts_once_per_period(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    clock = Clock(NOON)
    layer, alerter = _layer(receiver.url, clock, thresholds=[0.5, 0.8, 1.0])
    for dollars, expected in [
        (2, []),  # $2: under every level
        (2, [("acct", "soft_limit")]),  # $4: past the $3 soft limit
        (2, [("acct", "0.5")]),  # $6
        (1, []),  # $7
        (2, [("acct", "0.8")]),  # $9
        (1, [("acct", "1")]),  # $10: the whole limit
    ]:
        before = len(receiver.levels())
        await _spend(layer, dollars)
        await alerter.idle()
        assert receiver.levels()[before:] == expected
    with pytest.raises(BudgetExceeded):
        await _spend(layer, 1)
    assert len(receiver.posts) == 4  # nothing twice in the period

    first = receiver.posts[1]
    assert first["threshold"] == pytest.approx(0.5)
    assert first["spend"] == pytest.approx(6.0) and first["limit"] == pytest.approx(10.0)
    assert first["resets_at"].startswith("2026-12-07T00:00:00")
    assert "50%" in first["text"] and "acct" in first["text"]
    assert all(h["x-alert-token"] == HOOK_SECRET for h in receiver.headers)

    clock.now += DAY  # the next day: a new period, spend starts at $0
    await _spend(layer, 6)
    await alerter.idle()
    assert receiver.levels()[4:] == [("acct", "soft_limit"), ("acct", "0.5")]
    assert receiver.posts[4]["period_id"] != receiver.posts[0]["period_id"]

    logged = [r.getMessage() for r in caplog.records if "budget alert" in r.getMessage()]
    assert len(logged) == 6
    assert all(HOOK_SECRET not in r.getMessage() for r in caplog.records)
    await layer.close()


async def test_a_failing_webhook_is_retried() -> None:
    with Receiver(failures=2) as receiver:
        layer, alerter = _layer(receiver.url, Clock(NOON), thresholds=[0.5])
        await _spend(layer, 4)  # the soft limit: one alert, refused twice by the receiver
        await alerter.idle()
        assert receiver.attempts == 3
        assert receiver.levels() == [("acct", "soft_limit")]
        assert alerter.delivered == 1 and alerter.failed == 0
        await layer.close()


async def test_an_unreachable_webhook_never_fails_a_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hook = f"http://127.0.0.1:{free_port()}/hooks/{HOOK_SECRET}"  # nothing listens there
    clock = Clock(NOON)
    layer, alerter = _layer(hook, clock, thresholds=[0.5], max_attempts=2)
    await _spend(layer, 4)  # the soft limit: one alert
    await alerter.idle()
    assert alerter.failed == 1 and alerter.delivered == 0
    assert layer.backend.spent_sync("acct") == 4_000_000  # the settlement itself went through
    messages = [r.getMessage() for r in caplog.records]
    assert any("not delivered to the webhook" in m for m in messages)
    assert all(HOOK_SECRET not in m and "127.0.0.1" not in m for m in messages)
    await layer.close()


async def test_two_instances_on_one_redis_send_each_alert_once(
    receiver: Receiver, redis_server: str
) -> None:
    account = f"alerts-{uuid.uuid4().hex[:8]}"
    with MockServer() as mock:
        dep = {"type": "openai", "api_base": mock.url + "/v1", "api_key": "k",
               "input_cost_per_mtok": 1000.0, "output_cost_per_mtok": 2000.0}  # fmt: skip
        raw = {
            "model_list": [{**dep, "model_name": "m", "model": "sim-m"}],
            "budgets": [{"name": account, "limit": 1.0, "soft_limit": 0.3}],
            "budget_settings": {
                "backend": "redis",
                "redis_url": redis_server,
                "default_account": account,
                "default_max_tokens": 64,
                "alerts": {"webhook": receiver.url, "thresholds": [0.25, 0.5, 0.75]},
            },
        }
        one, two = Gateway.from_config(raw), Gateway.from_config(raw)
        msg = [{"role": "user", "content": "how much budget is left for alerts?"}]
        try:
            for i in range(200):
                gw = one if i % 2 == 0 else two
                try:
                    await gw.chat_result({"model": "m", "messages": msg, "max_tokens": 64})
                except BudgetExceeded:
                    break
            else:
                pytest.fail("the budget was never spent")
            for gw in (one, two):
                assert gw.budget.alerter is not None
                await gw.budget.alerter.idle()
            spent = await one.budget.backend.spent(account) / 1_000_000
        finally:
            await one.aclose()
            await two.aclose()
    crossed = {"soft_limit"} | {f"{t:g}" for t in (0.25, 0.5, 0.75) if spent >= t}
    levels = [level for _, level in receiver.levels()]
    assert sorted(levels) == sorted(crossed)  # each crossed level once, from one instance
    assert {"0.25", "0.5", "0.75"} <= crossed


def _load(alerts: Any, env: dict[str, str] | None = None) -> config_mod.Config:
    raw = {
        "model_list": [{"type": "openai", "model_name": "m", "model": "sim-m", "api_key": "k"}],
        "budget_settings": {"alerts": alerts},
    }
    return config_mod.load(raw, env=env or {})


def test_alert_settings_are_checked_without_showing_secrets() -> None:
    env = {"HOOK": "https://hooks.example/T0/B0/" + HOOK_SECRET, "TOK": "Bearer t"}
    cfg = _load({"webhook": "os.environ/HOOK", "headers": {"authorization": "os.environ/TOK"}}, env)
    assert cfg.alerts is not None and cfg.alerts.thresholds == (0.5, 0.8, 1.0)
    assert HOOK_SECRET not in repr(cfg.alerts)
    with pytest.raises(config_mod.ConfigError) as err:
        _load(
            {
                "webhook": "ftp://hooks.example/" + HOOK_SECRET,
                "thresholds": [0.5, 0, float("nan")],
                "timeout": 0,
                "max_attempts": 0,
                "queue_size": 0,
                "headers": {"x-token": "os.environ/MISSING"},
            }
        )
    paths = {p.path for p in err.value.problems}
    assert paths == {
        "budget_settings.alerts.webhook",
        "budget_settings.alerts.thresholds[1]",
        "budget_settings.alerts.thresholds[2]",
        "budget_settings.alerts.timeout",
        "budget_settings.alerts.max_attempts",
        "budget_settings.alerts.queue_size",
        "budget_settings.alerts.headers.x-token",
    }
    assert HOOK_SECRET not in err.value.message


def test_litellm_slack_alerting_maps_to_budget_alerts() -> None:
    base = {"model_list": [{"model_name": "m", "litellm_params": {"model": "openai/gpt-4o",
                                                                  "api_key": "k"}}]}  # fmt: skip
    env = {"SLACK_WEBHOOK_URL": "https://hooks.slack.example/services/" + HOOK_SECRET}
    cfg = config_mod.load(
        {
            **base,
            "general_settings": {
                "alerting": ["slack", "email"],
                "alert_types": ["budget_alerts", "llm_too_slow"],
                "alerting_threshold": 300,
            },
        },
        env=env,
    )
    assert cfg.alerts is not None and cfg.alerts.webhook is not None
    assert cfg.alerts.webhook.get() == env["SLACK_WEBHOOK_URL"]
    warned = " ".join(cfg.warnings)
    assert "'email'" in warned and "'llm_too_slow'" in warned and "alerting_threshold" in warned
    off = config_mod.load(
        {**base, "general_settings": {"alerting": ["slack"], "alert_types": ["llm_exceptions"]}},
        env=env,
    )
    assert off.alerts is None

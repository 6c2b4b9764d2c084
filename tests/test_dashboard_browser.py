"""The dashboard in a real headless Chromium: ``routeguard serve`` with a master key takes
traffic from the openai SDK (keys of two teams, a cache, a routed route, failures and a
fallback, a tool call that waits for approval); the page, signed in with an admin virtual
key, must show the request count and spend the server reports, and its Approve button must
let the waiting call through. Screenshots go to ``.ci/artifacts/`` (kept by CI).

Skipped only when no Chromium is installed and this is not CI; with ``CI=true`` a missing
browser fails (``.ci/run`` installs Debian's ``chromium``).
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from browser import Page, chromium, find_chromium
from routeguard.mock import MockServer
from serving import Served, serve

MASTER = "sk-master-dashboard"
ARTIFACTS = Path(__file__).resolve().parent.parent / ".ci" / "artifacts"
POLICY = """
rules:
  - id: reads
    effect: allow
    action: {tool: "read_*"}
  - id: no-us-transfers
    effect: deny
    action: {tool: send_money}
    when: {args: {$.recipient: {glob: "US*"}}}
    reason: US transfers are blocked
  - id: payments-need-a-human
    effect: require_approval
    action: {tool: send_money}
    reason: money leaves the company
"""


@pytest.fixture(scope="module")
def browser_binary() -> str:
    """The Chromium to drive; a skip (outside CI) or a failure (in CI) when there is none."""
    binary = find_chromium()
    if binary is None:
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            pytest.fail("CI=true but no chromium on PATH: .ci/run installs Debian's chromium")
        pytest.skip("no chromium on PATH (apt-get install chromium); runs in CI")
    return binary


def _config(mock_url: str, tmp_path: Path) -> Path:
    (tmp_path / "policy.yaml").write_text(POLICY)
    dep = {"type": "openai", "api_base": mock_url + "/v1", "api_key": "sk-upstream"}
    cheap = {**dep, "input_cost_per_mtok": 0.15, "output_cost_per_mtok": 0.60}
    strong = {**dep, "input_cost_per_mtok": 3.0, "output_cost_per_mtok": 15.0}
    cfg = {
        "model_list": [
            {**cheap, "model_name": "small", "model": "sim-small", "id": "small-1"},
            {**strong, "model_name": "large", "model": "sim-large", "id": "large-1"},
            {**cheap, "model_name": "faq", "model": "sim-faq", "id": "faq-1"},
            {**cheap, "model_name": "flaky", "model": "error-503", "id": "flaky-1"},
            {**cheap, "model_name": "broken", "model": "error-500", "id": "broken-1"},
        ],
        "fallbacks": {"flaky": ["small"]},
        "router_settings": {"allowed_fails": 1, "num_retries": 0, "retry_backoff": 0.0,
                            "cooldown_time": 600},
        "routes": {
            "auto": {"mode": "routed", "cheap": "small", "strong": "large", "strong_share": 0.3,
                     "rules": [{"name": "proofs", "regex": "(?i)\\bprove\\b", "target": "strong"}]},
            "faq": {"cache": {"enabled": True, "threshold": 0.95}},
            "payments": {"mode": "pinned", "target": "small"},
        },
        "enforce": {"policy": str(tmp_path / "policy.yaml"), "approval_timeout": 120},
        "budgets": [
            {"name": "acme", "limit": 0.05, "period": "monthly"},
            {"name": "search", "parent": "acme", "limit": 0.01, "period": "daily"},
            {"name": "support", "parent": "acme", "limit": 0.002, "period": "weekly"},
        ],
        # Small holds, so that these small limits admit every request of the test.
        "budget_settings": {"default_max_tokens": 200},
        "server": {"master_key": MASTER},
    }  # fmt: skip
    path = tmp_path / "routeguard.json"
    path.write_text(json.dumps(cfg))
    return path


def _admin(url: str, method: str, path: str, body: Any = None, key: str = MASTER) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method=method)
    req.add_header("authorization", f"Bearer {key}")
    req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("dashboard")
    with MockServer() as mock, serve("--config", str(_config(mock.url, tmp))) as served:
        yield served


PROMPTS = [
    "hi there",
    "what is the capital of France",
    "Prove that there are infinitely many primes, step by step, with every lemma justified.",
    "summarise this sentence in five words",
    "Derive the closed form of the sum of the first n squares and prove it by induction.",
    "translate 'good morning' into Spanish",
    "write a haiku about the sea",
    "explain the CAP theorem and its consequences for a distributed database design",
]


def _send_traffic(url: str, keys: dict[str, str]) -> int:
    """Requests of every kind through the openai SDK; how many the proxy answered."""
    with (
        openai.OpenAI(base_url=url + "/v1", api_key=keys["search"], max_retries=0) as search,
        openai.OpenAI(base_url=url + "/v1", api_key=keys["support"], max_retries=0) as support,
        openai.OpenAI(base_url=url + "/v1", api_key=MASTER, max_retries=0) as master,
    ):
        sent = 0
        for prompt in PROMPTS:
            search.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": prompt}]
            )
            sent += 1
        for prompt in ["how do I reset my password", "what are your opening hours"] * 3:
            support.chat.completions.create(
                model="faq", messages=[{"role": "user", "content": prompt}]
            )
            sent += 1
        stream = support.chat.completions.create(
            model="small", messages=[{"role": "user", "content": "tell me a story"}], stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        sent += 1
        for _ in range(2):
            out = master.chat.completions.create(
                model="flaky", messages=[{"role": "user", "content": "x"}]
            )
            assert out.choices[0].message.content  # answered by the fallback
            sent += 1
        for model in ("broken", "no-such-model"):
            with pytest.raises(openai.APIStatusError):
                master.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": "x"}]
                )
            sent += 1
        denied = search.chat.completions.create(
            model="payments", messages=[{"role": "user", "content": "pay"}], tools=_pay("US99")
        )
        assert not denied.choices[0].message.tool_calls  # removed by the policy
        sent += 1
        return sent


def _pay(recipient: str) -> Any:
    schema = {"type": "object", "properties": {"recipient": {"type": "string", "const": recipient}}}
    return [{"type": "function", "function": {"name": "send_money", "parameters": schema}}]


def _wait(condition: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _server_totals(url: str) -> tuple[int, float]:
    """Requests and dollars as the proxy's own spend API reports them."""
    rows = _admin(url, "GET", "/admin/spend?group_by=model")["data"]
    return sum(r["requests"] for r in rows), sum(r["cost_usd"] for r in rows)


def _money(text: str) -> float:
    return float(text.replace("$", "").replace(",", ""))


def test_dashboard_in_headless_chromium(proxy: Served, browser_binary: str) -> None:
    url = proxy.url
    keys = {
        team: _admin(url, "POST", "/admin/keys", {"name": f"{team}-bot", "team": team,
                                                   "org": "acme"})["key"]
        for team in ("search", "support")
    }  # fmt: skip
    admin_key = _admin(url, "POST", "/admin/keys", {"name": "ops", "admin": True})["key"]
    sent = _send_traffic(url, keys)

    # One tool call that waits for a human, from a thread (the SDK call blocks until then).
    waiting: dict[str, Any] = {}

    def pay() -> None:
        with openai.OpenAI(
            base_url=url + "/v1", api_key=keys["search"], max_retries=0, timeout=120
        ) as client:
            waiting["response"] = client.chat.completions.create(
                model="payments",
                messages=[{"role": "user", "content": "pay GB"}],
                tools=_pay("GB42"),
            )

    payer = threading.Thread(target=pay, daemon=True)
    payer.start()
    pending = _wait(lambda: _admin(url, "GET", "/admin/approvals")["data"])
    (approval,) = pending
    assert approval["tool"] == "send_money" and approval["rule_id"] == "payments-need-a-human"

    requests_total, spend_total = _server_totals(url)
    assert requests_total == sent and spend_total > 0

    with chromium(browser_binary) as page:
        page.goto(url + "/ui")
        page.wait_for("!document.getElementById('login').hidden")
        # A wrong key is refused with the server's reason, and the form comes back.
        page.type("[data-testid=key-input]", "sk-rg-not-a-key")
        page.click("[data-testid=login]")
        assert (
            "invalid"
            in page.wait_for(
                "document.querySelector('[data-testid=login-error]').textContent"
            ).lower()
        )
        page.type("[data-testid=key-input]", admin_key)
        page.click("[data-testid=login]")
        _check_totals(page, requests_total, spend_total)
        # The key is in this tab's sessionStorage only: not in the URL, not in a cookie.
        assert page.evaluate("sessionStorage.getItem('routeguard.dashboard.key')") == admin_key
        assert page.evaluate("document.cookie") == ""
        assert admin_key not in page.evaluate("location.href")
        button = f"[data-testid=approve-{approval['id']}]"
        page.wait_for(f"document.querySelector({json.dumps(button)}) !== null")
        page.wait_for("document.querySelectorAll('#timeline rect.bar-err').length > 0")
        page.screenshot(ARTIFACTS / "dashboard.png")

        page.click(button)
        payer.join(30)
        assert not payer.is_alive(), "the approved call did not return"
        calls = waiting["response"].choices[0].message.tool_calls
        assert calls and calls[0].function.name == "send_money"  # approved server-side
        assert _admin(url, "GET", "/admin/approvals")["data"] == []
        requests_total, spend_total = _server_totals(url)
        assert requests_total == sent + 1
        _check_totals(page, requests_total, spend_total)
        page.wait_for("document.querySelector('[data-testid=approvals-total]').textContent === '0'")
        page.screenshot(ARTIFACTS / "dashboard-approved.png")
        # No script error and no Content-Security-Policy violation (nothing inline, no CDN).
        page.evaluate("1")  # drain pending events
        expected = [e for e in page.console_errors if "status of 401" in e]  # the wrong key
        assert len(expected) == 1 and len(page.console_errors) == 1, page.console_errors


def _check_totals(page: Page, requests_total: int, spend_total: float) -> None:
    """Wait until the page shows the server's totals, then compare text and raw values."""
    page.wait_for(
        "document.querySelector('[data-testid=requests-total]').dataset.value === "
        f"'{requests_total}'"
    )
    text = page.evaluate("document.querySelector('[data-testid=requests-total]').textContent")
    assert int(text.replace(",", "")) == requests_total
    raw = page.evaluate("document.querySelector('[data-testid=spend-total]').dataset.value")
    assert float(raw) == pytest.approx(spend_total, rel=1e-9, abs=1e-12)
    shown = page.evaluate("document.querySelector('[data-testid=spend-total]').textContent")
    assert _money(shown) == pytest.approx(spend_total, rel=1e-2)  # as rounded for display

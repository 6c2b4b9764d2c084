"""Routing-rule regexes run on the linear-time engine: client text cannot stall a request,
and a pattern that engine cannot run is refused when the config loads, naming its key path."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from routeguard import config
from routeguard._native import core
from routeguard.errors import ConfigError, RouteguardError
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.routing.rules import Rule, RuleInput, Rules
from routeguard.server import create_app
from routeguard.server.thread import ServerThread

# Exponential for a backtracking engine on a run of words that ends in a non-word: Python's
# `re` took 1.4 s at 24 characters and doubles per character. The timeout only stops a
# regression from hanging the suite; the linear engine answers in microseconds.
EVIL = r"^(\w+\s?)*$"
EVIL_TEXT = "a" * 28 + " " + "b" * 20_000 + "!"


def _input(text: str) -> RuleInput:
    return RuleInput(metadata={}, request_metadata={}, headers={}, tokens=1, text=text)


@pytest.mark.timeout(60)
def test_nested_quantifier_rule_does_not_backtrack() -> None:
    """Item 19: ``^(\\w+\\s?)*$`` on crafted client text answers at once."""
    rule = Rule.from_dict({"target": "strong", "regex": EVIL})
    assert isinstance(rule.regex, core.Regex)
    assert not rule.matches(_input(EVIL_TEXT))
    assert rule.matches(_input("just some words"))
    assert not rule.matches(_input("x" * 30 + "!"))
    assert Rule.from_dict({"target": "x", "regex": "é"}).matches(_input("caf\ud800 é"))


@pytest.mark.parametrize(
    ("pattern", "what"),
    [
        (r"(?<=pay )\d+", "look-around"),
        (r"(?=.*secret).*", "look-around"),
        (r"(\w+) \1", "backreference"),
        ("(", "unclosed group"),
    ],
)
def test_patterns_the_engine_cannot_run_are_refused_at_load(pattern: str, what: str) -> None:
    """Item 19: what the linear-time engine cannot compile is refused, naming the key path."""
    with pytest.raises(RouteguardError) as info:
        Rules.from_list([{"target": "x"}, {"target": "y", "regex": pattern}], "routes.r.rules")
    msg = str(info.value)
    assert "\n  - routes.r.rules[1].regex: invalid pattern" in msg
    assert what in msg


def test_config_load_names_the_rule_with_a_backtracking_pattern() -> None:
    base = {"model_list": [{"model_name": "a", "type": "openai", "model": "m"}]}
    rules = [{"name": "ok", "regex": "(?i)prove", "target": "a"},
             {"name": "bad", "regex": r"(a)\1", "target": "a"}]  # fmt: skip
    with pytest.raises(ConfigError) as info:  # checked at load, with the key path
        config.load(
            {**base, "routes": {"r": {"mode": "routed", "default": "a", "rules": rules}}}, env={}
        )
    assert [p.path for p in info.value.problems] == ["routes.r.rules[1].regex"]
    assert "backreference" in str(info.value)


# A backtracking match in the server thread holds the GIL, so only the thread method can
# stop it (it ends the test run).
@pytest.mark.timeout(60, method="thread")
def test_proxy_routes_crafted_text_without_stalling(mock: MockServer) -> None:
    """Item 19 end to end: the rule is checked on a request's last user message."""
    dep = {"type": "openai", "api_base": mock.url + "/v1", "api_key": "k"}
    cfg: dict[str, Any] = {
        "model_list": [{**dep, "model_name": "cheap-m", "model": "sim-cheap"},
                       {**dep, "model_name": "strong-m", "model": "sim-strong"}],
        "routes": {"r": {"mode": "routed", "default": "cheap-m",
                         "rules": [{"name": "words", "regex": EVIL, "target": "strong-m"}]}},
    }  # fmt: skip
    gw = Gateway.from_config(cfg)
    with (
        ServerThread(create_app(gw)) as srv,
        openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0) as c,
    ):
        crafted: Any = [{"role": "user", "content": EVIL_TEXT}]
        res = c.chat.completions.with_raw_response.create(model="r", messages=crafted)
        assert res.headers["x-routeguard-route"] == "default"
        plain: Any = [{"role": "user", "content": "route me please"}]
        res = c.chat.completions.with_raw_response.create(model="r", messages=plain)
        assert res.headers["x-routeguard-route"] == "rule:words"
        assert res.headers["x-routeguard-model"] == "strong-m"

"""The built-in config under `serve`: each alias goes to its real provider when its key is
set and to the simulated upstream otherwise (or is left out with --no-simulated); fallbacks
never cross from real to simulated; startup says what is served and what is left out."""

from __future__ import annotations

import openai

from routeguard import config
from routeguard.defaults import MODELS, default_config, missing_keys, served_lines
from serving import serve

SIM = "http://127.0.0.1:9999"


def test_no_keys_everything_simulated() -> None:
    cfg = config.load(default_config(SIM, env={}), env={})
    assert set(cfg.aliases) == set(MODELS)
    assert all(d.api_base.startswith(SIM) for deps in cfg.deployments.values() for d in deps)
    assert cfg.fallbacks["gpt-4o-mini"] == ["claude-3-5-haiku", "gemini-2.0-flash"]


def test_one_key_real_for_it_simulated_for_the_rest() -> None:
    env = {"OPENAI_API_KEY": "sk-test"}
    cfg = config.load(default_config(SIM, env=env), env=env)
    assert cfg.deployments["gpt-4o-mini"][0].api_base == "https://api.openai.com/v1"
    assert cfg.deployments["claude-3-5-haiku"][0].api_base.startswith(SIM)
    # A paid request never falls back to a simulated answer, nor the other way round.
    assert "gpt-4o-mini" not in cfg.fallbacks
    assert cfg.fallbacks["claude-3-5-haiku"] == ["gemini-2.0-flash"]


def test_without_the_simulator_missing_keys_are_left_out_and_said() -> None:
    env = {"GEMINI_API_KEY": "g-test"}
    cfg = config.load(default_config(None, env=env), env=env)
    assert cfg.aliases == ["gemini-2.0-flash"]
    missing = missing_keys(env)
    assert missing == {"gpt-4o-mini": "OPENAI_API_KEY", "claude-3-5-haiku": "ANTHROPIC_API_KEY"}
    lines = served_lines(cfg.deployments, None, {a: f"{v} is not set" for a, v in missing.items()})
    assert lines[0].startswith("  gemini-2.0-flash -> gemini gemini-2.0-flash at https://")
    assert "  claude-3-5-haiku: left out (ANTHROPIC_API_KEY is not set)" in lines


def _serve_output(env: dict[str, str], *flags: str) -> str:
    """Start `routeguard serve` on the built-in config, use it, stop it; what it printed."""
    with serve(*flags, env=env) as served:
        if "--no-simulated" not in flags:  # the simulated alias answers through the proxy
            with openai.OpenAI(base_url=served.url + "/v1", api_key="x", max_retries=0) as c:
                msgs: list[dict[str, str]] = [{"role": "user", "content": "hi"}]
                out = c.chat.completions.create(model="claude-3-5-haiku", messages=msgs)  # type: ignore[arg-type]
                assert out.choices[0].message.content
    return served.output


def test_serve_says_what_it_serves_with_one_real_key() -> None:
    out = _serve_output({"OPENAI_API_KEY": "sk-test-not-used"})
    assert "gpt-4o-mini -> openai gpt-4o-mini at https://api.openai.com/v1" in out
    assert "claude-3-5-haiku -> anthropic claude-3-5-haiku-latest at the simulated upstream" in out
    assert "sk-test-not-used" not in out


def test_serve_no_simulated_names_what_it_left_out() -> None:
    out = _serve_output({"OPENAI_API_KEY": "sk-test-not-used"}, "--no-simulated")
    assert "claude-3-5-haiku: left out (ANTHROPIC_API_KEY is not set; --no-simulated)" in out
    assert "at the simulated upstream" not in out

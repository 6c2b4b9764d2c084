"""The status and body of a budget refusal, as the openai SDK sees them: ours by default (a
429 ``budget_exceeded``), LiteLLM's under a LiteLLM config (422, ``type: budget_exceeded``,
the status as the code), LiteLLM's ``litellm_settings.budget_exceeded_status_code`` and our
``budget_settings.exceeded_status_code`` honoured, a bad value refused at load naming it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import openai
import pytest

from routeguard import config
from routeguard.errors import ConfigError
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.server import create_app
from routeguard.server.thread import ServerThread

MSG: Any = [{"role": "user", "content": "hi"}]


def _litellm(url: str, **settings: Any) -> dict[str, Any]:
    """A LiteLLM config whose proxy-wide budget is spent before the first request."""
    params = {"model": "openai/a", "api_base": url + "/v1", "api_key": "k",
              "input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}  # fmt: skip
    return {"model_list": [{"model_name": "a", "litellm_params": params}],
            "litellm_settings": {"max_budget": 0, **settings}}  # fmt: skip


def _ours(url: str) -> dict[str, Any]:
    """The same in routeguard's own format."""
    dep = {"type": "openai", "model_name": "a", "model": "a", "api_base": url + "/v1",
           "api_key": "k", "input_cost_per_mtok": 1.0, "output_cost_per_mtok": 2.0}  # fmt: skip
    return {"model_list": [dep], "budgets": [{"name": "all", "limit": 0}],
            "budget_settings": {"default_account": "all"}}  # fmt: skip


@contextmanager
def _refusal(cfg: dict[str, Any]) -> Iterator[openai.APIStatusError]:
    """The error the openai SDK raises for one over-budget request through the proxy."""
    gw = Gateway.from_config(cfg)
    with ServerThread(create_app(gw)) as srv:
        c = openai.OpenAI(base_url=srv.url + "/v1", api_key="any", max_retries=0)
        with c, pytest.raises(openai.APIStatusError) as caught:
            c.chat.completions.create(model="a", messages=MSG)
    yield caught.value


def test_our_config_refuses_with_a_429(mock: MockServer) -> None:
    with _refusal(_ours(mock.url)) as err:
        assert isinstance(err, openai.RateLimitError)
        assert (err.status_code, err.type, err.code) == (429, "budget_exceeded", "budget_exceeded")
        assert "budget 'all' exceeded" in err.message


def test_a_litellm_config_refuses_as_litellm_does(mock: MockServer) -> None:
    with _refusal(_litellm(mock.url)) as err:
        assert isinstance(err, openai.UnprocessableEntityError)
        assert (err.status_code, err.type, err.code) == (422, "budget_exceeded", "422")
        assert isinstance(err.body, dict) and set(err.body) == {"message", "type", "param", "code"}


def test_litellms_status_setting_is_honoured(mock: MockServer) -> None:
    with _refusal(_litellm(mock.url, budget_exceeded_status_code=429)) as err:
        assert isinstance(err, openai.RateLimitError)
        assert (err.type, err.code) == ("budget_exceeded", "429")


def test_our_setting_wins_in_a_litellm_config(mock: MockServer) -> None:
    cfg = {**_litellm(mock.url), "budget_settings": {"exceeded_status_code": 400}}
    with _refusal(cfg) as err:
        assert isinstance(err, openai.BadRequestError)
        assert (err.type, err.code) == ("budget_exceeded", "budget_exceeded")


@pytest.mark.parametrize(
    ("cfg", "where"),
    [
        (_litellm("http://x", budget_exceeded_status_code=503),
         "litellm_settings.budget_exceeded_status_code"),
        (_litellm("http://x", budget_exceeded_status_code="429"),
         "litellm_settings.budget_exceeded_status_code"),
        ({**_ours("http://x"), "budget_settings": {"default_account": "all",
                                                   "exceeded_status_code": 200}},
         "budget_settings.exceeded_status_code"),
    ],
)  # fmt: skip
def test_a_status_that_is_not_a_client_error_is_refused_at_load(
    cfg: dict[str, Any], where: str
) -> None:
    with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
        config.load(cfg, env={})

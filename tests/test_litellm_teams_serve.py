"""End to end through ``routeguard serve`` on a LiteLLM-style config with a key database: a
team made with ``/team/new`` and a key made for it with ``/key/generate``; the openai SDK is
served until the team's budget is spent, then refused as LiteLLM refuses it (a 422
``budget_exceeded``) naming the team; a blocked customer is refused; after a restart the team,
its spend, its refusal and the block are all still there."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from litellm_proxy import call
from routeguard.mock import MockServer
from serving import serve

MASTER = "sk-master-teams-serve"
MSG: Any = [{"role": "user", "content": "hello"}]
_call = partial(call, key=MASTER)


@pytest.fixture(scope="module")
def upstream() -> Iterator[MockServer]:
    with MockServer() as m:
        yield m


def test_a_team_budget_through_serve_survives_a_restart(
    tmp_path: Path, upstream: MockServer
) -> None:
    cfg = tmp_path / "litellm.yaml"
    cfg.write_text(yaml.safe_dump({
        "model_list": [{"model_name": "gpt-4o", "litellm_params": {
            "model": "openai/gpt-4o", "api_base": upstream.url + "/v1", "api_key": "sk-up",
            "input_cost_per_token": 1e-4, "output_cost_per_token": 2e-4}}],
        "general_settings": {"master_key": MASTER},
        "server": {"database": str(tmp_path / "routeguard.db")},
    }))  # fmt: skip
    with serve("--config", str(cfg)) as served:
        status, team = _call(served.url, "POST", "/team/new",
                             {"team_alias": "search", "max_budget": 0.02})  # fmt: skip
        assert status == 200, team
        team_id = team["team_id"]
        status, made = _call(served.url, "POST", "/key/generate", {"team_id": team_id})
        assert status == 200, made
        key = made["key"]
        served_n = 0
        with openai.OpenAI(base_url=served.url + "/v1", api_key=key, max_retries=0) as c:
            with pytest.raises(openai.UnprocessableEntityError) as caught:
                for _ in range(100):
                    c.chat.completions.create(model="gpt-4o", messages=MSG, max_tokens=5)
                    served_n += 1
            assert served_n > 0
            assert (caught.value.type, caught.value.code) == ("budget_exceeded", "422")
            assert f"team.{team_id}" in caught.value.message
            status, _ = _call(served.url, "POST", "/customer/block", {"user_ids": ["eve"]})
            assert status == 200
            with pytest.raises(openai.PermissionDeniedError):
                c.chat.completions.create(model="gpt-4o", messages=MSG, user="eve")
        status, info = _call(served.url, "GET", f"/team/info?team_id={team_id}")
        assert status == 200
        spent = info["team_info"]["spend"]
        assert 0 < spent <= 0.02 and info["team_info"]["reserved"] == 0
    with serve("--config", str(cfg)) as again:
        status, info = _call(again.url, "GET", f"/team/info?team_id={team_id}")
        assert status == 200 and info["team_info"]["team_alias"] == "search"
        assert info["team_info"]["spend"] == pytest.approx(spent, abs=1e-9)
        c = openai.OpenAI(base_url=again.url + "/v1", api_key=key, max_retries=0)
        with c, pytest.raises(openai.UnprocessableEntityError):
            c.chat.completions.create(model="gpt-4o", messages=MSG, max_tokens=5)
        status, customer = _call(again.url, "GET", "/customer/info?end_user_id=eve")
        assert status == 200 and customer["blocked"] is True

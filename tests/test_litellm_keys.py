"""LiteLLM's key endpoints on our proxy, as a LiteLLM admin script calls them: ``/key/generate``
with ``duration`` (the key expires: OpenAI-style 401), ``max_budget`` + ``budget_duration``,
``models``, ``metadata``, ``team_id``, ``user_id``, ``key_alias``, ``rpm_limit``; then
``/key/info``, ``/key/update`` and ``/key/delete`` naming the key by itself."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import openai
import pytest

from litellm_proxy import call, client, litellm_proxy
from routeguard.config.budgets import duration_seconds, period_from_duration
from routeguard.server.thread import ServerThread

MASTER = "sk-master-litellm-keys"
MSG: Any = [{"role": "user", "content": "hi"}]
_call = partial(call, key=MASTER)


@pytest.fixture(scope="module")
def srv() -> Iterator[ServerThread]:
    with litellm_proxy(MASTER) as s:
        yield s


def test_generate_maps_every_litellm_field(srv: ServerThread) -> None:
    status, made = _call(srv.url, "POST", "/key/generate", {
        "duration": "30d", "max_budget": 5, "budget_duration": "7d", "models": ["a"],
        "metadata": {"owner": "ops"}, "team_id": "t1", "user_id": "u1", "key_alias": "ci",
        "rpm_limit": 100, "tpm_limit": 10000, "max_parallel_requests": 4,
    })  # fmt: skip
    assert status == 200, made
    assert made["key"].startswith("sk-rg-")
    assert (made["team_id"], made["user_id"], made["key_alias"]) == ("t1", "u1", "ci")
    assert (made["rpm_limit"], made["tpm_limit"], made["models"]) == (100, 10000, ["a"])
    assert made["max_budget"] == pytest.approx(5.0) and made["budget_duration"] == "weekly"
    assert made["metadata"] == {"owner": "ops"}
    assert made["expires"] == pytest.approx(time.time() + 30 * 86400, abs=60)
    assert made["ignored_fields"] == ["max_parallel_requests"]
    with client(srv.url, made["key"]) as c:
        assert c.chat.completions.create(model="a", messages=MSG).choices
        with pytest.raises(openai.NotFoundError):  # out of scope: as if missing
            c.chat.completions.create(model="b", messages=MSG)


def test_a_key_past_its_duration_gets_an_openai_style_401(srv: ServerThread) -> None:
    status, made = _call(srv.url, "POST", "/key/generate", {"duration": "1s"})
    assert status == 200
    time.sleep(1.2)
    with client(srv.url, made["key"]) as c, pytest.raises(openai.AuthenticationError) as info:
        c.chat.completions.create(model="a", messages=MSG)
    assert "expired" in str(info.value)
    assert info.value.status_code == 401 and isinstance(info.value.body, dict)
    assert _call(srv.url, "POST", "/key/generate", {"duration": "soon"})[0] == 400


def test_info_update_delete_name_the_key_itself(srv: ServerThread) -> None:
    _, made = _call(srv.url, "POST", "/key/generate", {"key_alias": "before"})
    key = made["key"]
    status, info = _call(srv.url, "GET", f"/key/info?key={key}")
    assert status == 200 and info["info"]["key_alias"] == "before"
    assert key not in json.dumps(info["info"])  # the secret is only echoed, never stored
    change = {"key": key, "key_alias": "after", "max_budget": 2, "budget_duration": "1h"}
    status, upd = _call(srv.url, "POST", "/key/update", change)
    assert status == 200 and upd["key_alias"] == "after"
    assert upd["budget_duration"] == "rolling:3600"
    assert _call(srv.url, "GET", "/key/info?key=sk-rg-nope")[0] == 404
    status, gone = _call(srv.url, "POST", "/key/delete", {"keys": [key]})
    assert status == 200 and gone == {"deleted_keys": [key]}
    with client(srv.url, key) as c, pytest.raises(openai.AuthenticationError):
        c.chat.completions.create(model="a", messages=MSG)
    assert _call(srv.url, "POST", "/key/delete", {"keys": "x"})[0] == 400


def test_litellm_durations() -> None:
    assert duration_seconds("30s") == 30 and duration_seconds("2h") == 7200
    assert duration_seconds("1mo") == 30 * 86400
    expected = {"1d": "daily", "24h": "daily", "7d": "weekly", "1w": "weekly",
                "30d": "monthly", "1mo": "monthly", "1h": "rolling:3600"}  # fmt: skip
    for text, period in expected.items():
        assert period_from_duration(text) == period
    for bad in ("", "0d", "5y", "d", "1.5h"):
        with pytest.raises(ValueError, match="unknown duration"):
            duration_seconds(bad)

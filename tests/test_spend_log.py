"""The in-process budget survives a restart: settlements are logged to SQLite and charged
again to each account's current window when the next process starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from routeguard.budget.keys import KeySpec
from routeguard.budget.memory import MemoryBudget
from routeguard.budget.spendlog import SpendLog
from routeguard.gateway import Gateway
from routeguard.providers.mock import MockServer

ACCOUNTS: list[dict[str, Any]] = [
    {"name": "org", "limit": 100.0, "period": "total"},
    {"name": "team", "parent": "org", "limit": 10.0, "period": "monthly"},
    {"name": "hourly", "limit": 5.0, "period": "rolling:3600"},
]
NOV_15 = 1_763_200_000.0  # 2025-11-15 09:46 UTC
DEC_2 = NOV_15 + 17 * 86_400


def _budget(db: Path, now: list[float]) -> MemoryBudget:
    return MemoryBudget(ACCOUNTS, clock=lambda: now[0], spend_log=SpendLog(db))


def _restart(old: MemoryBudget, db: Path, now: list[float]) -> MemoryBudget:
    assert old._log is not None
    old._log.close()  # what a shutdown does: the queued rows are written out
    return _budget(db, now)


def test_spend_is_restored_after_a_restart(tmp_path: Path) -> None:
    db, now = tmp_path / "rg.db", [NOV_15]
    first = _budget(db, now)
    for i, amount in enumerate((1_000_000, 250_000, 3)):
        res = first.reserve_sync(["team"], 2_000_000, f"r{i}")
        first.settle_sync(res, amount)
    res = first.reserve_sync(["hourly"], 1_000, "h")
    first.settle_sync(res, 700)
    held = first.reserve_sync(["team"], 500_000, "in-flight")  # dies with the process
    assert held.state == "open"

    now[0] += 60
    second = _restart(first, db, now)
    assert second.spent_sync("team") == second.spent_sync("org") == 1_250_003
    assert second.spent_sync("hourly") == 700
    assert second.reserved_sync("team") == 0  # holds are not persisted: they never spent


def test_windows_that_ended_are_not_restored(tmp_path: Path) -> None:
    db, now = tmp_path / "rg.db", [NOV_15]
    first = _budget(db, now)
    first.settle_sync(first.reserve_sync(["team"], 3_000_000, "a"), 3_000_000)
    first.settle_sync(first.reserve_sync(["hourly"], 10, "b"), 10)
    now[0] = DEC_2  # another month, and long past the rolling hour
    second = _restart(first, db, now)
    assert second.spent_sync("team") == 0
    assert second.spent_sync("hourly") == 0
    assert second.spent_sync("org") == 3_000_000  # a total budget never resets


def test_a_restored_budget_still_refuses_overspend(tmp_path: Path) -> None:
    db, now = tmp_path / "rg.db", [NOV_15]
    first = _budget(db, now)
    first.settle_sync(first.reserve_sync(["team"], 9_500_000, "a"), 9_500_000)
    second = _restart(first, db, now)
    second.reserve_sync(["team"], 500_000, "fits")
    try:
        second.reserve_sync(["team"], 1, "over")
    except Exception as exc:
        assert "team" in str(exc)
    else:
        raise AssertionError("a restarted budget admitted spend past its limit")


async def test_a_keys_budget_survives_a_gateway_restart(tmp_path: Path) -> None:
    with MockServer() as mock:
        dep = {"type": "openai", "api_base": mock.url + "/v1", "api_key": "k",
               "input_cost_per_mtok": 1000.0, "output_cost_per_mtok": 2000.0}  # fmt: skip
        cfg = {"model_list": [{**dep, "model_name": "m", "model": "sim-m"}],
               "server": {"database": str(tmp_path / "rg.db")}}  # fmt: skip
        gw = Gateway.from_config(cfg)
        _, rec = gw.keys.create(KeySpec(max_budget=5.0))
        req = {"model": "m", "max_tokens": 20, "messages": [{"role": "user", "content": "x"}]}
        for _ in range(3):
            await gw.chat_result(dict(req), key=rec)
        assert gw.budget is not None
        spent = await gw.budget.backend.spent(rec.key_id)
        await gw.aclose()
        assert spent > 0

        again = Gateway.from_config(cfg)
        assert again.budget is not None
        same = again.keys.get(rec.key_id)
        assert again.budget.key_account(same) == rec.key_id
        assert await again.budget.backend.spent(rec.key_id) == spent
        await again.aclose()

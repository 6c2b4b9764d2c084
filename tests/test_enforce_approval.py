"""Approval: callbacks (sync/async) and a pending queue an operator resolves; timeout denies."""

from __future__ import annotations

import asyncio
import threading

import pytest

from routeguard.enforce.approval import (
    ApprovalQueue,
    ApprovalRequest,
    aresolve,
    new_request_id,
    resolve,
)
from routeguard.errors import EnforcementError


def req(tool: str = "shell") -> ApprovalRequest:
    return ApprovalRequest(new_request_id(), "agent-1", "executor", tool, {"cmd": "ls"}, "r1")


def test_sync_callback() -> None:
    assert resolve(lambda r: r.tool == "shell", req()).approved
    assert not resolve(lambda r: False, req()).approved
    assert not resolve(None, req()).approved


def test_failing_handler_denies() -> None:
    def boom(r: ApprovalRequest) -> bool:
        raise RuntimeError("approver offline")

    out = resolve(boom, req())
    assert not out.approved and "approver offline" in out.reason


async def test_async_callback_only_in_async_path() -> None:
    async def ok(r: ApprovalRequest) -> bool:
        await asyncio.sleep(0)
        return True

    assert (await aresolve(ok, req())).approved
    out = resolve(ok, req())
    assert not out.approved and "acheck" in out.reason


async def test_queue_approve_from_operator() -> None:
    submitted = asyncio.Event()
    q = ApprovalQueue(timeout=30, on_submit=lambda _: submitted.set())
    r = req()
    task = asyncio.create_task(aresolve(q, r))
    await submitted.wait()
    assert q.list()[0].id == r.id and q.get(r.id).tool == "shell"
    q.approve(r.id, by="alice")
    out = await task
    assert out.approved and out.by == "alice"
    assert q.list() == []
    with pytest.raises(EnforcementError, match="no pending"):
        q.deny(r.id)


def test_queue_deny_from_another_thread() -> None:
    q = ApprovalQueue(timeout=30)
    r = req()

    def operator() -> None:
        while not q.list():
            threading.Event().wait(0.001)
        q.deny(r.id, by="bob", reason="not during a freeze")

    t = threading.Thread(target=operator)
    t.start()
    out = q.wait(r)
    t.join()
    assert not out.approved and out.reason == "not during a freeze" and out.by == "bob"


async def test_queue_timeout_denies() -> None:
    q = ApprovalQueue(timeout=0.05)
    out = await aresolve(q, req())
    assert not out.approved and "timed out" in out.reason
    assert q.list() == []
    out2 = resolve(q, req())
    assert not out2.approved and "timed out" in out2.reason


def test_queue_bad_input() -> None:
    with pytest.raises(EnforcementError, match="timeout"):
        ApprovalQueue(timeout=0)
    q = ApprovalQueue()
    r = req()
    q.submit(r)
    with pytest.raises(EnforcementError, match="already pending"):
        q.submit(r)
    assert r.public()["tool"] == "shell"

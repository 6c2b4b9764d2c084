"""Capability sandbox: roles, per-step grants with expiry, and grants that only narrow."""

from __future__ import annotations

import pytest

from routeguard.enforce.sandbox import Grant, Sandbox, glob_covers, tools_cover
from routeguard.errors import EnforcementError, GrantWidened, PolicyError


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_planner_gets_no_tools() -> None:
    sb = Sandbox()
    sb.grant(["read_file"])
    assert sb.check("planner", "read_file") == "role 'planner' may not call tools"
    assert sb.check("executor", "read_file") is None


def test_executor_only_gets_the_current_steps_grant() -> None:
    sb = Sandbox()
    sb.grant(["read_*"], step=1)
    sb.grant(["send_email"], step=2)
    sb.set_step(1)
    assert sb.check("executor", "read_file") is None
    assert "not granted for step 1" in (sb.check("executor", "send_email") or "")
    sb.set_step(2)
    assert sb.check("executor", "send_email") is None
    assert sb.check("executor", "read_file") is not None
    sb.set_step(3)
    assert sb.check("executor", "read_file") == "no tools are granted for step 3"
    sb.set_step(2)
    sb.revoke()
    assert sb.check("executor", "send_email") == "no tools are granted for step 2"


def test_unknown_role_is_refused() -> None:
    sb = Sandbox()
    sb.grant(["*"])
    assert "not known" in (sb.check("admin", "x") or "")


def test_grant_expires() -> None:
    clock = Clock()
    sb = Sandbox(clock=clock)
    sb.grant(["read_file"], ttl=10)
    assert sb.check("executor", "read_file") is None
    clock.t += 10
    assert sb.check("executor", "read_file") == "the grant for step 0 has expired"


def test_grant_beyond_ceiling_is_rejected() -> None:
    sb = Sandbox(ceiling=["read_*", "send_email"])
    sb.grant(["read_file", "send_email"])
    with pytest.raises(GrantWidened, match="delete_file"):
        sb.grant(["read_file", "delete_file"])
    with pytest.raises(GrantWidened):
        sb.grant(["*"])


def test_delegation_narrows_and_never_widens() -> None:
    clock = Clock()
    parent = Sandbox(ceiling=Grant.of(["read_*", "send_*"], expires_at=2000.0), clock=clock)
    child = parent.delegate(["read_file"])
    assert child.ceiling.expires_at == 2000.0  # inherits the parent's expiry
    child.grant(["read_file"])
    assert child.check("executor", "read_file") is None
    with pytest.raises(GrantWidened):
        child.grant(["send_email"])
    with pytest.raises(GrantWidened):
        parent.delegate(["send_email", "shell"])
    with pytest.raises(GrantWidened, match="expires"):
        parent.delegate(["read_file"], expires_at=3000.0)
    clock.t = 2000.0
    assert "expired" in (child.check("executor", "read_file") or "")


def test_role_all_is_bounded_by_ceiling() -> None:
    sb = Sandbox(roles={"operator": "all"}, ceiling=["read_*"])
    assert sb.check("operator", "read_x") is None
    assert "outside the delegated" in (sb.check("operator", "write_x") or "")


def test_glob_cover_is_conservative() -> None:
    assert glob_covers("*", "anything*")
    assert glob_covers("read_*", "read_file")
    assert glob_covers("read_*", "read_f*")
    assert not glob_covers("read_*", "*")
    assert not glob_covers("read_file", "read_*")
    assert not glob_covers("{a,b}", "{a,b,c}")
    assert tools_cover(["read_*"], ["read_a", "write_b"]) == ["write_b"]


def test_bad_configuration_is_a_clear_error() -> None:
    with pytest.raises(EnforcementError, match="unknown mode"):
        Sandbox(roles={"x": "some"})  # type: ignore[dict-item]
    with pytest.raises(PolicyError, match="invalid tool pattern"):
        Grant.of(["[z-a]"])
    with pytest.raises(EnforcementError, match="ttl"):
        Sandbox().grant(["x"], ttl=0)

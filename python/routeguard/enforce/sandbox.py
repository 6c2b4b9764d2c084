"""Capability sandbox: which tools a role may touch at the current plan step.

The sandbox sits in front of the policy: a call outside the caller's capabilities is refused
before any rule is consulted (``Guard`` reports it with rule id :data:`SANDBOX_RULE_ID`).
Roles decide what a caller may hold: a ``planner`` holds nothing, an ``executor`` only the
tools granted for its current step (each :class:`Grant` with an optional expiry), and a role
configured as ``all`` is bounded only by the sandbox's ceiling. The ceiling is what a
delegation handed down: every grant must fit inside it (:meth:`Grant.narrow`), so grants only
ever narrow down a delegation chain; a child that asks for more raises
:class:`~routeguard.errors.GrantWidened`.

Tool sets are globs in the policy glob grammar (``enforce/patterns.py``). Whether one glob set
fits inside another is decided conservatively: a child pattern fits when a parent pattern is
identical, is ``*``, matches it as a literal name, or is a ``prefix*`` the child's fixed
prefix extends. Anything cleverer is rejected (fail closed).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from routeguard.enforce.patterns import PatternError, compile_glob
from routeguard.errors import EnforcementError, GrantWidened

__all__ = [
    "SANDBOX_RULE_ID",
    "Grant",
    "RoleMode",
    "Sandbox",
    "glob_covers",
    "tools_cover",
]

SANDBOX_RULE_ID = "<sandbox>"
"""The rule id a decision carries when the sandbox refused the call."""

RoleMode = Literal["none", "granted", "all"]
"""``none``: no tools; ``granted``: the current step's grants; ``all``: the whole ceiling."""

DEFAULT_ROLES: Mapping[str, RoleMode] = {"planner": "none", "executor": "granted"}

_META = set("*?[{\\")


def _check_glob(glob: str) -> str:
    if not isinstance(glob, str) or not glob:
        raise EnforcementError(f"tool pattern must be a non-empty string, got {glob!r}")
    try:
        compile_glob(glob)
    except PatternError as e:
        raise EnforcementError(f"invalid tool pattern {glob!r}: {e}") from None
    return glob


def _literal_prefix(glob: str) -> str:
    for i, c in enumerate(glob):
        if c in _META:
            return glob[:i]
    return glob


def glob_covers(parent: str, child: str) -> bool:
    """Whether every tool name ``child`` matches is also matched by ``parent`` (conservative)."""
    if parent == child or parent == "*":
        return True
    if not (_META & set(child)):
        return compile_glob(parent).fullmatch(child) is not None
    if parent.endswith("*") and not (_META & set(parent[:-1])):
        return _literal_prefix(child).startswith(parent[:-1])
    return False


def tools_cover(parents: Iterable[str], children: Iterable[str]) -> list[str]:
    """The child patterns no parent pattern covers (empty: the child set fits)."""
    ps = list(parents)
    return [c for c in children if not any(glob_covers(p, c) for p in ps)]


@dataclass(frozen=True, slots=True)
class Grant:
    """A set of tools (globs) usable until ``expires_at`` (Unix seconds; None: no expiry)."""

    tools: frozenset[str]
    expires_at: float | None = None

    @classmethod
    def of(cls, tools: Iterable[str], *, expires_at: float | None = None) -> Grant:
        """A validated grant (every pattern must be a valid glob)."""
        if isinstance(tools, str):
            tools = [tools]
        return cls(frozenset(_check_glob(t) for t in tools), expires_at)

    def expired(self, now: float) -> bool:
        """Whether the grant is past its expiry at ``now``."""
        return self.expires_at is not None and now >= self.expires_at

    def allows(self, tool: str, now: float) -> bool:
        """Whether ``tool`` is in the grant and the grant is live at ``now``."""
        if self.expired(now):
            return False
        return any(compile_glob(t).fullmatch(tool) is not None for t in self.tools)

    def narrow(self, tools: Iterable[str], *, expires_at: float | None = None) -> Grant:
        """A child grant inside this one; raises ``GrantWidened`` if it asks for more.

        A child with no expiry inherits this grant's expiry (it cannot outlive its parent).
        """
        child = Grant.of(tools, expires_at=expires_at)
        extra = tools_cover(self.tools, sorted(child.tools))
        if extra:
            raise GrantWidened(
                f"grant asks for tools outside its parent: {', '.join(extra)} "
                f"(parent allows: {', '.join(sorted(self.tools)) or 'nothing'})"
            )
        if self.expires_at is not None:
            if child.expires_at is None:
                return replace(child, expires_at=self.expires_at)
            if child.expires_at > self.expires_at:
                raise GrantWidened(
                    f"grant expires at {child.expires_at:.0f}, after its parent "
                    f"({self.expires_at:.0f})"
                )
        return child


UNLIMITED = Grant(frozenset({"*"}))


@dataclass
class _State:
    step: int = 0
    grants: dict[int, Grant] = field(default_factory=dict)


class Sandbox:
    """Roles and per-step grants, bounded by a ceiling grant (what the delegation allows).

    Thread-safe. ``clock`` gives Unix seconds (injectable for tests).
    """

    def __init__(
        self,
        *,
        roles: Mapping[str, RoleMode] | None = None,
        ceiling: Grant | Iterable[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.roles: dict[str, RoleMode] = dict(DEFAULT_ROLES if roles is None else roles)
        for role, mode in self.roles.items():
            if mode not in ("none", "granted", "all"):
                raise EnforcementError(
                    f"sandbox role '{role}': unknown mode {mode!r}; expected none, granted or all"
                )
        if ceiling is None:
            self.ceiling = UNLIMITED
        elif isinstance(ceiling, Grant):
            self.ceiling = ceiling
        else:
            self.ceiling = Grant.of(ceiling)
        self._clock = clock
        self._lock = threading.Lock()
        self._state = _State()

    @property
    def step(self) -> int:
        """The current plan step."""
        return self._state.step

    def set_step(self, step: int) -> None:
        """Move to plan step ``step`` (grants of other steps stay but do not apply)."""
        with self._lock:
            self._state.step = step

    def grant(
        self,
        tools: Iterable[str],
        *,
        step: int | None = None,
        ttl: float | None = None,
        expires_at: float | None = None,
    ) -> Grant:
        """Grant ``tools`` for ``step`` (default: the current one), for ``ttl`` seconds.

        Replaces that step's grant. Raises ``GrantWidened`` when the tools or the expiry go
        beyond the sandbox's ceiling.
        """
        if ttl is not None:
            if ttl <= 0:
                raise EnforcementError(f"grant ttl must be positive, got {ttl}")
            expires_at = self._clock() + ttl
        g = self.ceiling.narrow(tools, expires_at=expires_at)
        with self._lock:
            self._state.grants[self._state.step if step is None else step] = g
        return g

    def revoke(self, step: int | None = None) -> None:
        """Drop the grant of ``step`` (default: the current one)."""
        with self._lock:
            self._state.grants.pop(self._state.step if step is None else step, None)

    def current_grant(self, step: int | None = None) -> Grant | None:
        """The grant of ``step`` (default: the current step), if any."""
        return self._state.grants.get(self._state.step if step is None else step)

    def check(self, role: str, tool: str, *, step: int | None = None) -> str | None:
        """None if ``role`` may call ``tool`` at ``step``; otherwise the reason it may not."""
        now = self._clock()
        mode = self.roles.get(role)
        if mode is None:
            return f"role '{role}' is not known to the sandbox"
        if mode == "none":
            return f"role '{role}' may not call tools"
        if not self.ceiling.allows(tool, now):
            if self.ceiling.expired(now):
                return "the delegation that bounds this sandbox has expired"
            return f"tool '{tool}' is outside the delegated capabilities"
        if mode == "all":
            return None
        s = self._state.step if step is None else step
        g = self._state.grants.get(s)
        if g is None:
            return f"no tools are granted for step {s}"
        if g.expired(now):
            return f"the grant for step {s} has expired"
        if not g.allows(tool, now):
            return f"tool '{tool}' is not granted for step {s}"
        return None

    def delegate(
        self,
        tools: Iterable[str],
        *,
        ttl: float | None = None,
        expires_at: float | None = None,
        roles: Mapping[str, RoleMode] | None = None,
    ) -> Sandbox:
        """A child sandbox whose ceiling is a narrowing of this one's (``GrantWidened`` if not)."""
        if ttl is not None:
            expires_at = self._clock() + ttl
        ceiling = self.ceiling.narrow(tools, expires_at=expires_at)
        return Sandbox(roles=self.roles if roles is None else roles, ceiling=ceiling,
                       clock=self._clock)  # fmt: skip

    def fresh(self) -> Sandbox:
        """A sandbox with the same roles and ceiling and no grants (a new session)."""
        return Sandbox(roles=self.roles, ceiling=self.ceiling, clock=self._clock)

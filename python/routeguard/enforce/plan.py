"""Tool-call enforcement as written in the config (``enforce:`` at the top level and
``routes.<alias>.enforce``), checked at config load and resolved into one
:class:`EnforcePlan` per alias: which block applies, its policy (compiled once to check it)
and audit paths made absolute. Plain data; the gateway builds the policy engines, audit
logs and approval queues from the plans (:func:`routeguard.enforce.proxy.build_enforcers`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec

from routeguard.enforce.engine import PolicyEngine
from routeguard.errors import ConfigProblem, PolicyError


class EnforceSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """The ``enforce:`` block, as written."""

    policy: str
    on_deny: Literal["remove", "refuse"] = "remove"
    role: str = "executor"
    apply_to: Literal["pinned", "all"] = "pinned"
    audit: str | None = None
    # Seconds a require_approval call waits for POST /admin/approvals/{id}/approve
    # (None: no approvals; such calls are removed like denied ones).
    approval_timeout: float | None = None


@dataclass(frozen=True, slots=True)
class EnforcePlan:
    """The enforcement one alias gets: its block's settings, with paths resolved. Aliases
    that share a block (``path``) share one enforcer, so trust and approvals are shared."""

    path: str  # the block's key path: "enforce" or "routes.<alias>.enforce"
    settings: EnforceSettings
    policy: Path
    audit: Path | None


def plan_enforcement(
    top: Any,
    routes: Mapping[str, Any],
    *,
    pinned: set[str],
    aliases: list[str],
    base: Path | None,
    problems: list[ConfigProblem],
) -> dict[str, EnforcePlan]:
    """The enforcement plan of each alias that has one: a pinned route gets the top-level
    block, ``apply_to: all`` extends it to every alias, a route's own mapping replaces it
    there and ``false`` turns it off."""
    out: dict[str, EnforcePlan] = {}
    if top is not None and not isinstance(top, dict):
        problems.append(ConfigProblem("enforce", "expected a mapping with at least 'policy'"))
        top = None
    default = _plan(top, "enforce", base, problems, True) if top is not None else None
    if default is not None:
        for alias in [*aliases, *pinned]:
            if default.settings.apply_to == "all" or alias in pinned:
                out[alias] = default
    for alias, spec in routes.items():
        path = f"routes.{alias}.enforce"
        if spec is False:
            out.pop(alias, None)
        elif spec is True:
            if default is None:
                problems.append(ConfigProblem(path, "true needs a top-level enforce block"))
            else:
                out[alias] = default
        elif isinstance(spec, dict):
            plan = _plan(spec, path, base, problems, False)
            if plan is not None:
                out[alias] = plan
        else:
            problems.append(ConfigProblem(path, "expected a mapping, true or false"))
    return out


def _plan(
    spec: dict[str, Any], path: str, base: Path | None, problems: list[ConfigProblem], top: bool
) -> EnforcePlan | None:
    try:
        s = msgspec.convert(spec, EnforceSettings, strict=True)
    except msgspec.ValidationError as e:
        problems.append(ConfigProblem(path, str(e)))
        return None
    if not top and "apply_to" in spec:
        problems.append(ConfigProblem(f"{path}.apply_to", "only the top-level enforce sets it"))
    if s.approval_timeout is not None and s.approval_timeout <= 0:
        problems.append(ConfigProblem(f"{path}.approval_timeout", "must be positive seconds"))
    policy = _resolve(Path(s.policy), base)
    _check_policy(policy, f"{path}.policy", problems)
    audit = _resolve(Path(s.audit), base) if s.audit is not None else None
    return EnforcePlan(path, s, policy, audit)


def _resolve(p: Path, base: Path | None) -> Path:
    return base / p if base is not None and not p.is_absolute() else p


def _check_policy(policy: Path, path: str, problems: list[ConfigProblem]) -> None:
    """A policy that does not compile is a config problem with its line, found at load."""
    try:
        PolicyEngine.from_file(policy)
    except PolicyError as e:
        problems.append(ConfigProblem(path, e.message))
    except OSError as e:
        problems.append(ConfigProblem(path, f"cannot read {policy}: {e.strerror}"))

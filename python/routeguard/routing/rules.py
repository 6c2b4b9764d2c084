"""Explicit routing rules: the first layer of the router, checked before any embedding is used.

Data flow: a rule spec from the route config (a plain dict) -> :class:`Rule` (regex compiled,
value lists turned into sets, once) -> for each request, :class:`Rules.match` walks the rules in
order with a :class:`RuleInput` (the caller's trusted metadata, the request's own ``metadata``
hints, headers, an estimated prompt length, the last user message) and returns the first rule
whose every condition holds, or None.

A rule spec::

    {"name": "vip", "target": "strong",            # an alias, or "cheap" / "strong"
     "metadata": {"tier": "enterprise"},            # caller metadata, then request metadata
     "headers": {"x-task": ["code", "sql"]},        # any of the values (names case-insensitive)
     "key": ["key-1"], "team": ["research"],        # the authenticated key / team
     "min_tokens": 0, "max_tokens": 2000,           # estimated prompt tokens, inclusive
     "regex": "(?i)\\bprove\\b"}                    # searched in the last user message

``regex`` runs on a linear-time engine (the Rust ``regex`` crate): client text cannot make a
rule backtrack, and a pattern it cannot run (look-around, backreferences) is refused at load.

Conditions combine with AND; a rule without conditions always matches (a catch-all). ``key``
and ``team`` come only from the caller's metadata (set by authentication), never from the
request, so a client cannot claim another team's route.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from routeguard._native import core
from routeguard.errors import RouteguardError

_RULE_KEYS = frozenset(
    {"name", "target", "metadata", "headers", "key", "team", "min_tokens", "max_tokens", "regex"}
)


@dataclass(frozen=True, slots=True)
class RuleInput:
    """What rules look at, gathered once per request."""

    metadata: Mapping[str, Any]
    request_metadata: Mapping[str, Any]
    headers: Mapping[str, str]
    tokens: int
    text: str


def _values(v: Any, where: str) -> frozenset[str]:
    if isinstance(v, str | int | float | bool):
        return frozenset({str(v)})
    if isinstance(v, Sequence) and all(isinstance(x, str | int | float | bool) for x in v):
        return frozenset(str(x) for x in v)
    raise RouteguardError(f"{where}: expected a string or a list of strings, got {v!r}")


def _value_map(spec: Any, where: str, lower_keys: bool = False) -> dict[str, frozenset[str]]:
    if not isinstance(spec, Mapping):
        raise RouteguardError(f"{where}: expected a mapping of name to value(s), got {spec!r}")
    return {
        (str(k).lower() if lower_keys else str(k)): _values(v, f"{where}.{k}")
        for k, v in spec.items()
    }


@dataclass(frozen=True)
class Rule:
    """One rule: conditions (all must hold) and the alias it sends matching requests to."""

    name: str
    target: str
    metadata: dict[str, frozenset[str]] = field(default_factory=dict)
    headers: dict[str, frozenset[str]] = field(default_factory=dict)
    keys: frozenset[str] | None = None
    teams: frozenset[str] | None = None
    min_tokens: int | None = None
    max_tokens: int | None = None
    regex: core.Regex | None = None

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any], where: str = "rule") -> Rule:
        """Build from a config mapping (see the module docstring); errors name ``where``.
        A ``None`` value counts as an absent key."""
        spec = {k: v for k, v in spec.items() if v is not None}
        unknown = set(spec) - _RULE_KEYS
        if unknown:
            raise RouteguardError(
                f"{where}: unknown key(s) {', '.join(sorted(unknown))}; "
                f"expected {', '.join(sorted(_RULE_KEYS))}"
            )
        target = spec.get("target")
        if not isinstance(target, str) or not target:
            raise RouteguardError(f"{where}.target: required, the alias to send matches to")
        bounds: dict[str, int | None] = {}
        for k in ("min_tokens", "max_tokens"):
            v = spec.get(k)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                raise RouteguardError(f"{where}.{k}: expected a non-negative integer, got {v!r}")
            bounds[k] = v
        regex = None
        if spec.get("regex") is not None:
            try:
                regex = core.Regex(str(spec["regex"]))
            except core.RegexError as exc:
                why = str(exc).strip().splitlines()[-1].removeprefix("error: ")
                raise RouteguardError(
                    f"{where}.regex: invalid pattern {spec['regex']!r} for the linear-time "
                    f"regex engine (no look-around or backreferences): {why}"
                ) from None
        return cls(
            name=str(spec.get("name", where)),
            target=target,
            metadata=_value_map(spec.get("metadata", {}), f"{where}.metadata"),
            headers=_value_map(spec.get("headers", {}), f"{where}.headers", lower_keys=True),
            keys=_values(spec["key"], f"{where}.key") if "key" in spec else None,
            teams=_values(spec["team"], f"{where}.team") if "team" in spec else None,
            min_tokens=bounds["min_tokens"],
            max_tokens=bounds["max_tokens"],
            regex=regex,
        )

    def matches(self, x: RuleInput) -> bool:
        """Whether every condition of this rule holds for ``x``."""
        if self.min_tokens is not None and x.tokens < self.min_tokens:
            return False
        if self.max_tokens is not None and x.tokens > self.max_tokens:
            return False
        if self.keys is not None and str(x.metadata.get("key")) not in self.keys:
            return False
        if self.teams is not None and str(x.metadata.get("team")) not in self.teams:
            return False
        for k, allowed in self.metadata.items():
            v = x.metadata.get(k, x.request_metadata.get(k))
            if v is None or str(v) not in allowed:
                return False
        for k, allowed in self.headers.items():
            h = x.headers.get(k)
            if h is None or h not in allowed:
                return False
        return self.regex is None or self.regex.is_match(x.text)


class Rules:
    """An ordered list of rules; the first that matches wins."""

    def __init__(self, rules: Sequence[Rule] = ()) -> None:
        self.rules = list(rules)

    @classmethod
    def from_list(cls, specs: Any, where: str = "rules") -> Rules:
        """Build from the config's list of rule mappings (checked: raw config data)."""
        if isinstance(specs, str | bytes) or not isinstance(specs, Sequence):
            raise RouteguardError(f"{where}: expected a list of rules")
        out = []
        for i, s in enumerate(specs):
            if not isinstance(s, Mapping):
                raise RouteguardError(f"{where}[{i}]: expected a mapping, got {s!r}")
            out.append(Rule.from_dict(s, f"{where}[{i}]"))
        return cls(out)

    def __len__(self) -> int:
        return len(self.rules)

    def match(self, x: RuleInput) -> Rule | None:
        """The first rule that matches ``x``, or None."""
        for r in self.rules:
            if r.matches(x):
                return r
        return None

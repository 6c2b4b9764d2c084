"""Explicit routing rules: the first layer of the router, checked before any embedding is used.

Data flow: a checked rule from the route config (a
:class:`~routeguard.config.routes.RuleSettings`) -> :class:`Rule` (regex compiled, value lists
turned into sets, once) -> for each request, :class:`Rules.match` walks the rules in
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
from routeguard.config.routes import RuleSettings, Values, parse_rules


@dataclass(frozen=True, slots=True)
class RuleInput:
    """What rules look at, gathered once per request."""

    metadata: Mapping[str, Any]
    request_metadata: Mapping[str, Any]
    headers: Mapping[str, str]
    tokens: int
    text: str


def _values(v: Values) -> frozenset[str]:
    return frozenset(str(x) for x in v) if isinstance(v, list) else frozenset({str(v)})


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
        """Build from a config mapping (see the module docstring), checked; errors name
        ``where``. A ``None`` value counts as an absent key."""
        return cls.from_settings(parse_rules([spec], where)[0], where)

    @classmethod
    def from_settings(cls, rule: RuleSettings, where: str = "rule") -> Rule:
        """Build from a checked rule (its regex compiled, its value lists made sets)."""
        return cls(
            name=rule.name if rule.name is not None else where,
            target=rule.target,
            metadata={str(k): _values(v) for k, v in rule.metadata.items()},
            headers={str(k).lower(): _values(v) for k, v in rule.headers.items()},
            keys=_values(rule.key) if rule.key is not None else None,
            teams=_values(rule.team) if rule.team is not None else None,
            min_tokens=rule.min_tokens,
            max_tokens=rule.max_tokens,
            regex=core.Regex(rule.regex) if rule.regex is not None else None,
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
        return cls.from_settings(parse_rules(specs, where), where)

    @classmethod
    def from_settings(cls, rules: Sequence[RuleSettings], where: str = "rules") -> Rules:
        """Build from checked rules."""
        return cls([Rule.from_settings(r, f"{where}[{i}]") for i, r in enumerate(rules)])

    def __len__(self) -> int:
        return len(self.rules)

    def match(self, x: RuleInput) -> Rule | None:
        """The first rule that matches ``x``, or None."""
        for r in self.rules:
            if r.matches(x):
                return r
        return None

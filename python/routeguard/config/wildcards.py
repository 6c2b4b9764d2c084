"""Wildcard deployments: a ``model_name`` with ``*`` in it (``"*"``, ``"openai/*"``,
``"claude-*"``) serves every requested name that matches it. The parts the stars matched
replace, in order, the stars of the deployment's ``model`` (``openai/*`` sends the requested
name upstream). The config loader groups such entries into :class:`Wildcard` patterns; the
gateway asks :func:`best_match` for a name no exact alias serves and builds that name's
concrete deployments with :meth:`Wildcard.concrete`."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from routeguard.deployment import Deployment
from routeguard.pricing import list_price

# A requested name a pattern may serve: printable, no spaces, bounded (it becomes an alias,
# a metric-free log field and the upstream model name).
_NAME = re.compile(r"^[\x21-\x7e]{1,256}$")


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """The regex that fully matches the names ``pattern`` serves, one group per ``*``."""
    return re.compile("(.+?)".join(re.escape(part) for part in pattern.split("*")) + r"\Z")


@dataclass(frozen=True)
class Wildcard:
    """One ``model_name`` pattern and the template deployments behind it (their ``model``
    may hold as many ``*`` as the pattern, or none)."""

    pattern: str
    templates: tuple[Deployment, ...]
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "regex", compile_pattern(self.pattern))

    @property
    def specificity(self) -> tuple[int, int]:
        """Sort key: more literal characters first, then fewer stars."""
        return (-len(self.pattern.replace("*", "")), self.pattern.count("*"))

    def captures(self, name: str) -> tuple[str, ...] | None:
        """What the stars matched in ``name``, or None when it does not match."""
        if not _NAME.match(name):
            return None
        m = self.regex.match(name)
        return None if m is None else m.groups()

    def concrete(self, name: str) -> list[Deployment]:
        """The deployments serving ``name`` (a matching name): each template with the stars
        of its model filled in, its own id, and the list price of the concrete model when
        the template sets no price."""
        parts = self.captures(name)
        assert parts is not None
        out = []
        for t in self.templates:
            model = substitute(t.model, parts)
            dep = dataclasses.replace(
                t, id=f"{t.id}[{name}]", alias=name, model=model, pattern=t.alias
            )
            if t.input_cost_per_mtok == 0 and t.output_cost_per_mtok == 0:
                price = list_price(model)
                if price is not None:
                    dep = dataclasses.replace(
                        dep, input_cost_per_mtok=price[0], output_cost_per_mtok=price[1]
                    )
            out.append(dep)
        return out


def substitute(model: str, parts: Sequence[str]) -> str:
    """``model`` with its stars replaced by ``parts`` in order (a model without stars is
    fixed; the loader checks there are never more stars than parts)."""
    pieces = model.split("*")
    out = pieces[0]
    for i, piece in enumerate(pieces[1:]):
        out += parts[i] + piece
    return out


def best_match(wildcards: Sequence[Wildcard], name: str) -> Wildcard | None:
    """The most specific pattern serving ``name`` (``wildcards`` are kept sorted by
    specificity, config order breaking ties), or None."""
    for w in wildcards:
        if w.captures(name) is not None:
            return w
    return None


def is_priced(deps: Sequence[Deployment]) -> bool:
    """Whether any of ``deps`` has a price (a budget can bound what it costs)."""
    return any(d.input_cost_per_mtok > 0 or d.output_cost_per_mtok > 0 for d in deps)

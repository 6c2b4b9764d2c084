"""Outcome rows from live traffic: the request log joined with the feedback on its requests.

Data flow (``routeguard router train --from-log LOG``): the feedback entries
(:func:`routeguard.observe.feedback.read_feedback`; per request the last client entry wins,
else the last shadow verdict) -> the request log's line with the same ``request_id`` (its
prompt, which needs ``observability.log_content: true``; its route and the alias that served
it) -> whether that alias is the route's ``cheap`` or ``strong`` one, from the config's
``routes.<alias>`` -> one :class:`~routeguard.routing.outcomes.Outcomes` row by
:func:`label`, the learned router's training labels.

The mapping (``cheap``/``strong`` are the two answers' quality in [0, 1]; ``worse`` is the
trainer's target P(the cheap answer is worse), ``better`` P(it is better)):

====================================  ========================  =====  ======  ======
feedback                              on the answer of          cheap  strong  worse
====================================  ========================  =====  ======  ======
``strong_needed: true``               either                    0      1       1
``strong_needed: false``              either                    1      1       0
shadow judge: cheap answer better     cheap (shadowed)          1      0       0 (better 1)
``rating: up``                        cheap                     1      1       0
``rating: down``                      cheap                     0      1       1
``score: s``                          cheap                     s      1       1 - s
``rating: down`` / ``score < 0.5``    strong                    0      0       0
``rating: up`` / ``score >= 0.5``     strong                    (no row)
anything but ``strong_needed``        another alias, a cache    (no row)
                                      hit
====================================  ========================  =====  ======  ======

Its limits, each an assumption where the feedback says nothing: a thumbs-down on a cheap answer
is read as "the strong model would have done it" (it may have failed too); a thumbs-down on a
strong answer as "the cheap one would have failed as well", so calling strong gained nothing;
a thumbs-up on a strong answer says nothing about the cheap one and is dropped. Feedback is
what people chose to rate: it over-represents bad answers, so the learned ``strong_share``
reference quantiles describe rated traffic, not all traffic (``strong_share`` routes re-fit
their threshold to live traffic anyway).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from routeguard.config.routes import RouteSettings
from routeguard.errors import RouteguardError
from routeguard.routing.outcomes import Outcomes
from routeguard.routing.router import prompt_text

Label = tuple[float, float, float, float]  # cheap, strong, worse, better

_decode = msgspec.json.Decoder().decode


def label(entry: Mapping[str, Any], role: str | None) -> Label | None:
    """The outcome row's ``(cheap, strong, worse, better)`` for one feedback ``entry`` on an
    answer of the route's ``role`` ("cheap", "strong", or None for another alias / a cache
    hit); None when the feedback says nothing about cheap versus strong (module table)."""
    judge = entry.get("judge")
    if entry.get("source") == "shadow" and judge == "cheap":
        return (1.0, 0.0, 0.0, 1.0)
    needed = entry.get("strong_needed")
    if isinstance(needed, bool):
        return (0.0, 1.0, 1.0, 0.0) if needed else (1.0, 1.0, 0.0, 0.0)
    rating, score = entry.get("rating"), entry.get("score")
    if isinstance(score, int | float) and not isinstance(score, bool):
        s = min(1.0, max(0.0, float(score)))
    elif rating in ("up", "down"):
        s = 1.0 if rating == "up" else 0.0
    else:
        return None
    if role == "cheap":
        return (s, 1.0, 1.0 - s, 0.0)
    if role == "strong" and s < 0.5:
        return (0.0, 0.0, 0.0, 0.0)
    return None


def last_feedback(entries: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Per request id, the entry that counts: the last client entry, else the last shadow one."""
    out: dict[str, Mapping[str, Any]] = {}
    for e in entries:
        rid = e.get("request_id")
        if not isinstance(rid, str):
            continue
        prev = out.get(rid)
        if prev is None or e.get("source") != "shadow" or prev.get("source") == "shadow":
            out[rid] = e
    return out


@dataclass
class Joined:
    """Outcome rows built from a log and its feedback, and what was left out and why."""

    outcomes: Outcomes | None
    routes: list[str]  # the routes the rows come from, most rows first
    rows: Counter[str] = field(default_factory=Counter)  # rows by kind of feedback
    skipped: Counter[str] = field(default_factory=Counter)  # feedback left out, by reason

    def summary(self) -> str:
        """One line: rows by kind and what was skipped."""
        made = ", ".join(f"{n} {k}" for k, n in sorted(self.rows.items())) or "none"
        left = ", ".join(f"{n} {k}" for k, n in sorted(self.skipped.items()))
        return f"outcome rows: {made}" + (f"; left out: {left}" if left else "")


def log_files(path: str | Path) -> list[Path]:
    """A request log and its rotated files (``PATH.N`` .. ``PATH.1``, then ``PATH``)."""
    p = Path(path)
    rotated = [f for f in p.parent.glob(p.name + ".*") if f.suffix[1:].isdigit()]
    return [*sorted(rotated, key=lambda f: -int(f.suffix[1:])), p]


def join(
    log: str | Path,
    feedback: Sequence[Mapping[str, Any]],
    routes: Mapping[str, RouteSettings],
    only_route: str | None = None,
) -> Joined:
    """Outcome rows for the logged requests of routed routes (``routes``: the config's, with
    ``cheap`` and ``strong``) that have feedback; RouteguardError when the log holds no
    prompts for them (``log_content`` was off)."""
    wanted = last_feedback(feedback)
    out = Joined(None, [])
    if not wanted:
        raise RouteguardError("no feedback entries to train on")
    files = log_files(log)
    if not files[-1].is_file():
        raise RouteguardError(f"cannot read request log {files[-1]}: no such file")
    prompts: list[str] = []
    labels: list[Label] = []
    groups: list[str] = []
    from_routes: Counter[str] = Counter()
    seen: set[str] = set()
    for f in files:
        with f.open("rb") as fh:
            for raw in fh:
                if b'"request_id"' not in raw:
                    continue
                try:
                    line = _decode(raw)
                except msgspec.DecodeError:
                    continue
                rid = line.get("request_id") if isinstance(line, dict) else None
                if not isinstance(rid, str) or rid not in wanted or rid in seen:
                    continue
                seen.add(rid)
                row = _row(line, wanted[rid], routes, only_route, out)
                if row is not None:
                    prompts.append(row[0])
                    labels.append(row[1])
                    groups.append(str(line.get("route")))
                    from_routes[groups[-1]] += 1
    missing = len(wanted) - len(seen)
    if missing:
        out.skipped["not in the log"] += missing
    if not prompts and out.skipped.get("no prompt in the log"):
        raise RouteguardError(
            f"the request log {log} holds no prompts for the {out.skipped['no prompt in the log']}"
            " request(s) with feedback: training needs them, so set `observability.log_content: "
            "true` (or `serve --request-log` with log_content on); requests logged before that "
            "cannot be used"
        )
    out.routes = [r for r, _ in from_routes.most_common()]
    if prompts:
        arr = np.array(labels, dtype=np.float64)
        out.outcomes = Outcomes(
            prompts,
            arr[:, 0],
            arr[:, 1],
            groups,
            worse=arr[:, 2],
            better=arr[:, 3],
        )
    return out


def _row(
    line: Mapping[str, Any],
    entry: Mapping[str, Any],
    routes: Mapping[str, RouteSettings],
    only_route: str | None,
    out: Joined,
) -> tuple[str, Label] | None:
    """One log line and its feedback -> ``(prompt, label)``, or None (counted in ``out``)."""
    route = line.get("route")
    spec = routes.get(route) if isinstance(route, str) else None
    if only_route is not None and route != only_route:
        out.skipped["another route"] += 1
        return None
    if spec is None or spec.cheap is None or spec.strong is None:
        out.skipped["route without cheap/strong in the config"] += 1
        return None
    if line.get("status") != 200:
        out.skipped["request failed"] += 1
        return None
    request = line.get("request")
    if not isinstance(request, dict) or not isinstance(request.get("messages"), list):
        out.skipped["no prompt in the log"] += 1
        return None
    text = prompt_text(request)  # the log holds the OpenAI-shaped request, /v1/messages too
    if not text:
        out.skipped["no user text"] += 1
        return None
    served = line.get("model")
    cache = line.get("cache")
    hit = isinstance(cache, dict) and cache.get("result") == "hit"
    role = (
        None
        if hit
        else "cheap"
        if served == spec.cheap
        else "strong"
        if served == spec.strong
        else None
    )
    lab = label(entry, role)
    if lab is None:
        out.skipped[f"{_kind(entry)} on a {role or 'other'} answer"] += 1
        return None
    out.rows[f"{_kind(entry)} on {role or 'any'}"] += 1
    return text, lab


def _kind(entry: Mapping[str, Any]) -> str:
    if entry.get("source") == "shadow":
        return "shadow verdict"
    for k in ("strong_needed", "rating", "score"):
        if k in entry:
            v = entry[k]
            return f"{k}={str(v).lower()}" if k != "score" else "score"
    return "feedback"

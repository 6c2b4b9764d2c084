"""The metric families added after the first cut, through the openai SDK: cache results by
tier (exact, semantic) and the verifier's refusals, dollars saved by cheap routing against
the route's dearest target; and the Grafana dashboard covers every family the proxy exports
(and queries none it does not)."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import openai
import pytest
from prometheus_client import Histogram
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from embedders import WordsEmbedder
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.server import create_app
from routeguard.server.thread import ServerThread
from scrapes import MASTER, scrape, value

DASHBOARD = Path(__file__).resolve().parent.parent / "docs" / "grafana" / "routeguard.json"
CHEAP = (1.0, 2.0)  # $ per million input, output tokens
STRONG = (10.0, 30.0)


def _cfg(url: str, **routes: Any) -> dict[str, Any]:
    dep = {"type": "openai", "api_base": url + "/v1", "api_key": "sk-upstream-families"}

    def priced(name: str, price: tuple[float, float]) -> dict[str, Any]:
        return {**dep, "model_name": name, "model": f"sim-{name}", "id": f"{name}-1",
                "input_cost_per_mtok": price[0], "output_cost_per_mtok": price[1]}  # fmt: skip

    return {
        "model_list": [
            priced("cheap", CHEAP),
            priced("strong", STRONG),
            priced("cached", CHEAP),
        ],
        "cache": {"verify": True},
        "routes": {
            "cached": {"cache": {"enabled": True, "threshold": 0.7}},
            "auto": {
                "mode": "routed",
                "default": "cheap",
                "rules": [{"name": "long", "min_tokens": 40, "target": "strong"}],
            },
            **routes,
        },
        "budgets": [{"name": "acme", "limit": 5.0}],
        "server": {"master_key": MASTER},
    }


def _cost(usage: Any, price: tuple[float, float]) -> float:
    return (usage.prompt_tokens * price[0] + usage.completion_tokens * price[1]) / 1e6


def _ask(c: openai.OpenAI, model: str, text: str) -> str | None:
    """The cache result the proxy reported for one request."""
    raw = c.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}]
    )
    return raw.headers.get("x-routeguard-cache")


def test_cache_tiers_verifier_refusals_and_routing_savings(mock: MockServer) -> None:
    gw = Gateway.from_config(_cfg(mock.url), embedder=WordsEmbedder())
    mountain = "what is the tallest mountain on earth"
    population = "what was the population of france in 2010"
    with (
        ServerThread(create_app(gw)) as srv,
        openai.OpenAI(base_url=srv.url + "/v1", api_key=MASTER, max_retries=0) as c,
    ):
        seen = [
            _ask(c, "cached", mountain),  # miss, stored
            _ask(c, "cached", mountain),  # exact hit
            _ask(c, "cached", "tell me the tallest mountain on earth"),  # semantic hit
            _ask(c, "cached", population),  # miss, stored
            _ask(c, "cached", population.replace("2010", "2020")),  # refused: a miss
        ]
        short = c.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "hi there"}]
        )
        long = c.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "explain this please " * 30}]
        )
        s = scrape(srv.url)
    assert seen == ["miss", "hit", "hit", "miss", "miss"]
    cache = "routeguard_cache_requests_total"
    assert value(s, cache, route="cached", result="hit", tier="exact") == 1
    assert value(s, cache, route="cached", result="hit", tier="semantic") == 1
    assert value(s, cache, route="cached", result="miss", tier="") == 3
    assert value(s, "routeguard_cache_verifier_refusals_total", route="cached") == 1
    assert value(s, "routeguard_cache_verifier_refusals_total") == 1

    # Routing: the short request went to the cheap target; the long one to the dearest,
    # which saves nothing. Saved = the same usage at the strong target's prices, less cost.
    decisions = "routeguard_route_decisions_total"
    assert value(s, decisions, route="auto", target="cheap") == 1
    assert value(s, decisions, route="auto", target="strong") == 1
    saved = _cost(short.usage, STRONG) - _cost(short.usage, CHEAP)
    assert saved > 0
    assert value(s, "routeguard_cost_saved_usd_total", layer="routing",
                 route="auto") == pytest.approx(saved, rel=1e-9)  # fmt: skip
    assert value(s, "routeguard_cost_usd_total", route="auto") == pytest.approx(
        _cost(short.usage, CHEAP) + _cost(long.usage, STRONG), rel=1e-9
    )
    assert value(s, "routeguard_cost_saved_usd_total", layer="routing", route="cached") == 0


# ---------------------------------------------------------------------------- the dashboard

_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def _family(name: str) -> str:
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _dashboard_exprs() -> list[str]:
    exprs: list[str] = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        exprs += [t["expr"] for t in panel.get("targets", []) if "expr" in t]
    return exprs


def _expr_families(e: str) -> set[str]:
    # label lists and matchers out first: gen_ai_* are label names too
    e = re.sub(r"\b(?:by|on|ignoring|without|group_left|group_right)\s*\([^)]*\)", "", e)
    e = re.sub(r"\{[^}]*\}", "", e)
    return {_family(n) for n in re.findall(r"\b((?:gen_ai|routeguard)_[a-z0-9_]+)", e)}


def _expr_labels(e: str) -> set[str]:
    """The label names an expression groups by or matches on."""
    labels: set[str] = set()
    for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", e):
        labels |= {x.strip() for x in group.split(",") if x.strip()}
    for matchers in re.findall(r"\{([^}]*)\}", e):
        labels |= set(re.findall(r"([a-z_]+)\s*(?:=~|!~|!=|=)", matchers))
    return labels


def _dashboard_families() -> set[str]:
    names: set[str] = set()
    for e in _dashboard_exprs():
        names |= _expr_families(e)
    return names


def test_the_grafana_dashboard_shows_every_family_the_proxy_exports(mock: MockServer) -> None:
    # A bounded route, so that the wrong-hit bound's scrape-time families are exported too.
    bounded = {"bounded": {"cache": {"enabled": True, "max_error_rate": 0.05}}}
    cfg = _cfg(mock.url, **bounded)
    cfg["model_list"].append({**cfg["model_list"][0], "model_name": "bounded", "id": "bounded-1"})
    gw = Gateway.from_config(cfg, embedder=WordsEmbedder())
    app = create_app(gw)
    assert app.metrics is not None
    with (
        ServerThread(app) as srv,
        openai.OpenAI(base_url=srv.url + "/v1", api_key=MASTER, max_retries=0) as c,
    ):
        c.chat.completions.create(model="bounded", messages=[{"role": "user", "content": "hi"}])
        req = urllib.request.Request(srv.url + "/metrics",
                                     headers={"authorization": f"Bearer {MASTER}"})  # fmt: skip
        with urllib.request.urlopen(req, timeout=10) as r:
            text = r.read().decode()
    exported = {_family(f.name) for f in text_string_to_metric_families(text)}
    # Every family the proxy defines is in the scrape (a labelled family shows without samples).
    defined = {_family(m.name) for m in app.metrics.registry.collect()}
    defined.discard("routeguard_deployment_circuit_open_until")  # exposed as ..._circuit_open
    assert defined <= exported, sorted(defined - exported)
    shown = _dashboard_families()
    assert exported - shown == set(), "families with no dashboard panel"
    assert shown - exported == set(), "the dashboard queries families the proxy does not export"
    # Every label a panel groups by or matches on is a label of a family it queries.
    labels: dict[str, set[str]] = {}
    for metric in vars(app.metrics).values():
        if isinstance(metric, MetricWrapperBase):
            names = set(metric._labelnames) | ({"le"} if isinstance(metric, Histogram) else set())
            labels.setdefault(_family(metric._name), set()).update(names)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels.setdefault(_family(family.name), set()).update(sample.labels)
    assert "operation" in labels["routeguard_requests"]
    for e in _dashboard_exprs():
        known = set().union(*(labels.get(f, set()) for f in _expr_families(e)))
        if not known:  # a scrape-time family with no sample in this scrape: labels unknown
            continue
        assert _expr_labels(e) <= known, (e, sorted(_expr_labels(e) - known))

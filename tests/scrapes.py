"""Scraping ``/metrics`` in tests: every sample by name and labels, and sums over them."""

from __future__ import annotations

import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

MASTER = "sk-master-metrics"
Samples = dict[tuple[str, frozenset[Any]], float]


def scrape(url: str, key: str | None = MASTER) -> Samples:
    """Every sample of a scrape, by (name, labels)."""
    headers = {"authorization": f"Bearer {key}"} if key else {}
    req = urllib.request.Request(url + "/metrics", headers=headers)
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200
        assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)

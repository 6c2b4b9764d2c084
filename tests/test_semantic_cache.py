"""SemanticCache semantics with a small deterministic embedder (bag of hashed words), so the
tests pin the cache's logic, not a model's similarities."""

from __future__ import annotations

import re

import pytest

from embedders import WordsEmbedder
from routeguard.cache.keys import exact_key, normalise, partition_key, request_namespace
from routeguard.cache.semantic import SemanticCache


class Clock:
    def __init__(self) -> None:
        self.t = 1_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def cache() -> SemanticCache:
    return SemanticCache(WordsEmbedder(), threshold=0.8)


def test_exact_hit_ignores_case_and_spacing(cache: SemanticCache) -> None:
    key = cache.put("What is the capital of France?", "Paris")
    hit = cache.get("  what is the CAPITAL of   france?")
    assert hit is not None and hit.exact and hit.response == "Paris" and hit.key == key
    assert hit.score == 1.0


def test_semantic_hit_above_threshold_miss_below(cache: SemanticCache) -> None:
    cache.put("how do I reset my password", "Use the reset link")
    hit = cache.get("how do I reset my password please")
    assert hit is not None and not hit.exact and hit.response == "Use the reset link"
    assert 0.8 <= hit.score < 1.0
    assert cache.get("what is the weather in Oslo") is None
    m = cache.metrics.snapshot()
    assert m["semantic_hits"] == 1 and m["misses"] == 1 and m["lookups"] == 2


def test_namespaces_are_isolated(cache: SemanticCache) -> None:
    cache.put("tell me a secret", "tenant A's answer", namespace="tenant-a")
    assert cache.get("tell me a secret", namespace="tenant-b") is None
    hit = cache.get("tell me a secret", namespace="tenant-a")
    assert hit is not None and hit.response == "tenant A's answer"


def test_context_separates_follow_ups(cache: SemanticCache) -> None:
    conv_a = [
        {"role": "user", "content": "Tell me about Python"},
        {"role": "assistant", "content": "..."},
    ]
    conv_b = [
        {"role": "user", "content": "Tell me about Rust"},
        {"role": "assistant", "content": "..."},
    ]
    cache.put("how do I install it", "pip install python", context=conv_a)
    assert cache.get("how do I install it", context=conv_b) is None
    assert cache.get("how do I install it") is None  # no context is another situation too
    hit = cache.get("how do I install it", context=conv_a)
    assert hit is not None and hit.response == "pip install python"


def test_ttl_expiry() -> None:
    clock = Clock()
    cache = SemanticCache(WordsEmbedder(), threshold=0.8, ttl=10, clock=clock)
    cache.put("a question about ttl", "answer")
    cache.put("kept for longer", "long", ttl=100)
    assert cache.get("a question about ttl") is not None
    clock.t += 11
    assert cache.get("a question about ttl") is None
    assert cache.get("kept for longer") is not None
    assert cache.metrics.expirations == 1
    clock.t += 100
    assert cache.purge_expired() == 1 and len(cache) == 0


def test_lru_eviction_keeps_recently_used() -> None:
    cache = SemanticCache(WordsEmbedder(), threshold=0.99, max_entries=2)
    cache.put("first entry alpha", 1)
    cache.put("second entry beta", 2)
    assert cache.get("first entry alpha") is not None  # touch: now most recent
    cache.put("third entry gamma", 3)
    assert cache.get("second entry beta") is None
    assert cache.get("first entry alpha") is not None
    assert cache.get("third entry gamma") is not None
    assert cache.metrics.evictions == 1


def test_put_replaces_same_prompt(cache: SemanticCache) -> None:
    k1 = cache.put("same prompt", "old")
    k2 = cache.put("same  PROMPT", "new")
    assert k1 == k2 and len(cache) == 1
    hit = cache.get("same prompt")
    assert hit is not None and hit.response == "new"


def test_invalidate_by_namespace_key_and_age() -> None:
    clock = Clock()
    cache = SemanticCache(WordsEmbedder(), threshold=0.8, clock=clock)
    cache.put("one thing", 1, namespace="a")
    k2 = cache.put("two things", 2, namespace="a")
    clock.t += 5
    cache.put("three things", 3, namespace="b")
    assert cache.invalidate(key=k2) == 1
    assert cache.invalidate(older_than=clock.t) == 1  # "one thing"
    assert cache.get("one thing", namespace="a") is None
    assert cache.invalidate(namespace="b") == 1 and len(cache) == 0


def test_verifier_refuses_close_calls() -> None:
    def same_numbers(query: str, cached: str) -> bool:
        return re.findall(r"\d+", query) == re.findall(r"\d+", cached)

    cache = SemanticCache(WordsEmbedder(), threshold=0.7, verifier=same_numbers)
    cache.put("best laptops under 800 dollars", "list A")
    assert cache.get("best laptops under 500 dollars") is None
    assert cache.metrics.rejected == 1
    hit = cache.get("the best laptops under 800 dollars")
    assert hit is not None and hit.response == "list A"


def test_batch_forms_match_single(cache: SemanticCache) -> None:
    keys = cache.put_many([("alpha beta gamma", 1), ("delta epsilon zeta", 2)], namespace="n")
    assert len(keys) == 2
    hits = cache.get_many(["alpha beta gamma", "delta epsilon zeta eta", "unrelated words"], "n")
    assert [h.response if h else None for h in hits] == [1, 2, None]
    assert hits[0] is not None and hits[0].exact
    assert hits[1] is not None and not hits[1].exact


def test_keys_helpers() -> None:
    assert normalise("  Héllo\u00a0  WORLD ") == "héllo world"
    assert partition_key("ns") == "ns"
    assert partition_key("ns", [{"role": "user", "content": "x"}]) != "ns"
    assert exact_key("p", "Hi there") == exact_key("p", "hi   THERE")
    base = {"model": "m", "temperature": 0, "messages": [{"role": "user", "content": "a"}]}
    other_msgs = {**base, "messages": [{"role": "user", "content": "b"}]}
    hotter = {**base, "temperature": 1}
    assert request_namespace("t", "r", base) == request_namespace("t", "r", other_msgs)
    assert request_namespace("t", "r", base) != request_namespace("t", "r", hotter)
    assert request_namespace("t", "r", base) != request_namespace("u", "r", base)


def test_invalid_settings() -> None:
    with pytest.raises(ValueError):
        SemanticCache(WordsEmbedder(), threshold=0)
    with pytest.raises(ValueError):
        SemanticCache(WordsEmbedder(), max_entries=0)

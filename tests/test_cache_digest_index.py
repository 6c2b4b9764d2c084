"""Deleting or correcting cached entries by exact prompt costs the prompt's entries, not the
cache's: at 100,000 entries, the number of entries a selection examines (``visited``) is
the number of matches, in memory, for a rule another instance published, and for the proxy's
``DELETE /admin/cache``. A delete by tenant or route still scans every entry, but on a worker
thread, never the event loop's."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from routeguard import config
from routeguard.cache.keys import prompt_digest, request_namespace
from routeguard.cache.layer import CacheLayer
from routeguard.cache.semantic import SemanticCache
from routeguard.cache.state import LocalState, Selector

N = 100_000
TENANTS = 1_000  # 100 entries per partition: every index stays in its exact-scan tier
PROMPT = "What is our refund policy?"


class HashEmbedder:
    """Eight dimensions from a digest of the text: distinct texts, distinct unit vectors."""

    dim = 8

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """One unit row per text."""
        out = np.empty((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            raw = np.frombuffer(hashlib.blake2b(t.encode(), digest_size=8).digest(), np.uint8)
            row = raw.astype(np.float32) - 127.5
            out[i] = row / np.linalg.norm(row)
        return out


def ns(i: int, route: str = "fast") -> str:
    """The namespace of tenant ``i`` on ``route``, as the gateway builds it."""
    return request_namespace(f"team:/t{i}", route, {"model": route, "messages": []}, ())


def filled(cache: SemanticCache, with_prompt: int = 3) -> SemanticCache:
    """``N`` entries; ``with_prompt`` tenants hold :data:`PROMPT` (in some spelling)."""
    per = N // TENANTS
    for t in range(TENANTS):
        items = [(f"question {t}-{j}?", f"answer {t}-{j}") for j in range(per)]
        if t < with_prompt:
            items[0] = (PROMPT.upper() if t % 2 else PROMPT, f"refunds of {t}")
        cache.put_many(items, ns(t))
    assert len(cache) == N
    return cache


@pytest.fixture(scope="module")
def big() -> SemanticCache:
    return filled(SemanticCache(HashEmbedder(), max_entries=N + 10, verifier=None))


def test_a_prompt_delete_visits_only_that_prompts_entries() -> None:
    cache = filled(SemanticCache(HashEmbedder(), max_entries=N + 10, verifier=None))
    state = cache._state
    before = state.visited
    assert cache.invalidate(prompt="what is our  REFUND policy?") == 3
    assert state.visited - before == 3
    assert len(cache) == N - 3
    assert prompt_digest(PROMPT) not in state.by_digest
    # with a tenant as well: the same three visited, one removed
    cache.put(PROMPT, "again", ns(0))
    cache.put(PROMPT, "again", ns(1))
    before = state.visited
    assert cache.invalidate(prompt=PROMPT, tenant="team:/t1") == 1
    assert state.visited - before == 2
    assert cache.get_exact(PROMPT, ns(0)) is not None


def test_a_correction_visits_only_that_prompts_entries(big: SemanticCache) -> None:
    before = big._state.visited
    assert big.correct(PROMPT, "30 days", tenant="team:/t2") == 1
    assert big._state.visited - before == 3
    hit = big.get_exact(PROMPT, ns(2))
    assert hit is not None and hit.response == "30 days"


def test_a_rule_from_another_instance_visits_only_matches(big: SemanticCache) -> None:
    """What a Redis mirror applies when another instance deleted by prompt."""
    state: LocalState = big._state
    field = Selector(route="fast", prompt=prompt_digest(PROMPT)).field()
    before = state.visited
    gone = state.add_rule(field, big._clock() + 1)
    assert len(gone) == 3 and state.visited - before == 3
    assert len(big) == N - 3
    # a write racing the rule, created before its time, is dead on arrival
    big.put(PROMPT, "late", ns(0), ttl=60)
    assert big.get_exact(PROMPT, ns(0)) is None


def test_the_digest_index_follows_puts_evictions_and_drops() -> None:
    cache = SemanticCache(HashEmbedder(), max_entries=3, verifier=None)
    for i in range(5):
        cache.put(PROMPT, i, ns(i))
    keys = cache._state.by_digest[prompt_digest(PROMPT)]
    assert keys == set(cache._state.entries)  # the two evicted ones left the index too
    cache.put(PROMPT, "replaced", ns(4))  # same key: one index member still
    assert len(cache._state.by_digest[prompt_digest(PROMPT)]) == 3
    cache.invalidate(namespace=ns(4))
    assert len(cache._state.by_digest[prompt_digest(PROMPT)]) == 2
    cache.purge_expired()
    cache._state.clear()
    assert cache._state.by_digest == {}


def _layer() -> CacheLayer:
    dep = {"type": "openai", "api_base": "http://127.0.0.1:9/v1", "api_key": "k",
           "model_name": "fast", "model": "m"}  # fmt: skip
    cfg = config.load({"model_list": [dep], "cache": {"enabled": True, "max_entries": N + 10}})
    layer = CacheLayer(cfg, embedder=HashEmbedder())
    filled(layer.cache)
    return layer


async def test_the_admin_delete_by_prompt_is_o_matches_and_scans_off_the_loop() -> None:
    layer = _layer()
    state = layer.cache._state
    loop_thread = threading.get_ident()
    scans: list[int] = []
    select = state.select

    def spy(sel: Selector, older_than: float | None = None) -> Any:
        if sel.prompt is None:
            scans.append(threading.get_ident())
        return select(sel, older_than)

    state.select = spy  # type: ignore[method-assign]
    before = state.visited
    assert await layer.delete(prompt=PROMPT) == 3
    assert state.visited - before == 3 and not scans
    # a tenant delete scans every entry, on a worker thread
    assert await layer.delete(tenant="team:/t7") == N // TENANTS
    assert scans and all(t != loop_thread for t in scans)
    assert len(layer.cache) == N - 3 - N // TENANTS
    await layer.aclose()


def test_a_rule_recorded_without_a_scan_still_refuses_older_writes() -> None:
    """What a Redis resync does with the stored rules: it reloads every entry, so recording
    a tenant rule must not scan the entries held."""
    cache = SemanticCache(HashEmbedder(), verifier=None)
    for t in range(3):
        cache.put(PROMPT, t, ns(t))
    state = cache._state
    before = state.visited
    field = Selector(tenant="team:/t1").field()
    assert state.add_rule(field, cache._clock() + 60, scan=False) == []
    assert state.visited == before and len(cache) == 3
    cache.put("another question", "late", ns(1))  # created before the rule's time: dead
    assert cache.get_exact("another question", ns(1)) is None
    cache.put("another question", "fine", ns(2))
    assert cache.get_exact("another question", ns(2)) is not None

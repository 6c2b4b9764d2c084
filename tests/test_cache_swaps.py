"""Otherwise identical questions that swap a content word (an attribute, an entity, a
number) are different questions: the cache's default verifier refuses the hit however close
the embeddings are, while true paraphrases of one question still hit. Checked on the
verifier, inside a SemanticCache with the local MiniLM at f32 (no bf16 luck), and through
the gateway on the memory and the Redis backend."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import pytest

from embedders import WordsEmbedder
from routeguard.cache.semantic import SemanticCache
from routeguard.cache.verify import HitVerifier
from routeguard.embed import MiniLMEmbedder
from routeguard.gateway import Gateway
from routeguard.mock import MockServer

SWAPS = [
    ("how many legs does a spider have", "how many eyes does a spider have"),  # attribute
    ("what is the boiling point of water", "what is the freezing point of water"),
    ("what is the price of a red car", "what is the price of a blue car"),
    ("what color is a ripe banana", "what color is a ripe tomato"),
    ("what is the capital of france", "what is the capital of spain"),  # entity, lower case
    ("how tall is mount everest", "how tall is mount fuji"),
    ("can cats eat grapes", "can dogs eat grapes"),
    ("what is the best laptop for programming", "what is the best laptop for gaming"),
    ("how many legs does a spider have", "how many eyes does an ant have"),  # two swaps
    ("how many calories are in 2 eggs", "how many calories are in 3 eggs"),  # number
    ("what was the population of paris in 1900", "what was the population of paris in 1950"),
]
PARAPHRASES = [
    ("how many legs does a spider have", "how many legs do spiders have"),
    ("How can I learn Python fast?", "How can I learn Python quickly?"),
    ("What is a good movie to watch tonight?", "What is a good film to watch tonight?"),
    ("what is the capital of france", "what is the capital of France?"),
    ("how do I reset my router password", "how can I reset the password of my router"),
    ("how did you stop smoking", "how did you stop smoking?"),
    ("how long should I boil an egg", "how long should I boil eggs"),
]


@pytest.mark.parametrize(("cached", "query"), SWAPS)
def test_verifier_refuses_a_swapped_word(cached: str, query: str) -> None:
    assert HitVerifier().explain(query, cached) is not None
    assert HitVerifier().explain(cached, query) is not None


@pytest.mark.parametrize(("cached", "query"), PARAPHRASES)
def test_verifier_lets_paraphrases_through(cached: str, query: str) -> None:
    v = HitVerifier()
    assert v.explain(query, cached) is None and v.explain(cached, query) is None


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    return MiniLMEmbedder(precision="f32")


def _served(embedder: MiniLMEmbedder, cached: str, query: str, verify: bool) -> bool:
    """Whether a cache whose threshold sits just below the two texts' cosine (so the vector
    search proposes the entry, as any threshold would for vectors close enough) serves
    ``cached``'s answer to ``query``."""
    vecs = embedder.embed([cached, query])
    threshold = max(float(np.dot(vecs[0], vecs[1])) - 0.01, 0.01)
    verifier = HitVerifier() if verify else None
    cache = SemanticCache(embedder, threshold=threshold, verifier=verifier)
    cache.put(cached, {"answer": cached})
    return cache.get(query) is not None


def test_swaps_miss_however_close_the_vectors(minilm: MiniLMEmbedder) -> None:
    for cached, query in SWAPS:
        assert _served(minilm, cached, query, verify=False)  # the search alone would serve it
        assert not _served(minilm, cached, query, verify=True), (cached, query)


def test_paraphrases_hit(minilm: MiniLMEmbedder) -> None:
    for cached, query in PARAPHRASES:
        assert _served(minilm, cached, query, verify=True), (cached, query)


# --------------------------------------------------------------------------- the gateway


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_gateway_does_not_serve_a_swapped_question(
    backend: str, mock: MockServer, request: pytest.FixtureRequest
) -> None:
    dep = {"type": "openai", "api_base": mock.url + "/v1", "api_key": "k"}
    cache: dict[str, Any] = {"enabled": True, "threshold": 0.8}
    if backend == "redis":
        url = request.getfixturevalue("redis_server")
        cache |= {"backend": "redis", "redis_url": url, "redis_prefix": uuid.uuid4().hex[:8]}
    cfg = {"model_list": [{**dep, "model_name": "cached", "model": "sim-cached"}], "cache": cache}
    gw = Gateway.from_config(cfg, embedder=WordsEmbedder())
    try:

        async def outcome(text: str) -> str:
            req = {"model": "cached", "messages": [{"role": "user", "content": text}]}
            return (await gw.chat_result(req)).cache

        assert await outcome("how many legs does a spider have") == "miss"
        # 6 of 7 words shared: cosine 0.86 with this embedder, above the 0.8 threshold.
        assert await outcome("how many eyes does a spider have") == "miss"
        assert await outcome("how many legs does a spider have?") == "hit"
        assert await outcome("how many eyes does a spider have") == "hit"  # its own entry
    finally:
        await gw.aclose()

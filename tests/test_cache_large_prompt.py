"""A multi-megabyte prompt costs the cache what the model reads, not what was sent: the
embedder tokenizes no more than its 256 tokens need (both forward passes), on its worker
thread; the verifier reads no text past its limit; and two long prompts that share their
first few hundred tokens (the same vector) are not served each other's answers."""

from __future__ import annotations

import dataclasses
import random
import threading
from typing import Any

import numpy as np
import pytest

from routeguard.cache import verify
from routeguard.cache.semantic import SemanticCache
from routeguard.embed import MiniLMEmbedder
from routeguard.gateway import Gateway
from routeguard.mock import MockServer

BIG = 3_000_000  # characters
WORDS = ("the", "cache", "reads", "a", "prompt", "once", "and", "keeps", "every", "answer")


class SpyTokenizer:
    """A tokenizer that records how many characters each ``encode`` read, and on which thread."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.reads: list[tuple[int, int]] = []  # (characters, thread id)

    def encode(self, text: str, *args: Any, **kwargs: Any) -> Any:
        self.reads.append((len(text), threading.get_ident()))
        return self.inner.encode(text, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _spy(embedder: MiniLMEmbedder) -> SpyTokenizer:
    model = embedder.model()
    spy = SpyTokenizer(model.tokenizer)
    embedder._model = dataclasses.replace(model, tokenizer=spy)  # type: ignore[arg-type]
    return spy


def _prose(n: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    words = [*WORDS]
    out: list[str] = []
    size = 0
    while size < n:
        w = rng.choice(words)
        out.append(w)
        size += len(w) + 1
    return " ".join(out)[:n]


@pytest.fixture(scope="module", params=["rust", "numpy"])
def minilm(request: pytest.FixtureRequest) -> MiniLMEmbedder:
    return MiniLMEmbedder(backend=request.param, precision="f32")


def test_the_embedder_reads_only_what_it_keeps(minilm: MiniLMEmbedder) -> None:
    big = _prose(BIG)
    expected = minilm.embed([big[:20_000]])  # 20,000 characters: far past 256 tokens
    spy = _spy(minilm)
    try:
        got = minilm.embed([big])
    finally:
        minilm._model = dataclasses.replace(minilm.model(), tokenizer=spy.inner)
    assert sum(n for n, _ in spy.reads) <= 16_384, spy.reads[:5]
    np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize(
    "text",
    [
        _prose(9_000) + " " * 200_000 + _prose(3_000, 1),  # whitespace between the tokens
        "hello " + " " * 100_000 + "\n" * 50_000 + " world",  # fewer tokens than the limit
        "\x00" * 20_000 + " " + _prose(10_000),  # control characters make no tokens
        " ".join(["naïve 日本語 don't foo,bar a\u0301b " + "x" * 150] * 400),
        ("word\t" * 3_000) + ("\r\n" * 5_000),
    ],
)
def test_windowed_tokenizing_gives_the_whole_texts_ids(minilm: MiniLMEmbedder, text: str) -> None:
    tokenizer = minilm.model().tokenizer
    assert minilm.tokenize([text]) == [tokenizer.encode(text).ids]


# The upstream call (not the cache's) warns that aiohttp sends a multi-MB body as raw bytes.
@pytest.mark.filterwarnings("ignore:Sending a large body:ResourceWarning")
async def test_a_huge_prompt_is_embedded_off_the_loop_and_bounded(mock: MockServer) -> None:
    embedder = MiniLMEmbedder(precision="f32")
    dep = {"type": "openai", "api_base": mock.url + "/v1", "api_key": "k"}
    cfg = {
        "model_list": [{**dep, "model_name": "cached", "model": "sim-cached"}],
        "cache": {"enabled": True},
    }
    gw = Gateway.from_config(cfg, embedder=embedder)
    spy = _spy(embedder)
    try:
        big = _prose(BIG)
        req = {"model": "cached", "messages": [{"role": "user", "content": big}]}
        assert (await gw.chat_result(req)).cache == "miss"
        assert (await gw.chat_result(req)).cache == "hit"  # the exact tier still works
    finally:
        await gw.aclose()
        embedder.close()
    loop_thread = threading.get_ident()
    assert spy.reads and all(t != loop_thread for _, t in spy.reads)
    assert sum(n for n, _ in spy.reads) <= 16_384


def test_long_prompts_sharing_a_head_are_not_served_each_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past the embedder's 256 tokens the vectors are equal, whatever follows; the verifier
    refuses a text too long to read instead of reading it."""
    read: list[int] = []
    analyse = verify.analyse

    def spy(text: str) -> verify.Analysis:
        read.append(len(text))
        return analyse(text)

    monkeypatch.setattr(verify, "analyse", spy)
    embedder = MiniLMEmbedder(precision="f32")
    head = _prose(8_000)
    first = head + " please summarise the contract above for the legal team"
    second = head + " now list every clause of that contract that mentions payment terms"
    cache = SemanticCache(embedder, verifier=verify.HitVerifier())
    cache.put(first, {"answer": "summary"})
    assert float(np.dot(*embedder.embed([first, second]))) > 0.99  # one vector for both
    assert cache.get(second) is None
    assert cache.metrics.rejected == 1
    assert all(n <= verify.MAX_CHARS for n in read)

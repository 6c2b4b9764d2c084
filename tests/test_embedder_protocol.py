"""One Embedder protocol for cache, routing and analysis: anything with ``dim`` and
``embed`` is an embedder, and ``embed_off_loop`` never runs it on the event loop (its own
``aembed`` worker when it has one, a worker thread otherwise)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from embedders import WordsEmbedder
from routeguard.embed.base import CallableEmbedder, Embedder, embed_off_loop
from routeguard.routing.router import Router


class _ThreadSpy(WordsEmbedder):
    """Records the thread each ``embed`` ran on."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[int] = []

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Embed, noting the thread."""
        self.threads.append(threading.get_ident())
        return super().embed(texts)


class _WithAembed(WordsEmbedder):
    """An embedder with its own async path."""

    def __init__(self) -> None:
        super().__init__()
        self.async_calls = 0

    async def aembed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Embed on the embedder's own path."""
        self.async_calls += 1
        return self.embed(texts)


def test_every_embedder_meets_the_one_protocol() -> None:
    assert isinstance(WordsEmbedder(), Embedder)
    assert isinstance(CallableEmbedder(lambda ts: np.ones((len(ts), 4)), dim=4), Embedder)
    assert not isinstance(object(), Embedder)


async def test_a_plain_embedder_runs_off_the_loop() -> None:
    emb = _ThreadSpy()
    out = await embed_off_loop(emb, ["hello world"])
    assert out.shape == (1, emb.dim) and out.dtype == np.float32
    assert emb.threads and emb.threads[0] != threading.get_ident()


async def test_an_embedders_own_async_path_is_used() -> None:
    emb = _WithAembed()
    await embed_off_loop(emb, ["hello"])
    assert emb.async_calls == 1


async def test_the_router_embeds_off_the_loop() -> None:
    emb = _ThreadSpy()
    spec = {"default": "small", "semantic_routes": [
        {"name": "code", "target": "big", "utterances": ["write a python function"]}]}  # fmt: skip
    router = Router.from_dict("r", spec, embedder=emb)
    before = len(emb.threads)
    decision = await router.aroute({"messages": [{"role": "user", "content": "python code"}]})
    assert decision.target_alias in {"small", "big"}
    assert len(emb.threads) == before + 1 and emb.threads[-1] != threading.get_ident()

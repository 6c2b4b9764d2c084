"""SemanticCache.save / SemanticCache.load: round trip of entries and vectors, TTLs that
keep counting on disk, LRU order, atomic replacement and refusal of a wrong file."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from embedders import WordsEmbedder
from routeguard.cache.semantic import SemanticCache
from routeguard.cache.tiered import TieredIndex


class Clock:
    def __init__(self) -> None:
        self.t = 1_000.0

    def __call__(self) -> float:
        return self.t


def test_round_trip_keeps_entries_vectors_and_ttls(tmp_path: Path) -> None:
    clock = Clock()
    cache = SemanticCache(WordsEmbedder(), threshold=0.8, ttl=100, clock=clock)
    convo = [{"role": "user", "content": "Tell me about Rust"}]
    response = {"choices": [{"message": {"content": "Use the reset link"}}], "n": 1.5}
    cache.put("how do I reset my password", response, metadata={"model": "m1"})
    cache.put("short lived entry", "soon gone", ttl=10)
    cache.put("forever young entry", "kept", ttl=None)  # falls back to the default ttl=100
    cache.put("how do I install it", "cargo", namespace="t-a", context=convo)
    cache.put("already expired", "old", ttl=1)
    clock.t += 5  # "already expired" is gone before the save
    path = tmp_path / "cache.snap"
    assert cache.save(path) == 4
    assert [p.name for p in tmp_path.iterdir()] == ["cache.snap"]  # no temporary left

    loaded = SemanticCache.load(path, WordsEmbedder(), threshold=0.8, clock=clock)
    assert len(loaded) == 4
    hit = loaded.get("how do I reset my password please")  # semantic: the vector came back
    assert hit is not None and not hit.exact and hit.response == response
    assert hit.metadata == {"model": "m1"}
    original = cache.get("how do I reset my password please")
    assert original is not None and hit.score == pytest.approx(original.score, abs=1e-6)
    assert loaded.get("how do I install it", namespace="t-a") is None  # context kept apart
    ctx_hit = loaded.get("how do I install it", namespace="t-a", context=convo)
    assert ctx_hit is not None and ctx_hit.response == "cargo"
    # absolute expiry: 5 s of the 10 s TTL were used before the save
    clock.t += 4
    assert loaded.get("short lived entry") is not None
    clock.t += 2
    assert loaded.get("short lived entry") is None
    assert loaded.get("forever young entry") is not None
    clock.t += 100
    assert loaded.purge_expired() == 3 and len(loaded) == 0


def test_load_skips_entries_that_expired_on_disk_and_keeps_lru_order(tmp_path: Path) -> None:
    clock = Clock()
    cache = SemanticCache(WordsEmbedder(), threshold=0.99, clock=clock)
    cache.put("first entry alpha", 1)
    cache.put("second entry beta", 2, ttl=30)
    cache.put("third entry gamma", 3)
    assert cache.get("first entry alpha") is not None  # most recently used now
    cache.save(tmp_path / "s")
    clock.t += 60
    loaded = SemanticCache.load(tmp_path / "s", WordsEmbedder(), max_entries=2, clock=clock)
    assert len(loaded) == 2 and loaded.get("second entry beta") is None
    loaded.put("fourth entry delta", 4)  # evicts the least recently used: "third"
    assert loaded.get("third entry gamma") is None
    assert loaded.get("first entry alpha") is not None


def test_save_replaces_atomically_and_round_trips_hnsw_partitions(tmp_path: Path) -> None:
    def factory(dim: int) -> TieredIndex:
        return TieredIndex(dim, threshold=5, background=False)

    cache = SemanticCache(WordsEmbedder(), threshold=0.8, index_factory=factory)
    for i in range(12):
        cache.put(f"entry number {i} with words {i * 3}", i)
    path = tmp_path / "s"
    path.write_bytes(b"previous snapshot")
    cache.save(path)
    loaded = SemanticCache.load(path, WordsEmbedder(), threshold=0.8, index_factory=factory)
    for i in range(12):
        hit = loaded.get(f"entry number {i} with words {i * 3} again")
        assert hit is not None and hit.response == i


def test_load_refuses_wrong_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02not msgpack")
    with pytest.raises(ValueError, match="not a routeguard cache snapshot"):
        SemanticCache.load(bad, WordsEmbedder())
    cache = SemanticCache(WordsEmbedder())
    cache.put("a b c", 1)
    cache.save(tmp_path / "ok")

    class Wide(WordsEmbedder):
        dim = 128

    with pytest.raises(ValueError, match="64-d vectors but the embedder makes 128-d"):
        SemanticCache.load(tmp_path / "ok", Wide())
    other = tmp_path / "other"
    other.write_bytes(msgspec.msgpack.encode({"format": "x", "version": 1, "dim": 1,
                                              "entries": [], "vectors": b""}))  # fmt: skip
    with pytest.raises(ValueError, match="expected routeguard-cache-snapshot"):
        SemanticCache.load(other, WordsEmbedder())


def test_save_refuses_responses_msgpack_cannot_encode(tmp_path: Path) -> None:
    cache = SemanticCache(WordsEmbedder())
    cache.put("a b c", object())
    with pytest.raises(TypeError, match="msgpack-encodable"):
        cache.save(tmp_path / "s")
    assert not list(tmp_path.iterdir())

"""HNSW tier of the semantic cache: HnswIndex against the exact VectorIndex, TieredIndex
migration (synchronous and on a background thread, with writes racing the build), and a
SemanticCache whose partitions migrate past a tiny threshold."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from embedders import WordsEmbedder
from routeguard.cache import tiered
from routeguard.cache.ann import HnswIndex
from routeguard.cache.index import VectorIndex
from routeguard.cache.semantic import SemanticCache
from routeguard.cache.tiered import TieredIndex

DIM = 32
F32 = npt.NDArray[np.float32]


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> F32:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    out: F32 = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def test_hnsw_matches_exact_search_on_small_data() -> None:
    rng = np.random.default_rng(1)
    data = unit(rng, 500)
    ids = np.arange(10, 510, dtype=np.uint64)
    exact = VectorIndex(DIM)
    exact.add(ids, data)
    ann = HnswIndex(DIM, capacity=16, ef=64)  # capacity 16: grows by doubling as it fills
    ann.add(ids, data)
    assert len(ann) == 500 and ann.capacity >= 500
    queries = unit(rng, 50)
    want, want_scores = exact.search_batch(queries, 5)
    got, got_scores = ann.search_batch(queries, 5)
    assert got.dtype == np.uint64 and got.shape == (50, 5)
    assert np.mean(got[:, 0] == want[:, 0]) >= 0.98
    # the scores are exact cosines of whatever came back, best first
    for q, row, scores in zip(queries, got, got_scores, strict=True):
        np.testing.assert_allclose(scores, ann.get(row) @ q, atol=1e-5)
        assert np.all(np.diff(scores) <= 1e-6)
    np.testing.assert_allclose(got_scores[:, 0], want_scores[:, 0], atol=1e-5)


def test_hnsw_remove_replace_and_readd() -> None:
    rng = np.random.default_rng(2)
    data = unit(rng, 100)
    ann = HnswIndex(DIM, capacity=16)
    ann.add(np.arange(100, dtype=np.uint64), data)
    for i in range(90):
        assert ann.remove(i)
    assert not ann.remove(5) and 5 not in ann and 95 in ann and len(ann) == 10
    ids, _ = ann.search(data[0], 10)
    assert sorted(ids.tolist()) == list(range(90, 100))  # only live ids, even k == len
    # re-adding a removed id gives it a fresh label; searches still report the id
    ann.add([5], data[95:96].copy())
    ids, scores = ann.search(data[95], 2)
    assert set(ids.tolist()) == {5, 95} and scores[0] == pytest.approx(1.0, abs=1e-5)
    # replacing a live id's vector
    ann.add([95], data[0:1].copy())
    ids, scores = ann.search(data[0], 1)
    assert ids.tolist() == [95] and scores[0] == pytest.approx(1.0, abs=1e-5)
    ann.remove(5)
    assert 5 not in ann and ann.search(data[95], 1)[0].tolist() != [5]
    # vacant slots are reused: churn does not grow the graph
    cap = ann.capacity
    ann.add(np.arange(1000, 1080, dtype=np.uint64), unit(rng, 80))
    assert ann.capacity == cap


def test_hnsw_refuses_bad_input() -> None:
    ann = HnswIndex(DIM)
    with pytest.raises(ValueError):
        ann.add([1], np.zeros((1, DIM), np.float32))
    with pytest.raises(ValueError):
        ann.add([1, 2], np.ones((1, DIM), np.float32))
    with pytest.raises(ValueError):
        ann.add([2**63], np.ones((1, DIM), np.float32))
    with pytest.raises(TypeError):
        ann.add([1], np.ones((1, DIM), np.float64))
    with pytest.raises(KeyError):
        ann.get([1])
    assert ann.search(np.ones(DIM, np.float32), 3)[0].shape == (0,)


def test_tiered_migrates_at_threshold() -> None:
    rng = np.random.default_rng(3)
    data = unit(rng, 60)
    index = TieredIndex(DIM, threshold=40, background=False)
    index.add(np.arange(39, dtype=np.uint64), data[:39])
    assert index.tier == "flat"
    flat_ids, flat_scores = index.search(data[7], 3)
    index.add([39], data[39:40])
    assert index.tier == "hnsw" and len(index) == 40
    ids, scores = index.search(data[7], 3)
    assert ids.tolist() == flat_ids.tolist()
    np.testing.assert_allclose(scores, flat_scores, atol=1e-5)
    index.add(np.arange(40, 60, dtype=np.uint64), data[40:])
    assert index.remove(7) and not index.remove(7) and 7 not in index and len(index) == 59
    assert index.search(data[7], 1)[0].tolist() != [7]
    np.testing.assert_allclose(index.get([50]), data[50:51], atol=1e-6)


def test_tiered_background_build_catches_up_with_racing_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gate = threading.Event()

    class GatedHnsw(HnswIndex):
        """Holds the background build until the test has raced its writes in."""

        def add(self, ids: Any, vectors: F32) -> None:
            if threading.current_thread() is not threading.main_thread():
                assert gate.wait(10)
            super().add(ids, vectors)

    monkeypatch.setattr(tiered, "HnswIndex", GatedHnsw)
    rng = np.random.default_rng(4)
    data = unit(rng, 400)
    index = TieredIndex(DIM, threshold=300, ef=64)
    index.add(np.arange(300, dtype=np.uint64), data[:300])
    assert index.tier == "building"
    # while the graph is built from the snapshot: removals, replacements and new ids
    for i in range(0, 50):
        index.remove(i)
    index.add(np.arange(50, 60, dtype=np.uint64), data[350:360])  # replace 50..59
    index.add(np.arange(300, 340, dtype=np.uint64), data[300:340])
    assert index.tier == "building" and len(index) == 290
    assert index.search(data[310], 1)[0].tolist() == [310]  # served exactly meanwhile
    gate.set()
    assert index.wait(timeout=30) and index.tier == "hnsw"
    assert len(index) == 290
    assert all(i not in index for i in range(50)) and 339 in index
    for i in (55, 310, 299):
        vec = data[350 + i - 50] if 50 <= i < 60 else data[i]
        ids, scores = index.search(vec, 1)
        assert ids.tolist() == [i] and scores[0] == pytest.approx(1.0, abs=1e-5)
    assert 3 not in index.search(data[3], 5)[0].tolist()


def test_semantic_cache_over_hnsw_partitions() -> None:
    cache = SemanticCache(
        WordsEmbedder(),
        threshold=0.8,
        index_factory=lambda dim: TieredIndex(dim, threshold=8, background=False),
    )
    for i in range(30):
        cache.put(f"question number {i} about topic {i * 7} and more words", f"answer {i}")
    assert cache._state.indexes["default"].tier == "hnsw"  # type: ignore[attr-defined]
    hit = cache.get("question number 12 about topic 84 and more words please")
    assert hit is not None and not hit.exact and hit.response == "answer 12"
    assert cache.invalidate(key=hit.key) == 1
    assert cache.get("question number 12 about topic 84 and more words please") is None
    cache.put("other tenant question", "x", namespace="small")
    assert cache._state.indexes["small"].tier == "flat"  # type: ignore[attr-defined]


def test_ann_threshold_reaches_the_default_index() -> None:
    cache = SemanticCache(WordsEmbedder(), ann_threshold=None)
    cache.put("hello there", 1)
    index = cache._state.indexes["default"]
    assert isinstance(index, TieredIndex) and index.threshold is None


def test_hnsw_save_and_load(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    data = unit(rng, 120)
    ann = HnswIndex(DIM, capacity=16, ef=40)
    ann.add(np.arange(100, dtype=np.uint64), data[:100])
    ann.remove(3)
    ann.remove(4)
    ann.add([4], data[100:101])  # a remapped label
    ann.save(tmp_path / "g")
    back = HnswIndex.load(tmp_path / "g")
    assert len(back) == 99 and 3 not in back and back.ef == 40
    assert back.search(data[100], 1)[0].tolist() == [4]
    assert back.search(data[50], 1)[0].tolist() == [50]
    back.add(np.arange(100, 120, dtype=np.uint64), data[100:])  # vacant slot reused, grows
    assert len(back) == 119 and back.search(data[119], 1)[0].tolist() == [119]


def _near_recall(
    index: HnswIndex, exact: VectorIndex, data: F32, rng: np.random.Generator
) -> float:
    """recall@1 of paraphrase-like lookups (a stored vector moved to cosine ~0.93)."""
    picked = data[rng.integers(0, len(data), 400)]
    queries = picked + 0.4 * unit(rng, 400, data.shape[1])
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    want = exact.search_batch(queries, 1)[0][:, 0]
    got = index.search_batch(queries, 1)[0][:, 0]
    return float(np.mean(got == want))


def test_recall_probes_raise_ef_where_the_data_needs_it() -> None:
    rng = np.random.default_rng(5)
    dim, n = 128, 20_000
    data = unit(rng, n, dim)  # uniform on the sphere: the hard case for a graph
    ids = np.arange(n, dtype=np.uint64)
    exact = VectorIndex(dim)
    exact.add(ids, data)
    index = HnswIndex(dim, m=8, ef=4, threads=1, probe_every=1, probe_window=64)
    index.add(ids, data)
    before = _near_recall(index, exact, data, rng)
    for q in unit(rng, 3_000, dim):
        index.search(q, 1)
    stats = index.probe_stats
    assert index.ef == 4 and index.ef_in_use > 4, stats
    after = _near_recall(index, exact, data, rng)
    assert before < 0.9 and after > before + 0.05, (before, after, stats)


def test_recall_probes_leave_ef_alone_where_it_suffices() -> None:
    rng = np.random.default_rng(6)
    dim, n = 128, 20_000
    basis = rng.standard_normal((8, dim), dtype=np.float32)
    data = rng.standard_normal((n, 8), dtype=np.float32) @ basis  # intrinsic dimension 8
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    index = HnswIndex(dim, m=16, ef=16, threads=1, probe_every=1, probe_window=64)
    index.add(np.arange(n, dtype=np.uint64), data)
    for q in data[rng.integers(0, n, 2_000)]:
        index.search(q, 1)
    stats = index.probe_stats
    assert stats["probes"] == 2_000 and stats["recall"] >= 0.99, stats
    assert index.ef_in_use == 16


def test_tiered_flat_tier_scans_int8_and_returns_exact_scores() -> None:
    rng = np.random.default_rng(8)
    data = unit(rng, 3_000, 64)
    ids = np.arange(3_000, dtype=np.uint64)
    tiered_index = TieredIndex(64, threshold=None)
    exact = VectorIndex(64)
    tiered_index.add(ids, data)
    exact.add(ids, data)
    assert tiered_index._flat is not None and tiered_index._flat.quantized
    queries = data[rng.integers(0, 3_000, 200)] + 0.3 * unit(rng, 200, 64)
    for q in (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32):
        got_ids, got_scores = tiered_index.search(q, 4)
        want_ids, want_scores = exact.search(q, 4)
        np.testing.assert_allclose(got_scores, want_scores, atol=1e-5)  # rescored: exact
        assert got_ids[0] == want_ids[0]

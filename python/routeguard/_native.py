"""The one module that imports the compiled extension.

Everything else in routeguard reaches Rust through here, so a stale build (the
extension from another version than the Python package) fails at import with a
message that says how to rebuild, instead of as a confusing AttributeError later.
"""

from __future__ import annotations

from routeguard import _core
from routeguard._version import __version__

if _core.__version__ != __version__:  # pragma: no cover - only on a broken install
    raise ImportError(
        f"routeguard's native extension is version {_core.__version__} but the Python package "
        f"is {__version__}; rebuild it with `make install` (or `maturin develop --release`)"
    )

core = _core

__all__ = ["core"]

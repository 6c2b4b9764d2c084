"""Type stubs for the compiled extension `routeguard._core` (rust/py/)."""

__version__: str

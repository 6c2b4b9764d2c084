"""The package version, kept equal to Cargo.toml's (checked by routeguard._native)."""

__version__ = "0.1.0"

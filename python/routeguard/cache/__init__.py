"""routeguard.cache (see DESIGN.md)."""

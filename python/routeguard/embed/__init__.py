"""routeguard.embed (see DESIGN.md)."""

"""routeguard.observe (see DESIGN.md)."""

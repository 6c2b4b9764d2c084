"""routeguard.routing (see DESIGN.md)."""

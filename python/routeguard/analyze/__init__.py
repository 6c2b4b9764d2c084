"""routeguard.analyze (see DESIGN.md)."""

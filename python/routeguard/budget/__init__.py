"""routeguard.budget (see DESIGN.md)."""

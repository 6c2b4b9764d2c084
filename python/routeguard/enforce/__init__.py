"""routeguard.enforce (see DESIGN.md)."""

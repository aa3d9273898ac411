"""attacks suite (see DESIGN.md)."""

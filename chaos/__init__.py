"""chaos suite (see DESIGN.md)."""

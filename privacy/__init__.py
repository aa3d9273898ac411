"""privacy suite (see DESIGN.md)."""

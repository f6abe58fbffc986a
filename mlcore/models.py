"""Models of this layer arrive with their issues (see ../shared/DESIGN.md)."""

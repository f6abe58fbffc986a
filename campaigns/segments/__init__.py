"""Segments: rule trees compiled to one SQL query, preview and explain."""

"""Bundled sample data and demo model (see NOTICE)."""

"""Passes of esact-cc, one per file, registered lazily in `registry.py`."""

"""Worked examples you can run from the repository root (``python -m examples.<name>...``)."""

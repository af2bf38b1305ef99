"""Reproducible performance runs (see benchmarks/README.md)."""

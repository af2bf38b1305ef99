"""Parity's domain core: pure Python, no Dagster. See DESIGN.md."""

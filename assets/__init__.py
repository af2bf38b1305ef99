"""Dagster assets: thin shells that fetch through a resource and call ``parity``."""

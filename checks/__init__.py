"""Dagster asset checks backed by Great Expectations 1.x suites."""

"""Adapters to the outside: stores, control plane, log reader, snapshot files, recorder,
embedded server, notifications. No Dagster."""

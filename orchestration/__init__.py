"""Dagster wiring: Definitions, partitions, resources, IO manager, jobs, schedules, sensors."""

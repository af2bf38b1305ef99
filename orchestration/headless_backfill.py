"""``parity backfill`` without the UI: the backfill job run in this process over the hours
asked for (consecutive hours share a run, as the asset's backfill policy would group
them), then each hour reconciled again, as ``reconcile_after_backfill`` does in a deployment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from assets.backfill import BY_PARTITION, MAX_PARTITIONS_PER_RUN, MISSED_EVENTS_BACKFILL
from orchestration.backfill_sensors import (
    BACKFILL_MISSED_EVENTS_JOB,
    consecutive_runs,
    partition_run_tags,
)
from orchestration.failures import StepFailure, run_failures
from orchestration.headless import (
    QUIET,
    Advance,
    PartitionOutcome,
    _maybe_instance,
    build_job,
    check_partitions,
    reconcile_partitions,
)


@dataclass
class BackfillOutcome:
    """What ``parity backfill`` did: per hour, the backfill's counts (``None`` when its run
    failed before recording them), the failed runs' steps, and the reconciliation after."""

    partitions: list[str]
    results: dict[str, dict[str, Any] | None]
    failures: list[StepFailure] = field(default_factory=list)
    reconciled: list[PartitionOutcome] = field(default_factory=list)

    @property
    def errors(self) -> list[str]:
        return [str(f) for f in self.failures]

    @property
    def success(self) -> bool:
        return not self.failures and all(r is not None for r in self.results.values())


def _run_config(dry_run: bool, all_missing: bool, batch_size: int) -> dict[str, Any]:
    config = {"dry_run": dry_run, "all_missing": all_missing, "batch_size": batch_size}
    return {**QUIET, "ops": {MISSED_EVENTS_BACKFILL: {"config": config}}}


def run_backfill_job(
    job: dg.JobDefinition,
    keys: list[str],
    *,
    instance: dg.DagsterInstance,
    dry_run: bool = False,
    all_missing: bool = False,
    batch_size: int = 1000,
    advance: Advance | None = None,
) -> tuple[dict[str, dict[str, Any] | None], list[StepFailure]]:
    """Run the backfill job over ``keys``; the per-hour results and the failed steps (each
    named by the range of hours its run covered)."""
    results: dict[str, dict[str, Any] | None] = dict.fromkeys(keys)
    failures: list[StepFailure] = []
    for chunk in consecutive_runs(keys, MAX_PARTITIONS_PER_RUN):
        result = job.execute_in_process(
            run_config=_run_config(dry_run, all_missing, batch_size),
            instance=instance,
            tags=partition_run_tags(chunk),
            raise_on_error=False,
        )
        for event in result.get_asset_materialization_events():
            materialization = event.step_materialization_data.materialization
            by_partition = materialization.metadata.get(BY_PARTITION)
            data = getattr(by_partition, "value", None) or {}
            partition = materialization.partition
            if partition is not None and partition in data:
                results[partition] = data[partition]
        if not result.success:
            hours = chunk[0] if len(chunk) == 1 else f"{chunk[0]}..{chunk[-1]}"
            failures.extend(
                StepFailure(f"{hours} {f.step}", f.error_class, f.message, f.exit_code)
                for f in run_failures(result.all_events)
            )
        if advance is not None:
            advance(f"backfilled {chunk[0]}..{chunk[-1]}", len(chunk))
    return results, failures


def backfill_partitions(
    keys: list[str],
    *,
    dry_run: bool = False,
    all_missing: bool = False,
    batch_size: int = 1000,
    environ: Mapping[str, str] | None = None,
    instance: dg.DagsterInstance | None = None,
    advance: Advance | None = None,
) -> BackfillOutcome:
    """Backfill the hours, then (unless a dry run) reconcile each again."""
    check_partitions(keys, environ)
    with _maybe_instance(instance) as inst:
        job = build_job(BACKFILL_MISSED_EVENTS_JOB, environ)
        results, failures = run_backfill_job(
            job,
            keys,
            instance=inst,
            dry_run=dry_run,
            all_missing=all_missing,
            batch_size=batch_size,
            advance=advance,
        )
        outcome = BackfillOutcome(keys, results, failures)
        if not dry_run:
            outcome.reconciled = reconcile_partitions(
                keys, environ=environ, instance=inst, advance=advance
            )
    return outcome

"""Jobs, schedules and sensors."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from assets.resources import ParityResource
from orchestration.gate import validation_paused
from parity.core.partitions import format_key, last_complete_hour

RECONCILE_EVENTS_JOB = "reconcile_events_job"
HOURLY_RECONCILIATION_SCHEDULE = "hourly_reconciliation_schedule"


def build_hourly_schedule(
    job: dg.UnresolvedAssetJobDefinition,
    partitions_def: dg.HourlyPartitionsDefinition,
    lag: dt.timedelta,
) -> dg.ScheduleDefinition:
    """Every hour, ``lag`` after the hour ends, reconcile the last complete hour."""
    minute = int(lag.total_seconds() // 60) % 60

    @dg.schedule(
        name=HOURLY_RECONCILIATION_SCHEDULE,
        job=job,
        cron_schedule=f"{minute} * * * *",
        execution_timezone="UTC",
        # Running from the start: an hour that is never reconciled is never repaired either
        # (the repair loop follows reconciliations), so the loop must not wait for a click.
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=(
            f"Reconciles the last complete UTC hour, {int(lag.total_seconds() // 60)} minutes "
            "after it ends so late events arrive (PARITY_SCHEDULE_LAG_MINUTES). Paused while "
            "MONITORING_DATA_VALIDATION_ENABLED is false."
        ),
        metadata={"PARITY_SCHEDULE_LAG_MINUTES": str(int(lag.total_seconds() // 60))},
    )
    def hourly_reconciliation_schedule(
        context: dg.ScheduleEvaluationContext, parity: ParityResource
    ):
        hour = last_complete_hour(context.scheduled_execution_time, lag)
        key = format_key(hour)
        if not partitions_def.has_partition_key(key):
            return dg.SkipReason(f"partition {key} is before the first partition")
        paused = validation_paused(parity, f"scheduled reconciliation of {key}", context.log)
        if paused:
            return dg.SkipReason(paused)
        return dg.RunRequest(run_key=key, partition_key=key)

    return hourly_reconciliation_schedule


def build_jobs(
    reconciliation_assets: list[dg.AssetsDefinition],
    partitions_def: dg.HourlyPartitionsDefinition,
    *,
    lag: dt.timedelta,
) -> tuple[list, list, list]:
    reconcile_job = dg.define_asset_job(
        RECONCILE_EVENTS_JOB,
        selection=dg.AssetSelection.assets(*reconciliation_assets),
        description="Snapshot the WebSocket log and the Supabase table for an hour and "
        "reconcile them, with every asset check.",
    )
    schedule = build_hourly_schedule(reconcile_job, partitions_def, lag)
    return [reconcile_job], [schedule], []

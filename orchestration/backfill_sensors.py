"""The backfill job and the two sensors around it (issue 6).

- ``backfill_missed_events_job`` materializes ``missed_events_backfill`` for an hour or,
  launched as a partition backfill from the UI, for a range (up to a day per run, see
  ``assets/backfill.py``).
- ``reconcile_after_backfill`` watches the backfill's materializations and requests a
  ``reconcile_events_job`` run per backfilled hour, so the UI shows the hour green (or
  still red, with the reason). A new run is the only way: the reconciliation is upstream of
  the backfill, so it cannot follow it in the same run. Dry runs are not followed.
- ``backfill_after_rollback`` watches successful ``rollback_job`` runs and requests the
  backfill for the hours named in the rollback's config (``partitions``), so events missed
  while Supabase was failing reach it. Only a rollback that changed flags is followed: a
  rollback already in force (the check-failure sensor asks again on every failed
  reconciliation) requests nothing, which keeps check failure -> rollback -> backfill ->
  reconcile from going round forever on a discrepancy no backfill can fix.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg

from assets.backfill import BY_PARTITION, DRY_RUN, MISSED_EVENTS_BACKFILL
from assets.resources import ParityResource
from orchestration.gate import validation_paused
from orchestration.jobs import RECONCILE_EVENTS_JOB
from orchestration.rollout import FEATURE_FLAGS_KEY, rollback_job
from parity.core import partitions

BACKFILL_MISSED_EVENTS_JOB = "backfill_missed_events_job"
RECONCILE_AFTER_BACKFILL = "reconcile_after_backfill"
BACKFILL_AFTER_ROLLBACK = "backfill_after_rollback"
BACKFILL_KEY = dg.AssetKey(MISSED_EVENTS_BACKFILL)
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
TRIGGER_TAG = "parity/trigger"
SENSOR_INTERVAL_S = 30


def build_backfill_job(
    backfill_assets: Sequence[dg.AssetsDefinition],
) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        BACKFILL_MISSED_EVENTS_JOB,
        selection=dg.AssetSelection.assets(*backfill_assets),
        description="Write the hour's missed events to Supabase (idempotent, never "
        "overwriting); the hour is then reconciled again by reconcile_after_backfill.",
    )


def partition_run_tags(keys: Sequence[str]) -> dict[str, str]:
    """Tags that make one run cover ``keys`` (consecutive hours, in order)."""
    return {RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]}


def consecutive_runs(keys: Iterable[str], max_per_run: int) -> list[list[str]]:
    """Sorted distinct hourly keys cut into runs of consecutive hours, at most
    ``max_per_run`` each."""
    runs: list[list[str]] = []
    for key in sorted(set(keys), key=partitions.parse_key):
        last = runs[-1] if runs else None
        if (
            last
            and len(last) < max_per_run
            and partitions.parse_key(key) - partitions.parse_key(last[-1]) == partitions.HOUR
        ):
            last.append(key)
        else:
            runs.append([key])
    return runs


def run_request_for(keys: Sequence[str], run_key: str, tags: dict[str, str]) -> dg.RunRequest:
    if len(keys) == 1:
        return dg.RunRequest(run_key=run_key, partition_key=keys[0], tags=tags)
    return dg.RunRequest(run_key=run_key, tags={**tags, **partition_run_tags(keys)})


# -- after a backfill: reconcile again -----------------------------------------------------


@dataclass(frozen=True)
class StorageIdCursor:
    """Event-log storage ids already handled. Ids are assigned at insert but may become
    visible out of order (concurrent runs on PostgreSQL), so each tick re-reads a window
    below the highest id seen and skips the ids it has handled."""

    high: int = 0
    seen: tuple[int, ...] = ()
    WINDOW = 1000

    @property
    def low(self) -> int:
        return max(0, self.high - self.WINDOW)

    def advance(self, ids: Iterable[int]) -> StorageIdCursor:
        merged = set(self.seen) | set(ids)
        high = max([self.high, *merged])
        return StorageIdCursor(high, tuple(sorted(i for i in merged if i > high - self.WINDOW)))

    def serialize(self) -> str:
        return json.dumps({"high": self.high, "seen": list(self.seen)})

    @classmethod
    def parse(cls, text: str | None) -> StorageIdCursor:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(int(data["high"]), tuple(int(i) for i in data["seen"]))


def _was_dry_run(record: dg.EventLogRecord) -> bool:
    materialization = record.asset_materialization
    value = materialization.metadata.get(DRY_RUN) if materialization else None
    return bool(getattr(value, "value", False))


def _written(record: dg.EventLogRecord, partition: str) -> int | None:
    materialization = record.asset_materialization
    value = materialization.metadata.get(BY_PARTITION) if materialization else None
    data = getattr(value, "value", None) or {}
    entry = data.get(partition) if isinstance(data, dict) else None
    return int(entry["written"]) if entry else None


def build_reconcile_after_backfill_sensor() -> dg.SensorDefinition:
    @dg.sensor(
        name=RECONCILE_AFTER_BACKFILL,
        job_name=RECONCILE_EVENTS_JOB,
        minimum_interval_seconds=SENSOR_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="After missed_events_backfill materializes an hour, reconciles that "
        "hour again (one reconcile_events_job run per hour), so the report and the asset "
        "checks show whether the hour is now whole.",
    )
    def reconcile_after_backfill(context: dg.SensorEvaluationContext, parity: ParityResource):
        paused = validation_paused(parity, "automatic repair")
        if paused:  # the cursor stays: backfills made meanwhile are followed on resume
            return dg.SkipReason(paused)
        cursor = StorageIdCursor.parse(context.cursor)
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=BACKFILL_KEY, after_storage_id=cursor.low),
            limit=1000,
            ascending=True,
        ).records
        fresh = [r for r in records if r.storage_id not in cursor.seen]
        requests = []
        for record in fresh:
            partition = record.partition_key
            if partition is None or _was_dry_run(record):
                continue
            requests.append(
                dg.RunRequest(
                    run_key=f"reconcile-after-backfill-{record.storage_id}",
                    partition_key=partition,
                    tags={
                        TRIGGER_TAG: "backfill",
                        "parity/backfill_run_id": record.run_id,
                        "parity/backfill_written": str(_written(record, partition)),
                    },
                )
            )
        context.update_cursor(cursor.advance(r.storage_id for r in fresh).serialize())
        if not requests:
            return dg.SkipReason(f"{len(fresh)} new backfill materializations, none to follow")
        return requests

    return reconcile_after_backfill


# -- after a rollback: backfill ------------------------------------------------------------


def rollback_partitions(run_config: Mapping[str, Any]) -> list[str]:
    """The ``partitions`` a rollback_job run was configured with."""
    op = (run_config.get("ops") or {}).get("apply_rollback") or {}
    config = op.get("config", op) or {}
    return [str(p) for p in config.get("partitions") or []]


def rollback_changed_flags(instance: dg.DagsterInstance, run_id: str) -> bool:
    """Whether the rollback run changed flags (its feature_flags observation says
    ``applied``); True when it cannot be told, so a missed backfill is never the default."""
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_OBSERVATION):
        event = entry.dagster_event
        observation = event.asset_observation_data.asset_observation if event else None
        if observation is not None and observation.asset_key == FEATURE_FLAGS_KEY:
            applied = observation.metadata.get("applied")
            if applied is not None:
                return bool(applied.value)
    return True


def build_backfill_after_rollback_sensor(
    partitions_def: dg.PartitionsDefinition,
    backfill_job: dg.UnresolvedAssetJobDefinition,
    max_per_run: int,
) -> dg.SensorDefinition:
    @dg.run_status_sensor(
        name=BACKFILL_AFTER_ROLLBACK,
        run_status=dg.DagsterRunStatus.SUCCESS,
        monitored_jobs=[rollback_job],
        request_job=backfill_job,
        minimum_interval_seconds=SENSOR_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="After a rollback that changed flags, backfills the hours it names "
        "(sync any missed events): the events Supabase should have received before the "
        "rollback are written, then reconcile_after_backfill checks the hours again.",
    )
    def backfill_after_rollback(context: dg.RunStatusSensorContext, parity: ParityResource):
        run = context.dagster_run
        paused = validation_paused(parity, f"automatic backfill after rollback {run.run_id}")
        if paused:
            return dg.SkipReason(paused)
        named = rollback_partitions(run.run_config)
        if not named:
            return dg.SkipReason(f"rollback run {run.run_id} names no partitions")
        if not rollback_changed_flags(context.instance, run.run_id):
            return dg.SkipReason(
                f"rollback run {run.run_id} changed nothing (already in force); the hours "
                "were synced after the rollback that did"
            )
        keys = [k for k in named if partitions_def.has_partition_key(k)]
        if not keys:
            return dg.SkipReason(
                f"rollback run {run.run_id} names {', '.join(named)}, none a complete hour yet"
            )
        return [
            run_request_for(
                chunk,
                run_key=f"backfill-after-rollback-{run.run_id}-{chunk[0]}",
                tags={TRIGGER_TAG: "rollback", "parity/rollback_run_id": run.run_id},
            )
            for chunk in consecutive_runs(keys, max_per_run)
        ]

    return backfill_after_rollback


def build_backfill_definitions(
    partitions_def: dg.PartitionsDefinition,
    backfill_assets: Sequence[dg.AssetsDefinition],
    max_per_run: int,
) -> tuple[dg.UnresolvedAssetJobDefinition, list[dg.SensorDefinition]]:
    """The backfill job and its two sensors, for ``orchestration/definitions.py``."""
    job = build_backfill_job(backfill_assets)
    sensors = [
        build_reconcile_after_backfill_sensor(),
        build_backfill_after_rollback_sensor(partitions_def, job, max_per_run),
    ]
    return job, sensors

"""The repair loop: lost events are backfilled, then the hour is reconciled again.

- ``repair_lost_events`` reads, each tick, the latest reconciliation of every recent hour
  (``event_reconciliation``'s materialization metadata: how many events are missing and a
  digest of which) and the backfills already made of it, and asks
  :func:`parity.core.repair.decide` whether to repair now. It follows the loss, not what
  caused it: a health-trigger rollback's outage hour (once complete and reconciled), a
  check-failure rollback, a manual rollback and a quiet loss with no rollback at all are
  the same case. Each request's run key names the hour, the set of missing keys and the
  attempt, so ticks while a repair runs never repeat it, and the attempts are bounded per
  set of keys. An hour no backfill can make whole is recorded as ``repair impossible``.
- ``backfill_missed_events_job`` materializes ``missed_events_backfill`` for an hour or,
  launched as a partition backfill from the UI, for a range (up to a day per run, see
  ``assets/backfill.py``).
- ``reconcile_after_backfill`` watches the backfill's materializations and requests a
  ``reconcile_events_job`` run per backfilled hour, so the UI shows the hour green (or
  still red, with the reason). A new run is the only way: the reconciliation is upstream of
  the backfill, so it cannot follow it in the same run. Dry runs are not followed.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg

from assets.backfill import BY_PARTITION, DRY_RUN, MISSED_EVENTS_BACKFILL, backfill_attempts
from assets.resources import ParityResource
from checks.specs import EVENT_RECONCILIATION
from orchestration.gate import validation_paused
from orchestration.jobs import RECONCILE_EVENTS_JOB
from parity.core import partitions, repair

BACKFILL_MISSED_EVENTS_JOB = "backfill_missed_events_job"
RECONCILE_AFTER_BACKFILL = "reconcile_after_backfill"
REPAIR_LOST_EVENTS = "repair_lost_events"
BACKFILL_KEY = dg.AssetKey(MISSED_EVENTS_BACKFILL)
RECONCILIATION_KEY = dg.AssetKey(EVENT_RECONCILIATION)
REPAIR_PARTITION_TAG = "parity/repair_partition"
REPAIR_DIGEST_TAG = "parity/repair_keys"
REPAIR_ATTEMPT_TAG = "parity/repair_attempt"
#: Reconciliations a repair tick reads (newest first): far more than the hours that can be
#: waiting for a repair at once.
RECONCILIATION_HISTORY = 500
#: Hours the cursor remembers as already reported impossible.
CURSOR_MARKERS = 1000
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
        paused = validation_paused(parity, "automatic repair", context.log)
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


# -- after a loss: repair ------------------------------------------------------------------


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class LatestReconciliation:
    """An hour's latest ``event_reconciliation`` materialization, as the repair reads it."""

    partition: str
    storage_id: int
    missing: int
    digest: str
    recorded_state: str


def latest_reconciliations(
    instance: dg.DagsterInstance, limit: int = RECONCILIATION_HISTORY
) -> list[LatestReconciliation]:
    """Per hour, the newest of the last ``limit`` reconciliations, oldest hour first."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=RECONCILIATION_KEY), limit=limit, ascending=False
    ).records
    latest: dict[str, LatestReconciliation] = {}
    for record in records:
        partition = record.partition_key
        materialization = record.asset_materialization
        if partition is None or materialization is None or partition in latest:
            continue
        meta = materialization.metadata
        latest[partition] = LatestReconciliation(
            partition=partition,
            storage_id=record.storage_id,
            missing=int(_value(meta, repair.MISSING_IN_SUPABASE) or 0),
            digest=str(_value(meta, repair.MISSING_KEYS_DIGEST) or ""),
            recorded_state=str(_value(meta, repair.REPAIR_STATE) or ""),
        )
    return sorted(latest.values(), key=lambda r: partitions.parse_key(r.partition))


def _value(metadata: Mapping[str, Any], key: str) -> Any:
    entry = metadata.get(key)
    return getattr(entry, "value", entry)


def repair_runs(instance: dg.DagsterInstance, partition: str, digest: str) -> tuple[int, bool]:
    """Finished repair runs of this hour and set of keys, and whether one is in flight."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(tags={REPAIR_PARTITION_TAG: partition, REPAIR_DIGEST_TAG: digest})
    )
    finished = sum(1 for run in runs if run.is_finished)
    return finished, finished < len(runs)


def build_repair_sensor(
    partitions_def: dg.PartitionsDefinition,
    backfill_job: dg.UnresolvedAssetJobDefinition,
    policy: repair.RepairPolicy,
) -> dg.SensorDefinition:
    @dg.sensor(
        name=REPAIR_LOST_EVENTS,
        job=backfill_job,
        minimum_interval_seconds=SENSOR_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Repairs every reconciled hour with events missing from Supabase, "
        "whatever caused the loss: backfills the hour (then reconcile_after_backfill "
        f"reconciles it again), at most {policy.max_attempts} times per set of missing keys "
        "(PARITY_REPAIR_MAX_ATTEMPTS), starting "
        f"{policy.settle.total_seconds() / 60:g} minutes after the hour ends "
        "(PARITY_REPAIR_SETTLE_MINUTES). Keys no backfill can write are reported as "
        "'repair impossible', never retried.",
    )
    def repair_lost_events(context: dg.SensorEvaluationContext, parity: ParityResource):
        """Stateless over the hours: each tick re-reads the latest reconciliations, so an
        hour waiting for its settle time, or whose repair run failed, is looked at again
        at the next tick. What stops a repeat is the run key (hour, set of keys, attempt)
        and the runs tagged with it; the cursor only remembers the hours already reported
        impossible by the sensor, so that report is made once."""
        paused = validation_paused(parity, "automatic repair", context.log)
        if paused:
            return dg.SkipReason(paused)
        now = utcnow()
        reported = set(json.loads(context.cursor)) if context.cursor else set()
        requests: list[dg.RunRequest] = []
        events: list[dg.AssetObservation] = []
        notes: list[str] = []
        for hour in latest_reconciliations(context.instance):
            if not hour.missing or not partitions_def.has_partition_key(hour.partition):
                continue
            attempts = backfill_attempts(context.instance, hour.partition)
            decision = _decide_repair(context.instance, hour, attempts, policy, now)
            notes.append(f"{hour.partition}: {decision.state.value} ({decision.reason})")
            if decision.repair:
                requests.append(_repair_request(hour, decision))
            settled = not attempts or attempts[-1].order < hour.storage_id
            marker = f"{hour.partition}:{hour.digest}"
            if (
                decision.state == repair.RepairState.IMPOSSIBLE
                and hour.recorded_state != decision.state.value
                and settled
                and marker not in reported
            ):
                # The hour's own record says pending; the runs say no repair will come.
                events.append(impossible_observation(hour, decision))
                reported.add(marker)
        context.update_cursor(json.dumps(sorted(reported)[-CURSOR_MARKERS:]))
        if not requests and not events:
            return dg.SkipReason("; ".join(notes) or "no reconciled hour is missing events")
        return dg.SensorResult(run_requests=requests, asset_events=events)

    return repair_lost_events


def _decide_repair(
    instance: dg.DagsterInstance,
    hour: LatestReconciliation,
    attempts: list[repair.Attempt],
    policy: repair.RepairPolicy,
    now: dt.datetime,
) -> repair.Decision:
    """The repair loop's decision for the hour, with the repair runs of its set of keys."""
    finished, running = repair_runs(instance, hour.partition, hour.digest)
    return repair.decide(
        missing=hour.missing,
        digest=hour.digest,
        window_end=partitions.window(hour.partition)[1],
        reconciled_order=hour.storage_id,
        attempts=attempts,
        policy=policy,
        now=now,
        automatic_runs=finished,
        running=running,
    )


def _repair_request(hour: LatestReconciliation, decision: repair.Decision) -> dg.RunRequest:
    """The backfill run of one repair attempt; its run key makes it once."""
    return dg.RunRequest(
        run_key=f"repair-{hour.partition}-{hour.digest}-{decision.attempt}",
        partition_key=hour.partition,
        tags={
            TRIGGER_TAG: "repair",
            REPAIR_PARTITION_TAG: hour.partition,
            REPAIR_DIGEST_TAG: hour.digest,
            REPAIR_ATTEMPT_TAG: str(decision.attempt),
        },
    )


def impossible_observation(
    hour: LatestReconciliation, decision: repair.Decision
) -> dg.AssetObservation:
    """The hour's repair state, recorded on ``event_reconciliation`` when the sensor (not
    the reconciliation) finds that no repair will come."""
    return dg.AssetObservation(
        asset_key=RECONCILIATION_KEY,
        partition=hour.partition,
        metadata={
            repair.REPAIR_STATE: decision.state.value,
            repair.REPAIR_REASON: decision.reason,
            repair.MISSING_KEYS_DIGEST: hour.digest,
            repair.MISSING_IN_SUPABASE: hour.missing,
        },
    )


def build_backfill_definitions(
    partitions_def: dg.PartitionsDefinition,
    backfill_assets: Sequence[dg.AssetsDefinition],
    policy: repair.RepairPolicy | None = None,
) -> tuple[dg.UnresolvedAssetJobDefinition, list[dg.SensorDefinition]]:
    """The backfill job and its two sensors, for ``orchestration/definitions.py``."""
    job = build_backfill_job(backfill_assets)
    sensors = [
        build_reconcile_after_backfill_sensor(),
        build_repair_sensor(partitions_def, job, policy or repair.RepairPolicy()),
    ]
    return job, sensors

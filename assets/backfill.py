"""The repair asset: missed events re-sent to Supabase, hour by hour.

Wiring only: for each hour of the run, take the stored log snapshot (through the IO
manager) and the report's missing keys, call :func:`parity.io.backfill.backfill`, and
report what happened, per hour, with the digest of the missing keys it was asked for (the
repair loop counts its attempts per set of keys). The hour is reconciled again afterwards
by the ``reconcile_after_backfill`` sensor (see ``orchestration/backfill_sensors.py``):
``event_reconciliation`` is upstream of this asset, so it cannot run in the same run.
"""

import datetime as dt
import functools
from collections.abc import Mapping
from typing import Any

import dagster as dg
import pyarrow as pa

from assets.failures import surface_parity_errors
from assets.resources import LOAD_BY_PARTITION, ParityResource
from checks.specs import EVENT_RECONCILIATION, WS_LOG_SNAPSHOT
from parity.core import partitions
from parity.core.classify import Classifier
from parity.core.repair import (
    MISSING_KEYS_DIGEST,
    UNWRITTEN_KEYS_DIGEST,
    Attempt,
    keys_digest,
    unwritten_digest,
)
from parity.core.routing import FlagTimeline
from parity.io import backfill as bf
from parity.io import backfill_ledger
from parity.io.control import load_timeline
from parity.io.snapshot import SnapshotFile
from parity.io.store import EventStore
from parity.io.wslog import read_window

GROUP = "repair"
MISSED_EVENTS_BACKFILL = "missed_events_backfill"
#: A backfill over a long range runs up to a day of hours per run: each hour is small work
#: (one snapshot, a few inserts), so one run per hour would mostly be run overhead.
MAX_PARTITIONS_PER_RUN = 24
BACKFILL_POLICY = dg.BackfillPolicy.multi_run(max_partitions_per_run=MAX_PARTITIONS_PER_RUN)
#: Metadata keys, also read by the sensor that reconciles backfilled hours again.
DRY_RUN = "dry_run"
BY_PARTITION = "by_partition"
#: Backfills of one hour the repair loop reads back; far more than it ever makes.
ATTEMPT_HISTORY = 100


class BackfillConfig(dg.Config):
    """Launch-time options (Launchpad, or ``parity backfill`` flags)."""

    dry_run: bool = False
    """Report what would be written, write nothing."""
    all_missing: bool = False
    """Write every event the log has and Supabase lacks, not only those the rollout
    cohort sent to Supabase."""
    batch_size: int = 1000
    """Rows per insert; each batch is retried on connection errors."""


def build_backfill_assets(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """The backfill asset on the reconciliation's hourly partitions."""

    @dg.asset(
        name=MISSED_EVENTS_BACKFILL,
        partitions_def=partitions_def,
        group_name=GROUP,
        kinds={"python", "supabase", "postgres"},
        ins={
            WS_LOG_SNAPSHOT: dg.AssetIn(metadata={LOAD_BY_PARTITION: True}),
        },
        deps=[EVENT_RECONCILIATION],
        backfill_policy=BACKFILL_POLICY,
        description=(
            "Monitoring events the WebSocket broadcast logged and Supabase should have but "
            "does not, written to Supabase once each (never overwriting a row that is there), "
            "so the hour can be proven whole. Conflicting and corrupted events are reported, "
            "not written."
        ),
    )
    @surface_parity_errors
    def missed_events_backfill(
        context: dg.AssetExecutionContext,
        config: BackfillConfig,
        parity: ParityResource,
        ws_log_snapshot: dict,
    ) -> dg.MaterializeResult:
        classifier = parity.classifier()
        results: list[bf.BackfillResult] = []
        digests: dict[str, dict[str, str | None]] = {}
        plane = parity.open_control_plane()
        try:
            timeline = load_timeline(plane)
        finally:
            plane.close()
        store = parity.open_store()
        try:
            for key in context.partition_keys:
                result, digests[key] = _backfill_hour(
                    key, ws_log_snapshot.get(key), parity, store, timeline, classifier, config
                )
                context.log.info(_summary(result))
                results.append(result)
        finally:
            store.close()
        return dg.MaterializeResult(metadata=backfill_metadata(results, digests))

    return [missed_events_backfill]


def _backfill_hour(
    key: str,
    snapshot: SnapshotFile | None,
    parity: ParityResource,
    store: EventStore,
    timeline: FlagTimeline,
    classifier: Classifier,
    config: BackfillConfig,
) -> tuple[bf.BackfillResult, dict[str, str | None]]:
    """One hour: the report's missing keys (every key with ``all_missing``), the log's copies
    of them, the writes, the ledger. Also which set of missing keys it repairs: the repair
    loop counts its attempts per set (parity.core.repair)."""
    settings = parity.settings()
    start, end = partitions.window(key)
    grace = dt.timedelta(hours=parity.log_grace_hours)
    read_log = functools.partial(_log_events, settings.ws_log_dir, start, end, classifier, grace)
    keys = backfill_ledger.report_keys(settings.layout, key, all_missing=config.all_missing)
    ws = bf.load_log_snapshot(snapshot, read_log, keys)
    options = bf.BackfillOptions(
        dry_run=config.dry_run, all_missing=config.all_missing, batch_size=config.batch_size
    )
    try:
        result = bf.backfill(
            ws, store, partition=key, timeline=timeline, keys=keys, options=options
        )
    except bf.BackfillInterruptedError as exc:
        backfill_ledger.write_ledger(settings.layout, exc.result)
        raise
    backfill_ledger.write_ledger(settings.layout, result)
    return result, _digests(keys, result)


def _digests(keys: list | None, result: bf.BackfillResult) -> dict[str, str | None]:
    """Which set of missing keys this backfill repaired, and which of them it could not
    write: the repair loop counts its attempts per set, and does not try again the keys a
    backfill could not write (parity.core.repair)."""
    if keys is None:
        return {MISSING_KEYS_DIGEST: None}
    sent = result.sent_keys
    pairs = zip(sent.column("stream").to_pylist(), sent.column("seq").to_pylist(), strict=True)
    left = None if result.dry_run else unwritten_digest(keys, pairs)
    return {MISSING_KEYS_DIGEST: keys_digest(keys), UNWRITTEN_KEYS_DIGEST: left}


def _log_events(log_dir, start, end, classifier, grace) -> pa.Table:  # noqa: ANN001
    """The hour's log read afresh, for an hour whose snapshot was never stored."""
    return read_window(log_dir, start, end, classifier=classifier, grace=grace).events


def _summary(r: bf.BackfillResult) -> str:
    verb = "would write" if r.dry_run else "wrote"
    return (
        f"{r.partition}: {verb} {r.planned if r.dry_run else r.written} events; already "
        f"present {r.already_present}, conflicts {r.conflicts}, invalid {r.invalid}, refused "
        f"by the store {r.refused}, outside "
        f"the cohort {r.skipped_outside_cohort}, {r.batches} batches in {r.duration_s:g} s"
    )


def backfill_metadata(
    results: list[bf.BackfillResult], digests: dict[str, dict[str, str | None]] | None = None
) -> dict:
    def total(name: str) -> int:
        return sum(int(getattr(r, name)) for r in results)

    return {
        DRY_RUN: any(r.dry_run for r in results),
        "partitions": len(results),
        "planned": total("planned"),
        "written": total("written"),
        "already_present": total("already_present"),
        "skipped_existing": total("skipped_existing"),
        "conflicts": total("conflicts"),
        "invalid": total("invalid"),
        "refused": total("refused"),
        "skipped_outside_cohort": total("skipped_outside_cohort"),
        "batches": total("batches"),
        "retries": total("retries"),
        "duration_s": dg.MetadataValue.float(round(sum(r.duration_s for r in results), 3)),
        BY_PARTITION: dg.MetadataValue.json(
            {
                r.partition: {
                    **{
                        k: v for k, v in r.to_dict().items() if k not in ("partition", "started_at")
                    },
                    **(digests or {}).get(r.partition, {MISSING_KEYS_DIGEST: None}),
                }
                for r in results
            }
        ),
    }


def backfill_attempts(instance: dg.DagsterInstance, partition: str) -> list[Attempt]:
    """The backfills made of ``partition``, oldest first, from this asset's materializations
    (each carries its hours' outcomes in ``by_partition``)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey(MISSED_EVENTS_BACKFILL), asset_partitions=[partition]
        ),
        limit=ATTEMPT_HISTORY,
        ascending=False,
    ).records
    attempts = []
    for record in records:
        materialization = record.asset_materialization
        entry = _by_partition(materialization.metadata if materialization else {}).get(partition)
        if entry is not None and not entry.get(DRY_RUN):
            attempts.append(Attempt.from_metadata(record.storage_id, entry))
    return sorted(attempts, key=lambda a: a.order)


def _by_partition(metadata: Mapping[str, Any]) -> dict[str, Any]:
    value = getattr(metadata.get(BY_PARTITION), "value", None)
    return value if isinstance(value, dict) else {}

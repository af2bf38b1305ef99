"""The three reconciliation assets (contract §3-5): two hourly snapshots and their comparison.

Each is wiring: fetch through the ``parity`` resource, call :mod:`parity`, return metadata.
"""

import base64
import datetime as dt
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from assets.backfill import backfill_attempts
from assets.failures import surface_parity_errors
from assets.flags import FEATURE_FLAGS
from assets.resources import ParityResource
from checks import ge_process
from checks.evaluate import evaluate_checks
from checks.specs import EVENT_RECONCILIATION, SUPABASE_EVENTS_SNAPSHOT, WS_LOG_SNAPSHOT
from parity.core import partitions, repair, report, verdict
from parity.core.reconcile import LOG_COLUMNS, SUPABASE_COLUMNS, reconcile_in_parts
from parity.core.schema import SUPABASE_SNAPSHOT_SCHEMA, WS_SNAPSHOT_SCHEMA
from parity.io.backfill_ledger import backfilled_keys
from parity.io.control import load_timeline
from parity.io.reports import write_report
from parity.io.snapshot import SnapshotFile, SnapshotWriter, aligned_parts, staged
from parity.io.store import derived_batches
from parity.io.store_pg import SORT_KEYS as STORE_SORT_KEYS
from parity.io.wslog import SORT_KEYS as LOG_SORT_KEYS
from parity.io.wslog import LogRead, read_window

GROUP = "reconciliation"
#: Each run reconciles one hour (the assets read context.partition_key); a backfill over a
#: range launches one run per hour, which the run queue spreads over the workers.
ONE_HOUR_PER_RUN = dg.BackfillPolicy.multi_run(max_partitions_per_run=1)
#: How many offending keys the UI shows; the report keeps the full list of missing keys.
SAMPLE_LIMIT = 50
#: Metadata keys of the hour's verdict (parity.core.verdict), read by the scorecard.
VERDICT = "verdict"
VERDICT_REASONS = "verdict_reasons"
#: The concurrency pool of the Supabase snapshot: at most its limit of reads at once across
#: all runs (deploy/dagster.yaml sets the default limit).
SUPABASE_READS_POOL = "supabase_reads"


def _snapshot(
    context: dg.AssetExecutionContext,
    parity: ParityResource,
    asset: str,
    schema: pa.Schema,
    sort_keys: list[tuple[str, str]],
    fill: Callable[[SnapshotWriter], Any],
) -> tuple[SnapshotFile, dict, list[dg.AssetCheckResult], Any]:
    """Write the asset's snapshot, in parts, to a staged file through ``fill(writer)``, then
    summarise and check it. Checked here, before the output is handed over: the IO manager
    moves the staged file. Returns the snapshot, its summary, the check results and what
    ``fill`` returned."""
    settings = parity.settings()
    if context.selected_asset_check_keys:
        ge_process.start()  # GE's import overlaps the snapshot
    with staged(settings.layout, asset, context.partition_key) as path:
        with SnapshotWriter(schema, sort_keys, spill_dir=path.parent) as sink:
            filled = fill(sink)
            snap = sink.finish(path)
        summary = _summary(snap)
        results = list(_checks(context, parity, asset, snap))
    return snap, summary, results, filled


def _summary(snap: SnapshotFile) -> dict:
    """Counts for the asset's metadata, read part by part (a few columns, no payloads)."""
    rows = streams = invalid = parts = 0
    unclassified: set[str] = set()
    for part in snap.parts(["stream", "event_type", "unclassified", "checksum_valid"]):
        parts += 1
        rows += part.num_rows
        streams += len(pc.unique(part.column("stream")))  # parts hold disjoint streams
        invalid += part.num_rows - (pc.sum(part.column("checksum_valid")).as_py() or 0)
        flagged = pc.filter(
            part.column("event_type"), pc.fill_null(part.column("unclassified"), False)
        )
        unclassified.update(pc.unique(flagged).to_pylist())
    return {
        "rows": rows,
        "streams": streams,
        "parts": parts,
        "invalid_checksums": invalid,
        "unclassified": sorted(unclassified),
    }


def build_reconciliation_assets(
    partitions_def: dg.PartitionsDefinition,
    check_specs: dict[str, list[dg.AssetCheckSpec]] | None = None,
    repair_policy: repair.RepairPolicy | None = None,
) -> list[dg.AssetsDefinition]:
    """The assets on one hourly partitions definition (its start date is configurable, so
    the definitions are built when the code location loads, not at import).
    ``repair_policy``: the repair loop's limits, for the repair state each hour records."""
    specs = check_specs or {}
    return [
        _ws_log_snapshot_asset(partitions_def, specs.get(WS_LOG_SNAPSHOT)),
        _supabase_events_snapshot_asset(partitions_def, specs.get(SUPABASE_EVENTS_SNAPSHOT)),
        _event_reconciliation_asset(
            partitions_def, specs.get(EVENT_RECONCILIATION), repair_policy or repair.RepairPolicy()
        ),
    ]


def _ws_log_snapshot_asset(
    partitions_def: dg.PartitionsDefinition, check_specs: list[dg.AssetCheckSpec] | None
) -> dg.AssetsDefinition:
    @dg.asset(
        name=WS_LOG_SNAPSHOT,
        partitions_def=partitions_def,
        group_name=GROUP,
        kinds={"python", "parquet"},
        io_manager_key="snapshot_io_manager",
        backfill_policy=ONE_HOUR_PER_RUN,
        check_specs=check_specs,
        description=(
            "Every monitoring event the WebSocket broadcast logged for the hour (by emitted_at), "
            "the source of truth. Lines that cannot be read as events are quarantined, "
            "never dropped."
        ),
    )
    @surface_parity_errors
    def ws_log_snapshot(context: dg.AssetExecutionContext, parity: ParityResource):
        settings = parity.settings()
        partition = context.partition_key
        start, end = partitions.window(partition)
        quarantine = settings.layout.quarantine(partition)
        began = time.perf_counter()

        def fill(sink: SnapshotWriter) -> LogRead:
            return read_window(
                settings.ws_log_dir,
                start,
                end,
                classifier=parity.classifier(),
                grace=dt.timedelta(hours=parity.log_grace_hours),
                quarantine_path=quarantine,
                sink=sink,
            )

        snap, summary, results, read = _snapshot(
            context, parity, WS_LOG_SNAPSHOT, WS_SNAPSHOT_SCHEMA, LOG_SORT_KEYS, fill
        )
        metadata = {
            "events": summary["rows"],
            "streams": summary["streams"],
            "parts": summary["parts"],
            "quarantined_lines": read.quarantined.num_rows,
            "quarantine_file": dg.MetadataValue.path(str(quarantine)),
            "invalid_checksums": summary["invalid_checksums"],
            "unclassified_event_types": dg.MetadataValue.json(summary["unclassified"]),
            "files_read": len(read.files_read),
            "duration_s": round(time.perf_counter() - began, 3),
        }
        yield dg.Output(snap, metadata=metadata)
        yield from results

    return ws_log_snapshot


def _supabase_events_snapshot_asset(
    partitions_def: dg.PartitionsDefinition, check_specs: list[dg.AssetCheckSpec] | None
) -> dg.AssetsDefinition:
    @dg.asset(
        name=SUPABASE_EVENTS_SNAPSHOT,
        partitions_def=partitions_def,
        group_name=GROUP,
        kinds={"supabase", "postgres", "parquet"},
        io_manager_key="snapshot_io_manager",
        backfill_policy=ONE_HOUR_PER_RUN,
        # deploy/dagster.yaml limits concurrent Supabase reads through this pool.
        pool=SUPABASE_READS_POOL,
        check_specs=check_specs,
        description=(
            "Every row of the Supabase events table whose emitted_at falls in the hour, "
            "duplicates included, with checksums recomputed."
        ),
    )
    @surface_parity_errors
    def supabase_events_snapshot(context: dg.AssetExecutionContext, parity: ParityResource):
        partition = context.partition_key
        start, end = partitions.window(partition)
        began = time.perf_counter()
        classifier = parity.classifier()
        store = parity.open_store()

        def fill(sink: SnapshotWriter) -> None:
            for rows in derived_batches(store, start, end, classifier):
                sink.write(rows)

        try:
            snap, summary, results, _ = _snapshot(
                context, parity, SUPABASE_EVENTS_SNAPSHOT, SUPABASE_SNAPSHOT_SCHEMA,
                STORE_SORT_KEYS, fill,
            )  # fmt: skip
        finally:
            store.close()
        metadata = {
            "rows": summary["rows"],
            "streams": summary["streams"],
            "parts": summary["parts"],
            "transport": store.transport,
            "table": str(store.table),
            "duration_s": round(time.perf_counter() - began, 3),
        }
        yield dg.Output(snap, metadata=metadata)
        yield from results

    return supabase_events_snapshot


def _event_reconciliation_asset(
    partitions_def: dg.PartitionsDefinition,
    check_specs: list[dg.AssetCheckSpec] | None,
    repair_policy: repair.RepairPolicy,
) -> dg.AssetsDefinition:
    @dg.asset(
        name=EVENT_RECONCILIATION,
        partitions_def=partitions_def,
        group_name=GROUP,
        kinds={"python"},
        deps=[FEATURE_FLAGS],
        backfill_policy=ONE_HOUR_PER_RUN,
        check_specs=check_specs,
        description=(
            "The hour's log against Supabase: missing, unexpected, duplicated and corrupted "
            "events, sequence gaps, out-of-order arrivals, latency and delivery rate, per "
            "category. Only events the rollout cohort sent to Supabase can be missing."
        ),
    )
    @surface_parity_errors
    def event_reconciliation(
        context: dg.AssetExecutionContext,
        parity: ParityResource,
        ws_log_snapshot: SnapshotFile,
        supabase_events_snapshot: SnapshotFile,
    ):
        doc = _reconcile(context.partition_key, parity, ws_log_snapshot, supabase_events_snapshot)
        decision = _repair_state(context, doc, repair_policy)
        doc["repair"] = {
            "state": decision.state.value,
            "reason": decision.reason,
            repair.MISSING_KEYS_DIGEST: repair.keys_digest(doc["missing_keys"]),
        }
        path = write_report(parity.settings().layout, doc)
        checks = list(_checks(context, parity, EVENT_RECONCILIATION, doc))
        judged = verdict.hour_verdict(
            doc,
            [verdict.CheckOutcome(c.check_name, c.passed, c.severity.value) for c in checks],
            decision.state,
        )
        invalid = {
            "ws": _invalid_keys(ws_log_snapshot),
            "supabase": _invalid_keys(supabase_events_snapshot),
        }
        yield dg.MaterializeResult(
            metadata=_reconciliation_metadata(doc, str(path), judged, invalid)
        )
        yield from checks

    return event_reconciliation


def _reconcile(
    partition: str, parity: ParityResource, ws: SnapshotFile, sb: SnapshotFile
) -> dict[str, Any]:
    """The hour's report: the two snapshots reconciled against the flag timeline, one pair
    of parts (the same streams on both sides) in memory at a time."""
    settings = parity.settings()
    start, end = partitions.window(partition)
    plane = parity.open_control_plane()
    try:
        timeline = load_timeline(plane)
    finally:
        plane.close()
    result = reconcile_in_parts(
        aligned_parts(ws, sb, LOG_COLUMNS, SUPABASE_COLUMNS),
        timeline=timeline,
        window_start=start,
        window_end=end,
        partition=partition,
        quarantined_lines=_quarantined_lines(settings.layout.quarantine(partition)),
        sample_limit=SAMPLE_LIMIT,
        backfilled=backfilled_keys(settings.layout, partition),
    )
    return result.to_report()


def _repair_state(
    context: dg.AssetExecutionContext, doc: dict, policy: repair.RepairPolicy
) -> repair.Decision:
    """Where the hour's repair stands, as the repair sensor will see it (it adds the runs in
    flight and the attempts made)."""
    return repair.decide(
        missing=int(doc["missing_in_supabase"]),
        digest=repair.keys_digest(doc["missing_keys"]),
        window_end=partitions.window(context.partition_key)[1],
        reconciled_order=sys.maxsize,  # newer than every backfill recorded so far
        attempts=backfill_attempts(context.instance, context.partition_key),
        policy=policy,
        now=dt.datetime.now(dt.UTC),
    )


def _invalid_keys(snapshot: SnapshotFile) -> list[list]:
    """The first keys whose stored checksum does not recompute, for the offending-keys
    sample (the report counts them; the snapshot knows which)."""
    keys: list[list] = []
    for part in snapshot.parts(["stream", "seq", "checksum_valid"]):
        bad = part.filter(pc.invert(pc.fill_null(part.column("checksum_valid"), False)))
        streams, seqs = bad.column("stream").to_pylist(), bad.column("seq").to_pylist()
        keys.extend([s, q] for s, q in zip(streams, seqs, strict=True))
        if len(keys) >= SAMPLE_LIMIT:
            break
    return sorted(keys)[:SAMPLE_LIMIT]


def _quarantined_lines(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.read_metadata(path).num_rows if path.exists() else 0


def _checks(context: dg.AssetExecutionContext, parity: ParityResource, asset: str, data):  # noqa: ANN001
    """Asset check results computed from the asset's own data (see checks/)."""
    selected = {key.name for key in context.selected_asset_check_keys}
    if selected:
        settings = parity.settings()
        yield from evaluate_checks(
            asset,
            data,
            selected,
            context.partition_key,
            layout=settings.layout,
            criteria=settings.knobs.slo,
        )


def _reconciliation_metadata(
    doc: dict, path: str, judged: verdict.Verdict, invalid: dict[str, list[list]]
) -> dict:
    lat = doc["latency_ms"]
    png = ge_process.latency_histogram_png(
        doc.get("latency_histogram") or {},
        title=f"latency of matched events, {doc['partition']} UTC",
    )
    image = base64.b64encode(png).decode()
    sample = {
        "missing": doc["missing_keys"][:SAMPLE_LIMIT],
        "unexpected": doc.get("unexpected_keys", [])[:SAMPLE_LIMIT],
        "checksum_mismatch": doc.get("checksum_mismatch_keys", [])[:SAMPLE_LIMIT],
        "invalid_checksum_supabase": invalid["supabase"],
        "invalid_checksum_ws": invalid["ws"],
    }
    return {
        VERDICT: judged.colour.value,
        VERDICT_REASONS: dg.MetadataValue.json(list(judged.reasons)),
        repair.REPAIR_STATE: doc["repair"]["state"],
        repair.REPAIR_REASON: doc["repair"]["reason"],
        repair.MISSING_KEYS_DIGEST: doc["repair"][repair.MISSING_KEYS_DIGEST],
        "clean": report.is_clean(doc),
        "report": dg.MetadataValue.path(path),
        "ws_events": doc["ws_events"],
        "supabase_events": doc["supabase_events"],
        "expected_in_supabase": doc["expected_in_supabase"],
        "matched": doc["matched"],
        "missing_in_supabase": doc["missing_in_supabase"],
        "unexpected_in_supabase": doc["unexpected_in_supabase"],
        "duplicates_ws": doc["duplicates_ws"],
        "duplicates_supabase": doc["duplicates_supabase"],
        "checksum_mismatches": doc["checksum_mismatches"],
        "invalid_checksums_ws": doc["invalid_checksums_ws"],
        "invalid_checksums_supabase": doc["invalid_checksums_supabase"],
        "sequence_gap_events_ws": report.gap_count(doc["sequence_gaps_ws"]),
        "out_of_order_supabase": doc["out_of_order_supabase"],
        "quarantined_lines": doc["quarantined_lines"],
        "delivery_rate": dg.MetadataValue.float(float(doc["delivery_rate"])),
        "latency_p50_ms": _float_or_none(lat.get("p50")),
        "latency_p95_ms": _float_or_none(lat.get("p95")),
        "latency_p99_ms": _float_or_none(lat.get("p99")),
        "latency_max_ms": _float_or_none(lat.get("max")),
        "by_category": dg.MetadataValue.md(report.category_table_markdown(doc)),
        "offending_keys_sample": dg.MetadataValue.json(sample),
        "sequence_gaps_ws_sample": dg.MetadataValue.json(doc["sequence_gaps_ws"][:SAMPLE_LIMIT]),
        "latency_histogram": dg.MetadataValue.md(f"![latency](data:image/png;base64,{image})"),
    }


def _float_or_none(value):  # noqa: ANN001
    return dg.MetadataValue.float(float(value)) if value is not None else dg.MetadataValue.null()

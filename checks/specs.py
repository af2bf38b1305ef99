"""Which asset checks exist, on which asset, how severe a failure is and whether it blocks.

Names are part of the contract (sensors, the CLI and the README refer to them).

Severity follows one rule: an ERROR-severity failure rolls the Supabase rollout back
(contract §5), so ERROR is reserved for the migration plan's rollback reasons that a check can
see: the delivery SLO (``delivery_rate_meets_slo``), a lost CRITICAL event
(``no_critical_events_lost``) and corruption of what Supabase holds (invalid checksums,
conflicting copies, checksum mismatches). The health triggers are the sensor's.

A lost event is repaired, not rolled back for: the repair loop backfills the hour and
reconciles it again (``orchestration/backfill_sensors.py``). A loss is counted once, by the
check that owns it, ``no_events_lost`` (WARN): its result names the missing keys and says
whether the repair is pending, done or impossible. ``supabase_sequence_is_continuous``
sees the same loss from Supabase's side alone (a gap inside a stream of the cohort), so it
is WARN too: one lost INFORMATIONAL event never rolls the migration back, while a loss
beyond the SLO fails ``delivery_rate_meets_slo`` and a lost CRITICAL event
``no_critical_events_lost``. Faults of the WebSocket log (the source of truth) are WARN:
rolling Supabase back would not repair them. Soft SLOs (latency, quarantine share) are
WARN: latency has its own sustained-breach trigger in the health sensor.

Blocking stops downstream assets when an ERROR-severity failure occurs. No snapshot check
blocks: the reconciliation is what measures and reports every one of these faults, and a
blocked hour would have no report at all. Lost events must not block either: what is
downstream of the reconciliation is the backfill (``missed_events_backfill``), whose job
is to repair exactly that. Only ``no_checksum_mismatches`` blocks: when Supabase holds a
different event than the log under the same key, something corrupts data, and automated
repair stops until a person has looked. The report is written before the checks run, so
it survives a blocked run.

| check | asset | severity | on failure |
|---|---|---|---|
| `ws_sequence_is_continuous` | `ws_log_snapshot` | WARN | finding |
| `ws_checksums_are_valid` | `ws_log_snapshot` | WARN | finding |
| `ws_keys_are_unique` | `ws_log_snapshot` | WARN | finding |
| `supabase_sequence_is_continuous` | `supabase_events_snapshot` | WARN | repair |
| `supabase_checksums_are_valid` | `supabase_events_snapshot` | ERROR | rollback |
| `supabase_keys_are_unique` | `supabase_events_snapshot` | ERROR / WARN (1) | rollback |
| `no_events_lost` | `event_reconciliation` | WARN | repair |
| `delivery_rate_meets_slo` | `event_reconciliation` | ERROR | rollback, repair |
| `no_critical_events_lost` | `event_reconciliation` | ERROR | rollback, repair |
| `no_checksum_mismatches` | `event_reconciliation` | ERROR, blocking | rollback |
| `latency_p95_within_slo` | `event_reconciliation` | WARN (2) | finding |
| `quarantine_within_tolerance` | `event_reconciliation` | WARN | finding |

(1) ERROR when a key's copies carry different checksums (two versions of one event);
WARN when they are identical retry copies only (a table without the unique constraint:
nothing is lost or corrupted, but readers double-count). On the log, identical retry
copies pass. (2) An hour without matched events passes with a note: there is nothing to
measure, and lost events fail ``no_events_lost``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import dagster as dg

# The asset names, as assets/reconciliation.py defines them (tests assert they agree). They
# are repeated rather than imported because checks/ must load without the assets module.
WS_LOG_SNAPSHOT = "ws_log_snapshot"
SUPABASE_EVENTS_SNAPSHOT = "supabase_events_snapshot"
EVENT_RECONCILIATION = "event_reconciliation"

WS_SEQUENCE_IS_CONTINUOUS = "ws_sequence_is_continuous"
WS_CHECKSUMS_ARE_VALID = "ws_checksums_are_valid"
WS_KEYS_ARE_UNIQUE = "ws_keys_are_unique"
SUPABASE_SEQUENCE_IS_CONTINUOUS = "supabase_sequence_is_continuous"
SUPABASE_CHECKSUMS_ARE_VALID = "supabase_checksums_are_valid"
SUPABASE_KEYS_ARE_UNIQUE = "supabase_keys_are_unique"
DELIVERY_RATE_MEETS_SLO = "delivery_rate_meets_slo"
NO_EVENTS_LOST = "no_events_lost"
NO_CRITICAL_EVENTS_LOST = "no_critical_events_lost"
NO_CHECKSUM_MISMATCHES = "no_checksum_mismatches"
LATENCY_P95_WITHIN_SLO = "latency_p95_within_slo"
QUARANTINE_WITHIN_TOLERANCE = "quarantine_within_tolerance"

ERROR = dg.AssetCheckSeverity.ERROR
WARN = dg.AssetCheckSeverity.WARN


@dataclass(frozen=True)
class CheckDef:
    """One check: its name, asset, the severity of a failure, and whether it blocks."""

    name: str
    asset: str
    severity: dg.AssetCheckSeverity
    blocking: bool
    description: str

    def spec(self, partitions_def: dg.PartitionsDefinition | None = None) -> dg.AssetCheckSpec:
        return dg.AssetCheckSpec(
            name=self.name,
            asset=self.asset,
            blocking=self.blocking,
            description=self.description,
            partitions_def=partitions_def,
        )


CHECKS: tuple[CheckDef, ...] = (
    CheckDef(
        WS_SEQUENCE_IS_CONTINUOUS,
        WS_LOG_SNAPSHOT,
        WARN,
        False,
        "Per stream, every seq between the stream's first and last event of the hour is in "
        "the log. Gaps are reported as ranges with their streams.",
    ),
    CheckDef(
        WS_CHECKSUMS_ARE_VALID,
        WS_LOG_SNAPSHOT,
        WARN,
        False,
        "Every logged event's checksum recomputes (contract §2).",
    ),
    CheckDef(
        WS_KEYS_ARE_UNIQUE,
        WS_LOG_SNAPSHOT,
        WARN,
        False,
        "Each (stream, seq) is logged once, or its copies are identical retries (same checksum).",
    ),
    CheckDef(
        SUPABASE_SEQUENCE_IS_CONTINUOUS,
        SUPABASE_EVENTS_SNAPSHOT,
        WARN,
        False,
        "Per stream, Supabase has every seq between the stream's first and last "
        "non-CRITICAL row of the hour. Streams enter the rollout cohort whole, and a "
        "non-CRITICAL row proves its stream was in it; CRITICAL rows outside that span may "
        "have been routed by MONITORING_CRITICAL_EVENTS_SUPABASE alone, which skips the "
        "stream's other events, so they are not judged here (the reconciliation is). A gap "
        "is a lost event: repaired, not rolled back for (no_events_lost owns the loss).",
    ),
    CheckDef(
        SUPABASE_CHECKSUMS_ARE_VALID,
        SUPABASE_EVENTS_SNAPSHOT,
        ERROR,
        False,
        "Every Supabase row's checksum recomputes from its columns (contract §2).",
    ),
    CheckDef(
        SUPABASE_KEYS_ARE_UNIQUE,
        SUPABASE_EVENTS_SNAPSHOT,
        ERROR,
        False,
        "Each (stream, seq) has one row. Copies with different checksums fail with ERROR; "
        "identical retry copies (a table without the unique constraint) fail with WARN.",
    ),
    CheckDef(
        NO_EVENTS_LOST,
        EVENT_RECONCILIATION,
        WARN,
        False,
        "No event the rollout cohort sent to Supabase is missing there, in any category. "
        "A failure is repaired (backfill, then a new reconciliation), not rolled back for; "
        "the result names the missing keys and whether the repair is pending, done or "
        "impossible.",
    ),
    CheckDef(
        DELIVERY_RATE_MEETS_SLO,
        EVENT_RECONCILIATION,
        ERROR,
        False,
        "matched / expected_in_supabase is at least the SLO "
        "(PARITY_SLO_DELIVERY_RATE, default 0.999).",
    ),
    CheckDef(
        NO_CRITICAL_EVENTS_LOST,
        EVENT_RECONCILIATION,
        ERROR,
        False,
        "No CRITICAL event the cohort sent to Supabase is missing there.",
    ),
    CheckDef(
        NO_CHECKSUM_MISMATCHES,
        EVENT_RECONCILIATION,
        ERROR,
        True,
        "No (stream, seq) on both sides has different checksums in Supabase and the log.",
    ),
    CheckDef(
        LATENCY_P95_WITHIN_SLO,
        EVENT_RECONCILIATION,
        WARN,
        False,
        "p95 of received_at - emitted_at over matched events is below the SLO "
        "(PARITY_SLO_P95_MS, default 500 ms). An hour without matched events passes with a "
        "note: there is nothing to measure, and lost events fail no_events_lost.",
    ),
    CheckDef(
        QUARANTINE_WITHIN_TOLERANCE,
        EVENT_RECONCILIATION,
        WARN,
        False,
        "Quarantined lines are at most a share of the hour's log lines "
        "(PARITY_QUARANTINE_MAX_SHARE, default 0.001).",
    ),
)
CHECKS_BY_NAME: dict[str, CheckDef] = {c.name: c for c in CHECKS}


def checks_for(asset: str) -> tuple[CheckDef, ...]:
    return tuple(c for c in CHECKS if c.asset == asset)


def reconciliation_check_specs(
    partitions_def: dg.PartitionsDefinition | None = None,
) -> dict[str, list[dg.AssetCheckSpec]]:
    """Check specs per asset name, for ``@dg.asset(check_specs=...)``.

    The checks are declared on the assets and their results yielded by the asset's own
    step: the checks judge the data already in memory instead of reading the hour's Parquet
    snapshot a second time. With ``partitions_def`` (the assets' own) each result is
    recorded against the hour it judged, so the UI shows every hour's pass or failure per
    check; Dagster 1.13 marks partitioned check specs as a preview, and its notice is
    silenced here because the behaviour is tested (tests/integration).
    """
    specs: dict[str, list[dg.AssetCheckSpec]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        for check in CHECKS:
            specs.setdefault(check.asset, []).append(check.spec(partitions_def))
    return specs

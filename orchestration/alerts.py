"""Alert sensors: discrepancies, silent producers, the plan's thresholds, failed runs.

Each sensor reads what Dagster or ``delivery_metrics`` holds, hands it with the state kept
in its cursor to a pure decision in ``parity.core.alerts``, sends the alerts of what
changed through ``parity.io.notify`` and stores the new state. The cursor is written after
the alerts are sent, so a tick that dies midway re-sends rather than loses an alert; a
tick that sees nothing new sends nothing. None of these sensors launches a run.

- ``alert_on_discrepancies``: per hour, red when a check's latest result is an ERROR
  failure (or a WARN one, ``PARITY_ALERT_ON_WARN``), green when none is; one alert when an
  hour goes red and one when it is green again. Also one alert per hour whose backfill
  left events it could not write (conflicting copies, invalid checksums).
- ``alert_on_delivery_health``: producers gone silent and back; write error rate and
  connection recovery against the plan's targets.
- ``alert_on_run_failure``: a job of Parity's that started failing (per partition, where it
  has one), and its first success after that.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from assets.backfill import BY_PARTITION, DRY_RUN, MISSED_EVENTS_BACKFILL
from assets.resources import ParityResource
from checks.specs import EVENT_RECONCILIATION
from orchestration.backfill_sensors import StorageIdCursor
from orchestration.rollout import CheckCursor, scan_check_results
from parity.core import alerts
from parity.core.knobs import AlertPolicy
from parity.core.triggers import TriggerConfig
from parity.io.notify import Notifier

ALERT_ON_DISCREPANCIES = "alert_on_discrepancies"
ALERT_ON_DELIVERY_HEALTH = "alert_on_delivery_health"
ALERT_ON_RUN_FAILURE = "alert_on_run_failure"
ALERT_SENSOR_INTERVAL_S = 30
BACKFILL_KEY = dg.AssetKey(MISSED_EVENTS_BACKFILL)
RECONCILIATION_KEY = dg.AssetKey(EVENT_RECONCILIATION)
#: The reconciliation's repair verdict (metadata written by the repair loop).
REPAIR_STATE = "repair_state"
REPAIR_REASON = "repair_reason"
REPAIR_IMPOSSIBLE = "impossible"
#: Red hours and unrepaired hours a cursor remembers; older ones are dropped (oldest first).
MAX_REMEMBERED_HOURS = 2000


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


#: Time one tick may spend sending, well inside Dagster's 60 s sensor evaluation timeout: a
#: tick that timed out would keep its old cursor and send the same alerts again forever.
TICK_SEND_BUDGET_S = 35.0


def send_all(notifier: Notifier, found: Iterable[alerts.Alert], log: Any) -> list[str]:
    """Send each alert; once the tick's budget is spent (dead targets), the rest are only
    logged, so the state change is recorded and the tick ends."""
    sent = []
    end = time.monotonic() + TICK_SEND_BUDGET_S
    for alert in found:
        if time.monotonic() < end:
            detail = notifier.send(alert).detail
        else:
            detail = "NOT SENT: the alert targets used this tick's time (see earlier failures)"
            log.warning(f"alert {alert.kind}: {alert.title}: {alert.body}")
        log.info(f"alert {alert.kind} ({alert.title}): {detail}")
        sent.append(alert.title)
    return sent


# -- discrepancies ----------------------------------------------------------------------


@dataclass(frozen=True)
class DiscrepancyCursor:
    checks: CheckCursor
    #: Red hours -> their failing checks.
    red: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: Highest missed_events_backfill materialization already looked at.
    backfill_after: int = 0
    #: Highest event_reconciliation materialization already looked at.
    reconciliation_after: int = 0
    #: Hours already alerted as not repairable (until they are green again).
    unrepaired: tuple[str, ...] = ()

    def serialize(self) -> str:
        red = dict(sorted(self.red.items())[-MAX_REMEMBERED_HOURS:])
        return json.dumps(
            {
                "checks": json.loads(self.checks.serialize()),
                "red": {k: list(v) for k, v in red.items()},
                "backfill_after": self.backfill_after,
                "reconciliation_after": self.reconciliation_after,
                "unrepaired": sorted(self.unrepaired)[-MAX_REMEMBERED_HOURS:],
            }
        )

    @classmethod
    def parse(cls, text: str | None) -> DiscrepancyCursor:
        if not text:
            return cls(CheckCursor.parse(None))
        data = json.loads(text)
        return cls(
            CheckCursor.parse(json.dumps(data["checks"])),
            {k: tuple(v) for k, v in data.get("red", {}).items()},
            int(data.get("backfill_after", 0)),
            int(data.get("reconciliation_after", 0)),
            tuple(data.get("unrepaired", ())),
        )


def check_outcomes(instance: dg.DagsterInstance, records: list[Any]) -> list[alerts.CheckOutcome]:
    """Resolved check executions as outcomes per hour (those without an hour are skipped)."""
    runs: dict[str, Any] = {}

    def run_of(run_id: str) -> Any:
        if run_id not in runs:
            runs[run_id] = instance.get_run_by_id(run_id)
        return runs[run_id]

    outcomes = []
    for record in records:
        evaluation = record.event.dagster_event.event_specific_data if record.event else None
        if evaluation is None:
            continue
        run = run_of(record.run_id) if record.run_id else None
        tags = run.tags if run is not None else {}
        partition = evaluation.partition or record.partition or tags.get("dagster/partition")
        if not partition:
            continue
        outcomes.append(
            alerts.CheckOutcome(
                partition=partition,
                check=evaluation.check_name,
                passed=evaluation.passed,
                severity=evaluation.severity.value,
                run_id=record.run_id,
                trigger=tags.get("parity/trigger"),
            )
        )
    return outcomes


def _materializations(
    instance: dg.DagsterInstance, key: dg.AssetKey, after: int
) -> Sequence[dg.EventLogRecord]:
    return instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, after_storage_id=after or None),
        limit=1000,
        ascending=True,
    ).records


def unrepairable(
    instance: dg.DagsterInstance, backfill_after: int, reconciliation_after: int
) -> tuple[list[tuple[str, str, dict[str, Any]]], int, int]:
    """Hours whose repair could not complete, with why, and the highest storage ids read:
    a (non-dry-run) backfill that left events unwritten (conflicting copies, invalid
    checksums), or a reconciliation whose repair verdict is impossible."""
    found = []
    backfills = _materializations(instance, BACKFILL_KEY, backfill_after)
    for record in backfills:
        metadata = record.asset_materialization.metadata if record.asset_materialization else {}
        if getattr(metadata.get(DRY_RUN), "value", False):
            continue
        by_partition = getattr(metadata.get(BY_PARTITION), "value", None) or {}
        for hour, counts in by_partition.items():
            stuck = {k: counts.get(k, 0) for k in ("conflicts", "invalid")}
            if any(stuck.values()):
                why = (
                    f"the backfill left {stuck['conflicts']} conflicting and "
                    f"{stuck['invalid']} invalid events unwritten"
                )
                found.append((hour, why, {**stuck, "run_id": record.run_id}))
    # The repair verdict is written by the reconciliation, or recorded on it as an
    # observation when the repair loop finds that no repair will come.
    after = reconciliation_after or None
    reconciliations = [
        *_materializations(instance, RECONCILIATION_KEY, reconciliation_after),
        *instance.fetch_observations(
            dg.AssetRecordsFilter(asset_key=RECONCILIATION_KEY, after_storage_id=after),
            limit=1000,
            ascending=True,
        ).records,
    ]
    for record in reconciliations:
        event = record.asset_materialization or record.asset_observation
        metadata = event.metadata if event else {}
        state = getattr(metadata.get(REPAIR_STATE), "value", None)
        if state == REPAIR_IMPOSSIBLE and record.partition_key:
            why = str(getattr(metadata.get(REPAIR_REASON), "value", "") or "repair impossible")
            found.append((record.partition_key, why, {"run_id": record.run_id}))
    return (
        found,
        max([backfill_after, *(r.storage_id for r in backfills)]),
        max([reconciliation_after, *(r.storage_id for r in reconciliations)]),
    )


def build_discrepancy_alert_sensor(
    check_keys: Iterable[dg.AssetCheckKey], policy: AlertPolicy, knobs: dict[str, str]
) -> dg.SensorDefinition:
    watched = tuple(check_keys)

    @dg.sensor(
        name=ALERT_ON_DISCREPANCIES,
        minimum_interval_seconds=ALERT_SENSOR_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Alerts once when an hour goes red (a failed ERROR check"
        + (", or WARN check" if policy.on_warn else "")
        + ") and once when it is green again, and once per hour whose repair could not "
        "write every event. Sends to PARITY_ALERT_URLS / PARITY_ALERT_WEBHOOK_URL.",
        metadata={k: v for k, v in knobs.items() if k.startswith("PARITY_ALERT_ON")},
    )
    def alert_on_discrepancies(context: dg.SensorEvaluationContext, parity: ParityResource):
        cursor = DiscrepancyCursor.parse(context.cursor)
        fresh, checks = scan_check_results(
            context.instance, watched, cursor.checks, utcnow().timestamp()
        )
        red, found = alerts.hour_changes(
            cursor.red, check_outcomes(context.instance, fresh), policy
        )
        green = {a.details["partition"] for a in found if a.kind == "hour_green"}
        unrepaired = set(cursor.unrepaired) - green
        stuck, backfill_after, reconciliation_after = unrepairable(
            context.instance, cursor.backfill_after, cursor.reconciliation_after
        )
        for hour, why, details in stuck:
            if hour not in unrepaired:
                unrepaired.add(hour)
                found.append(alerts.repair_incomplete_alert(hour, why, details))
        sent = send_all(Notifier.from_settings(parity.settings()), found, context.log)
        context.update_cursor(
            DiscrepancyCursor(
                checks, red, backfill_after, reconciliation_after, tuple(unrepaired)
            ).serialize()
        )
        return dg.SkipReason(
            f"{len(fresh)} new check results, {len(red)} red hours; "
            + (f"alerted: {'; '.join(sent)}" if sent else "nothing changed")
        )

    return alert_on_discrepancies


# -- delivery health ---------------------------------------------------------------------


def build_delivery_alert_sensor(
    policy: AlertPolicy, trigger_config: TriggerConfig, knobs: dict[str, str]
) -> dg.SensorDefinition:
    @dg.sensor(
        name=ALERT_ON_DELIVERY_HEALTH,
        minimum_interval_seconds=ALERT_SENSOR_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Alerts (never rolls back) when a producer that reported in the last hour sends "
            "neither delivery_metrics nor heartbeat events for "
            f"{policy.producer_silence.total_seconds() / 60:g} min, "
            f"when the write error rate stays above {policy.error_rate:.2%}, or connection "
            f"recovery takes longer than {policy.recovery_s:g} s, over "
            f"{policy.window.total_seconds() / 60:g} min; and again when each is over."
        ),
        metadata={k: v for k, v in knobs.items() if k.startswith("PARITY_ALERT_")},
    )
    def alert_on_delivery_health(context: dg.SensorEvaluationContext, parity: ParityResource):
        now = utcnow()
        settings = parity.settings()
        state = json.loads(context.cursor) if context.cursor else {}
        # Producers that reported within the hour, and the outage before the alert window.
        lookback = policy.window + alerts.PRODUCER_RECENT
        plane = parity.open_control_plane()
        try:
            samples = plane.load_samples(now - lookback, now)
            heartbeats = plane.load_heartbeats(now - lookback, now)
        finally:
            plane.close()
        seen = alerts.last_seen(samples, heartbeats)
        silent, found = alerts.producer_changes(state.get("silent", {}), seen, now, policy)
        active, more = alerts.threshold_changes(
            state.get("active", {}), samples, now, policy, trigger_config
        )
        sent = send_all(Notifier.from_settings(settings), [*found, *more], context.log)
        context.update_cursor(json.dumps({"silent": silent, "active": active}))
        return dg.SkipReason(
            f"{len(seen)} producers, {len(silent)} silent, thresholds exceeded: "
            f"{', '.join(sorted(active)) or 'none'}; "
            + (f"alerted: {'; '.join(sent)}" if sent else "nothing changed")
        )

    return alert_on_delivery_health


# -- failed runs -------------------------------------------------------------------------

#: A failure message is cut to this many characters in an alert; the run's logs have it all.
MESSAGE_LIMIT = 500
#: A new sensor (no cursor) looks this far back for finished runs.
RUN_LOOKBACK = dt.timedelta(days=1)


@dataclass(frozen=True)
class RunCursor:
    """Run status events already handled, and the jobs failing now (key -> run id)."""

    events: StorageIdCursor = field(default_factory=StorageIdCursor)
    failing: dict[str, str] = field(default_factory=dict)
    started: bool = False

    def serialize(self) -> str:
        return json.dumps({"events": json.loads(self.events.serialize()), "failing": self.failing})

    @classmethod
    def parse(cls, text: str | None) -> RunCursor:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(StorageIdCursor.parse(json.dumps(data["events"])), data["failing"], True)


def finished_runs(
    instance: dg.DagsterInstance, jobs: Sequence[str], cursor: RunCursor, now: dt.datetime
) -> tuple[list[alerts.RunOutcome], StorageIdCursor]:
    """Runs of ``jobs`` that finished (succeeded or failed) since the cursor, oldest first,
    and the advanced cursor."""
    since = None if cursor.started else (now - RUN_LOOKBACK).timestamp()
    records = [
        record
        for event_type in (dg.DagsterEventType.RUN_SUCCESS, dg.DagsterEventType.RUN_FAILURE)
        for record in instance.fetch_run_status_changes(
            dg.RunStatusChangeRecordsFilter(
                event_type=event_type,
                after_storage_id=cursor.events.low or None,
                after_timestamp=since,
                job_names=list(jobs),
            ),
            limit=1000,
            ascending=True,
        ).records
        if record.storage_id not in cursor.events.seen
    ]
    records.sort(key=lambda r: r.storage_id)
    outcomes = []
    for record in records:
        run = instance.get_run_by_id(record.run_id)
        entry = record.event_log_entry
        failed = entry.dagster_event_type == dg.DagsterEventType.RUN_FAILURE
        message = (entry.dagster_event.message if entry.dagster_event else None) or entry.message
        outcomes.append(
            alerts.RunOutcome(
                job=entry.job_name or (run.job_name if run else "?"),
                partition=run.tags.get("dagster/partition") if run else None,
                run_id=record.run_id,
                success=not failed,
                message=(message or "")[:MESSAGE_LIMIT] if failed else "",
            )
        )
    return outcomes, cursor.events.advance(r.storage_id for r in records)


def build_run_alert_sensor(jobs: Sequence[str]) -> dg.SensorDefinition:
    watched = tuple(sorted(jobs))

    @dg.sensor(
        name=ALERT_ON_RUN_FAILURE,
        minimum_interval_seconds=ALERT_SENSOR_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Alerts once when one of Parity's jobs starts failing (per partition, "
        "where it has one) and once when it succeeds again; the failures in between alert "
        f"nothing. Jobs: {', '.join(watched)}.",
    )
    def alert_on_run_failure(context: dg.SensorEvaluationContext, parity: ParityResource):
        """The cursor holds the run status events handled (storage ids, re-reading a window
        below the highest, as ids may become visible out of order) and the jobs failing
        now; it is written after the alerts are sent."""
        cursor = RunCursor.parse(context.cursor)
        runs, events = finished_runs(context.instance, watched, cursor, utcnow())
        failing, found = alerts.run_changes(cursor.failing, runs)
        sent = send_all(Notifier.from_settings(parity.settings()), found, context.log)
        context.update_cursor(RunCursor(events, failing, True).serialize())
        return dg.SkipReason(
            f"{len(runs)} finished runs, failing now: {', '.join(sorted(failing)) or 'none'}; "
            + (f"alerted: {'; '.join(sent)}" if sent else "nothing changed")
        )

    return alert_on_run_failure

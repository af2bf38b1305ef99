"""Rollback and canary rollout: sensors decide (with ``parity.triggers`` and
``parity.rollout``), jobs act (with ``parity.rollback``)."""

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import dagster as dg

from assets.failures import surface_parity_errors
from assets.flags import FEATURE_FLAGS
from assets.resources import ParityResource
from parity.core import partitions, rollout, triggers
from parity.core.routing import FLAG_DEFAULTS
from parity.io import control, rollback
from parity.io.notify import Notifier

ROLLBACK_JOB = "rollback_job"
PROMOTE_ROLLOUT_JOB = "promote_rollout_job"
ROLLBACK_ON_CHECK_FAILURE = "rollback_on_check_failure"
ROLLBACK_ON_HEALTH_TRIGGERS = "rollback_on_health_triggers"
CANARY_PROMOTION = "canary_promotion"
FEATURE_FLAGS_KEY = dg.AssetKey(FEATURE_FLAGS)
#: Tag on every run that changes flags; deploy/dagster.yaml limits it to one at a time.
FLAG_WRITER_TAG = "parity/flag-writer"

#: Sensor intervals: breach to flags flipped within 60 s (sensor tick + run launch).
HEALTH_SENSOR_INTERVAL_S = 15
CHECK_SENSOR_INTERVAL_S = 15
CANARY_SENSOR_INTERVAL_S = 60


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# -- jobs ------------------------------------------------------------------------------


class RollbackConfig(dg.Config):
    reason: str
    actor: str = "parity:rollback_job"
    evidence_json: str = "{}"
    #: Partitions whose events may have been missed; recorded in the evidence.
    partitions: list[str] = []


@dg.op(tags={FLAG_WRITER_TAG: "rollback"})
@surface_parity_errors
def apply_rollback(context: dg.OpExecutionContext, config: RollbackConfig, parity: ParityResource):
    """Set the rollback plan in one transaction, audit it, read it back, then alert.

    In dry-run mode (``PARITY_ROLLBACK_DRY_RUN``) the flags are only read: what would change
    is alerted, recorded on ``feature_flags`` as a ``would_roll_back`` observation, and
    audited as a ``dry_run`` row of ``parity_rollback_decisions`` (an applied rollback is
    audited there too, beside its flag audit rows); the flag history is left alone."""
    settings = parity.settings()
    dry_run = settings.knobs.rollback_dry_run
    evidence = json.loads(config.evidence_json)
    evidence.setdefault("partitions", config.partitions)
    evidence["run_id"] = context.run_id
    evidence["dry_run"] = dry_run
    plane = parity.open_control_plane()
    try:
        now = utcnow()
        if dry_run:
            applied = rollback.preview_rollback(plane)
        else:
            applied = control.apply_rollback(
                plane, actor=config.actor, reason=config.reason, evidence=evidence, now=now
            )
        decision = control.record_decision(
            plane,
            applied,
            dry_run=dry_run,
            reason=config.reason,
            source=config.actor,
            evidence=evidence,
            now=now,
        )
    finally:
        plane.close()
    if dry_run:
        context.log.warning(
            f"DRY RUN: would roll back {applied.changes or '(already rolled back)'} "
            f"(reason: {config.reason}); flags untouched (PARITY_ROLLBACK_DRY_RUN=true)"
        )
    elif not applied.applied:
        context.log.info("rollback already in force: nothing changed")
    else:
        context.log.warning(
            f"ROLLBACK applied: {applied.changes} (reason: {config.reason}); "
            "the rollout stays down until `parity rollout resume`"
        )
    if dry_run or applied.applied:
        delivery = rollback.notify_rollback(
            Notifier.from_settings(settings),
            applied,
            reason=config.reason,
            evidence=evidence,
            run_id=context.run_id,
            dry_run=dry_run,
        )
        context.log.info(f"alert: {delivery.detail}")
    context.log_event(
        dg.AssetObservation(
            asset_key=FEATURE_FLAGS_KEY,
            metadata={
                "action": "would_roll_back" if dry_run else "rollback",
                "applied": applied.applied,
                "dry_run": dry_run,
                "changes": dg.MetadataValue.json(applied.changes),
                "flags": dg.MetadataValue.json(applied.flags_after),
                "audit_ids": dg.MetadataValue.json(applied.audit_ids),
                "decision_id": decision.id if decision is not None else None,
                "reason": config.reason,
                "evidence": dg.MetadataValue.json(evidence),
            },
        )
    )
    return applied.applied


@dg.job(
    name=ROLLBACK_JOB,
    tags={FLAG_WRITER_TAG: "rollback"},
    description="Roll the migration back (contract §5): rollout 0%, critical-to-Supabase off, "
    "dual write on, dashboard on WebSocket with fallback. Idempotent; audited.",
)
def rollback_job():
    apply_rollback()


class PromoteConfig(dg.Config):
    decision_json: str


@dg.op(tags={FLAG_WRITER_TAG: "promote"})
@surface_parity_errors
def apply_promotion(context: dg.OpExecutionContext, config: PromoteConfig, parity: ParityResource):
    """Write a promotion decided by ``canary_promotion``, compare-and-set on what it saw."""
    d = json.loads(config.decision_json)
    plane = parity.open_control_plane()
    try:
        applied = control.apply_transition(
            plane,
            expected_state=rollout.RolloutState.from_json(d["expected_state"]),
            expected_flags=d["expected_flags"],
            flag_changes=d["flag_changes"],
            next_state=rollout.RolloutState.from_json(d["next_state"]),
            actor="parity:canary_promotion",
            reason=d["reason"],
            evidence=d["evidence"],
            now=utcnow(),
        )
    finally:
        plane.close()
    context.log.info(f"rollout promoted: {applied.changes}")
    context.log_event(
        dg.AssetObservation(
            asset_key=FEATURE_FLAGS_KEY,
            metadata={"action": "promote", "flags": dg.MetadataValue.json(applied.flags_after)},
        )
    )


@dg.job(
    name=PROMOTE_ROLLOUT_JOB,
    tags={FLAG_WRITER_TAG: "promote"},
    description="Raise the canary one stage (critical events first, then 10 -> 50 -> 100%).",
)
def promote_rollout_job():
    apply_promotion()


# -- check failures ---------------------------------------------------------------------


#: How many recent executions of each check a tick reads; far more than can happen
#: between two ticks.
CHECK_HISTORY_PAGE = 100
#: On the very first tick, failures older than this are history, not news.
FIRST_TICK_LOOKBACK_S = 24 * 3600


@dataclass(frozen=True)
class CheckCursor:
    """Per check, the execution ids already handled and those still running.

    Dagster creates a check's execution record when the check is planned (PLANNED) and
    resolves it in place when the result arrives, so a newer execution can finish before
    an older one. Tracking ids (not a high-water mark) means a result that was still
    running at one tick is handled at a later one, and none is handled twice.
    """

    handled: dict[str, tuple[int, ...]]
    pending: dict[str, tuple[int, ...]]
    started: bool = True

    def serialize(self) -> str:
        return json.dumps(
            {
                "handled": {k: list(v) for k, v in self.handled.items()},
                "pending": {k: list(v) for k, v in self.pending.items()},
            }
        )

    @classmethod
    def parse(cls, text: str | None) -> "CheckCursor":
        if not text:
            return cls({}, {}, started=False)
        data = json.loads(text)
        return cls(
            {k: tuple(v) for k, v in data.get("handled", {}).items()},
            {k: tuple(v) for k, v in data.get("pending", {}).items()},
        )


def _check_key_text(key: dg.AssetCheckKey) -> str:
    return f"{key.asset_key.to_user_string()}:{key.name}"


def scan_check_results(
    instance: dg.DagsterInstance,
    check_keys: Iterable[dg.AssetCheckKey],
    cursor: CheckCursor,
    now: float,
) -> tuple[list[Any], CheckCursor]:
    """New resolved executions of the checks (oldest first) and the advanced cursor."""
    fresh, handled, pending = [], {}, {}
    for key in check_keys:
        name = _check_key_text(key)
        records = instance.event_log_storage.get_asset_check_execution_history(
            key, limit=CHECK_HISTORY_PAGE
        )
        seen = set(cursor.handled.get(name, ()))
        done, waiting = [], []
        for record in records:
            if record.status.value == "PLANNED":  # planned, result not in yet
                run = instance.get_run_by_id(record.run_id)
                if run is not None and not run.is_finished:
                    waiting.append(record.id)
                continue
            done.append(record.id)
            if record.id in seen:
                continue
            if not cursor.started and now - record.create_timestamp > FIRST_TICK_LOOKBACK_S:
                continue
            fresh.append(record)
        handled[name] = tuple(sorted(done))
        pending[name] = tuple(sorted(waiting))
    fresh.sort(key=lambda r: r.id)
    return fresh, CheckCursor(handled, pending)


def _dry_run_note(dry_run: bool) -> str:
    return (
        " DRY RUN (PARITY_ROLLBACK_DRY_RUN): rollback_job audits and alerts 'would roll "
        "back' and leaves the flags as they are."
        if dry_run
        else ""
    )


def _knob_metadata(knobs: Mapping[str, str], *prefixes: str) -> dict[str, str]:
    return {k: v for k, v in knobs.items() if k.startswith(prefixes)}


def build_check_failure_sensor(
    check_keys: Iterable[dg.AssetCheckKey], *, dry_run: bool = False
) -> dg.SensorDefinition:
    watched = tuple(check_keys)

    @dg.sensor(
        name=ROLLBACK_ON_CHECK_FAILURE,
        job=rollback_job,
        minimum_interval_seconds=CHECK_SENSOR_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Rolls back on any ERROR-severity failure of Parity's asset checks, "
        "blocking or not (a non-blocking failure does not fail its run)." + _dry_run_note(dry_run),
        metadata={"PARITY_ROLLBACK_DRY_RUN": "true" if dry_run else "false"},
    )
    def rollback_on_check_failure(context: dg.SensorEvaluationContext):
        cursor = CheckCursor.parse(context.cursor)
        fresh, advanced = scan_check_results(
            context.instance, watched, cursor, dt.datetime.now(dt.UTC).timestamp()
        )
        failures: list[dict[str, Any]] = []
        for record in fresh:
            evaluation = record.event.dagster_event.event_specific_data if record.event else None
            if (
                evaluation is not None
                and not evaluation.passed
                and evaluation.severity == dg.AssetCheckSeverity.ERROR
            ):
                failures.append(
                    {
                        "execution_id": record.id,
                        "check": evaluation.check_name,
                        "asset": evaluation.asset_key.to_user_string(),
                        "partition": evaluation.partition
                        or record.partition
                        or _run_partition(context, record),
                        "run_id": record.run_id,
                        "observed": _observed(evaluation.metadata),
                    }
                )
        context.update_cursor(advanced.serialize())
        if not failures:
            return dg.SkipReason(f"{len(fresh)} new check results, no ERROR failure")
        ids = [f["execution_id"] for f in failures]
        checks = sorted({f["check"] for f in failures})
        parts = sorted({f["partition"] for f in failures if f["partition"]})
        return rollback_request(
            run_key=f"check-failure-{'-'.join(str(i) for i in ids)}",
            reason=f"asset check failed: {', '.join(checks)}"
            + (f" ({', '.join(parts)})" if parts else ""),
            sensor=ROLLBACK_ON_CHECK_FAILURE,
            evidence={"trigger": "asset_check", "failures": failures},
            partitions=parts,
        )

    return rollback_on_check_failure


def rollback_request(
    *, run_key: str, reason: str, sensor: str, evidence: dict[str, Any], partitions: list[str]
) -> dg.RunRequest:
    """A run of ``rollback_job`` on behalf of ``sensor``, with the evidence for the audit."""
    kind = "asset_check" if sensor == ROLLBACK_ON_CHECK_FAILURE else "health"
    return dg.RunRequest(
        run_key=run_key,
        run_config=dg.RunConfig(
            ops={
                "apply_rollback": RollbackConfig(
                    reason=reason,
                    actor=f"parity:{sensor}",
                    evidence_json=json.dumps(evidence, default=str),
                    partitions=partitions,
                )
            }
        ),
        tags={"parity/trigger": kind},
    )


def _run_partition(context: dg.SensorEvaluationContext, record) -> str | None:  # noqa: ANN001
    run = context.instance.get_run_by_id(record.run_id) if record.run_id else None
    return run.tags.get("dagster/partition") if run else None


def _observed(metadata) -> dict[str, Any]:  # noqa: ANN001
    out = {}
    for key in ("observed_value", "threshold"):
        if key in metadata:
            out[key] = getattr(metadata[key], "value", None)
    return out


# -- health triggers --------------------------------------------------------------------


def health_verdict(
    parity: ParityResource,
    now: dt.datetime,
    config: triggers.TriggerConfig,
    log: logging.Logger | None = None,
) -> tuple[triggers.HealthVerdict, rollout.RolloutState, dict[str, Any]]:
    """The triggers evaluated at ``now``, the rollout state and the flags in force (``log``:
    where to say which embedded database is in use, the tick's log)."""
    plane = parity.open_control_plane(log)
    try:
        health = control.read_health(plane, now, config)
        values = plane.read_flags(include_reserved=True)
    finally:
        plane.close()
    state = control.read_state_from(values)
    return health.verdict, state, {k: v for k, v in values.items() if k in FLAG_DEFAULTS}


def rollout_episode(state: rollout.RolloutState, values: dict[str, Any]) -> str:
    """A short fingerprint of the rollout state and flags in force."""
    text = json.dumps({"state": state.to_json(), "flags": values}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build_health_sensor(
    config: triggers.TriggerConfig, knobs: Mapping[str, str] | None = None
) -> dg.SensorDefinition:
    knobs = knobs or {}
    dry_run = knobs.get("PARITY_ROLLBACK_DRY_RUN") == "true"

    @dg.sensor(
        name=ROLLBACK_ON_HEALTH_TRIGGERS,
        job=rollback_job,
        minimum_interval_seconds=HEALTH_SENSOR_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Rolls back when a rollback trigger of the migration plan breaches over "
        f"delivery_metrics: error rate > {config.error_rate_threshold:.2%} for "
        f"{config.error_rate_duration_s:g} s, latency > {config.latency_factor:g}x baseline for "
        f"{config.latency_duration_s:g} s, {config.connection_failures} consecutive connection "
        f"failures within {config.connection_window_s:g} s. No data never rolls back."
        + _dry_run_note(dry_run),
        metadata=_knob_metadata(knobs, "PARITY_TRIGGER_", "PARITY_ROLLBACK_"),
    )
    def rollback_on_health_triggers(context: dg.SensorEvaluationContext, parity: ParityResource):
        now = utcnow()
        verdict, state, values = health_verdict(parity, now, config, context.log)
        if not verdict.breached:
            return dg.SkipReason(verdict.summary())
        if state.rollback_in_force:
            return dg.SkipReason(f"breach ({verdict.summary()}), rollback already in force")
        names = sorted(r.name for r in verdict.breaches)
        return rollback_request(
            # One rollback per breached rollout episode: the key changes with the state and
            # flags being rolled back (a resume or a hand-set flag starts a new episode), not
            # with the clock, so ticks while the rollback run starts do not repeat it and a
            # new breach after a resume is never mistaken for the old one.
            run_key=f"health-{'-'.join(names)}-{rollout_episode(state, values)}",
            reason=f"health trigger breached: {', '.join(names)}",
            sensor=ROLLBACK_ON_HEALTH_TRIGGERS,
            evidence={"trigger": "health", **verdict.evidence()},
            partitions=[partitions.format_key(now)],
        )

    return rollback_on_health_triggers


# -- canary -----------------------------------------------------------------------------


def build_canary_sensor(
    trigger_config: triggers.TriggerConfig,
    rollout_config: rollout.RolloutConfig,
    knobs: Mapping[str, str] | None = None,
) -> dg.SensorDefinition:
    stages = " -> ".join(f"{p}%" for p in rollout_config.steps)

    @dg.sensor(
        name=CANARY_PROMOTION,
        job=promote_rollout_job,
        minimum_interval_seconds=CANARY_SENSOR_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Promotes the canary one stage (critical first, then {stages}) only "
        f"after {rollout_config.required_clean_hours} consecutive clean reconciled hours and "
        f"{rollout_config.min_soak.total_seconds() / 3600:g} h of soak at the current stage, "
        "never while a trigger breaches, data is missing, or a rollback is in force.",
        metadata=_knob_metadata(knobs or {}, "PARITY_ROLLOUT_", "PARITY_TRIGGER_"),
    )
    def canary_promotion(context: dg.SensorEvaluationContext, parity: ParityResource):
        now = utcnow()
        verdict, state, flags = health_verdict(parity, now, trigger_config, context.log)
        hours = rollback.reconciled_hours(parity.settings().layout, state.step_started_at, now)
        decision = rollout.decide(
            rollout.RolloutInputs(state=state, flags=flags, hours=hours, health=verdict),
            rollout_config,
            now,
        )
        if decision.action != rollout.Action.PROMOTE:
            return dg.SkipReason(f"hold ({decision.reason}): {decision.detail}")
        payload = {
            "expected_state": state.to_json(),
            "expected_flags": {k: flags[k] for k in FLAG_DEFAULTS},
            "flag_changes": dict(decision.flag_changes),
            "next_state": decision.next_state.to_json(),
            "reason": f"canary: stage {decision.from_step} -> {decision.to_step}",
            "evidence": {**decision.evidence(), "health": verdict.evidence()},
        }
        return dg.RunRequest(
            run_key=f"promote-{decision.from_step}-{decision.to_step}-"
            f"{state.step_started_at:%Y%m%dT%H%M%S}"
            if state.step_started_at
            else None,
            run_config=dg.RunConfig(
                ops={
                    "apply_promotion": PromoteConfig(decision_json=json.dumps(payload, default=str))
                }
            ),
        )

    return canary_promotion

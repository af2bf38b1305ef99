"""What deserves a person's attention, decided from state changes (pure).

Each decision takes what was known before (a small state the alert sensor keeps in its
cursor) and what is observed now, and returns the new state with the alerts for what
*changed*: an hour that went red, an hour that is green again, a producer that went silent
or came back, a plan threshold exceeded or back within bounds. Observing the same thing
twice alerts nothing, so a sensor that ticks every few seconds still sends one alert per
change. Delivery is ``parity.io.notify``'s job.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from parity.core import triggers
from parity.core.knobs import AlertPolicy

#: A producer counts for silence only if it reported within this long (the plan's hour).
PRODUCER_RECENT = dt.timedelta(hours=1)
ERROR_RATE = "error_rate"
CONNECTION_RECOVERY = "connection_recovery"


class Level(StrEnum):
    """Apprise's notification types, so every target renders the same urgency."""

    INFO = "info"
    SUCCESS = "success"
    WARNING = "warning"
    FAILURE = "failure"


@dataclass(frozen=True)
class Alert:
    kind: str
    level: Level
    title: str
    body: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        """The JSON a webhook receives: ``event`` names the kind (``parity.rollback``...)."""
        return {
            "event": f"parity.{self.kind}",
            "level": self.level.value,
            "title": self.title,
            "message": self.body,
            **self.details,
        }


# -- rollbacks and repairs ---------------------------------------------------------------


def rollback_alert(
    *,
    reason: str,
    changes: Mapping[str, Any],
    flags: Mapping[str, Any],
    evidence: Mapping[str, Any],
    run_id: str | None,
    dry_run: bool = False,
) -> Alert:
    """A rollback that was applied, or in dry-run mode one that would have been."""
    listed = ", ".join(f"{k} -> {v}" for k, v in changes.items()) or "nothing to change"
    if dry_run:
        return Alert(
            "would_roll_back",
            Level.WARNING,
            "Parity WOULD roll back (dry run: flags untouched)",
            f"{reason}. Would set: {listed}.",
            {
                "reason": reason,
                "changes": dict(changes),
                "flags": dict(flags),
                "evidence": dict(evidence),
                "run_id": run_id,
                "dry_run": True,
            },
        )
    return Alert(
        "rollback",
        Level.FAILURE,
        "Parity rolled the Supabase migration back",
        f"{reason}. Set: {listed}. The rollout stays down until `parity rollout resume`.",
        {
            "reason": reason,
            "changes": dict(changes),
            "flags": dict(flags),
            "evidence": dict(evidence),
            "run_id": run_id,
        },
    )


def repair_incomplete_alert(partition: str, reason: str, details: Mapping[str, Any]) -> Alert:
    return Alert(
        "repair_incomplete",
        Level.FAILURE,
        f"Parity could not repair hour {partition}",
        f"{reason}. A person has to look: these events cannot be written automatically.",
        {"partition": partition, "reason": reason, **details},
    )


@dataclass(frozen=True)
class RunOutcome:
    """A finished run of one of Parity's jobs (and its partition, when it has one)."""

    job: str
    partition: str | None
    run_id: str
    success: bool
    message: str = ""

    @property
    def key(self) -> str:
        """What fails or recovers as one: the job, per partition where there is one."""
        return f"{self.job}@{self.partition}" if self.partition else self.job


def run_changes(
    failing: Mapping[str, str], outcomes: Iterable[RunOutcome]
) -> tuple[dict[str, str], list[Alert]]:
    """Apply finished runs (oldest first) to the jobs failing now (key -> the run that
    started it failing): one alert when a job (per partition) starts failing, one when it
    succeeds again; further failures of a failing job, and successes of a healthy one,
    alert nothing."""
    state = dict(failing)
    alerts: list[Alert] = []
    for run in outcomes:
        where = f" for {run.partition}" if run.partition else ""
        details = {"job": run.job, "run_id": run.run_id, "partition": run.partition}
        if not run.success and run.key not in state:
            state[run.key] = run.run_id
            alerts.append(
                Alert(
                    "run_failed",
                    Level.FAILURE,
                    f"Parity run failed: {run.job}{where}",
                    run.message or "the run failed (see its logs in Dagster)",
                    details,
                )
            )
        elif run.success and run.key in state:
            first = state.pop(run.key)
            alerts.append(
                Alert(
                    "run_recovered",
                    Level.SUCCESS,
                    f"Parity run succeeded again: {run.job}{where}",
                    f"{run.job}{where} succeeded again (failing since run {first})",
                    {**details, "failing_since_run_id": first},
                )
            )
    return state, alerts


# -- hours: red and green -----------------------------------------------------------------


@dataclass(frozen=True)
class CheckOutcome:
    """One resolved asset check execution for one hour."""

    partition: str
    check: str
    passed: bool
    severity: str  # "ERROR" or "WARN"
    run_id: str
    #: What launched the run (``parity/trigger`` tag: schedule, backfill, ...), if known.
    trigger: str | None = None


def _alerting(outcome: CheckOutcome, policy: AlertPolicy) -> bool:
    return not outcome.passed and (outcome.severity == "ERROR" or policy.on_warn)


def hour_changes(
    red: Mapping[str, Sequence[str]], outcomes: Iterable[CheckOutcome], policy: AlertPolicy
) -> tuple[dict[str, tuple[str, ...]], list[Alert]]:
    """Apply ``outcomes`` (oldest first) to the red hours (hour -> failing checks).

    An hour is red while one of its checks' latest result is an alerting failure (ERROR
    always, WARN when ``policy.on_warn``). State changes are judged after each run's
    results for the hour, so a run that turns the hour red and a later one that turns it
    green again both alert even when one tick sees both. An hour never seen red that
    passes alerts nothing.
    """
    state = {hour: set(checks) for hour, checks in red.items()}
    alerts: list[Alert] = []
    batches: dict[tuple[str, str], list[CheckOutcome]] = {}
    for outcome in outcomes:
        batches.setdefault((outcome.partition, outcome.run_id), []).append(outcome)
    for (hour, run_id), batch in batches.items():
        was_red = bool(state.get(hour))
        failing = state.setdefault(hour, set())
        for outcome in batch:
            if _alerting(outcome, policy):
                failing.add(outcome.check)
            else:
                failing.discard(outcome.check)
        trigger = batch[-1].trigger
        if failing and not was_red:
            names = ", ".join(sorted(failing))
            alerts.append(
                Alert(
                    "hour_red",
                    Level.FAILURE,
                    f"Parity: hour {hour} went red",
                    f"failed checks: {names}",
                    {"partition": hour, "failed_checks": sorted(failing), "run_id": run_id},
                )
            )
        elif was_red and not failing:
            after = " after repair" if trigger == "backfill" else ""
            alerts.append(
                Alert(
                    "hour_green",
                    Level.SUCCESS,
                    f"Parity: hour {hour} is green again{after}",
                    f"every check of {hour} passes{after}",
                    {"partition": hour, "run_id": run_id, "trigger": trigger},
                )
            )
        if not failing:
            del state[hour]
    return {hour: tuple(sorted(checks)) for hour, checks in state.items()}, alerts


# -- producers: silent and back -----------------------------------------------------------


def last_seen(
    samples: Iterable[triggers.MetricSample],
    heartbeats: Mapping[str, dt.datetime] | None = None,
) -> dict[str, dt.datetime]:
    """Each producer's newest sign of life: its newest ``delivery_metrics`` sample or its
    newest heartbeat event (``heartbeats``: producer -> emitted_at), whichever is later."""
    seen: dict[str, dt.datetime] = dict(heartbeats or {})
    for s in samples:
        if s.producer not in seen or s.sampled_at > seen[s.producer]:
            seen[s.producer] = s.sampled_at
    return seen


def producer_changes(
    silent: Mapping[str, str],
    last_seen: Mapping[str, dt.datetime],
    now: dt.datetime,
    policy: AlertPolicy,
) -> tuple[dict[str, str], list[Alert]]:
    """Producers silent longer than ``policy.producer_silence`` after reporting within the
    last hour (``silent``: producer -> last seen, ISO). ``last_seen``: each producer's
    newest ``delivery_metrics`` sample or heartbeat within the last hour at least; a silent
    producer missing from it stays silent, without a new alert."""
    state = dict(silent)
    alerts: list[Alert] = []
    for producer, seen in sorted(last_seen.items()):
        quiet = now - seen
        if quiet > policy.producer_silence:
            if producer not in state and quiet <= PRODUCER_RECENT:
                state[producer] = seen.isoformat()
                alerts.append(
                    Alert(
                        "producer_silent",
                        Level.FAILURE,
                        f"Parity: producer {producer} went silent",
                        f"no delivery metrics or heartbeats from {producer} since "
                        f"{seen.isoformat()}"
                        f" ({int(quiet.total_seconds())} s; alert after"
                        f" {int(policy.producer_silence.total_seconds())} s)",
                        {"producer": producer, "last_seen": seen.isoformat()},
                    )
                )
        elif producer in state:
            del state[producer]
            alerts.append(
                Alert(
                    "producer_back",
                    Level.SUCCESS,
                    f"Parity: producer {producer} is reporting again",
                    f"delivery metrics or heartbeats from {producer} again at {seen.isoformat()}",
                    {"producer": producer, "last_seen": seen.isoformat()},
                )
            )
    return state, alerts


# -- the plan's alert thresholds ----------------------------------------------------------


def slowest_recovery(
    samples: Iterable[triggers.MetricSample],
    start: dt.datetime,
    now: dt.datetime,
    interval_s: float,
) -> float | None:
    """Longest time, in seconds, from the first failed connection of an outage to the next
    successful one, over outages that overlap ``(start, now]`` (an outage still going on
    counts until ``now``). None when no connection was attempted in the window.

    Samples carry counts per window, so times are those of the sampling grid: an outage
    starts at the beginning of the first grid window whose attempts all failed and ends
    at the end of the first later window with a successful connection."""
    grid: dict[float, list[int]] = {}
    for s in samples:
        if s.sampled_at > now or s.connection_attempts == 0:
            continue
        end = math.ceil(s.sampled_at.timestamp() / interval_s) * interval_s
        bucket = grid.setdefault(end, [0, 0])
        bucket[0] += s.connection_attempts
        bucket[1] += s.connection_failures
    attempted = False
    longest = 0.0
    down_since: float | None = None
    for end, (attempts, failures) in sorted(grid.items()):
        if end > start.timestamp():
            attempted = True
        if failures == attempts:
            down_since = end - interval_s if down_since is None else down_since
            continue
        if down_since is not None and end > start.timestamp():
            longest = max(longest, end - down_since)
        down_since = None
    if down_since is not None:
        attempted = True
        longest = max(longest, now.timestamp() - down_since)
    return longest if attempted else None


def threshold_changes(
    active: Mapping[str, str],
    samples: Sequence[triggers.MetricSample],
    now: dt.datetime,
    policy: AlertPolicy,
    config: triggers.TriggerConfig,
) -> tuple[dict[str, str], list[Alert]]:
    """The plan's metrics table as alerts (never rollbacks): write error rate above
    ``policy.error_rate`` sustained over ``policy.window`` (the rollback trigger's
    definition of sustained, with the alert's numbers), and connection recovery slower
    than ``policy.recovery_s`` within the window. ``active``: name -> since (ISO)."""
    window_s = policy.window.total_seconds()
    verdict = triggers.evaluate(
        samples,
        now,
        replace(config, error_rate_threshold=policy.error_rate, error_rate_duration_s=window_s),
    ).result(triggers.ERROR_RATE)
    recovery = slowest_recovery(samples, now - policy.window, now, config.sampling_interval_s)
    # None: too little data to say either way; the state stays as it was.
    observed: dict[str, tuple[bool | None, str]] = {
        ERROR_RATE: (
            None
            if verdict.state is triggers.TriggerState.NO_DATA
            else verdict.state is triggers.TriggerState.BREACH,
            f"write error rate above {policy.error_rate:.4%} for {window_s:g} s ({verdict.detail})",
        ),
        CONNECTION_RECOVERY: (
            None if recovery is None else recovery > policy.recovery_s,
            f"connection recovery took {recovery or 0:g} s within the last {window_s:g} s"
            f" (target < {policy.recovery_s:g} s)",
        ),
    }
    state = dict(active)
    alerts: list[Alert] = []
    for name, (exceeded, detail) in observed.items():
        if exceeded and name not in state:
            state[name] = now.isoformat()
            alerts.append(
                Alert(
                    f"{name}_high",
                    Level.WARNING,
                    f"Parity: {detail}",
                    detail,
                    {"threshold": name, "since": now.isoformat()},
                )
            )
        elif exceeded is False and name in state:
            since = state.pop(name)
            alerts.append(
                Alert(
                    f"{name}_ok",
                    Level.SUCCESS,
                    f"Parity: {name} back within the plan's target",
                    detail,
                    {"threshold": name, "since": since},
                )
            )
    return state, alerts

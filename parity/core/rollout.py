"""The canary rollout as a pure state machine (contract §5, migration plan 2.6.4).

The ladder: stage 0 turns ``MONITORING_CRITICAL_EVENTS_SUPABASE`` on with the rollout
percentage still 0; stages 1.. raise the percentage through ``RolloutConfig.steps``
(default 10, 50, 100). Before stage 0 the rollout is *not started* (step ``-1``): critical
off, percentage 0.

``decide(inputs, config, now)`` promotes one stage or holds, and says why. It never
promotes while a rollback is in force, while paused, while a trigger breaches or has no
data, while the flags in force do not match the recorded stage, or during a cooldown.
From a stage it promotes only after ``min_soak`` (default 3 h) at the stage *and*
``required_clean_hours`` (default 3) consecutive clean reconciled hours at it:

* An hour counts when it lies entirely at the stage (starts at or after the stage began)
  and is *due*: it ended at least ``reconcile_lag`` ago, giving its reconciliation time to
  run. Walking back from the newest due hour, each must be reconciled: a missing one (absent
  or ``clean is None``) holds the rollout (``DATA_MISSING``); a dirty one ends the run, so a
  dirty hour resets the count to the clean hours after it.
* Leaving *not started* needs neither soak nor clean hours (nothing is routed to Supabase
  yet, so reconciliation is trivially clean): only health, and the cooldown after a resume.

Rollback (``record_rollback``) sets the flags of :func:`rollback_plan` and keeps the
rollout down until a person calls :func:`resume`. Resuming after a rollback restarts from
the beginning — not started, then stage 0 once the ``cooldown`` (default 1 h) has passed —
because the stage that failed, and the load behind it, must be climbed to again with fresh
evidence. Resuming from a plain :func:`pause` (no rollback) keeps the stage and its soak
clock: the flags never changed while paused, so the hours still count.

Clean-hour counts are not persisted: they are derived from the reconciliation history on
every decision, so the state cannot drift from the reports.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol

from parity.core.errors import ConfigurationError, FlagError
from parity.core.partitions import aware_utc, floor_hour
from parity.core.routing import (
    CRITICAL_EVENTS_SUPABASE,
    DASHBOARD_FALLBACK_MODE,
    DASHBOARD_SUPABASE_ENABLED,
    DUAL_WRITE_ENABLED,
    FLAG_DEFAULTS,
    SUPABASE_ROLLOUT_PERCENTAGE,
    FlagValue,
)

#: Reserved ``feature_flags`` row that holds the persisted :class:`RolloutState`.
ROLLOUT_STATE_FLAG = "PARITY_ROLLOUT_STATE"

NOT_STARTED = -1


def rollback_plan() -> dict[str, FlagValue]:
    """The flag values a rollback writes, in one transaction (contract §5)."""
    return {
        SUPABASE_ROLLOUT_PERCENTAGE: 0,
        CRITICAL_EVENTS_SUPABASE: False,
        DUAL_WRITE_ENABLED: True,
        DASHBOARD_SUPABASE_ENABLED: False,
        DASHBOARD_FALLBACK_MODE: True,
    }


class Action(StrEnum):
    PROMOTE = "PROMOTE"
    HOLD = "HOLD"


class HoldReason(StrEnum):
    ROLLBACK_IN_FORCE = "rollback_in_force"
    PAUSED = "paused"
    FLAGS_DIVERGED = "flags_diverged"
    TRIGGER_BREACH = "trigger_breach"
    HEALTH_NO_DATA = "health_no_data"
    AT_FINAL_STEP = "at_final_step"
    COOLDOWN = "cooldown"
    SOAKING = "soaking"
    DATA_MISSING = "data_missing"
    NOT_ENOUGH_CLEAN_HOURS = "not_enough_clean_hours"


@dataclass(frozen=True)
class RolloutConfig:
    steps: tuple[int, ...] = (10, 50, 100)
    required_clean_hours: int = 3
    min_soak: dt.timedelta = dt.timedelta(hours=3)
    cooldown: dt.timedelta = dt.timedelta(hours=1)
    #: How long after an hour ends its reconciliation is expected to exist.
    reconcile_lag: dt.timedelta = dt.timedelta(minutes=30)

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        if not self.steps or any(not isinstance(p, int) or isinstance(p, bool) for p in self.steps):
            raise ConfigurationError(f"rollout steps {self.steps!r}: need one or more integers")
        if any(not 0 < p <= 100 for p in self.steps) or any(
            a >= b for a, b in zip(self.steps, self.steps[1:], strict=False)
        ):
            raise ConfigurationError(
                f"rollout steps {self.steps!r}: percentages must rise strictly within 1..100"
            )
        if self.required_clean_hours < 1:
            raise ConfigurationError(
                f"rollout required_clean_hours={self.required_clean_hours}: must be >= 1"
            )
        for name in ("min_soak", "cooldown", "reconcile_lag"):
            if getattr(self, name) < dt.timedelta(0):
                raise ConfigurationError(f"rollout {name}: must not be negative")

    @property
    def final_step(self) -> int:
        """Index of the last stage: stage 0 is critical events, then one per percentage."""
        return len(self.steps)

    def stage_flags(self, step: int) -> dict[str, FlagValue]:
        """The two rollout flags at ``step`` (``NOT_STARTED`` .. ``final_step``)."""
        if not NOT_STARTED <= step <= self.final_step:
            raise FlagError(f"rollout step {step}: outside {NOT_STARTED}..{self.final_step}")
        return {
            CRITICAL_EVENTS_SUPABASE: step >= 0,
            SUPABASE_ROLLOUT_PERCENTAGE: self.steps[step - 1] if step >= 1 else 0,
        }


def _ts(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@dataclass(frozen=True)
class RolloutState:
    """What the rollout remembers between decisions; persisted as JSON (``to_json``)."""

    step: int = NOT_STARTED
    step_started_at: dt.datetime | None = None
    #: A new rollout waits for a person to ``resume`` it.
    paused: bool = True
    paused_reason: str | None = "not yet started by a person"
    rollback_at: dt.datetime | None = None
    rollback_reason: str | None = None
    cooldown_until: dt.datetime | None = None

    def __post_init__(self) -> None:
        for name in ("step_started_at", "rollback_at", "cooldown_until"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, aware_utc(value, name))

    @property
    def rollback_in_force(self) -> bool:
        return self.rollback_at is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "step": self.step,
            "step_started_at": _ts(self.step_started_at),
            "paused": self.paused,
            "paused_reason": self.paused_reason,
            "rollback_at": _ts(self.rollback_at),
            "rollback_reason": self.rollback_reason,
            "cooldown_until": _ts(self.cooldown_until),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str) -> RolloutState:
        """Inverse of ``to_json``; accepts the dict or its JSON text."""
        where = f"feature flag {ROLLOUT_STATE_FLAG}"
        try:
            obj = json.loads(data) if isinstance(data, str) else data
            if not isinstance(obj, Mapping) or obj.get("version") != 1:
                raise ValueError("expected an object with version 1")

            def ts(key: str) -> dt.datetime | None:
                value = obj.get(key)
                return None if value is None else dt.datetime.fromisoformat(value)

            step = obj["step"]
            if not isinstance(step, int) or isinstance(step, bool) or step < NOT_STARTED:
                raise ValueError(f"step {step!r} is not an integer >= {NOT_STARTED}")
            if not isinstance(obj["paused"], bool):
                raise ValueError(f"paused {obj['paused']!r} is not a boolean")
            return cls(
                step=step,
                step_started_at=ts("step_started_at"),
                paused=obj["paused"],
                paused_reason=obj.get("paused_reason"),
                rollback_at=ts("rollback_at"),
                rollback_reason=obj.get("rollback_reason"),
                cooldown_until=ts("cooldown_until"),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise FlagError(
                f"{where}: not a valid rollout state ({exc}); fix or delete the row, then"
                " resume the rollout"
            ) from None


class Health(Protocol):
    """What ``decide`` needs from a health verdict (``parity.triggers.HealthVerdict``)."""

    @property
    def breached(self) -> bool: ...

    @property
    def no_data(self) -> bool: ...


@dataclass(frozen=True)
class ReconciledHour:
    """One hourly partition's outcome: clean, dirty, or ``None`` when not reconciled."""

    hour_start: dt.datetime
    clean: bool | None

    def __post_init__(self) -> None:
        start = aware_utc(self.hour_start, "hour_start")
        if start != floor_hour(start):
            raise ValueError(f"hour_start {start.isoformat()} is not on the hour")
        object.__setattr__(self, "hour_start", start)


@dataclass(frozen=True)
class RolloutInputs:
    state: RolloutState
    flags: Mapping[str, FlagValue]
    hours: Sequence[ReconciledHour]
    health: Health


@dataclass(frozen=True)
class Transition:
    """A state to persist and the flags to write with it.

    ``pause``/``resume`` list only flags that change; ``record_rollback`` lists the whole
    :func:`rollback_plan`, values already in force included (the writer may skip no-ops).
    """

    state: RolloutState
    flag_changes: Mapping[str, FlagValue] = field(default_factory=dict)


@dataclass(frozen=True)
class RolloutDecision:
    action: Action
    #: Why the rollout holds; None when it promotes.
    reason: HoldReason | None
    detail: str
    from_step: int
    to_step: int
    #: Flags to write (only those that change); empty when holding.
    flag_changes: Mapping[str, FlagValue]
    #: The state to persist once the flag changes are confirmed.
    next_state: RolloutState
    clean_hours: int = 0

    def evidence(self) -> dict[str, Any]:
        """JSON-serialisable evidence for the ``feature_flag_audit`` row."""
        return {
            "action": self.action.value,
            "reason": None if self.reason is None else self.reason.value,
            "detail": self.detail,
            "from_step": self.from_step,
            "to_step": self.to_step,
            "flag_changes": dict(self.flag_changes),
            "clean_hours": self.clean_hours,
        }


def _ceil_hour(value: dt.datetime) -> dt.datetime:
    floor = floor_hour(value)
    return floor if floor == value else floor + dt.timedelta(hours=1)


def flags_in_force(flags: Mapping[str, FlagValue]) -> dict[str, FlagValue]:
    """``flags`` completed with the plan's defaults for flags never set."""
    return {**FLAG_DEFAULTS, **flags}


def _changes(current: Mapping[str, FlagValue], target: Mapping[str, FlagValue]) -> dict[str, Any]:
    full = flags_in_force(current)
    return {k: v for k, v in target.items() if full.get(k) != v or type(full.get(k)) is not type(v)}


def _clean_run(
    hours: Sequence[ReconciledHour], first: dt.datetime, last: dt.datetime, needed: int
) -> tuple[int, dt.datetime | None, dt.datetime | None]:
    """Trailing clean hours in ``[first, last]`` (walking back, stopping at ``needed``).

    Returns (count, the missing hour that stopped the walk, the dirty hour that ended the run).
    """
    by_start = {h.hour_start: h.clean for h in hours}
    count = 0
    hour = last
    while hour >= first and count < needed:
        clean = by_start.get(hour)
        if clean is None:
            return count, hour, None
        if not clean:
            return count, None, hour
        count += 1
        hour -= dt.timedelta(hours=1)
    return count, None, None


def decide(inputs: RolloutInputs, config: RolloutConfig, now: dt.datetime) -> RolloutDecision:
    """Promote one stage or hold (see the module docstring for the rules)."""
    now = aware_utc(now, "now")
    state = inputs.state
    step = state.step
    held, clean_hours = _gate(inputs, config, now), 0
    if held is None and step != NOT_STARTED:
        held, clean_hours = _soaked(inputs, config, now)
    if held is not None:
        reason, detail = held
        return RolloutDecision(
            action=Action.HOLD,
            reason=reason,
            detail=detail,
            from_step=step,
            to_step=step,
            flag_changes={},
            next_state=state,
            clean_hours=clean_hours,
        )
    to_step = step + 1
    target = config.stage_flags(to_step)
    return RolloutDecision(
        action=Action.PROMOTE,
        reason=None,
        detail=f"promote step {step} -> {to_step}: {target}",
        from_step=step,
        to_step=to_step,
        flag_changes=_changes(inputs.flags, target),
        next_state=replace(state, step=to_step, step_started_at=now, cooldown_until=None),
        clean_hours=clean_hours,
    )


def _gate(
    inputs: RolloutInputs, config: RolloutConfig, now: dt.datetime
) -> tuple[HoldReason, str] | None:
    """Why no promotion may happen now, whatever the soak and the hours: a rollback, a
    pause, flags changed outside the rollout, health, the last step, the cooldown."""
    state, step = inputs.state, inputs.state.step
    if state.rollback_in_force:
        assert state.rollback_at is not None
        return (
            HoldReason.ROLLBACK_IN_FORCE,
            f"rolled back at {state.rollback_at.isoformat()} ({state.rollback_reason});"
            " a person must resume the rollout",
        )
    if state.paused:
        return HoldReason.PAUSED, f"paused: {state.paused_reason or 'no reason given'}"
    if not NOT_STARTED <= step <= config.final_step:
        return (
            HoldReason.FLAGS_DIVERGED,
            f"recorded step {step} does not exist in steps {config.steps}; pause and resume",
        )
    expected = config.stage_flags(step)
    diverged = _changes(inputs.flags, expected)
    if diverged:
        found = {k: flags_in_force(inputs.flags)[k] for k in diverged}
        return (
            HoldReason.FLAGS_DIVERGED,
            f"flags {found} do not match step {step} ({expected}); changed outside the"
            " rollout — pause and resume to re-sync",
        )
    if inputs.health.breached:
        return HoldReason.TRIGGER_BREACH, "a rollback trigger breaches"
    if inputs.health.no_data:
        return HoldReason.HEALTH_NO_DATA, "a rollback trigger has no data to judge"
    if step == config.final_step:
        return HoldReason.AT_FINAL_STEP, f"at the final step ({config.steps[-1]}%)"
    if state.cooldown_until is not None and now < state.cooldown_until:
        return HoldReason.COOLDOWN, f"cooling down until {state.cooldown_until.isoformat()}"
    return None


def _soaked(
    inputs: RolloutInputs, config: RolloutConfig, now: dt.datetime
) -> tuple[tuple[HoldReason, str] | None, int]:
    """Whether the current step has soaked long enough with enough consecutive clean
    hours (None) or why not, and the clean hours counted."""
    state, step = inputs.state, inputs.state.step
    started = state.step_started_at
    if started is None:
        return (HoldReason.FLAGS_DIVERGED, f"step {step} has no start time; resume"), 0
    soaked = now - started
    if soaked < config.min_soak:
        return (HoldReason.SOAKING, f"soaking at step {step} for {soaked} of {config.min_soak}"), 0
    first = _ceil_hour(started)
    last = floor_hour(now - config.reconcile_lag) - dt.timedelta(hours=1)
    clean_hours, missing, dirty = _clean_run(inputs.hours, first, last, config.required_clean_hours)
    if missing is not None:
        return (
            HoldReason.DATA_MISSING,
            f"hour {missing.isoformat()} is not reconciled",
        ), clean_hours
    if clean_hours < config.required_clean_hours:
        after = f" since dirty hour {dirty.isoformat()}" if dirty is not None else ""
        detail = (
            f"{clean_hours} of {config.required_clean_hours} consecutive clean hours"
            f" at step {step}{after}"
        )
        return (HoldReason.NOT_ENOUGH_CLEAN_HOURS, detail), clean_hours
    return None, clean_hours


def pause(state: RolloutState, now: dt.datetime, reason: str) -> Transition:
    """Freeze the rollout where it is. Flags stay as they are (a pause is not a rollback)."""
    aware_utc(now, "now")
    return Transition(replace(state, paused=True, paused_reason=reason))


def resume(
    state: RolloutState, flags: Mapping[str, FlagValue], config: RolloutConfig, now: dt.datetime
) -> Transition:
    """A person re-arms the rollout.

    After a rollback: back to *not started* (its flags written if anything differs), with
    the cooldown before the next promotion. After a pause: the same step, its soak clock
    kept — unless someone changed its flags meanwhile: they are re-written and the soak
    restarts.
    """
    now = aware_utc(now, "now")
    if state.rollback_in_force or not NOT_STARTED <= state.step <= config.final_step:
        new = RolloutState(
            step=NOT_STARTED,
            step_started_at=now,
            paused=False,
            paused_reason=None,
            cooldown_until=now + config.cooldown if state.rollback_in_force else None,
        )
    else:
        new = replace(state, paused=False, paused_reason=None)
    changes = _changes(flags, config.stage_flags(new.step))
    if changes or new.step_started_at is None:
        # The flags were changed while paused: the hours since do not count for this step.
        new = replace(new, step_started_at=now)
    return Transition(new, changes)


def record_rollback(state: RolloutState, now: dt.datetime, reason: str) -> Transition:
    """Roll back: the :func:`rollback_plan` flags, and the rollout held until resumed."""
    now = aware_utc(now, "now")
    return Transition(
        replace(state, rollback_at=now, rollback_reason=reason),
        rollback_plan(),
    )

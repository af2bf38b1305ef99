"""The canary rollout state machine: every hold reason, every promotion, rollback and resume."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parity.core.errors import ConfigurationError, FlagError
from parity.core.rollout import (
    NOT_STARTED,
    Action,
    HoldReason,
    ReconciledHour,
    RolloutConfig,
    RolloutInputs,
    RolloutState,
    decide,
    pause,
    record_rollback,
    resume,
    rollback_plan,
)
from parity.core.routing import (
    CRITICAL_EVENTS_SUPABASE,
    DASHBOARD_FALLBACK_MODE,
    DASHBOARD_SUPABASE_ENABLED,
    DUAL_WRITE_ENABLED,
    FLAG_DEFAULTS,
    SUPABASE_ROLLOUT_PERCENTAGE,
)
from parity.core.triggers import TriggerConfig, evaluate

CONFIG = RolloutConfig()
CRITICAL = CRITICAL_EVENTS_SUPABASE
PERCENT = SUPABASE_ROLLOUT_PERCENTAGE
NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


@dataclass(frozen=True)
class Health:
    breached: bool = False
    no_data: bool = False


HEALTHY = Health()


def flags_at(step: int, **overrides) -> dict[str, bool | int]:
    return {**FLAG_DEFAULTS, **CONFIG.stage_flags(step), **overrides}


def running(step: int, started: dt.datetime, **kw) -> RolloutState:
    return RolloutState(step=step, step_started_at=started, paused=False, paused_reason=None, **kw)


def hours(first: dt.datetime, *outcomes: bool | None) -> list[ReconciledHour]:
    return [ReconciledHour(first + i * HOUR, clean) for i, clean in enumerate(outcomes)]


def inputs(state, *, flags=None, reconciled=(), health=HEALTHY) -> RolloutInputs:
    return RolloutInputs(
        state=state,
        flags=flags_at(state.step) if flags is None else flags,
        hours=list(reconciled),
        health=health,
    )


# Step 1 (10%) since 08:00; at 12:00 the due hours (30 min lag) are 08:00, 09:00, 10:00.
STARTED = NOW - 4 * HOUR
CLEAN3 = hours(STARTED, True, True, True)


def ready(step: int = 1, **kw) -> RolloutInputs:
    """Inputs that promote unless one thing is changed."""
    return inputs(running(step, STARTED), reconciled=CLEAN3, **kw)


# --- hold reasons -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        (inputs(RolloutState()), HoldReason.PAUSED),
        (
            inputs(running(1, STARTED, rollback_at=NOW - HOUR, rollback_reason="error_rate")),
            HoldReason.ROLLBACK_IN_FORCE,
        ),
        (replace(ready(), flags=flags_at(0)), HoldReason.FLAGS_DIVERGED),
        (replace(ready(), flags={**flags_at(1), CRITICAL: False}), HoldReason.FLAGS_DIVERGED),
        (replace(ready(), health=Health(breached=True)), HoldReason.TRIGGER_BREACH),
        (replace(ready(), health=Health(no_data=True)), HoldReason.HEALTH_NO_DATA),
        (ready(step=CONFIG.final_step), HoldReason.AT_FINAL_STEP),
        (
            inputs(
                running(1, STARTED, cooldown_until=NOW + dt.timedelta(minutes=1)), reconciled=CLEAN3
            ),
            HoldReason.COOLDOWN,
        ),
        (inputs(running(1, NOW - 2 * HOUR), reconciled=CLEAN3), HoldReason.SOAKING),
        (inputs(running(1, STARTED), reconciled=CLEAN3[:2]), HoldReason.DATA_MISSING),
        (
            inputs(running(1, STARTED), reconciled=hours(STARTED, True, True, None)),
            HoldReason.DATA_MISSING,
        ),
        (
            inputs(running(1, STARTED), reconciled=hours(STARTED, True, False, True)),
            HoldReason.NOT_ENOUGH_CLEAN_HOURS,
        ),
    ],
    ids=[
        "initially-paused",
        "rollback-in-force",
        "flags-behind",
        "critical-switched-off",
        "trigger-breach",
        "health-no-data",
        "final-step",
        "cooldown",
        "soaking",
        "hour-absent",
        "hour-not-reconciled",
        "dirty-hour",
    ],
)
def test_hold_reasons(case, reason):
    decision = decide(case, CONFIG, NOW)
    assert decision.action is Action.HOLD
    assert decision.reason is reason
    assert decision.flag_changes == {}
    assert decision.next_state == case.state
    assert decision.to_step == decision.from_step == case.state.step
    assert decision.detail


def test_ready_inputs_promote():
    assert decide(ready(), CONFIG, NOW).action is Action.PROMOTE


# --- promotion --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "changes"),
    [
        (NOT_STARTED, {CRITICAL: True}),
        (0, {PERCENT: 10}),
        (1, {PERCENT: 50}),
        (2, {PERCENT: 100}),
    ],
    ids=["critical-first", "to-10", "to-50", "to-100"],
)
def test_promote_at_each_step(step, changes):
    decision = decide(ready(step), CONFIG, NOW)
    assert decision.action is Action.PROMOTE
    assert decision.reason is None
    assert decision.flag_changes == changes
    assert (decision.from_step, decision.to_step) == (step, step + 1)
    assert decision.next_state.step == step + 1
    assert decision.next_state.step_started_at == NOW
    assert decision.clean_hours == (0 if step == NOT_STARTED else 3)
    assert json.loads(json.dumps(decision.evidence()))["flag_changes"] == changes


def test_custom_steps():
    config = RolloutConfig(steps=(5, 25), required_clean_hours=1, min_soak=dt.timedelta(0))
    state = running(1, STARTED)
    decision = decide(
        inputs(state, flags={**flags_at(0), PERCENT: 5}, reconciled=CLEAN3), config, NOW
    )
    assert decision.flag_changes == {PERCENT: 25}
    assert decision.to_step == config.final_step == 2


def test_promotion_waits_for_three_full_clean_hours_after_the_step_starts():
    started = NOW.replace(hour=8, minute=15)  # 08:00-09:00 is partly at the previous step
    state = running(1, started)
    reconciled = hours(NOW.replace(hour=8), False, True, True, True)
    # At 12:29 the hour 11:00 is not due yet: two clean hours (09:00, 10:00).
    early = decide(inputs(state, reconciled=reconciled), CONFIG, NOW + dt.timedelta(minutes=29))
    assert early.reason is HoldReason.NOT_ENOUGH_CLEAN_HOURS
    assert early.clean_hours == 2
    # At 12:30 it is, and the dirty 08:00 hour before the step began does not count.
    on_time = decide(inputs(state, reconciled=reconciled), CONFIG, NOW + dt.timedelta(minutes=30))
    assert on_time.action is Action.PROMOTE


def test_soak_time_is_needed_even_with_clean_hours():
    config = RolloutConfig(min_soak=dt.timedelta(hours=5))
    decision = decide(ready(), config, NOW)
    assert decision.reason is HoldReason.SOAKING
    assert "4:00:00 of 5:00:00" in decision.detail


def test_dirty_hour_resets_the_count():
    reconciled = hours(STARTED, True, False, True)
    state = running(1, STARTED)
    held = decide(inputs(state, reconciled=reconciled), CONFIG, NOW)
    assert held.clean_hours == 1
    assert "since dirty hour 2026-11-28T09:00:00+00:00" in held.detail
    # At 13:00 the clean 11:00 hour is due too: two clean hours after the dirty one.
    later = [*reconciled, *hours(NOW - HOUR, True)]
    assert decide(inputs(state, reconciled=later), CONFIG, NOW + HOUR).clean_hours == 2
    # At 14:00 the 12:00 hour is due; until it is reconciled the rollout holds.
    assert decide(inputs(state, reconciled=later), CONFIG, NOW + 2 * HOUR).reason is (
        HoldReason.DATA_MISSING
    )
    later += hours(NOW, True)
    assert decide(inputs(state, reconciled=later), CONFIG, NOW + 2 * HOUR).action is (
        Action.PROMOTE
    )


def test_only_the_trailing_hours_must_be_reconciled():
    state = running(1, STARTED - 2 * HOUR)
    # 06:00 missing, then three clean: the last three are what count.
    reconciled = hours(STARTED - 2 * HOUR, None, True, True, True, True)
    assert decide(inputs(state, reconciled=reconciled), CONFIG, NOW).action is Action.PROMOTE
    # A missing hour older than a dirty one does not matter: the dirty one reset the count.
    reconciled = hours(STARTED - 2 * HOUR, None, False, True, True, True)
    assert decide(inputs(state, reconciled=reconciled), CONFIG, NOW).action is Action.PROMOTE
    reconciled = hours(STARTED - 2 * HOUR, None, True, False, True, True)
    assert decide(inputs(state, reconciled=reconciled), CONFIG, NOW).reason is (
        HoldReason.NOT_ENOUGH_CLEAN_HOURS
    )


def test_breach_mid_soak_holds_and_clean_health_then_promotes():
    state = running(1, STARTED)
    breached = decide(inputs(state, reconciled=CLEAN3, health=Health(breached=True)), CONFIG, NOW)
    assert breached.reason is HoldReason.TRIGGER_BREACH
    assert breached.next_state == state
    # The breach made the hour it happened in dirty: the count starts again after it.
    reconciled = hours(STARTED, True, True, True, False)
    at = NOW + HOUR
    assert decide(inputs(state, reconciled=reconciled), CONFIG, at).reason is (
        HoldReason.NOT_ENOUGH_CLEAN_HOURS
    )
    reconciled += hours(NOW, True, True, True)
    assert decide(inputs(state, reconciled=reconciled), CONFIG, at + 3 * HOUR).action is (
        Action.PROMOTE
    )


def test_real_health_verdict_fits():
    verdict = evaluate([], NOW, TriggerConfig())
    assert decide(replace(ready(), health=verdict), CONFIG, NOW).reason is (
        HoldReason.HEALTH_NO_DATA
    )


# --- rollback, resume, cooldown ---------------------------------------------------------


def test_rollback_then_resume_then_cooldown_then_promote():
    state = running(2, STARTED)
    rolled = record_rollback(state, NOW, "error_rate breached")
    assert rolled.flag_changes == rollback_plan()
    assert rolled.state.rollback_at == NOW
    flags = {**flags_at(2), **rolled.flag_changes}
    assert flags[PERCENT] == 0 and flags[CRITICAL] is False

    # Down until a person resumes, whatever the health and hours say.
    later = NOW + 10 * HOUR
    held = decide(inputs(rolled.state, flags=flags, reconciled=CLEAN3), CONFIG, later)
    assert held.reason is HoldReason.ROLLBACK_IN_FORCE
    assert "error_rate breached" in held.detail

    resumed = resume(rolled.state, flags, CONFIG, later)
    assert resumed.flag_changes == {}  # the rollback already left the not-started flags
    assert resumed.state.step == NOT_STARTED
    assert not resumed.state.rollback_in_force and not resumed.state.paused
    assert resumed.state.cooldown_until == later + CONFIG.cooldown

    cooling = decide(inputs(resumed.state, flags=flags), CONFIG, later + dt.timedelta(minutes=59))
    assert cooling.reason is HoldReason.COOLDOWN

    promoted = decide(inputs(resumed.state, flags=flags), CONFIG, later + CONFIG.cooldown)
    assert promoted.action is Action.PROMOTE
    assert promoted.flag_changes == {CRITICAL: True}
    assert promoted.next_state.step == 0
    assert promoted.next_state.cooldown_until is None


def test_rollback_plan():
    assert rollback_plan() == {
        PERCENT: 0,
        CRITICAL: False,
        DUAL_WRITE_ENABLED: True,
        DASHBOARD_SUPABASE_ENABLED: False,
        DASHBOARD_FALLBACK_MODE: True,
    }


def test_resume_rewrites_flags_changed_during_a_rollback():
    rolled = record_rollback(running(2, STARTED), NOW, "latency").state
    resumed = resume(rolled, flags_at(2), CONFIG, NOW)
    assert resumed.flag_changes == {CRITICAL: False, PERCENT: 0}


# --- pause and resume -------------------------------------------------------------------


def test_pause_and_resume_keep_the_step_and_its_soak():
    state = running(1, STARTED)
    paused = pause(state, NOW, "investigating a spike")
    assert paused.flag_changes == {}
    assert paused.state.paused and paused.state.paused_reason == "investigating a spike"
    held = decide(inputs(paused.state, reconciled=CLEAN3), CONFIG, NOW)
    assert held.reason is HoldReason.PAUSED
    assert "investigating a spike" in held.detail

    resumed = resume(paused.state, flags_at(1), CONFIG, NOW)
    assert resumed.flag_changes == {}
    assert resumed.state == state
    assert decide(inputs(resumed.state, reconciled=CLEAN3), CONFIG, NOW).action is Action.PROMOTE


def test_resume_after_flags_changed_while_paused_rewrites_them_and_restarts_the_soak():
    paused = pause(running(2, STARTED), NOW, "manual test").state
    resumed = resume(paused, flags_at(1), CONFIG, NOW)
    assert resumed.flag_changes == {PERCENT: 50}
    assert resumed.state.step == 2 and resumed.state.step_started_at == NOW


def test_first_resume_starts_the_rollout_without_cooldown():
    resumed = resume(RolloutState(), FLAG_DEFAULTS, CONFIG, NOW)
    assert resumed.flag_changes == {}
    assert resumed.state.cooldown_until is None
    decision = decide(inputs(resumed.state), CONFIG, NOW)
    assert decision.flag_changes == {CRITICAL: True}


# --- persisted state --------------------------------------------------------------------


@pytest.mark.parametrize(
    "state",
    [
        RolloutState(),
        running(2, STARTED, cooldown_until=NOW),
        record_rollback(running(3, STARTED), NOW, "connection_failures").state,
    ],
)
def test_state_round_trips_through_json(state):
    data = state.to_json()
    text = json.dumps(data)
    assert RolloutState.from_json(data) == state
    assert RolloutState.from_json(text) == state


@pytest.mark.parametrize(
    "data",
    [
        "not json",
        "[]",
        {"version": 2, "step": 0, "paused": False},
        {"version": 1, "step": -2, "paused": False},
        {"version": 1, "step": "1", "paused": False},
        {"version": 1, "step": 1, "paused": "no"},
        {"version": 1, "paused": False},
        {"version": 1, "step": 1, "paused": False, "rollback_at": "yesterday"},
        {"version": 1, "step": 1, "paused": False, "rollback_at": "2026-11-28T10:00:00"},
    ],
)
def test_invalid_state_is_a_flag_error(data):
    with pytest.raises(FlagError, match="PARITY_ROLLOUT_STATE"):
        RolloutState.from_json(data)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"steps": ()},
        {"steps": (10, 10, 100)},
        {"steps": (50, 10)},
        {"steps": (0, 100)},
        {"steps": (10, 101)},
        {"steps": (10.5,)},
        {"required_clean_hours": 0},
        {"cooldown": -HOUR},
    ],
)
def test_invalid_config_is_rejected(kwargs):
    with pytest.raises(ConfigurationError):
        RolloutConfig(**kwargs)


def test_naive_times_are_rejected():
    with pytest.raises(ValueError, match="timezone-aware"):
        decide(ready(), CONFIG, NOW.replace(tzinfo=None))
    with pytest.raises(ValueError, match="on the hour"):
        ReconciledHour(NOW + dt.timedelta(minutes=5), True)


# --- properties -------------------------------------------------------------------------

times = st.integers(0, 48 * 60).map(lambda m: NOW - dt.timedelta(minutes=m))
states = st.builds(
    RolloutState,
    step=st.integers(NOT_STARTED, CONFIG.final_step),
    step_started_at=st.none() | times,
    paused=st.booleans(),
    paused_reason=st.none() | st.just("why"),
    rollback_at=st.none() | times,
    rollback_reason=st.none() | st.just("trigger"),
    cooldown_until=st.none() | times,
)
hour_lists = st.lists(
    st.builds(
        ReconciledHour,
        hour_start=st.integers(1, 30).map(lambda h: NOW.replace(minute=0) - h * HOUR),
        clean=st.none() | st.booleans(),
    ),
    max_size=30,
)
healths = st.builds(Health, breached=st.booleans(), no_data=st.booleans())


@given(state=states, reconciled=hour_lists, health=healths, real_flags=st.booleans())
def test_never_promotes_when_it_must_not(state, reconciled, health, real_flags):
    flags = flags_at(state.step) if real_flags else FLAG_DEFAULTS
    decision = decide(
        RolloutInputs(state=state, flags=flags, hours=reconciled, health=health), CONFIG, NOW
    )
    must_hold = (
        health.breached
        or health.no_data
        or state.paused
        or state.rollback_in_force
        or state.step == CONFIG.final_step
        or (state.cooldown_until is not None and NOW < state.cooldown_until)
    )
    if must_hold:
        assert decision.action is Action.HOLD
    if decision.action is Action.PROMOTE:
        before, after = {**flags}, {**flags, **decision.flag_changes}
        assert after[PERCENT] >= before[PERCENT]
        assert after[CRITICAL] is True
        assert decision.to_step == decision.from_step + 1
        assert state.step == NOT_STARTED or NOW - state.step_started_at >= CONFIG.min_soak


@given(ticks=st.lists(st.tuples(healths, st.none() | st.booleans()), min_size=1, max_size=60))
def test_percentage_only_rises_one_step_at_a_time(ticks):
    """Drive the machine hour by hour; each hour's reconciliation lands after the lag."""
    state = resume(RolloutState(), FLAG_DEFAULTS, CONFIG, NOW).state
    flags = dict(FLAG_DEFAULTS)
    reconciled: list[ReconciledHour] = []
    ladder = [CONFIG.stage_flags(s)[PERCENT] for s in range(NOT_STARTED, CONFIG.final_step + 1)]
    last_promotion: dt.datetime | None = None
    for i, (health, clean) in enumerate(ticks):
        now = NOW + i * HOUR + dt.timedelta(minutes=45)
        reconciled.append(ReconciledHour(NOW + (i - 1) * HOUR, clean))
        decision = decide(RolloutInputs(state, flags, reconciled, health), CONFIG, now)
        if decision.action is Action.PROMOTE:
            assert not health.breached and not health.no_data
            previous = flags[PERCENT]
            flags.update(decision.flag_changes)
            assert flags[PERCENT] >= previous
            assert ladder.index(flags[PERCENT]) >= ladder.index(previous)
            if last_promotion is not None:
                assert now - last_promotion >= CONFIG.min_soak
            last_promotion = now
            state = decision.next_state
        assert flags == flags_at(state.step)

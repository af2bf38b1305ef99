"""Rollback triggers over delivery_metrics samples: sustained, gaps, baseline, connections."""

from __future__ import annotations

import datetime as dt
import json
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parity.core.errors import ConfigurationError
from parity.core.triggers import (
    CONNECTION_FAILURES,
    ERROR_RATE,
    LATENCY,
    MetricSample,
    TriggerConfig,
    TriggerState,
    evaluate,
)

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
BREACH, OK, NO_DATA = TriggerState.BREACH, TriggerState.OK, TriggerState.NO_DATA
# A short baseline so latency tests need only a few hundred samples.
SHORT_BASELINE = TriggerConfig(baseline_window_s=3600, baseline_min_samples=60)


def sample(
    seconds_before_now: float,
    *,
    producer: str = "p1",
    attempts: int = 100,
    failures: int = 0,
    p95: float | None = 100.0,
    conn: tuple[int, int] = (0, 0),
) -> MetricSample:
    return MetricSample(
        sampled_at=NOW - dt.timedelta(seconds=seconds_before_now),
        producer=producer,
        window_s=10,
        attempts=attempts,
        failures=failures,
        latency_p50_ms=None if p95 is None else p95 / 2,
        latency_p95_ms=p95,
        connection_attempts=conn[0],
        connection_failures=conn[1],
    )


def series(start_s: float, end_s: float = 0, *, skip: frozenset[int] = frozenset(), **kw):
    """One sample per 10 s grid window, from ``start_s`` seconds before NOW down to ``end_s``."""
    return [sample(s, **kw) for s in range(int(end_s), int(start_s), 10) if s not in skip]


def state(samples, name, config=None, now=NOW):
    return evaluate(samples, now, config).result(name)


# --- error rate -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failures", "expected"),
    [(0, OK), (4, OK), (5, OK), (6, BREACH), (100, BREACH)],
    ids=["none", "below", "exactly-at-threshold", "just-above", "all"],
)
def test_error_rate_sustained_for_five_minutes(failures, expected):
    result = state(series(300, failures=failures), ERROR_RATE)
    assert result.state is expected
    assert result.observed == pytest.approx(failures / 100)
    assert result.threshold == 0.05
    assert result.samples == 30
    assert result.window_end - result.window_start == dt.timedelta(seconds=300)


def test_one_healthy_window_means_not_sustained():
    samples = series(300, failures=20, skip=frozenset({150})) + [sample(150, failures=1)]
    result = state(samples, ERROR_RATE)
    assert result.state is OK
    assert result.observed == pytest.approx(0.01)
    assert "29/30" in result.detail


def test_breach_shorter_than_duration_is_momentary():
    samples = series(300, 120, failures=0) + series(120, failures=50)
    assert state(samples, ERROR_RATE).state is OK


def test_old_breach_outside_the_window_is_forgotten():
    samples = series(900, 300, failures=50) + series(300, failures=0)
    assert state(samples, ERROR_RATE).state is OK


@pytest.mark.parametrize(
    ("skip", "expected"),
    [
        (frozenset({150}), BREACH),  # one lost window: a 20 s gap is tolerated
        (frozenset({140, 150}), BREACH),  # 30 s: exactly the max gap
        (frozenset({140, 150, 160}), NO_DATA),  # 40 s hole: not sustained
        (frozenset({0, 10, 20, 30}), NO_DATA),  # stale: nothing in the last 40 s
        (frozenset({290, 280, 270, 260}), NO_DATA),  # the window's start is not covered
        (frozenset(range(10, 300, 20)), NO_DATA),  # 20 s gaps but only half the windows
    ],
    ids=["one-missing", "max-gap", "hole", "stale", "late-start", "sparse"],
)
def test_gaps_and_coverage(skip, expected):
    result = state(series(300, failures=50, skip=skip), ERROR_RATE)
    assert result.state is expected
    if expected is NO_DATA:
        assert result.detail.startswith("not enough data")


def test_gap_with_healthy_data_is_no_data_not_ok():
    # Too little data proves neither a breach nor health.
    assert state(series(300, failures=0, skip=frozenset({140, 150, 160})), ERROR_RATE).state is (
        NO_DATA
    )


def test_zero_attempts_have_no_error_rate():
    idle = series(300, attempts=0, failures=0)
    assert state(idle, ERROR_RATE).state is NO_DATA
    # An idle window inside a breach is a short gap, not a healthy window.
    samples = series(300, failures=50, skip=frozenset({150})) + [sample(150, attempts=0)]
    assert state(samples, ERROR_RATE).state is BREACH


def test_samples_after_now_are_ignored():
    samples = series(300, failures=0) + [sample(-5, failures=100)]
    assert state(samples, ERROR_RATE).observed == 0


def test_producers_are_summed_per_sampling_window():
    # p1 fails 20%, p2 0% with as many attempts: 10% together; sampled a few seconds apart.
    samples = series(300, failures=20, producer="p1") + [
        sample(s + 3, producer="p2", failures=0) for s in range(0, 300, 10)
    ]
    result = state(samples, ERROR_RATE)
    assert result.state is BREACH
    assert result.observed == pytest.approx(0.10)
    assert result.samples == 30
    # A busier healthy producer dilutes the rate below the threshold.
    busy = series(300, failures=20, producer="p1") + series(300, producer="p2", attempts=900)
    assert state(busy, ERROR_RATE).observed == pytest.approx(0.02)


@given(
    rates=st.lists(st.integers(0, 100), min_size=30, max_size=30),
    seed=st.integers(0, 1000),
)
def test_error_rate_breaches_iff_every_window_is_above(rates, seed):
    samples = [sample(i * 10, failures=f) for i, f in enumerate(rates)]
    random.Random(seed).shuffle(samples)
    verdict = evaluate(samples, NOW)
    assert (verdict.result(ERROR_RATE).state is BREACH) == all(f > 5 for f in rates)
    assert verdict.result(ERROR_RATE).observed == pytest.approx(min(rates) / 100)


@given(failures=st.integers(0, 100), split=st.integers(0, 100))
def test_splitting_a_window_across_producers_changes_nothing(failures, split):
    whole = series(300, failures=failures)
    part_failures = min(failures, split)
    parts = series(300, producer="a", attempts=split, failures=part_failures) + series(
        300, producer="b", attempts=100 - split, failures=failures - part_failures, p95=None
    )
    assert state(whole, ERROR_RATE) == state(parts, ERROR_RATE)


# --- latency ----------------------------------------------------------------------------


def with_baseline(p95_recent: float, recent_s: int = 600, baseline_ms: float = 100.0):
    return series(3600 + 600, 600, p95=baseline_ms) + series(recent_s, p95=p95_recent)


@pytest.mark.parametrize(
    ("p95", "expected"),
    [(150.0, OK), (200.0, OK), (200.5, BREACH), (1000.0, BREACH)],
    ids=["below", "exactly-2x", "above", "far-above"],
)
def test_latency_against_twice_the_baseline(p95, expected):
    result = state(with_baseline(p95), LATENCY, SHORT_BASELINE)
    assert result.state is expected
    assert result.threshold == pytest.approx(200.0)
    assert "baseline p95 100 ms (median of 360 windows)" in result.detail


def test_latency_must_be_sustained_for_ten_minutes():
    samples = series(3600 + 600, 600, p95=100.0) + series(600, 300, p95=120) + series(300, p95=900)
    assert state(samples, LATENCY, SHORT_BASELINE).state is OK


def test_latency_is_the_slowest_producer():
    samples = with_baseline(100.0) + series(600, producer="slow", p95=450.0)
    result = state(samples, LATENCY, SHORT_BASELINE)
    assert result.state is BREACH
    assert result.observed == 450.0


@pytest.mark.parametrize(
    "samples",
    [
        [],
        series(600, p95=500.0),  # only the window being judged: it is not its own baseline
        series(600 + 500, p95=100.0),  # 50 windows of history, 60 needed
        series(3600 + 600, 600, p95=None) + series(600, p95=500.0),  # no latency reported
        series(3600 + 600, 600, p95=0.0) + series(600, p95=500.0),  # a zero median
    ],
    ids=["nothing", "no-history", "short-history", "no-latencies", "zero-median"],
)
def test_insufficient_baseline_is_no_data(samples):
    result = state(samples, LATENCY, SHORT_BASELINE)
    assert result.state is NO_DATA
    assert result.detail.startswith("insufficient baseline")
    assert result.threshold is None


def test_default_baseline_is_a_day_of_history():
    day = series(86_400 + 600, 600, p95=100.0)
    assert len(day) == 8640
    assert state(day + series(600, p95=300.0), LATENCY).state is BREACH
    # Without the day's first 23 hours the default 360-window minimum is not met.
    recent = series(3000 + 600, 600, p95=100.0) + series(600, p95=300.0)
    assert state(recent, LATENCY).state is NO_DATA


def test_fixed_baseline():
    config = TriggerConfig(latency_baseline_ms=500.0)
    assert state(series(600, p95=1001.0), LATENCY, config).state is BREACH
    assert state(series(600, p95=1000.0), LATENCY, config).state is OK


def test_latency_gap_is_no_data():
    samples = with_baseline(500.0) + []
    holey = [s for s in samples if not 200 <= (NOW - s.sampled_at).total_seconds() <= 240]
    assert state(holey, LATENCY, SHORT_BASELINE).state is NO_DATA


# --- consecutive connection failures ----------------------------------------------------


@pytest.mark.parametrize(
    ("windows", "expected", "longest"),
    [
        ([(1, 1), (1, 1), (1, 1)], BREACH, 3),
        ([(3, 3)], BREACH, 3),
        ([(1, 1), (1, 1)], OK, 2),
        ([(1, 1), (1, 1), (2, 1), (1, 1)], OK, 2),  # a success in between resets
        ([(2, 2), (1, 0), (1, 1)], OK, 2),
        ([(1, 1), (0, 0), (1, 1), (1, 1)], BREACH, 3),  # no attempts: no reset
        ([(5, 0), (5, 0), (5, 0)], OK, 0),
        ([(0, 0)] * 5, OK, 0),
    ],
    ids=[
        "three-in-a-row",
        "three-in-one-window",
        "two",
        "interrupted-by-success",
        "mixed-window-resets",
        "idle-window-keeps-run",
        "all-succeed",
        "no-attempts",
    ],
)
def test_consecutive_connection_failures(windows, expected, longest):
    samples = [sample(10 * (len(windows) - 1 - i), conn=c) for i, c in enumerate(windows)]
    result = state(samples, CONNECTION_FAILURES)
    assert result.state is expected
    assert result.observed == longest
    assert result.threshold == 3


def test_failures_spread_over_more_than_a_minute_do_not_add_up():
    samples = [sample(s, conn=(1, 1)) for s in (70, 35, 0)]
    result = state(samples, CONNECTION_FAILURES)
    assert result.state is OK
    assert result.observed == 2
    # The same three failures within a minute breach.
    assert state([sample(s, conn=(1, 1)) for s in (55, 35, 0)], CONNECTION_FAILURES).state is (
        BREACH
    )


def test_connection_failures_breach_even_when_metrics_then_stop():
    samples = [sample(s, conn=(1, 1)) for s in (55, 50, 45)]
    assert state(samples, CONNECTION_FAILURES).state is BREACH


@pytest.mark.parametrize("samples", [[], [sample(45, conn=(1, 0))]], ids=["nothing", "stale"])
def test_connection_no_data(samples):
    assert state(samples, CONNECTION_FAILURES).state is NO_DATA


# --- verdict ----------------------------------------------------------------------------


def test_no_samples_is_no_data_everywhere():
    verdict = evaluate([], NOW)
    assert [r.state for r in verdict.results] == [NO_DATA] * 3
    assert verdict.no_data and not verdict.breached


def test_healthy_verdict_and_evidence_round_trips_as_json():
    samples = with_baseline(110.0) + series(60, conn=(1, 0))
    verdict = evaluate(samples, NOW, SHORT_BASELINE)
    assert not verdict.breached and not verdict.no_data
    evidence = json.loads(json.dumps(verdict.evidence()))
    assert evidence["evaluated_at"] == NOW.isoformat()
    assert [t["state"] for t in evidence["triggers"]] == ["OK", "OK", "OK"]
    assert evidence["config"]["error_rate_threshold"] == 0.05


def test_breached_verdict_names_the_trigger():
    verdict = evaluate(series(300, failures=50), NOW)
    assert verdict.breached
    assert [r.name for r in verdict.breaches] == [ERROR_RATE]
    assert verdict.summary().startswith("error_rate breached: above 0.05")
    assert verdict.evidence()["breached"] is True


def test_now_must_be_timezone_aware():
    with pytest.raises(ValueError, match="timezone-aware"):
        evaluate([], NOW.replace(tzinfo=None))


def test_non_utc_now_is_normalised():
    samples = series(300, failures=50)
    other = NOW.astimezone(dt.timezone(dt.timedelta(hours=2)))
    assert evaluate(samples, other).result(ERROR_RATE).state is BREACH


# --- inputs and configuration -----------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sampled_at": NOW.replace(tzinfo=None)},
        {"failures": 101},
        {"attempts": -1},
        {"connection_attempts": 1, "connection_failures": 2},
    ],
)
def test_invalid_sample_is_rejected(kwargs):
    row = {
        "sampled_at": NOW,
        "producer": "p",
        "window_s": 10,
        "attempts": 100,
        "failures": 0,
    } | kwargs
    with pytest.raises(ValueError):
        MetricSample(**row)


def test_sample_from_row():
    row = {
        "id": 7,
        "sampled_at": NOW,
        "producer": "p",
        "window_s": 10,
        "attempts": 3,
        "failures": 1,
        "latency_p50_ms": 12,
        "latency_p95_ms": None,
        "connection_attempts": None,
        "connection_failures": 0,
    }
    s = MetricSample.from_row(row)
    assert (s.latency_p50_ms, s.latency_p95_ms, s.connection_attempts) == (12.0, None, 0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"error_rate_threshold": 5},
        {"error_rate_duration_s": 0},
        {"min_coverage": 0},
        {"max_gap_s": 5},
        {"connection_failures": 0},
        {"latency_baseline_ms": 0},
    ],
)
def test_invalid_config_is_rejected(kwargs):
    with pytest.raises(ConfigurationError):
        TriggerConfig(**kwargs)


def test_config_from_the_plans_rollback_triggers():
    plan = {
        "error_rate": {"threshold": 0.05, "duration": 300},
        "latency": {"threshold": 2.0, "duration": 600},
        "connection_failures": {"threshold": 3, "duration": 60},
    }
    assert TriggerConfig.from_plan(plan) == TriggerConfig()
    custom = TriggerConfig.from_plan({"error_rate": {"threshold": 0.1}}, max_gap_s=60)
    assert (custom.error_rate_threshold, custom.max_gap_s) == (0.1, 60)
    with pytest.raises(ConfigurationError, match="unknown"):
        TriggerConfig.from_plan({"cpu": {"threshold": 1}})


def test_min_samples():
    config = TriggerConfig()
    assert config.min_samples(300) == 24
    assert config.min_samples(600) == 48


def test_samples_off_the_grid_and_now_between_grid_points():
    # Producers sample at :03 and :07 past each 10 s; judged at 12:00:05.
    now = NOW + dt.timedelta(seconds=5)
    samples = [
        sample(s - 3, producer=p, failures=10) for s in range(0, 300, 10) for p in ("a", "b")
    ] + [sample(s - 7, producer="c", failures=10) for s in range(0, 300, 10)]
    result = state(samples, ERROR_RATE, now=now)
    assert result.state is BREACH
    assert result.window_end == now
    assert result.samples == 30

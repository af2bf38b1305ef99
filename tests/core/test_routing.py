"""The cohort (contract §5): buckets, flag defaults, the flag timeline and the routing rule."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parity.core.errors import FlagError
from parity.core.routing import (
    CRITICAL_EVENTS_SUPABASE,
    DASHBOARD_FALLBACK_MODE,
    DUAL_WRITE_ENABLED,
    FLAG_DEFAULTS,
    SUPABASE_ROLLOUT_PERCENTAGE,
    FlagChange,
    FlagTimeline,
    expected_in_supabase,
    stream_bucket,
    stream_buckets,
    stream_part,
)

T0 = dt.datetime(2026, 11, 28, 10, tzinfo=dt.UTC)
MIN = dt.timedelta(minutes=1)
UTC_US = pa.timestamp("us", tz="UTC")


def test_flag_defaults_are_the_migration_plans():
    assert FLAG_DEFAULTS == {
        "MONITORING_CRITICAL_EVENTS_SUPABASE": False,
        "MONITORING_SUPABASE_ROLLOUT_PERCENTAGE": 0,
        "MONITORING_DUAL_WRITE_ENABLED": True,
        "MONITORING_DATA_VALIDATION_ENABLED": True,
        "MONITORING_DASHBOARD_SUPABASE_ENABLED": False,
        "MONITORING_DASHBOARD_DUAL_MODE": False,
        "MONITORING_DASHBOARD_REALTIME_UPDATES": False,
        "MONITORING_DASHBOARD_FALLBACK_MODE": True,
    }


@pytest.mark.parametrize(
    ("stream", "bucket"),
    # Pinned from `printf %s health | sha256sum`: 0x... % 100.
    [("health", 62), ("errors", 71), ("session-1", 96), ("é", 78)],
)
def test_stream_bucket_is_the_sha256_prefix_mod_100(stream: str, bucket: int):
    assert stream_bucket(stream) == bucket


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=20), max_size=40))
def test_vectorised_buckets_equal_the_scalar_ones(streams: list[str]):
    column = pa.chunked_array(
        [pa.array(streams[:5], pa.string()), pa.array(streams[5:], pa.string())]
    )
    assert stream_buckets(column).tolist() == [stream_bucket(s) for s in streams]


def test_stream_parts_keep_whole_streams_together():
    streams = pa.array([f"s{i % 13}" for i in range(200)])
    part = stream_part(streams, 4)
    assert set(part.tolist()) <= {0, 1, 2, 3}
    names = streams.to_pylist()
    for name in set(names):
        assert len({p for n, p in zip(names, part.tolist(), strict=True) if n == name}) == 1
    with pytest.raises(ValueError):
        stream_part(streams, 101)


def audit() -> FlagTimeline:
    return FlagTimeline.from_audit(
        [
            {"flag": SUPABASE_ROLLOUT_PERCENTAGE, "new_value": 10, "changed_at": T0},
            (SUPABASE_ROLLOUT_PERCENTAGE, 25, T0 + 10 * MIN),
            (SUPABASE_ROLLOUT_PERCENTAGE, 50, T0 + 10 * MIN),  # same instant: the later row wins
            (CRITICAL_EVENTS_SUPABASE, "true", T0 + 5 * MIN),  # imported history, as text
            (DUAL_WRITE_ENABLED, False, T0 + 20 * MIN),
        ]
    )


@pytest.mark.parametrize(
    ("flag", "at", "value"),
    [
        (SUPABASE_ROLLOUT_PERCENTAGE, T0 - MIN, 0),  # before any change: the default
        (SUPABASE_ROLLOUT_PERCENTAGE, T0, 10),  # a change applies at its instant
        (SUPABASE_ROLLOUT_PERCENTAGE, T0 + 10 * MIN - dt.timedelta(microseconds=1), 10),
        (SUPABASE_ROLLOUT_PERCENTAGE, T0 + 10 * MIN, 50),
        (CRITICAL_EVENTS_SUPABASE, T0 + 4 * MIN, False),
        (CRITICAL_EVENTS_SUPABASE, T0 + 5 * MIN, True),
        (DUAL_WRITE_ENABLED, T0, True),
        (DUAL_WRITE_ENABLED, T0 + 30 * MIN, False),
        (DASHBOARD_FALLBACK_MODE, T0, True),  # never changed
    ],
)
def test_value_at_is_the_latest_change_at_or_before(flag: str, at: dt.datetime, value):
    got = audit().value_at(flag, at)
    assert got == value and type(got) is type(value)


def test_value_at_accepts_any_offset():
    tz = dt.timezone(dt.timedelta(hours=2))
    assert audit().value_at(SUPABASE_ROLLOUT_PERCENTAGE, (T0 + 10 * MIN).astimezone(tz)) == 50


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(-30 * 60, 30 * 60), max_size=30))
def test_values_at_equals_value_at(offsets_s: list[int]):
    timeline = audit()
    instants = [T0 + dt.timedelta(seconds=s) for s in offsets_s]
    column = pa.array(instants, UTC_US)
    for flag in (SUPABASE_ROLLOUT_PERCENTAGE, CRITICAL_EVENTS_SUPABASE, DASHBOARD_FALLBACK_MODE):
        vector = timeline.values_at(flag, column)
        assert vector.tolist() == [timeline.value_at(flag, t) for t in instants]


def test_values_at_converts_other_units():
    column = pa.array([T0 + 10 * MIN], pa.timestamp("ms", tz="UTC"))
    assert audit().values_at(SUPABASE_ROLLOUT_PERCENTAGE, column).tolist() == [50]


@pytest.mark.parametrize(
    "change",
    [
        FlagChange(SUPABASE_ROLLOUT_PERCENTAGE, 101, T0),
        FlagChange(SUPABASE_ROLLOUT_PERCENTAGE, True, T0),
        FlagChange(CRITICAL_EVENTS_SUPABASE, 1, T0),
        FlagChange(CRITICAL_EVENTS_SUPABASE, "maybe", T0),
        FlagChange(CRITICAL_EVENTS_SUPABASE, True, T0.replace(tzinfo=None)),
    ],
)
def test_invalid_history_is_refused(change: FlagChange):
    with pytest.raises(FlagError):
        FlagTimeline((change,))


def test_unknown_flag_is_an_error():
    with pytest.raises(FlagError, match="unknown flag"):
        FlagTimeline().value_at("MONITORING_NOPE", T0)


def events(rows: list[tuple[str, str, dt.datetime]]) -> pa.Table:
    stream, category, emitted = zip(*rows, strict=True)
    return pa.table({
        "stream": pa.array(stream), "category": pa.array(category),
        "emitted_at": pa.array(emitted, UTC_US),
    })  # fmt: skip


def test_nothing_is_expected_under_the_defaults():
    table = events([("health", "CRITICAL", T0), ("errors", "INFORMATIONAL", T0)])
    assert expected_in_supabase(table, FlagTimeline()).to_pylist() == [False, False]


def test_critical_flag_routes_critical_events_only():
    timeline = FlagTimeline.constant({CRITICAL_EVENTS_SUPABASE: True})
    table = events([("health", "CRITICAL", T0), ("health", "LEGACY", T0)])
    assert expected_in_supabase(table, timeline).to_pylist() == [True, False]


def test_rollout_uses_the_stream_bucket_and_each_events_emitted_at():
    # "health" is bucket 62, "errors" 71; 70% takes health only, 72% both.
    timeline = FlagTimeline(
        (
            FlagChange(SUPABASE_ROLLOUT_PERCENTAGE, 70, T0),
            FlagChange(SUPABASE_ROLLOUT_PERCENTAGE, 72, T0 + 30 * MIN),
        )
    )
    table = events(
        [
            ("health", "INFORMATIONAL", T0 - MIN),
            ("health", "INFORMATIONAL", T0),
            ("errors", "INFORMATIONAL", T0 + 29 * MIN),
            ("errors", "INFORMATIONAL", T0 + 30 * MIN),
        ]
    )
    assert expected_in_supabase(table, timeline).to_pylist() == [False, True, False, True]


def test_bucket_equal_to_percentage_is_outside():
    timeline = FlagTimeline.constant({SUPABASE_ROLLOUT_PERCENTAGE: 62})
    assert expected_in_supabase(events([("health", "LEGACY", T0)]), timeline).to_pylist() == [False]


def test_empty_events():
    table = events([("x", "LEGACY", T0)]).slice(0, 0)
    assert len(expected_in_supabase(table, FlagTimeline())) == 0
    assert stream_buckets(pa.array([], pa.string())).dtype == np.int16

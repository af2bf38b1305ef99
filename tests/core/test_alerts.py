"""Alert decisions: one alert per change of state, none for the same state seen again."""

from __future__ import annotations

import datetime as dt

from parity.core import alerts
from parity.core.alerts import CheckOutcome, Level, RunOutcome, run_changes
from parity.core.knobs import AlertPolicy
from parity.core.samples import MetricSample
from parity.core.triggers import TriggerConfig

H1, H2 = "2026-11-28-10:00", "2026-11-28-11:00"
NOW = dt.datetime(2026, 11, 28, 12, tzinfo=dt.UTC)
POLICY = AlertPolicy()


def outcome(hour, check, passed, severity="ERROR", run="r1", trigger=None):  # noqa: ANN001, ANN201
    return CheckOutcome(hour, check, passed, severity, run, trigger)


def test_an_hour_goes_red_once_and_green_again_once():
    red, found = alerts.hour_changes(
        {}, [outcome(H1, "a", False), outcome(H1, "b", True), outcome(H2, "a", True)], POLICY
    )
    assert red == {H1: ("a",)}
    assert [(a.kind, a.details["partition"]) for a in found] == [("hour_red", H1)]
    assert found[0].level is Level.FAILURE and "a" in found[0].body
    # The same failure seen again (another run, still red): no new alert.
    red, found = alerts.hour_changes(red, [outcome(H1, "a", False, run="r2")], POLICY)
    assert red == {H1: ("a",)} and found == []
    # The repair's reconciliation passes: green again, after repair.
    red, found = alerts.hour_changes(
        red, [outcome(H1, "a", True, run="r3", trigger="backfill")], POLICY
    )
    assert red == {}
    [green] = found
    assert green.kind == "hour_green" and "after repair" in green.title
    assert green.level is Level.SUCCESS
    # Green seen again: nothing.
    assert alerts.hour_changes(red, [outcome(H1, "a", True, run="r4")], POLICY) == ({}, [])


def test_red_then_green_within_one_tick_alerts_both():
    _, found = alerts.hour_changes(
        {}, [outcome(H1, "a", False, run="r1"), outcome(H1, "a", True, run="r2")], POLICY
    )
    assert [a.kind for a in found] == ["hour_red", "hour_green"]


def test_warn_failures_alert_only_when_configured():
    warn = [outcome(H1, "latency", False, severity="WARN")]
    assert alerts.hour_changes({}, warn, AlertPolicy(on_warn=False)) == ({}, [])
    red, found = alerts.hour_changes({}, warn, AlertPolicy(on_warn=True))
    assert red == {H1: ("latency",)} and [a.kind for a in found] == ["hour_red"]


def test_an_hour_stays_red_while_any_check_fails():
    red, _ = alerts.hour_changes({}, [outcome(H1, "a", False), outcome(H1, "b", False)], POLICY)
    red, found = alerts.hour_changes(red, [outcome(H1, "a", True, run="r2")], POLICY)
    assert red == {H1: ("b",)} and found == []


def test_producer_silence_and_return():
    policy = AlertPolicy(producer_silence=dt.timedelta(minutes=5))
    seen = {
        "api": NOW - dt.timedelta(minutes=6),  # silent, reported within the hour
        "web": NOW - dt.timedelta(seconds=20),  # fine
        "old": NOW - dt.timedelta(hours=3),  # gone before the last hour: not news
    }
    silent, found = alerts.producer_changes({}, seen, NOW, policy)
    assert set(silent) == {"api"}
    [alert] = found
    assert alert.kind == "producer_silent" and alert.details["producer"] == "api"
    # Next tick, still silent: nothing new.
    later = NOW + dt.timedelta(minutes=1)
    assert alerts.producer_changes(silent, seen, later, policy) == (silent, [])
    # It reports again.
    back = {**seen, "api": later}
    silent, found = alerts.producer_changes(silent, back, later, policy)
    assert silent == {} and [a.kind for a in found] == ["producer_back"]


def samples(
    start: dt.datetime, count: int, *, failures: int = 0, conn_ok: bool = True
) -> list[MetricSample]:
    return [
        MetricSample(
            sampled_at=start + dt.timedelta(seconds=10 * (i + 1)),
            producer="api",
            window_s=10,
            attempts=1000,
            failures=failures,
            connection_attempts=1,
            connection_failures=0 if conn_ok else 1,
        )
        for i in range(count)
    ]


def test_the_plans_error_rate_alerts_when_sustained_and_clears_once():
    policy = AlertPolicy(error_rate=0.001, window=dt.timedelta(minutes=5))
    config = TriggerConfig()
    bad = samples(NOW - dt.timedelta(minutes=6), 36, failures=2)  # 0.2% for 6 minutes
    active, found = alerts.threshold_changes({}, bad, NOW, policy, config)
    assert set(active) == {alerts.ERROR_RATE}
    assert [a.kind for a in found] == ["error_rate_high"]
    assert alerts.threshold_changes(active, bad, NOW, policy, config) == (active, [])
    good = samples(NOW - dt.timedelta(minutes=6), 36, failures=1)  # 0.1%: not above
    active, found = alerts.threshold_changes(active, good, NOW, policy, config)
    assert active == {} and [a.kind for a in found] == ["error_rate_ok"]


def test_a_short_error_burst_does_not_alert():
    policy = AlertPolicy(error_rate=0.001, window=dt.timedelta(minutes=5))
    burst = [
        *samples(NOW - dt.timedelta(minutes=6), 30, failures=0),
        *samples(NOW - dt.timedelta(minutes=1), 6, failures=50),
    ]
    assert alerts.threshold_changes({}, burst, NOW, policy, TriggerConfig()) == ({}, [])


def test_no_data_keeps_the_state():
    active = {alerts.ERROR_RATE: NOW.isoformat()}
    policy = AlertPolicy()
    assert alerts.threshold_changes(active, [], NOW, policy, TriggerConfig()) == (active, [])


def test_slow_connection_recovery_alerts():
    start = NOW - dt.timedelta(minutes=5)
    down = samples(start, 6, conn_ok=False)  # 60 s of failed connections
    up = samples(start + dt.timedelta(seconds=60), 24, conn_ok=True)
    assert alerts.slowest_recovery([*down, *up], start, NOW, 10) == 70
    policy = AlertPolicy(recovery_s=30, window=dt.timedelta(minutes=5))
    active, found = alerts.threshold_changes({}, [*down, *up], NOW, policy, TriggerConfig())
    assert alerts.CONNECTION_RECOVERY in active
    assert any(a.kind == "connection_recovery_high" for a in found)
    quick = samples(start, 1, conn_ok=False) + samples(start + dt.timedelta(seconds=10), 29)
    assert alerts.slowest_recovery(quick, start, NOW, 10) == 20
    # An outage still going on counts until now.
    ongoing = samples(NOW - dt.timedelta(seconds=50), 5, conn_ok=False)
    assert alerts.slowest_recovery(ongoing, start, NOW, 10) == 50
    assert alerts.slowest_recovery([], start, NOW, 10) is None


def test_rollback_alerts_say_whether_flags_changed():
    kw = dict(reason="latency", changes={"X": 0}, flags={"X": 0}, evidence={}, run_id="r")
    real = alerts.rollback_alert(**kw)
    dry = alerts.rollback_alert(**kw, dry_run=True)
    assert real.payload()["event"] == "parity.rollback" and real.payload()["reason"] == "latency"
    assert dry.payload()["event"] == "parity.would_roll_back" and dry.payload()["dry_run"]
    assert "WOULD" in dry.title and "X -> 0" in dry.body


def test_a_job_alerts_when_it_starts_failing_and_when_it_recovers_per_partition() -> None:
    def run(n: int, ok: bool, partition: str | None = "h1", job: str = "j") -> RunOutcome:
        return RunOutcome(job, partition, f"r{n}", ok, "" if ok else "boom")

    failing, found = run_changes({}, [run(1, False), run(2, False), run(3, False, "h2")])
    assert [a.title for a in found] == [
        "Parity run failed: j for h1",
        "Parity run failed: j for h2",
    ]
    assert failing == {"j@h1": "r1", "j@h2": "r3"} and found[0].body == "boom"
    failing, found = run_changes(failing, [run(4, True), run(5, True), run(6, True, None)])
    assert [(a.kind, a.title) for a in found] == [
        ("run_recovered", "Parity run succeeded again: j for h1")
    ]
    assert found[0].details["failing_since_run_id"] == "r1"
    assert failing == {"j@h2": "r3"}
    assert run_changes(failing, [run(7, False, "h2")]) == (failing, [])

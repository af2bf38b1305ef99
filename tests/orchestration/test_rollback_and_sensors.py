"""Rollback job, rollback sensors and the canary sensor, on the embedded PostgreSQL."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import socket
import threading
from collections.abc import Iterator

import dagster as dg
import psycopg
import pytest
from psycopg import sql

from assets.resources import ParityResource
from orchestration.definitions import build_definitions
from orchestration.rollout import (
    CANARY_PROMOTION,
    PROMOTE_ROLLOUT_JOB,
    ROLLBACK_JOB,
    ROLLBACK_ON_CHECK_FAILURE,
    ROLLBACK_ON_HEALTH_TRIGGERS,
    CheckCursor,
)
from parity.core import rollout
from parity.io import control, control_pg
from parity.io.control_pg import PostgresControlPlane
from parity.io.reports import write_report
from tests.orchestration.conftest import World

pytestmark = pytest.mark.integration


def resource(world: World) -> ParityResource:
    return ParityResource(
        home=str(world.home), database_url=world.url, events_table=str(world.table)
    )


def current(world: World) -> dict:
    with world.store().connection() as conn:
        return control_pg.read_flags(conn, world.table.schema)


def audit(world: World) -> list[control_pg.AuditRow]:
    with world.store().connection() as conn:
        return control_pg.history(conn, world.table.schema)


def set_values(world: World, values: dict, when: dt.datetime | None = None) -> None:
    with world.store().connection() as conn:
        control_pg.set_flags(
            conn, world.table.schema, values, actor="test", reason="setup", now=when
        )


def run_rollback(world_env: World, reason: str = "test") -> dg.ExecuteInProcessResult:
    job = build_definitions().resolve_job_def(ROLLBACK_JOB)
    return job.execute_in_process(
        run_config={
            "ops": {
                "apply_rollback": {
                    "config": {
                        "reason": reason,
                        "evidence_json": json.dumps({"trigger": "test", "observed": 0.2}),
                        "partitions": ["2026-11-28-10:00"],
                    }
                }
            }
        },
        raise_on_error=False,
    )


# -- rollback job ---------------------------------------------------------------------


def test_rollback_sets_the_plan_audited_and_read_back(world_env: World):
    set_values(
        world_env,
        {
            "MONITORING_CRITICAL_EVENTS_SUPABASE": True,
            "MONITORING_SUPABASE_ROLLOUT_PERCENTAGE": 50,
            "MONITORING_DASHBOARD_SUPABASE_ENABLED": True,
            "MONITORING_DASHBOARD_FALLBACK_MODE": False,
        },
    )
    before = len(audit(world_env))
    result = run_rollback(world_env, "error rate above 5%")
    assert result.success
    values = current(world_env)
    assert {k: values[k] for k in rollout.rollback_plan()} == rollout.rollback_plan()
    rows = audit(world_env)[before:]
    changed = {r.flag: (r.old_value, r.new_value) for r in rows}
    assert changed.pop(control_pg.ROLLOUT_STATE_FLAG)[1]["rollback_reason"] == "error rate above 5%"
    assert changed == {
        "MONITORING_CRITICAL_EVENTS_SUPABASE": (True, False),
        "MONITORING_SUPABASE_ROLLOUT_PERCENTAGE": (50, 0),
        "MONITORING_DASHBOARD_SUPABASE_ENABLED": (True, False),
        "MONITORING_DASHBOARD_FALLBACK_MODE": (False, True),
    }  # dual write was already on: not rewritten, not audited
    for r in rows:
        assert r.actor == "parity:rollback_job" and r.reason == "error rate above 5%"
        assert r.evidence["trigger"] == "test" and r.evidence["partitions"] == ["2026-11-28-10:00"]
        assert r.evidence["run_id"] == result.run_id
    [observation] = [e for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"]
    assert observation.asset_key == dg.AssetKey("feature_flags")
    with world_env.store().connection() as conn:
        assert control_pg.read_state(conn, world_env.table.schema).rollback_in_force


def test_rollback_twice_or_at_once_is_one_change(world_env: World):
    set_values(world_env, {"MONITORING_SUPABASE_ROLLOUT_PERCENTAGE": 10})
    before = len(audit(world_env))
    results: list[dg.ExecuteInProcessResult] = []
    threads = [
        threading.Thread(target=lambda: results.append(run_rollback(world_env))) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.success for r in results)
    assert run_rollback(world_env).success  # a third, later: still nothing to change
    rows = audit(world_env)[before:]
    assert sorted(r.flag for r in rows) == sorted(
        ["MONITORING_SUPABASE_ROLLOUT_PERCENTAGE", control_pg.ROLLOUT_STATE_FLAG]
    )


class _Hook(http.server.BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["content-length"]))
        _Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[str]:
    _Hook.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


def test_rollback_posts_to_the_webhook(world_env: World, webhook: str, monkeypatch):
    monkeypatch.setenv("PARITY_ALERT_WEBHOOK_URL", webhook)
    set_values(world_env, {"MONITORING_SUPABASE_ROLLOUT_PERCENTAGE": 10})
    assert run_rollback(world_env, "latency").success
    [payload] = _Hook.received
    assert payload["event"] == "parity.rollback" and payload["reason"] == "latency"
    assert payload["changes"]["MONITORING_SUPABASE_ROLLOUT_PERCENTAGE"] == 0


def test_a_dead_webhook_does_not_fail_the_rollback(world_env: World, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens
    monkeypatch.setenv("PARITY_ALERT_WEBHOOK_URL", f"http://127.0.0.1:{port}/hook")
    monkeypatch.setattr("parity.io.notify.time.sleep", lambda s: None)
    set_values(world_env, {"MONITORING_SUPABASE_ROLLOUT_PERCENTAGE": 10})
    assert run_rollback(world_env).success
    assert current(world_env)["MONITORING_SUPABASE_ROLLOUT_PERCENTAGE"] == 0


# -- rollback_on_check_failure --------------------------------------------------------


def report_check(
    instance: dg.DagsterInstance,
    name: str,
    passed: bool,
    severity=dg.AssetCheckSeverity.ERROR,
    asset="event_reconciliation",
) -> None:
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey(asset),
            check_name=name,
            passed=passed,
            severity=severity,
            partition="2026-11-28-10:00",
            metadata={"observed_value": 0.9, "threshold": 0.999},
        )
    )


def evaluate(sensor: dg.SensorDefinition, instance, cursor=None, resources=None):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
    return sensor.evaluate_tick(context)


def test_check_failure_sensor_fires_once_per_error_failure(world_env: World):
    sensor = build_definitions().resolve_sensor_def(ROLLBACK_ON_CHECK_FAILURE)
    with dg.instance_for_test() as instance:
        report_check(instance, "latency_p95_within_slo", False, dg.AssetCheckSeverity.WARN)
        report_check(instance, "delivery_rate_meets_slo", True)
        report_check(instance, "some_other_teams_check", False)  # not watched: ignored
        first = evaluate(sensor, instance)
        assert not first.run_requests  # WARN, passing and foreign results: no rollback

        report_check(instance, "no_critical_events_lost", False)
        second = evaluate(sensor, instance, first.cursor)
        [request] = second.run_requests
        config = request.run_config["ops"]["apply_rollback"]["config"]
        assert "no_critical_events_lost" in config["reason"]
        assert config["partitions"] == ["2026-11-28-10:00"]
        evidence = json.loads(config["evidence_json"])
        assert evidence["failures"][0]["observed"] == {"observed_value": 0.9, "threshold": 0.999}

        third = evaluate(sensor, instance, second.cursor)
        assert not third.run_requests  # never twice for one result
        # A result that was still running at the last tick shows up now: handled.
        report_check(instance, "no_checksum_mismatches", False)
        fourth = evaluate(sensor, instance, third.cursor)
        assert len(fourth.run_requests) == 1
        assert fourth.run_requests[0].run_key != request.run_key


class _Record:
    def __init__(self, id_: int, status: str, run_id: str, created: float):
        self.id, self.run_id, self.create_timestamp = id_, run_id, created
        self.status = type("S", (), {"value": status})()


class _History:
    """Stands in for Dagster's event-log storage: real instances cannot be made to hold a
    check execution that stays PLANNED while a newer one has FAILED, the case under test."""

    def __init__(self) -> None:
        self.records: list[_Record] = []
        self.finished_runs: set[str] = set()

    def get_asset_check_execution_history(self, key, limit):
        return sorted(self.records, key=lambda r: -r.id)[:limit]


class _Instance:
    def __init__(self, history: _History) -> None:
        self.event_log_storage = history

    def get_run_by_id(self, run_id):
        finished = run_id in self.event_log_storage.finished_runs
        return type("Run", (), {"is_finished": finished})()


def test_a_result_still_running_at_one_tick_is_handled_at_the_next():
    from orchestration.rollout import scan_check_results

    key = dg.AssetCheckKey(dg.AssetKey("event_reconciliation"), "no_critical_events_lost")
    history = _History()
    instance = _Instance(history)
    now = 1_000_000.0
    history.records = [_Record(10, "PLANNED", "run-a", now), _Record(11, "FAILED", "run-b", now)]
    fresh, cursor = scan_check_results(instance, [key], CheckCursor.parse(None), now)
    assert [r.id for r in fresh] == [11]  # 10 is still running: not skipped, not handled
    cursor = CheckCursor.parse(cursor.serialize())
    assert cursor.pending[_key(key)] == (10,)

    history.records[0] = _Record(10, "FAILED", "run-a", now)  # run-a's check finished
    fresh, cursor = scan_check_results(instance, [key], cursor, now + 15)
    assert [r.id for r in fresh] == [10]
    fresh, _ = scan_check_results(instance, [key], cursor, now + 30)
    assert fresh == []  # never twice


def test_first_tick_ignores_old_history():
    from orchestration.rollout import scan_check_results

    key = dg.AssetCheckKey(dg.AssetKey("event_reconciliation"), "no_critical_events_lost")
    history = _History()
    now = 10_000_000.0
    history.records = [_Record(1, "FAILED", "r", now - 3 * 86_400), _Record(2, "FAILED", "r", now)]
    fresh, _ = scan_check_results(_Instance(history), [key], CheckCursor.parse(None), now)
    assert [r.id for r in fresh] == [2]


def _key(key: dg.AssetCheckKey) -> str:
    return f"{key.asset_key.to_user_string()}:{key.name}"


# -- rollback_on_health_triggers ------------------------------------------------------


def insert_samples(
    world: World, now: dt.datetime, minutes: int, failures: int, attempts: int = 100
) -> None:
    ident = sql.Identifier(world.table.schema, "delivery_metrics")
    with psycopg.connect(world.url, autocommit=True) as conn:
        for i in range(minutes * 6):
            at = now - dt.timedelta(seconds=10 * i)
            conn.execute(
                sql.SQL(
                    "insert into {} (sampled_at, producer, window_s, attempts, failures, "
                    "latency_p50_ms, latency_p95_ms) values (%s, 'p1', 10, %s, %s, 20, 40)"
                ).format(ident),
                (at, attempts, failures),
            )


def test_health_sensor_rolls_back_on_a_sustained_breach_only(world_env: World, monkeypatch):
    sensor = build_definitions().resolve_sensor_def(ROLLBACK_ON_HEALTH_TRIGGERS)
    res = {"parity": resource(world_env)}
    now = dt.datetime.now(dt.UTC)
    with dg.instance_for_test() as instance:
        no_data = evaluate(sensor, instance, resources=res)
        assert not no_data.run_requests  # no samples: NO_DATA never rolls back

        insert_samples(world_env, now, minutes=6, failures=2)  # 2%: healthy
        assert not evaluate(sensor, instance, resources=res).run_requests

        ident = sql.Identifier(world_env.table.schema, "delivery_metrics")
        with psycopg.connect(world_env.url, autocommit=True) as conn:
            conn.execute(sql.SQL("update {} set failures = 9").format(ident))  # 9% sustained
        [request] = evaluate(sensor, instance, resources=res).run_requests
        config = request.run_config["ops"]["apply_rollback"]["config"]
        assert config["reason"] == "health trigger breached: error_rate"
        evidence = json.loads(config["evidence_json"])
        assert evidence["trigger"] == "health"

        set_values(world_env, {"MONITORING_SUPABASE_ROLLOUT_PERCENTAGE": 10})
        plane = PostgresControlPlane(world_env.url, world_env.table.schema)
        control.apply_rollback(plane, actor="t", reason="r", evidence={}, now=now)
        skipped = evaluate(sensor, instance, resources=res)
        assert not skipped.run_requests and "already in force" in skipped.skip_message

        # A person resumes; the breach goes on (or comes back) within the same minute: that
        # is a new episode, so a new rollback, not a duplicate of the first one's run key.
        state, values = control.read_state(plane), plane.read_flags()
        resumed = rollout.resume(state, values, rollout.RolloutConfig(), now)
        control.apply_transition(
            plane,
            expected_state=state,
            expected_flags=values,
            flag_changes=dict(resumed.flag_changes),
            next_state=resumed.state,
            actor="t",
            reason="fixed",
            evidence={},
            now=now,
        )
        [again] = evaluate(sensor, instance, resources=res).run_requests
        assert again.run_key != request.run_key


# -- canary_promotion -----------------------------------------------------------------


def write_clean_reports(world: World, hours: list[dt.datetime]) -> None:
    from parity.core import partitions
    from parity.core import report as reports

    for hour in hours:
        doc = {key: 0 for key in reports.REPORT_KEYS}
        doc.update(
            partition=partitions.format_key(hour),
            sequence_gaps_ws=[],
            missing_keys=[],
            latency_ms={"p50": 1, "p95": 2, "p99": 3, "max": 4},
            delivery_rate=1.0,
            window_start="",
            window_end="",
            by_category={},
        )
        write_report(world.settings.layout, doc)


def test_canary_holds_while_paused_and_promotes_when_green(world_env: World):
    loaded = build_definitions()
    sensor = loaded.resolve_sensor_def(CANARY_PROMOTION)
    res = {"parity": resource(world_env)}
    now = dt.datetime.now(dt.UTC)
    with dg.instance_for_test() as instance:
        held = evaluate(sensor, instance, resources=res)
        assert not held.run_requests and "paused" in held.skip_message  # new rollouts wait

        # A person resumed the rollout at stage 0 (critical first) five hours ago: at any
        # minute of the hour, at least 3 whole hours since are past the reconcile lag.
        start = now - dt.timedelta(hours=5)
        state = rollout.RolloutState(
            step=0, step_started_at=start, paused=False, paused_reason=None
        )
        set_values(
            world_env,
            {
                "MONITORING_CRITICAL_EVENTS_SUPABASE": True,
                control_pg.ROLLOUT_STATE_FLAG: state.to_json(),
            },
        )
        # 80 minutes: the latency baseline needs an hour of history before the window.
        insert_samples(world_env, now, minutes=80, failures=0)
        still = evaluate(sensor, instance, resources=res)
        assert not still.run_requests  # healthy, but no reconciled hours yet

        first = rollout_floor(start)
        write_clean_reports(world_env, [first + dt.timedelta(hours=i) for i in range(6)])
        green = evaluate(sensor, instance, resources=res)
        assert green.run_requests, green.skip_message
        [request] = green.run_requests

        job = loaded.resolve_job_def(PROMOTE_ROLLOUT_JOB)
        result = job.execute_in_process(run_config=request.run_config, instance=instance)
        assert result.success
        assert current(world_env)["MONITORING_SUPABASE_ROLLOUT_PERCENTAGE"] == 10
        # The same decision again is stale now: compare-and-set refuses it.
        again = job.execute_in_process(
            run_config=request.run_config, instance=instance, raise_on_error=False
        )
        assert not again.success
        assert current(world_env)["MONITORING_SUPABASE_ROLLOUT_PERCENTAGE"] == 10


def rollout_floor(instant: dt.datetime) -> dt.datetime:
    return instant.replace(minute=0, second=0, microsecond=0)

"""Alerts, dry-run and the validation switch, driven as the daemon drives them: sensor and
schedule ticks with cursors on a real instance, the requested runs executed, alerts
received by a real HTTP server through Apprise's json:// target."""

from __future__ import annotations

import datetime as dt
import logging
import socket
import time

import dagster as dg
import psycopg
import pytest
from psycopg import sql

from orchestration import alerts as sensors
from orchestration.alerts import (
    ALERT_ON_DELIVERY_HEALTH,
    ALERT_ON_DISCREPANCIES,
    ALERT_ON_RUN_FAILURE,
)
from orchestration.backfill_sensors import RECONCILE_AFTER_BACKFILL
from orchestration.definitions import build_definitions
from orchestration.jobs import HOURLY_RECONCILIATION_SCHEDULE, RECONCILE_EVENTS_JOB
from orchestration.rollout import ROLLBACK_JOB, ROLLBACK_ON_HEALTH_TRIGGERS
from parity.core.alerts import Alert, Level
from parity.core.events import make_event
from parity.core.routing import DATA_VALIDATION_ENABLED
from parity.core.schema import HEARTBEAT_EVENT_TYPE
from parity.io import control_pg
from parity.io.notify import Notifier
from tests.orchestration.conftest import HOUR, PARTITION, World, stream_events

pytestmark = pytest.mark.integration


def titles(received: list[dict]) -> list[str]:
    return [r["title"] for r in received]


def tick(loaded: dg.Definitions, name: str, instance, cursor=None):  # noqa: ANN001, ANN201
    sensor = loaded.resolve_sensor_def(name)
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        repository_def=loaded.get_repository_def(),
        resources={"parity": loaded.resources["parity"]},
    )
    return sensor.evaluate_tick(context)


def set_values(world: World, values: dict) -> None:
    with world.store().connection() as conn:
        control_pg.set_flags(conn, world.table.schema, values, actor="test", reason="setup")


def current(world: World) -> dict:
    with world.store().connection() as conn:
        return control_pg.read_flags(conn, world.table.schema)


def lossy_hour(world: World) -> list:
    """A CRITICAL stream with seq 5 lost on its way to Supabase."""
    health = stream_events("health", "system.health", 10)
    world.log(health)
    world.insert([e for e in health if e.seq != 5])
    world.critical_first(HOUR - dt.timedelta(days=1))
    return health


def reconcile(loaded: dg.Definitions, instance, tags=None) -> dg.ExecuteInProcessResult:  # noqa: ANN001
    job = loaded.resolve_job_def(RECONCILE_EVENTS_JOB)
    return job.execute_in_process(
        partition_key=PARTITION, instance=instance, tags=tags or {}, raise_on_error=False
    )


# -- hours going red and green ------------------------------------------------------------


def test_an_hour_alerts_red_once_then_green_again_after_repair(world_env: World, alerts_to):
    health = lossy_hour(world_env)
    loaded = build_definitions()
    with dg.instance_for_test() as instance:
        reconcile(loaded, instance)
        first = tick(loaded, ALERT_ON_DISCREPANCIES, instance)
        assert titles(alerts_to) == [f"Parity: hour {PARTITION} went red"]
        assert "no_critical_events_lost" in alerts_to[0]["message"]
        assert alerts_to[0]["type"] == "failure"

        # Ticks that see nothing new, and a second red run of the same hour: no alert.
        second = tick(loaded, ALERT_ON_DISCREPANCIES, instance, first.cursor)
        reconcile(loaded, instance)
        third = tick(loaded, ALERT_ON_DISCREPANCIES, instance, second.cursor)
        assert len(alerts_to) == 1, titles(alerts_to)

        # The repair writes the lost event; the re-reconciliation it triggers passes.
        world_env.insert([health[4]])
        reconcile(loaded, instance, tags={"parity/trigger": "backfill"})
        fourth = tick(loaded, ALERT_ON_DISCREPANCIES, instance, third.cursor)
        assert titles(alerts_to)[1:] == [f"Parity: hour {PARTITION} is green again after repair"]
        assert alerts_to[1]["type"] == "success"
        tick(loaded, ALERT_ON_DISCREPANCIES, instance, fourth.cursor)
        assert len(alerts_to) == 2


def test_a_dead_alert_target_blocks_neither_the_sensor_nor_the_rollback(
    world_env: World, monkeypatch
):
    monkeypatch.setenv("PARITY_ALERT_URLS", "json://127.0.0.1:9/nothing-listens")
    monkeypatch.setenv("PARITY_ALERT_WEBHOOK_URL", "http://127.0.0.1:9/hook")
    monkeypatch.setattr("parity.io.notify.time.sleep", lambda s: None)
    lossy_hour(world_env)
    set_values(world_env, {"MONITORING_SUPABASE_ROLLOUT_PERCENTAGE": 10})
    loaded = build_definitions()
    with dg.instance_for_test() as instance:
        reconcile(loaded, instance)
        result = tick(loaded, ALERT_ON_DISCREPANCIES, instance)
        assert "went red" in result.skip_message
        rolled = loaded.resolve_job_def(ROLLBACK_JOB).execute_in_process(
            run_config={"ops": {"apply_rollback": {"config": {"reason": "test"}}}},
            instance=instance,
        )
    assert rolled.success
    assert current(world_env)["MONITORING_SUPABASE_ROLLOUT_PERCENTAGE"] == 0


# -- dry run --------------------------------------------------------------------------------


def insert_samples(world: World, producer: str, end: dt.datetime, minutes: int, failures: int):  # noqa: ANN201
    ident = sql.Identifier(world.table.schema, "delivery_metrics")
    with psycopg.connect(world.url, autocommit=True) as conn:
        for i in range(minutes * 6):
            conn.execute(
                sql.SQL(
                    "insert into {} (sampled_at, producer, window_s, attempts, failures, "
                    "latency_p50_ms, latency_p95_ms) values (%s, %s, 10, 1000, %s, 20, 40)"
                ).format(ident),
                (end - dt.timedelta(seconds=10 * i), producer, failures),
            )


def test_dry_run_audits_and_alerts_would_roll_back_and_flips_nothing(
    world_env: World, alerts_to, monkeypatch
):
    monkeypatch.setenv("PARITY_ROLLBACK_DRY_RUN", "true")
    set_values(world_env, {"MONITORING_SUPABASE_ROLLOUT_PERCENTAGE": 10})
    before, audited = current(world_env), len(audit_rows(world_env))
    insert_samples(world_env, "p1", dt.datetime.now(dt.UTC), minutes=6, failures=90)  # 9%
    loaded = build_definitions()
    assert "DRY RUN" in (loaded.resolve_sensor_def(ROLLBACK_ON_HEALTH_TRIGGERS).description or "")
    with dg.instance_for_test() as instance:
        first = tick(loaded, ROLLBACK_ON_HEALTH_TRIGGERS, instance)
        [request] = first.run_requests  # the trigger is evaluated as for real
        result = loaded.resolve_job_def(ROLLBACK_JOB).execute_in_process(
            run_config=request.run_config, instance=instance, tags=request.tags
        )
        assert result.success
        [observation] = [
            e.event_specific_data.asset_observation
            for e in result.all_events
            if e.event_type_value == "ASSET_OBSERVATION"
        ]
        # The next tick asks for the same run: the daemon's run key keeps it to one.
        [again] = tick(loaded, ROLLBACK_ON_HEALTH_TRIGGERS, instance, first.cursor).run_requests
        assert again.run_key == request.run_key
    assert current(world_env) == before  # no flag touched
    assert len(audit_rows(world_env)) == audited  # nor the history the cohort is read from
    # Audited where a person finds it: a dry-run row of parity_rollback_decisions.
    with world_env.store().connection() as conn:
        [decision] = control_pg.decisions(conn, world_env.table.schema)
    assert decision.mode == "dry_run" and decision.reason.startswith("health trigger")
    assert decision.changes["MONITORING_SUPABASE_ROLLOUT_PERCENTAGE"] == 0
    assert observation.metadata["decision_id"].value == decision.id
    assert observation.metadata["action"].value == "would_roll_back"
    assert observation.metadata["applied"].value is False
    assert observation.metadata["changes"].value["MONITORING_SUPABASE_ROLLOUT_PERCENTAGE"] == 0
    assert observation.metadata["evidence"].value["trigger"] == "health"
    [alert] = alerts_to
    assert "WOULD roll back" in alert["title"] and alert["type"] == "warning"
    assert "MONITORING_SUPABASE_ROLLOUT_PERCENTAGE -> 0" in alert["message"]


def audit_rows(world: World) -> list:
    with world.store().connection() as conn:
        return control_pg.history(conn, world.table.schema)


# -- MONITORING_DATA_VALIDATION_ENABLED -------------------------------------------------------


def test_validation_off_pauses_the_schedule_and_the_repair_not_manual_runs(world_env: World):
    lossy_hour(world_env)
    set_values(world_env, {DATA_VALIDATION_ENABLED: False})
    loaded = build_definitions()
    schedule = loaded.resolve_schedule_def(HOURLY_RECONCILIATION_SCHEDULE)
    tick_at = HOUR + dt.timedelta(hours=1, minutes=15)
    with dg.instance_for_test() as instance:

        def schedule_tick() -> dg.SensorResult:
            return schedule.evaluate_tick(
                dg.build_schedule_context(
                    instance=instance,
                    scheduled_execution_time=tick_at,
                    repository_def=loaded.get_repository_def(),
                    resources={"parity": loaded.resources["parity"]},
                )
            )

        paused = schedule_tick()
        assert not paused.run_requests
        assert "MONITORING_DATA_VALIDATION_ENABLED is false" in paused.skip_message
        repair = tick(loaded, RECONCILE_AFTER_BACKFILL, instance, cursor='{"high": 7, "seen": []}')
        assert not repair.run_requests and "paused" in repair.skip_message
        assert repair.cursor in (None, '{"high": 7, "seen": []}')  # resumes where it stopped

        assert reconcile(loaded, instance).success  # a person's run still runs

        set_values(world_env, {DATA_VALIDATION_ENABLED: True})
        [request] = schedule_tick().run_requests
        assert request.partition_key == PARTITION


# -- failed runs and delivery health ----------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_job_alerts_once_when_it_starts_failing_and_once_when_it_succeeds_again(
    world_env: World, alerts_to, monkeypatch
):
    lossy_hour(world_env)
    loaded = build_definitions()
    other = "2026-11-28-11:00"

    def reconcile(instance, partition: str, *, database_down: bool = False) -> bool:  # noqa: ANN001
        job = loaded.resolve_job_def(RECONCILE_EVENTS_JOB)
        with monkeypatch.context() as env:
            if database_down:  # read by the resource when the run starts
                env.setenv("PARITY_DATABASE_URL", f"postgresql://p@127.0.0.1:{closed_port()}/x")
            run = job.execute_in_process(
                partition_key=partition, instance=instance, raise_on_error=False
            )
        return run.success

    def roll_back(instance, evidence: str) -> bool:  # noqa: ANN001
        config = {"reason": "drill", "evidence_json": evidence}
        return (
            loaded.resolve_job_def(ROLLBACK_JOB)
            .execute_in_process(
                run_config={"ops": {"apply_rollback": {"config": config}}},
                instance=instance,
                raise_on_error=False,
            )
            .success
        )

    with dg.instance_for_test() as instance:
        start = tick(loaded, ALERT_ON_RUN_FAILURE, instance)
        assert not reconcile(instance, PARTITION, database_down=True)
        assert not reconcile(instance, PARTITION, database_down=True)  # failing: no new alert
        assert not reconcile(instance, other, database_down=True)  # another hour: its own
        assert not roll_back(instance, "{oops")
        failing = tick(loaded, ALERT_ON_RUN_FAILURE, instance, start.cursor)
        assert titles(alerts_to) == [
            f"Parity run failed: {RECONCILE_EVENTS_JOB} for {PARTITION}",
            f"Parity run failed: {RECONCILE_EVENTS_JOB} for {other}",
            "Parity run failed: rollback_job",
        ]
        assert [a["type"] for a in alerts_to] == ["failure"] * 3
        assert "Steps failed" in alerts_to[0]["message"]

        assert reconcile(instance, PARTITION)
        assert reconcile(instance, PARTITION)  # healthy already: nothing
        assert roll_back(instance, "{}")
        assert not roll_back(instance, "{oops")  # failing again: a new alert
        back = tick(loaded, ALERT_ON_RUN_FAILURE, instance, failing.cursor)
        tick(loaded, ALERT_ON_RUN_FAILURE, instance, back.cursor)  # nothing new
    runs = [a for a in alerts_to[3:] if a["title"].startswith("Parity run")]
    assert titles(runs) == [
        f"Parity run succeeded again: {RECONCILE_EVENTS_JOB} for {PARTITION}",
        "Parity run succeeded again: rollback_job",
        "Parity run failed: rollback_job",
    ]
    assert [a["type"] for a in runs] == ["success", "success", "failure"]


def test_silent_producers_and_the_plans_error_rate_alert_on_change_only(
    world_env: World, alerts_to
):
    now = dt.datetime.now(dt.UTC)
    insert_samples(world_env, "quiet", now - dt.timedelta(minutes=8), minutes=20, failures=0)
    insert_samples(world_env, "busy", now, minutes=7, failures=2)  # 0.2% > the plan's 0.1%
    # No metrics for 8 minutes either, but its heartbeats still arrive: not silent.
    insert_samples(world_env, "beating", now - dt.timedelta(minutes=8), minutes=20, failures=0)
    beat = now - dt.timedelta(seconds=20)
    world_env.insert(
        [make_event("beating.heartbeat", 1, HEARTBEAT_EVENT_TYPE, beat, {"producer": "beating"})]
    )
    loaded = build_definitions()
    with dg.instance_for_test() as instance:
        first = tick(loaded, ALERT_ON_DELIVERY_HEALTH, instance)
        got = sorted(titles(alerts_to))
        assert len(got) == 2, got
        assert got[0] == "Parity: producer quiet went silent"
        assert got[1].startswith("Parity: write error rate above 0.1000% for 300 s")
        tick(loaded, ALERT_ON_DELIVERY_HEALTH, instance, first.cursor)
        assert len(alerts_to) == 2  # the same state again: nothing


ALERT = Alert("hour_red", Level.FAILURE, "hour went red", "failed: a")


def test_a_tick_stops_sending_once_its_time_is_spent(monkeypatch):
    monkeypatch.setattr(sensors, "TICK_SEND_BUDGET_S", 1.0)
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen()
        notifier = Notifier(f"json://127.0.0.1:{hole.getsockname()[1]}/x", budget_s=1.5)
        started = time.monotonic()
        sent = sensors.send_all(notifier, [ALERT] * 5, logging.getLogger("test"))
        elapsed = time.monotonic() - started
    assert len(sent) == 5  # every state change recorded...
    assert elapsed < 4, elapsed  # ...without five timeouts in a row


def test_a_repair_that_cannot_complete_alerts_once_per_hour(world_env: World, alerts_to):
    loaded = build_definitions()
    other = "2026-11-28-11:00"
    with dg.instance_for_test() as instance:
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                "event_reconciliation",
                partition=PARTITION,
                metadata={
                    sensors.REPAIR_STATE: sensors.REPAIR_IMPOSSIBLE,
                    sensors.REPAIR_REASON: "2 keys the log does not have",
                },
            )
        )
        first = tick(loaded, ALERT_ON_DISCREPANCIES, instance)
        assert titles(alerts_to) == [f"Parity could not repair hour {PARTITION}"]
        assert "2 keys the log does not have" in alerts_to[0]["message"]
        # A backfill of the same hour that leaves conflicts: the hour is already reported.
        by_partition = {h: {"written": 0, "conflicts": 1, "invalid": 0} for h in (PARTITION, other)}
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                "missed_events_backfill",
                partition=PARTITION,
                metadata={"dry_run": False, "by_partition": dg.MetadataValue.json(by_partition)},
            )
        )
        second = tick(loaded, ALERT_ON_DISCREPANCIES, instance, first.cursor)
        second = tick(loaded, ALERT_ON_DISCREPANCIES, instance, second.cursor)
        # The repair loop records an hour as impossible with an observation.
        third = "2026-11-28-12:00"
        instance.report_runless_asset_event(
            dg.AssetObservation(
                "event_reconciliation",
                partition=third,
                metadata={sensors.REPAIR_STATE: "impossible", sensors.REPAIR_REASON: "why"},
            )
        )
        tick(loaded, ALERT_ON_DISCREPANCIES, instance, second.cursor)
    assert titles(alerts_to)[1:] == [
        f"Parity could not repair hour {other}",
        f"Parity could not repair hour {third}",
    ]
    assert "1 conflicting" in alerts_to[1]["message"]

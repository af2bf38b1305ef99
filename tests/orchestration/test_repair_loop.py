"""The repair loop driven as the Dagster daemon drives it: sensor and schedule ticks with
their cursors on a real instance, each requested run launched (in process) with the run key
and tags the daemon gives it, and time moved by the test."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator

import dagster as dg
import pytest

from assets.backfill import build_backfill_assets
from assets.flags import feature_flags
from assets.reconciliation import build_reconciliation_assets
from assets.resources import ParityResource
from assets.scorecard import MIGRATION_SCORECARD
from orchestration.alerts import ALERT_ON_DISCREPANCIES
from orchestration.backfill_sensors import (
    BACKFILL_MISSED_EVENTS_JOB,
    RECONCILE_AFTER_BACKFILL,
    REPAIR_DIGEST_TAG,
    REPAIR_LOST_EVENTS,
    REPAIR_PARTITION_TAG,
    build_backfill_definitions,
)
from orchestration.definitions import build_definitions
from orchestration.jobs import HOURLY_RECONCILIATION_SCHEDULE, RECONCILE_EVENTS_JOB
from orchestration.rollout import ROLLBACK_ON_CHECK_FAILURE, ROLLBACK_ON_HEALTH_TRIGGERS
from orchestration.scorecard import SCORECARD_SENSOR
from parity.core.events import make_event
from parity.core.repair import RepairPolicy
from parity.io import control_pg
from parity.io.reports import load_report
from tests.orchestration.conftest import HOUR, PARTITION, World, stream_events
from tests.orchestration.test_rollback_and_sensors import insert_samples

pytestmark = pytest.mark.integration

RUN_KEY_TAG = "dagster/run_key"
SENSOR_NAME_TAG = "dagster/sensor_name"


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


class Daemon:
    """What the sensor daemon does on a tick: evaluate with the stored cursor, store the new
    cursor, record the reported asset events, and launch each requested run unless a run
    with its run key was launched already."""

    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance, world: World):
        self.defs, self.instance = defs, instance
        self.resources = {
            "parity": ParityResource(
                home=str(world.home), database_url=world.url, events_table=str(world.table)
            )
        }
        self.cursors: dict[str, str | None] = {}

    def tick(self, name: str) -> list[dg.ExecuteInProcessResult]:
        sensor = self.defs.resolve_sensor_def(name)
        context = dg.build_sensor_context(
            instance=self.instance,
            cursor=self.cursors.get(name),
            definitions=self.defs,
            resources=self.resources,
        )
        data = sensor.evaluate_tick(context)
        self.cursors[name] = data.cursor
        for event in data.asset_events or []:
            self.instance.report_runless_asset_event(event)
        return [self.launch(r, r.job_name or sensor.job_name, name) for r in data.run_requests]

    def schedule_tick(self, at: dt.datetime) -> list[dg.ExecuteInProcessResult]:
        schedule = self.defs.resolve_schedule_def(HOURLY_RECONCILIATION_SCHEDULE)
        context = dg.build_schedule_context(
            instance=self.instance,
            scheduled_execution_time=at,
            resources=self.resources,
            repository_def=self.defs.get_repository_def(),
        )
        data = schedule.evaluate_tick(context)
        return [self.launch(r, schedule.job_name, None) for r in data.run_requests or []]

    def launch(
        self, request: dg.RunRequest, job_name: str, sensor: str | None
    ) -> dg.ExecuteInProcessResult:
        tags = dict(request.tags)
        if request.run_key:
            tags[RUN_KEY_TAG] = request.run_key
            if sensor:
                tags[SENSOR_NAME_TAG] = sensor
                launched = self.instance.get_runs(
                    filters=dg.RunsFilter(tags={RUN_KEY_TAG: request.run_key})
                )
                assert not launched, f"{sensor} asked again for run key {request.run_key}"
        job = self.defs.resolve_job_def(job_name)
        return job.execute_in_process(
            instance=self.instance,
            partition_key=request.partition_key,
            run_config=request.run_config,
            tags=tags,
            raise_on_error=False,
        )

    def runs_of(self, job_name: str) -> list[dg.DagsterRun]:
        return list(self.instance.get_runs(filters=dg.RunsFilter(job_name=job_name)))


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    clock = Clock(HOUR)
    monkeypatch.setattr("orchestration.rollout.utcnow", clock)
    monkeypatch.setattr("orchestration.backfill_sensors.utcnow", clock)
    yield clock


def latest_reconciliation(instance: dg.DagsterInstance) -> dict:
    [record] = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey("event_reconciliation"), asset_partitions=[PARTITION]
        ),
        limit=1,
    ).records
    return {k: getattr(v, "value", v) for k, v in record.asset_materialization.metadata.items()}


def checks_of(result: dg.ExecuteInProcessResult) -> dict[str, tuple[bool, str]]:
    return {
        e.check_name: (e.passed, e.severity.value) for e in result.get_asset_check_evaluations()
    }


def test_the_outage_hour_of_a_health_rollback_is_repaired_with_no_person_involved(
    world_env: World, clock: Clock
) -> None:
    # Critical events go to Supabase; Supabase fails from 10 minutes into the hour.
    world_env.critical_first(HOUR - dt.timedelta(days=1))
    health = stream_events("health", "system.health", 20)
    world_env.log(health)
    world_env.insert(health[:10])
    defs = build_definitions()
    with dg.instance_for_test() as instance:
        daemon = Daemon(defs, instance, world_env)

        # 25 minutes into the hour the health triggers breach: the rollback names the
        # unfinished hour, and nothing is repaired while the hour is not reconciled.
        clock.now = HOUR + dt.timedelta(minutes=25)
        insert_samples(world_env, clock.now, minutes=6, failures=9)
        [rollback] = daemon.tick(ROLLBACK_ON_HEALTH_TRIGGERS)
        assert rollback.success
        config = instance.get_run_by_id(rollback.run_id).run_config
        assert config["ops"]["apply_rollback"]["config"]["partitions"] == [PARTITION]
        with world_env.store().connection() as conn:
            assert (
                control_pg.read_flags(conn, world_env.table.schema)[
                    "MONITORING_CRITICAL_EVENTS_SUPABASE"
                ]
                is False
            )
        assert daemon.tick(REPAIR_LOST_EVENTS) == []

        # The hour completes; the schedule reconciles it 15 minutes later: 10 missing.
        clock.now = HOUR + dt.timedelta(hours=1, minutes=15)
        [reconciled] = daemon.schedule_tick(clock.now)
        assert checks_of(reconciled)["no_events_lost"] == (False, "WARN")
        before = latest_reconciliation(instance)
        assert before["missing_in_supabase"] == 10
        assert (before["verdict"], before["repair_state"]) == ("red", "pending")

        # The repair loop: backfill, then reconcile again; a second tick does not repeat it.
        [backfill] = daemon.tick(REPAIR_LOST_EVENTS)
        assert backfill.success
        [mat] = [e.materialization for e in backfill.get_asset_materialization_events()]
        assert mat.metadata["written"].value == 10
        assert daemon.tick(REPAIR_LOST_EVENTS) == []
        [again] = daemon.tick(RECONCILE_AFTER_BACKFILL)
        assert again.success
        assert checks_of(again)["no_events_lost"] == (True, "WARN")

        after = latest_reconciliation(instance)
        assert (after["verdict"], after["repair_state"]) == ("green", "done")
        assert load_report(world_env.settings.layout, PARTITION)["missing_in_supabase"] == 0
        assert daemon.tick(REPAIR_LOST_EVENTS) == []
        assert len(daemon.runs_of(BACKFILL_MISSED_EVENTS_JOB)) == 1

        # The scorecard shows the hour green, with the repair done.
        daemon.tick(SCORECARD_SENSOR)
        [card] = instance.fetch_materializations(dg.AssetKey(MIGRATION_SCORECARD), limit=1).records
        meta = card.asset_materialization.metadata
        assert meta["red"].value == 0 and meta["green"].value == 1
        assert f"| {PARTITION} | 🟢 green |" in meta["hours"].value
        assert "| done |" in meta["hours"].value


def test_a_quiet_loss_is_repaired_without_a_rollback(world_env: World, clock: Clock) -> None:
    with world_env.store().connection() as conn:
        control_pg.set_flags(
            conn,
            world_env.table.schema,
            {"MONITORING_SUPABASE_ROLLOUT_PERCENTAGE": 100},
            actor="test",
            reason="every stream",
            now=HOUR - dt.timedelta(days=1),
        )
    events = [
        make_event("debug", seq, "debug.log", HOUR + dt.timedelta(seconds=1.7 * seq), {"n": seq})
        for seq in range(1, 2001)
    ]
    world_env.log(events)
    world_env.insert([e for e in events if e.seq != 1000])  # 1 of 2,000 INFORMATIONAL lost
    defs = build_definitions()
    with dg.instance_for_test() as instance:
        daemon = Daemon(defs, instance, world_env)
        clock.now = HOUR + dt.timedelta(hours=1, minutes=15)
        [reconciled] = daemon.schedule_tick(clock.now)
        checks = checks_of(reconciled)
        assert checks["no_events_lost"] == (False, "WARN")
        assert checks["supabase_sequence_is_continuous"] == (False, "WARN")
        assert checks["delivery_rate_meets_slo"][0] is True
        assert not [name for name, (ok, sev) in checks.items() if not ok and sev == "ERROR"]
        [lost] = [
            e for e in reconciled.get_asset_check_evaluations() if e.check_name == "no_events_lost"
        ]
        assert lost.metadata["sample"].value == [["debug", 1000]]
        assert lost.metadata["repair_state"].value == "pending"

        assert daemon.tick(ROLLBACK_ON_CHECK_FAILURE) == []  # a loss is not a rollback reason
        [backfill] = daemon.tick(REPAIR_LOST_EVENTS)
        assert backfill.success
        [again] = daemon.tick(RECONCILE_AFTER_BACKFILL)
        assert checks_of(again)["no_events_lost"] == (True, "WARN")
        assert latest_reconciliation(instance)["verdict"] == "green"
        assert daemon.runs_of("rollback_job") == []


def test_an_unrepairable_hour_is_tried_once_and_recorded_impossible(
    world_env: World, clock: Clock
) -> None:
    world_env.critical_first(HOUR - dt.timedelta(days=1))
    health = stream_events("health", "system.health", 10)
    world_env.log(health)
    world_env.insert(health[:9])
    # Supabase holds another copy of health#10, emitted in the hour before: the backfill
    # may never overwrite it, so the hour cannot be made whole by a backfill.
    world_env.insert(
        [make_event("health", 10, "system.health", HOUR - dt.timedelta(minutes=30), {"x": 1})]
    )
    defs = build_definitions()
    with dg.instance_for_test() as instance:
        daemon = Daemon(defs, instance, world_env)
        clock.now = HOUR + dt.timedelta(hours=1, minutes=15)
        daemon.schedule_tick(clock.now)
        [backfill] = daemon.tick(REPAIR_LOST_EVENTS)
        [mat] = [e.materialization for e in backfill.get_asset_materialization_events()]
        assert (mat.metadata["written"].value, mat.metadata["skipped_existing"].value) == (0, 1)
        [again] = daemon.tick(RECONCILE_AFTER_BACKFILL)
        [lost] = [
            e for e in again.get_asset_check_evaluations() if e.check_name == "no_events_lost"
        ]
        assert not lost.passed and lost.metadata["repair_state"].value == "impossible"
        assert "outside the hour" in lost.metadata["repair_reason"].value

        for minutes in (30, 60, 120):  # later ticks: no loop
            clock.now = HOUR + dt.timedelta(hours=1, minutes=15 + minutes)
            assert daemon.tick(REPAIR_LOST_EVENTS) == []
            assert daemon.tick(RECONCILE_AFTER_BACKFILL) == []
        assert len(daemon.runs_of(BACKFILL_MISSED_EVENTS_JOB)) == 1
        assert len(daemon.runs_of(RECONCILE_EVENTS_JOB)) == 2
        meta = latest_reconciliation(instance)
        assert meta["verdict"] == "red" and meta["repair_state"] == "impossible"
        assert any("repair impossible" in r for r in meta["verdict_reasons"])
        report = load_report(world_env.settings.layout, PARTITION)
        assert report["repair"]["state"] == "impossible"
        assert json.dumps(report["repair"])  # plain JSON for `parity report`


def test_repairs_that_keep_failing_stop_at_the_limit_and_are_reported_once(
    world: World, clock: Clock
) -> None:
    """Three repair runs of the same keys failed (no backfill materialized): the fourth is
    not requested, and the hour's repair state becomes impossible, recorded once."""
    partitions_def = dg.HourlyPartitionsDefinition(start_date="2026-11-27-00:00", timezone="UTC")
    backfill_assets = build_backfill_assets(partitions_def)
    job, sensors = build_backfill_definitions(
        partitions_def, backfill_assets, RepairPolicy(max_attempts=3)
    )
    sensor = next(s for s in sensors if s.name == REPAIR_LOST_EVENTS)

    @dg.op
    def store_down() -> None:
        raise RuntimeError("Supabase unreachable")

    @dg.job
    def failing_repair() -> None:
        store_down()

    clock.now = HOUR + dt.timedelta(hours=2)
    with dg.instance_for_test() as instance:
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                "event_reconciliation",
                partition=PARTITION,
                metadata={
                    "missing_in_supabase": 2,
                    "missing_keys_digest": "d1",
                    "repair_state": "pending",
                },
            )
        )

        defs = dg.Definitions(
            assets=[feature_flags, *build_reconciliation_assets(partitions_def), *backfill_assets],
            jobs=[job],
            sensors=[sensor],
            resources={
                "parity": ParityResource(
                    home=str(world.home), database_url=world.url, events_table=str(world.table)
                ),
                "snapshot_io_manager": dg.mem_io_manager,
            },
        )

        def tick(cursor: str | None):
            context = dg.build_sensor_context(
                instance=instance,
                cursor=cursor,
                definitions=defs,
                resources=dict(defs.resources or {}),
            )
            return sensor.evaluate_tick(context)

        first = tick(None)
        [request] = first.run_requests
        assert request.run_key == f"repair-{PARTITION}-d1-1"
        for _ in range(3):
            failing_repair.execute_in_process(
                instance=instance,
                tags={REPAIR_PARTITION_TAG: PARTITION, REPAIR_DIGEST_TAG: "d1"},
                raise_on_error=False,
            )
        spent = tick(first.cursor)
        assert spent.run_requests == []
        [observation] = spent.asset_events
        assert observation.partition == PARTITION
        assert observation.metadata["repair_state"].value == "impossible"
        assert "after 3 automatic repairs" in observation.metadata["repair_reason"].value
        assert tick(spent.cursor).asset_events == []  # reported once


def test_the_rest_of_a_partly_written_hour_is_impossible_after_one_backfill(
    world_env: World,
    clock: Clock,
    alerts_to: list[dict],
) -> None:
    world_env.critical_first(HOUR - dt.timedelta(days=1))
    health = stream_events("health", "system.health", 10)
    # PostgreSQL's jsonb cannot hold \u0000: the store refuses this row on every attempt.
    poison = make_event(
        "health", 11, "system.health", HOUR + dt.timedelta(minutes=20), {"s": "\u0000"}
    )
    world_env.log([*health, poison])
    world_env.insert(health[:7])
    defs = build_definitions()
    with dg.instance_for_test() as instance:
        daemon = Daemon(defs, instance, world_env)
        daemon.resources = {"parity": defs.resources["parity"]}  # with the alert target
        clock.now = HOUR + dt.timedelta(hours=1, minutes=15)
        daemon.schedule_tick(clock.now)
        assert latest_reconciliation(instance)["missing_in_supabase"] == 4

        [backfill] = daemon.tick(REPAIR_LOST_EVENTS)
        [mat] = [e.materialization for e in backfill.get_asset_materialization_events()]
        assert (mat.metadata["written"].value, mat.metadata["refused"].value) == (3, 1)
        [again] = daemon.tick(RECONCILE_AFTER_BACKFILL)
        [lost] = [
            e for e in again.get_asset_check_evaluations() if e.check_name == "no_events_lost"
        ]
        assert not lost.passed and lost.metadata["repair_state"].value == "impossible"
        assert "wrote 3" in lost.metadata["repair_reason"].value
        assert "1 rows the store refused" in lost.metadata["repair_reason"].value

        for minutes in (0, 30, 60, 120):  # later ticks: no second backfill
            clock.now = HOUR + dt.timedelta(hours=1, minutes=15 + minutes)
            assert daemon.tick(REPAIR_LOST_EVENTS) == []
            assert daemon.tick(RECONCILE_AFTER_BACKFILL) == []
            daemon.tick(ALERT_ON_DISCREPANCIES)
        assert len(daemon.runs_of(BACKFILL_MISSED_EVENTS_JOB)) == 1
        assert len(daemon.runs_of(RECONCILE_EVENTS_JOB)) == 2
        meta = latest_reconciliation(instance)
        assert (meta["missing_in_supabase"], meta["repair_state"]) == (1, "impossible")
        assert meta["verdict"] == "red"

    repairs = [a for a in alerts_to if "could not repair" in a["title"]]
    assert [a["title"] for a in repairs] == [f"Parity could not repair hour {PARTITION}"]
    assert "store refused" in repairs[0]["message"]

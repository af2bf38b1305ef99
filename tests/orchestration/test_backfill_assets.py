"""The backfill asset, its job and the sensor that reconciles after it, in-process against
the embedded PostgreSQL, with the resources passed explicitly."""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg
import pytest

from assets.backfill import MISSED_EVENTS_BACKFILL, build_backfill_assets
from assets.flags import feature_flags
from assets.reconciliation import build_reconciliation_assets
from assets.resources import ParityResource
from checks.specs import reconciliation_check_specs
from orchestration.backfill_sensors import (
    BACKFILL_MISSED_EVENTS_JOB,
    RANGE_END_TAG,
    RANGE_START_TAG,
    RECONCILE_AFTER_BACKFILL,
    build_backfill_definitions,
    consecutive_runs,
)
from orchestration.io_manager import ParquetSnapshotIOManager
from orchestration.jobs import RECONCILE_EVENTS_JOB, build_jobs
from orchestration.rollout import rollback_job
from parity.core import report as reports
from parity.io.control_pg import set_flags
from parity.io.reports import load_report
from tests.orchestration.conftest import World, stream_events

pytestmark = pytest.mark.integration

DAY = dt.datetime(2026, 11, 27, tzinfo=dt.UTC)
HOURS = [DAY + dt.timedelta(hours=h) for h in (10, 11, 12)]
KEYS = ["2026-11-27-10:00", "2026-11-27-11:00", "2026-11-27-12:00"]


def make_defs(world: World) -> dg.Definitions:
    partitions_def = dg.HourlyPartitionsDefinition(start_date="2026-11-27-00:00", timezone="UTC")
    parity = ParityResource(
        home=str(world.home), database_url=world.url, events_table=str(world.table)
    )
    recon = build_reconciliation_assets(partitions_def, reconciliation_check_specs())
    jobs, _, _ = build_jobs(recon, partitions_def, lag=dt.timedelta(minutes=15))
    backfill_assets = build_backfill_assets(partitions_def)
    backfill_job, sensors = build_backfill_definitions(partitions_def, backfill_assets)
    return dg.Definitions(
        assets=[feature_flags, *recon, *backfill_assets],
        jobs=[*jobs, rollback_job, backfill_job],
        sensors=sensors,
        resources={
            "parity": parity,
            "snapshot_io_manager": ParquetSnapshotIOManager(home=str(world.home)),
        },
    )


def three_leaky_hours(world: World) -> None:
    """Each hour: 10 CRITICAL events logged, 3 of them never reached Supabase."""
    for hour in HOURS:
        health = stream_events(
            "health", "system.health", 10, start=hour, first_seq=1 + 10 * HOURS.index(hour)
        )
        world.log(health)
        world.insert(health[:7])
    world.critical_first(DAY - dt.timedelta(days=1))


def backfill_range(defs: dg.Definitions, instance: dg.DagsterInstance, **config):
    job = defs.resolve_job_def(BACKFILL_MISSED_EVENTS_JOB)
    return job.execute_in_process(
        instance=instance,
        tags={RANGE_START_TAG: KEYS[0], RANGE_END_TAG: KEYS[-1]},
        run_config={"ops": {MISSED_EVENTS_BACKFILL: {"config": config}}} if config else None,
    )


def test_a_range_backfill_then_reconciliation_makes_the_hours_whole(world: World) -> None:
    three_leaky_hours(world)
    defs = make_defs(world)
    reconcile_job = defs.resolve_job_def(RECONCILE_EVENTS_JOB)
    sensor = defs.resolve_sensor_def(RECONCILE_AFTER_BACKFILL)
    with dg.instance_for_test() as instance:
        # Two hours were reconciled (report + stored snapshot); the third was not: the
        # backfill reads its log afresh and finds the missing keys itself.
        for key in KEYS[:2]:
            reconcile_job.execute_in_process(
                partition_key=key, instance=instance, raise_on_error=False
            )
            assert load_report(world.settings.layout, key)["missing_in_supabase"] == 3

        dry = backfill_range(defs, instance, dry_run=True)
        [dry_mat] = [e.materialization for e in dry.get_asset_materialization_events()][:1]
        assert dry_mat.metadata["planned"].value == 9
        assert dry_mat.metadata["written"].value == 0
        assert world.store().count(DAY, DAY + dt.timedelta(days=1)) == 21

        result = backfill_range(defs, instance)
        assert result.success
        mats = [e.materialization for e in result.get_asset_materialization_events()]
        assert sorted(m.partition for m in mats) == KEYS  # one run, three hours
        totals = mats[0].metadata
        assert (totals["written"].value, totals["conflicts"].value) == (9, 0)
        # 12:00 had no report: its keys were recomputed, and 7 found already there.
        assert (totals["invalid"].value, totals["already_present"].value) == (0, 7)
        assert totals["batches"].value == 3
        by_partition = totals["by_partition"].value
        assert {k: v["written"] for k, v in by_partition.items()} == dict.fromkeys(KEYS, 3)
        assert world.store().count(DAY, DAY + dt.timedelta(days=1)) == 30
        ledger = json.loads(world.settings.layout.ledger(KEYS[2]).read_text())
        assert len(ledger[0]["sent_keys"]) == 3

        # The sensor asks for one reconciliation per backfilled hour, the dry run for none.
        res = {"parity": defs.resources["parity"]}
        context = dg.build_sensor_context(instance=instance, definitions=defs, resources=res)
        requests = sensor.evaluate_tick(context).run_requests
        assert sorted(r.partition_key for r in requests) == KEYS
        assert all(r.job_name in (None, RECONCILE_EVENTS_JOB) for r in requests)
        assert len({r.run_key for r in requests}) == 3
        again = dg.build_sensor_context(
            instance=instance, definitions=defs, cursor=context.cursor, resources=res
        )
        assert sensor.evaluate_tick(again).run_requests == []

        for request in requests:
            run = reconcile_job.execute_in_process(
                partition_key=request.partition_key, instance=instance, tags=request.tags
            )
            assert run.success
            doc = load_report(world.settings.layout, request.partition_key)
            assert reports.is_clean(doc), reports.discrepancies(doc)

        # A second backfill finds nothing to write.
        rerun = backfill_range(defs, instance)
        mat = rerun.get_asset_materialization_events()[0].materialization
        assert (mat.metadata["written"].value, mat.metadata["already_present"].value) == (0, 0)


def test_consecutive_runs_group_hours_up_to_the_limit() -> None:
    keys = ["2026-11-27-03:00", "2026-11-27-01:00", "2026-11-27-02:00", "2026-11-27-05:00"]
    assert consecutive_runs(keys, 2) == [
        ["2026-11-27-01:00", "2026-11-27-02:00"],
        ["2026-11-27-03:00"],
        ["2026-11-27-05:00"],
    ]


def test_the_code_location_has_the_backfill(world: World) -> None:
    defs = make_defs(world)
    dg.Definitions.validate_loadable(defs)
    node = defs.resolve_asset_graph().get(dg.AssetKey(MISSED_EVENTS_BACKFILL))
    assert node.group_name == "repair" and node.kinds and len(node.description or "") > 40
    assert dg.AssetKey("event_reconciliation") in node.parent_keys
    assert node.backfill_policy.max_partitions_per_run == 24


def test_the_cli_backfills_then_reconciles(world_env: World, capsys) -> None:
    from parity.app.cli import main
    from parity.core.events import make_event
    from tests.orchestration.conftest import HOUR, PARTITION

    health = stream_events("health", "system.health", 10)
    world_env.log(health)
    world_env.insert(health[:6])
    with world_env.store().connection() as conn:
        set_flags(
            conn,
            world_env.table.schema,
            {"MONITORING_CRITICAL_EVENTS_SUPABASE": True},
            actor="test",
            reason="critical first",
            now=HOUR - dt.timedelta(days=1),
        )

    assert main(["backfill", "--partition", PARTITION, "--dry-run"]) == 1  # 4 to write
    assert "would write 4" in capsys.readouterr().out
    assert main(["backfill", "--partition", PARTITION, "--batch-size", "3"]) == 0
    out = capsys.readouterr().out
    assert "wrote 4" in out and "2 batches" in out and "clean" in out
    assert main(["backfill", "--partition", PARTITION, "--dry-run"]) == 0  # nothing left
    assert "would write 0" in capsys.readouterr().out

    # A key Supabase holds with other content: the reconciliation after the backfill finds
    # it (exit 1); recomputing the keys (--all-missing) reports it as a conflict, untouched.
    extra = make_event("health", 11, "system.health", HOUR + dt.timedelta(minutes=20), {"a": 1})
    world_env.log([extra])
    world_env.insert([make_event("health", 11, "system.health", extra.emitted_at, {"b": 2})])
    assert main(["backfill", "--partition", PARTITION]) == 1
    assert "checksum_mismatches: 1" in capsys.readouterr().out
    assert main(["backfill", "--partition", PARTITION, "--all-missing"]) == 1
    assert "conflict health#11: store_differs" in capsys.readouterr().out
    [row] = [
        r
        for r in world_env.store().snapshot(HOUR, HOUR + dt.timedelta(hours=1)).to_pylist()
        if r["seq"] == 11
    ]
    assert '"b"' in row["payload"]

    assert main(["backfill", "--partition", PARTITION, "--batch-size", "0"]) == 2
    assert main(["backfill", "--partition", "yesterday"]) == 2
    with pytest.raises(SystemExit) as usage:
        main(["backfill", "--bogus"])
    assert usage.value.code == 2

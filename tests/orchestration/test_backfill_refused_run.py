"""A repair run with an event the store refuses: the backfill run succeeds, writes the rest
of the hour, names the refused event with the store's reason in its metadata and ledger, and
the reconciliation the sensor then requests leaves exactly that event missing."""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg
import pytest

from assets.backfill import MISSED_EVENTS_BACKFILL
from orchestration.backfill_sensors import (
    BACKFILL_MISSED_EVENTS_JOB,
    RANGE_END_TAG,
    RANGE_START_TAG,
    RECONCILE_AFTER_BACKFILL,
)
from orchestration.jobs import RECONCILE_EVENTS_JOB
from parity.core.events import make_event
from parity.io.reports import load_report
from tests.orchestration.conftest import World, stream_events
from tests.orchestration.test_backfill_assets import DAY, make_defs

pytestmark = pytest.mark.integration

HOUR = DAY + dt.timedelta(hours=10)
KEY = "2026-11-27-10:00"


def test_a_refused_event_does_not_block_the_repair_of_its_hour(world: World) -> None:
    health = stream_events("health", "system.health", 10, start=HOUR)
    poison = make_event(
        "health", 11, "system.health", HOUR + dt.timedelta(minutes=20), {"s": "\u0000"}
    )
    world.log([*health, poison])
    world.insert(health[:7])
    world.critical_first(DAY - dt.timedelta(days=1))
    defs = make_defs(world)
    reconcile_job = defs.resolve_job_def(RECONCILE_EVENTS_JOB)
    backfill_job = defs.resolve_job_def(BACKFILL_MISSED_EVENTS_JOB)
    sensor = defs.resolve_sensor_def(RECONCILE_AFTER_BACKFILL)
    with dg.instance_for_test() as instance:
        reconcile_job.execute_in_process(partition_key=KEY, instance=instance, raise_on_error=False)
        assert load_report(world.settings.layout, KEY)["missing_in_supabase"] == 4

        run = backfill_job.execute_in_process(
            instance=instance,
            tags={RANGE_START_TAG: KEY, RANGE_END_TAG: KEY},
            run_config={"ops": {MISSED_EVENTS_BACKFILL: {"config": {"batch_size": 1000}}}},
        )
        assert run.success
        [mat] = [e.materialization for e in run.get_asset_materialization_events()]
        assert (mat.metadata["written"].value, mat.metadata["refused"].value) == (3, 1)
        [refused] = mat.metadata["by_partition"].value[KEY]["refused_sample"]
        assert (refused["stream"], refused["seq"]) == ("health", 11)
        assert "\\u0000" in refused["reason"] or "Unicode" in refused["reason"]
        ledger = json.loads(world.settings.layout.ledger(KEY).read_text())
        assert ledger[-1]["refused"] == 1 and ["health", 11] not in ledger[-1]["sent_keys"]

        # As the daemon does: a sensor tick, then the run it requests.
        resources = {"parity": defs.resources["parity"]}
        context = dg.build_sensor_context(instance=instance, definitions=defs, resources=resources)
        [request] = sensor.evaluate_tick(context).run_requests
        again = reconcile_job.execute_in_process(
            partition_key=request.partition_key,
            instance=instance,
            tags=request.tags,
            raise_on_error=False,
        )
        assert again.get_asset_materialization_events()  # the report was written
        doc = load_report(world.settings.layout, KEY)
        assert doc["missing_keys"] == [["health", 11]]  # the rest of the hour is whole

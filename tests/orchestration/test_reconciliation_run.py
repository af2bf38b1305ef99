"""One partition through the real job, in-process, against the embedded PostgreSQL, with a
fault of every kind injected; the report and the checks must say exactly what was done."""

from __future__ import annotations

import contextvars
import datetime as dt
import gc
import os
from dataclasses import replace

import dagster as dg
import pyarrow.parquet as pq
import pytest

from orchestration.definitions import build_definitions
from orchestration.headless import reconcile_partitions
from orchestration.jobs import RECONCILE_EVENTS_JOB
from parity.core import report as reports
from parity.core.events import make_event
from parity.io.reports import load_report
from tests.orchestration.conftest import HOUR, PARTITION, World, corrupted, stream_events

pytestmark = pytest.mark.integration


def critical_on_since_yesterday(world: World) -> None:
    world.critical_first(HOUR - dt.timedelta(days=1))


def faulty_hour(world: World) -> None:
    health = stream_events("health", "system.health", 40)  # CRITICAL: expected in Supabase
    errors = stream_events("errors", "error.raised", 10)  # CRITICAL
    sessions = stream_events("sess-a", "session.started", 10)  # INFORMATIONAL: not expected
    ghost = stream_events("ghost", "system.health", 1)

    world.log([*health, health[1], *errors, *[e for e in sessions if e.seq != 6]])
    world.log_raw(HOUR, b'{"stream": "health", "seq": \n')  # a torn line: quarantined

    conflicting = make_event("errors", 4, "error.raised", errors[3].emitted_at, {"other": True})
    rows = [e for e in health if e.seq != 5]  # health 5 lost
    rows += [corrupted(errors[2]), conflicting, *[e for e in errors if e.seq not in (3, 4)]]
    rows += ghost  # in Supabase, not in the log
    # health 11 arrives 90 s late, after health 12: out of order.
    world.insert(rows, latency_ms={("health", 11): 90_000})
    world.duplicate_row("health", 8)  # a retry duplicate
    critical_on_since_yesterday(world)


def run_partition(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    job = build_definitions().resolve_job_def(RECONCILE_EVENTS_JOB)
    return job.execute_in_process(partition_key=PARTITION, instance=instance, raise_on_error=False)


def test_every_fault_is_counted_exactly(world_env: World):
    faulty_hour(world_env)
    with dg.instance_for_test() as instance:
        result = run_partition(instance)

    doc = load_report(world_env.settings.layout, PARTITION)
    assert set(reports.REPORT_KEYS) <= set(doc)
    assert doc["ws_events"] == 40 + 1 + 10 + 9
    assert doc["supabase_events"] == 39 + 1 + 10 + 1
    assert doc["expected_in_supabase"] == 50  # health and errors; the session stream is not
    assert doc["matched"] == 48
    assert doc["missing_in_supabase"] == 1
    assert doc["missing_keys"] == [["health", 5]]
    assert doc["missing_critical_keys"] == [["health", 5]]
    assert doc["unexpected_in_supabase"] == 1
    assert doc["duplicates_ws"] == 1
    assert doc["duplicates_supabase"] == 1
    assert doc["checksum_mismatches"] == 1
    assert doc["invalid_checksums_ws"] == 0
    assert doc["invalid_checksums_supabase"] == 1
    assert doc["sequence_gaps_ws"] == [{"stream": "sess-a", "first_missing": 6, "last_missing": 6}]
    assert doc["out_of_order_supabase"] == 1
    assert doc["quarantined_lines"] == 1
    assert doc["delivery_rate"] == pytest.approx(48 / 50)
    assert doc["latency_ms"]["p50"] == pytest.approx(50.0)
    assert doc["latency_ms"]["max"] == pytest.approx(90_000.0)
    assert doc["by_category"]["CRITICAL"]["missing_in_supabase"] == 1
    assert doc["by_category"]["INFORMATIONAL"]["expected_in_supabase"] == 0

    failed = {
        e.check_name: e.severity for e in result.get_asset_check_evaluations() if not e.passed
    }
    error, warn = dg.AssetCheckSeverity.ERROR, dg.AssetCheckSeverity.WARN
    assert failed == {
        "no_events_lost": warn,
        "no_critical_events_lost": error,
        "delivery_rate_meets_slo": error,
        "no_checksum_mismatches": error,
        "supabase_checksums_are_valid": error,
        "supabase_keys_are_unique": warn,  # an identical retry copy: double counting only
        "ws_sequence_is_continuous": warn,
        "quarantine_within_tolerance": warn,
    }
    # no_checksum_mismatches blocks, so the run fails; the report was written before.
    assert not result.success


def test_clean_hour_is_clean_and_outside_cohort_is_never_missing(world_env: World):
    health = stream_events("health", "system.health", 30)
    sessions = stream_events("sess-a", "session.started", 30)  # never sent to Supabase
    world_env.log([*health, *sessions])
    world_env.insert(health)
    critical_on_since_yesterday(world_env)
    with dg.instance_for_test() as instance:
        result = run_partition(instance)
    assert result.success
    doc = load_report(world_env.settings.layout, PARTITION)
    assert reports.is_clean(doc), reports.discrepancies(doc)
    assert (doc["expected_in_supabase"], doc["matched"], doc["delivery_rate"]) == (30, 30, 1.0)
    assert all(e.passed for e in result.get_asset_check_evaluations())
    assert len(result.get_asset_check_evaluations()) == 12
    # The snapshots are stored per partition, as Parquet.
    snap = world_env.settings.layout.snapshot("ws_log_snapshot", PARTITION)
    assert pq.read_metadata(snap).num_rows == 60


def test_rerun_replaces_the_report_and_a_failed_run_keeps_the_previous(world_env: World):
    health = stream_events("health", "system.health", 10)
    world_env.log(health)
    world_env.insert(health[:9])
    critical_on_since_yesterday(world_env)
    with dg.instance_for_test() as instance:
        run_partition(instance)
        assert load_report(world_env.settings.layout, PARTITION)["matched"] == 9
        world_env.insert(health[9:])
        run_partition(instance)
        assert load_report(world_env.settings.layout, PARTITION)["matched"] == 10

        # The log directory disappears: the run fails, the previous report and snapshot stay.
        log_dir = world_env.settings.ws_log_dir
        log_dir.rename(log_dir.with_name("ws-log-gone"))
        result = run_partition(instance)
    assert not result.success
    assert load_report(world_env.settings.layout, PARTITION)["matched"] == 10
    snap = world_env.settings.layout.snapshot("ws_log_snapshot", PARTITION)
    assert pq.read_metadata(snap).num_rows == 10
    # Nothing staged is left behind by the runs, failed or not.
    staging = world_env.settings.layout.snapshots_dir / ".staging"
    assert [p for p in staging.rglob("*") if p.is_file()] == []


def test_an_hour_read_in_many_parts_reports_exactly_as_in_one(
    world_env: World, monkeypatch: pytest.MonkeyPatch
):
    """Memory is bounded by reading the hour in parts of whole streams; the report and the
    check results must not depend on how many parts there are."""
    from parity.io import snapshot

    faulty_hour(world_env)
    with dg.instance_for_test() as instance:
        whole = run_partition(instance)
        one = load_report(world_env.settings.layout, PARTITION)
        ws_file = world_env.settings.layout.snapshot("ws_log_snapshot", PARTITION)
        assert len(snapshot.SnapshotFile(ws_file).layout()) == 1

        monkeypatch.setattr(snapshot, "DEFAULT_PART_ROWS", 3)
        parted = run_partition(instance)
        many = load_report(world_env.settings.layout, PARTITION)
        assert len(snapshot.SnapshotFile(ws_file).layout()) == 3  # its three streams apart

    def verdicts(result: dg.ExecuteInProcessResult) -> dict:
        return {
            e.check_name: (e.passed, e.severity, e.metadata.get("observed_value"))
            for e in result.get_asset_check_evaluations()
        }

    assert verdicts(parted) == verdicts(whole)
    volatile = {"generated_at", "report_path", "duration_s"}
    assert {k: v for k, v in many.items() if k not in volatile} == {
        k: v for k, v in one.items() if k not in volatile
    }


def test_blocking_check_failure_stops_what_depends_on_it(world_env: World):
    """A conflicting copy in Supabase fails ``no_checksum_mismatches`` (blocking): an asset
    downstream of the reconciliation is not materialized in that run."""
    errors = stream_events("errors", "error.raised", 5)
    world_env.log(errors)
    world_env.insert(
        [
            replace(
                errors[0],
                payload={"x": 1},
                checksum=make_event(
                    "errors", 1, "error.raised", errors[0].emitted_at, {"x": 1}
                ).checksum,
            ),
            *errors[1:],
        ]
    )
    critical_on_since_yesterday(world_env)

    defs = build_definitions()
    partitions_def = defs.resolve_job_def(RECONCILE_EVENTS_JOB).partitions_def
    ran = []

    @dg.asset(deps=["event_reconciliation"], partitions_def=partitions_def)
    def downstream_repair() -> None:
        ran.append(True)

    job = dg.Definitions.merge(
        defs, dg.Definitions(assets=[downstream_repair])
    ).resolve_implicit_global_asset_job_def()
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(
            partition_key=PARTITION,
            instance=instance,
            raise_on_error=False,
            asset_selection=[
                dg.AssetKey(k)
                for k in (
                    "ws_log_snapshot",
                    "supabase_events_snapshot",
                    "event_reconciliation",
                    "downstream_repair",
                )
            ],
        )
    assert not result.success
    assert ran == []
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "downstream_repair" not in materialized
    assert {"ws_log_snapshot", "supabase_events_snapshot"} <= materialized
    failed = [e.check_name for e in result.get_asset_check_evaluations() if not e.passed]
    assert "no_checksum_mismatches" in failed


def test_a_command_loads_its_definitions_on_the_instance_it_runs_with(
    world_env: World, monkeypatch: pytest.MonkeyPatch
):
    # Dagster keeps the current instance's definitions state in a context variable. Two
    # instances left in the wrong order (a fixture torn down late, a generator closed by
    # the garbage collector) leave it naming one that is gone, and loading definitions
    # then fails with "Attempted to resolve undefined DagsterInstance weakref". The
    # commands build their jobs while their own instance is the current one.
    health = stream_events("health", "system.health", 5)
    world_env.log(health)
    world_env.insert(health)

    home = os.environ.get("DAGSTER_HOME")  # each test instance sets it while entered

    def with_a_stale_instance_current() -> list:
        first, second = dg.instance_for_test(), dg.instance_for_test()
        first.__enter__()
        second.__enter__()
        first.__exit__(None, None, None)
        second.__exit__(None, None, None)  # restores the first's, disposed, as current
        del first, second
        gc.collect()
        if home is None:
            monkeypatch.delenv("DAGSTER_HOME", raising=False)
        else:
            monkeypatch.setenv("DAGSTER_HOME", home)
        with pytest.raises(dg.DagsterInvariantViolationError, match="weakref"):
            build_definitions().resolve_job_def(RECONCILE_EVENTS_JOB)
        return reconcile_partitions([PARTITION])

    (outcome,) = contextvars.copy_context().run(with_a_stale_instance_current)
    assert outcome.success and outcome.report is not None
    assert (outcome.report["ws_events"], outcome.report["supabase_events"]) == (5, 5)

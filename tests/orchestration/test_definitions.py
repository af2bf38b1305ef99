"""The code location loads, its assets are described, and the schedule and the partitioned
job pick the right hours."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pyarrow as pa
import pytest

from assets.resources import parity_resource
from orchestration.definitions import build_definitions, defs
from orchestration.jobs import HOURLY_RECONCILIATION_SCHEDULE, RECONCILE_EVENTS_JOB
from parity.core.config import Settings
from parity.core.errors import ConfigurationError

ENV = {"PARITY_HOME": "/tmp/parity-defs-test", "PARITY_PARTITIONS_START": "2026-11-20"}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for key in (
        "PARITY_DATABASE_URL",
        "SUPABASE_URL",
        "SUPABASE_SERVICE_ROLE_KEY",
        "PARITY_SCHEDULE_LAG_MINUTES",
    ):
        monkeypatch.delenv(key, raising=False)
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    return ENV


def test_the_workspace_attribute_loads(env):
    loaded = defs()
    dg.Definitions.validate_loadable(loaded)
    assert {j.name for j in loaded.jobs} >= {
        RECONCILE_EVENTS_JOB,
        "rollback_job",
        "promote_rollout_job",
    }
    assert {s.name for s in loaded.sensors} >= {
        "rollback_on_check_failure",
        "rollback_on_health_triggers",
        "canary_promotion",
    }


def test_assets_have_groups_descriptions_kinds_and_lineage(env):
    graph = build_definitions().resolve_asset_graph()
    recon = dg.AssetKey("event_reconciliation")
    assert graph.get(recon).parent_keys == {
        dg.AssetKey("ws_log_snapshot"),
        dg.AssetKey("supabase_events_snapshot"),
        dg.AssetKey("feature_flags"),
    }
    for name in ("ws_log_snapshot", "supabase_events_snapshot", "event_reconciliation"):
        node = graph.get(dg.AssetKey(name))
        assert node.group_name == "reconciliation"
        assert node.description and len(node.description) > 40
        assert node.kinds
        assert isinstance(node.partitions_def, dg.HourlyPartitionsDefinition)
    assert graph.get(dg.AssetKey("feature_flags")).group_name == "rollout"


def test_partitions_start_where_configured(env):
    job = build_definitions().resolve_job_def(RECONCILE_EVENTS_JOB)
    keys = job.partitions_def.get_partition_keys(
        current_time=dt.datetime(2026, 11, 20, 3, 30, tzinfo=dt.UTC)
    )
    assert keys == ["2026-11-20-00:00", "2026-11-20-01:00", "2026-11-20-02:00"]


def test_default_start_is_recent(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("PARITY_PARTITIONS_START", raising=False)
    now = dt.datetime(2026, 11, 28, 12, tzinfo=dt.UTC)
    job = build_definitions(environ={"PARITY_HOME": "/tmp/x"}, now=now).resolve_job_def(
        RECONCILE_EVENTS_JOB
    )
    assert job.partitions_def.get_first_partition_key() == "2026-11-21-00:00"


@pytest.mark.parametrize(
    ("tick", "lag", "expected"),
    [
        (dt.datetime(2026, 11, 28, 11, 15, tzinfo=dt.UTC), None, "2026-11-28-10:00"),
        (dt.datetime(2026, 11, 28, 0, 15, tzinfo=dt.UTC), None, "2026-11-27-23:00"),
        (dt.datetime(2026, 11, 28, 12, 30, tzinfo=dt.UTC), "90", "2026-11-28-10:00"),
    ],
)
def test_schedule_requests_the_last_complete_hour(world_env, monkeypatch, tick, lag, expected):
    if lag:
        monkeypatch.setenv("PARITY_SCHEDULE_LAG_MINUTES", lag)
    loaded = build_definitions()
    schedule = loaded.resolve_schedule_def(HOURLY_RECONCILIATION_SCHEDULE)
    minute = int(lag) % 60 if lag else 15
    assert schedule.cron_schedule == f"{minute} * * * *"
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(
            instance=instance,
            scheduled_execution_time=tick,
            repository_def=loaded.get_repository_def(),
            resources={"parity": loaded.resources["parity"]},
        )
        result = schedule.evaluate_tick(context)
    [request] = result.run_requests
    assert request.partition_key == expected
    assert request.run_key == expected  # one run per hour, however often the tick repeats


def test_schedule_skips_hours_before_the_first_partition(env):
    loaded = build_definitions()
    schedule = loaded.resolve_schedule_def(HOURLY_RECONCILIATION_SCHEDULE)
    tick = dt.datetime(2026, 11, 20, 0, 15, tzinfo=dt.UTC)  # would be 2026-11-19-23:00
    with dg.instance_for_test() as instance:
        result = schedule.evaluate_tick(
            dg.build_schedule_context(
                instance=instance,
                scheduled_execution_time=tick,
                repository_def=loaded.get_repository_def(),
                resources={"parity": loaded.resources["parity"]},
            )
        )
    assert not result.run_requests
    assert "before the first partition" in result.skip_message


def test_bad_lag_is_a_configuration_error(env, monkeypatch):
    monkeypatch.setenv("PARITY_SCHEDULE_LAG_MINUTES", "soon")
    with pytest.raises(ConfigurationError, match="PARITY_SCHEDULE_LAG_MINUTES"):
        build_definitions()


def test_backfill_over_a_range_runs_one_hour_per_run(env):
    """A partition backfill of the reconciliation over a range of hours launches one run
    per hour: each asset reconciles exactly one hour (multi_run(1))."""
    loaded = build_definitions()
    graph = loaded.resolve_asset_graph()
    for name in ("ws_log_snapshot", "supabase_events_snapshot", "event_reconciliation"):
        assert graph.get(dg.AssetKey(name)).backfill_policy == dg.BackfillPolicy.multi_run(1)
    job = loaded.resolve_job_def(RECONCILE_EVENTS_JOB)
    keys = job.partitions_def.get_partition_keys_in_range(
        dg.PartitionKeyRange("2026-11-28-08:00", "2026-11-28-10:00")
    )
    assert keys == ["2026-11-28-08:00", "2026-11-28-09:00", "2026-11-28-10:00"]


def test_secrets_reach_dagster_as_env_vars_not_values():
    environ = {
        "PARITY_HOME": "/x",
        "PARITY_DATABASE_URL": "postgresql://u:hunter2@h/db",
        "SUPABASE_SERVICE_ROLE_KEY": "sekrit",
        "PARITY_ALERT_URLS": "json://127.0.0.1:9/hook?token=t0ken",
    }
    resource = parity_resource(Settings.from_env(environ), environ)
    shown = repr(resource.__dict__) + repr(resource)
    assert "hunter2" not in shown and "sekrit" not in shown and "t0ken" not in shown
    assert "PARITY_DATABASE_URL" in shown


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PARITY_TRIGGER_ERROR_RATE", "5%"),
        ("PARITY_ROLLOUT_STEPS", "50,10"),
        ("PARITY_SLO_DELIVERY_RATE", "99.9"),
        ("PARITY_ALERT_WINDOW_MINUTES", "0"),
        ("PARITY_ROLLBACK_DRY_RUN", "maybe"),
        ("PARITY_WORKERS", "0"),
    ],
)
def test_a_bad_knob_stops_the_code_location_naming_it(env, monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError, match=variable):
        build_definitions()


def test_an_unusable_alert_url_stops_the_code_location_without_showing_it(env, monkeypatch):
    monkeypatch.setenv("PARITY_ALERT_URLS", "nosuchservice://t0ken@example.com/")
    with pytest.raises(ConfigurationError, match="PARITY_ALERT_URLS") as raised:
        build_definitions()
    assert "t0ken" not in str(raised.value)


def test_the_knobs_in_force_are_visible_in_the_ui(env, monkeypatch):
    monkeypatch.setenv("PARITY_TRIGGER_ERROR_RATE", "0.02")
    monkeypatch.setenv("PARITY_ROLLOUT_STEPS", "5,25,100")
    monkeypatch.setenv("PARITY_ROLLBACK_DRY_RUN", "true")
    loaded = build_definitions()
    knobs = loaded.resources["parity"].knobs
    assert knobs["PARITY_TRIGGER_ERROR_RATE"] == "0.02"
    assert knobs["PARITY_SLO_DELIVERY_RATE"] == "0.999"  # defaults are shown too
    health = loaded.resolve_sensor_def("rollback_on_health_triggers")
    assert health.metadata["PARITY_TRIGGER_ERROR_RATE"].value == "0.02"
    assert "2.00%" in (health.description or "") and "DRY RUN" in (health.description or "")
    canary = loaded.resolve_sensor_def("canary_promotion")
    assert canary.metadata["PARITY_ROLLOUT_STEPS"].value == "5,25,100"
    assert "5% -> 25% -> 100%" in (canary.description or "")
    # A step reads the same settings back from the resource: one route, one validation.
    settings = loaded.resources["parity"].settings()
    assert settings.knobs.triggers.error_rate_threshold == 0.02
    assert settings.knobs.rollout.steps == (5, 25, 100)
    assert settings.knobs.rollback_dry_run is True


def test_the_runtime_is_shown_and_applied_where_a_step_runs(env, monkeypatch):
    from parity.core.config import Runtime
    from parity.io import native, parallel
    from parity.io.runtime import apply_runtime

    before = Runtime(
        workers=parallel._limit,
        native=native.kernel is not None,
        memory_pool=pa.default_memory_pool().backend_name,
    )
    monkeypatch.setenv("PARITY_WORKERS", "2")
    monkeypatch.setenv("PARITY_NO_NATIVE", "1")
    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "system")
    try:
        resource = build_definitions().resources["parity"]
        assert resource.runtime == {
            "PARITY_WORKERS": "2",
            "PARITY_NO_NATIVE": "1",
            "ARROW_DEFAULT_MEMORY_POOL": "system",
        }
        apply_runtime(Runtime())  # a fresh step process, before its resources are built
        with dg.build_resources({"parity": resource}):
            assert native.kernel is None and parallel._limit == 2
            assert pa.default_memory_pool().backend_name == "system"
        # A resource built without runtime config leaves the process as it was set.
        with dg.build_resources({"parity": resource.model_copy(update={"runtime": {}})}):
            assert native.kernel is None and parallel._limit == 2
    finally:
        apply_runtime(before)

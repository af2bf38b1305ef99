"""A REST-only deployment (only SUPABASE_URL and the service-role key, no
PARITY_DATABASE_URL) rolls back, promotes and reads health: the rollback job, the health
and canary sensors ticking on a real instance with their requested runs executed, and
``parity flags|rollback|rollout``, all through the real PostgREST binary."""

from __future__ import annotations

import datetime as dt
import json
import types
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from assets.flags import feature_flags
from assets.resources import parity_resource_from_env
from orchestration.definitions import build_definitions
from orchestration.rollout import (
    CANARY_PROMOTION,
    PROMOTE_ROLLOUT_JOB,
    ROLLBACK_JOB,
    ROLLBACK_ON_HEALTH_TRIGGERS,
)
from parity.app import cli
from parity.core import rollout
from parity.core.config import Settings
from parity.core.routing import CRITICAL_EVENTS_SUPABASE, SUPABASE_ROLLOUT_PERCENTAGE
from parity.io import control_pg
from tests.orchestration.test_rollback_and_sensors import rollout_floor, write_clean_reports
from tests.restharness import SUPABASE_TABLE, SupabaseRest, insert_samples

pytestmark = pytest.mark.integration

TABLE = SUPABASE_TABLE
PERCENT = SUPABASE_ROLLOUT_PERCENTAGE


@pytest.fixture
def rest_env(
    supabase_api: SupabaseRest,
    empty_control_tables: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, str]:
    """Only the REST variables in the environment; the flag tables empty."""
    env = {
        "PARITY_HOME": str(tmp_path / "home"),
        "SUPABASE_URL": supabase_api.url,
        "SUPABASE_SERVICE_ROLE_KEY": supabase_api.service_role_key,
        "PARITY_EVENTS_TABLE": str(TABLE),
        "PARITY_PARTITIONS_START": "2026-11-27",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in (
        "PARITY_DATABASE_URL",
        "SUPABASE_SECRET_KEY",
        "PARITY_WS_LOG_DIR",
        "PARITY_ALERT_WEBHOOK_URL",
        "DAGSTER_HOME",
    ):
        monkeypatch.delenv(key, raising=False)
    assert Settings.from_env(env).transport == "rest"
    return env


def flags_over_sql(supabase_db_url: str) -> dict:
    """The flags as PostgreSQL has them, independent of the REST path under test."""
    with psycopg.connect(supabase_db_url) as conn:
        return control_pg.read_flags(conn, TABLE.schema, include_reserved=True)


def set_over_sql(supabase_db_url: str, values: dict) -> None:
    with psycopg.connect(supabase_db_url, autocommit=True) as conn:
        control_pg.set_flags(conn, TABLE.schema, values, actor="test", reason="setup")


def tick(sensor: dg.SensorDefinition, instance: dg.DagsterInstance, cursor: str | None = None):
    """One evaluation, as the daemon makes it: on the instance, with the code location's
    own resource (built from the environment's variables)."""
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"parity": parity_resource_from_env()}
    )
    return sensor.evaluate_tick(context)


def test_rollback_job_runs_over_rest(rest_env: dict, supabase_db_url: str) -> None:
    set_over_sql(supabase_db_url, {PERCENT: 50, CRITICAL_EVENTS_SUPABASE: True})
    job = build_definitions().resolve_job_def(ROLLBACK_JOB)
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(
            run_config={"ops": {"apply_rollback": {"config": {"reason": "drill over REST"}}}},
            instance=instance,
        )
    assert result.success
    values = flags_over_sql(supabase_db_url)
    assert {k: values[k] for k in rollout.rollback_plan()} == rollout.rollback_plan()
    assert values[rollout.ROLLOUT_STATE_FLAG]["rollback_reason"] == "drill over REST"
    # The decision is audited too, through the REST RPC of migration 004.
    with psycopg.connect(supabase_db_url) as conn:
        [decision] = [d for d in control_pg.decisions(conn, TABLE.schema) if "REST" in d.reason]
    assert (decision.mode, decision.source) == ("applied", "parity:rollback_job")
    assert decision.changes == {PERCENT: 0, CRITICAL_EVENTS_SUPABASE: False}


def test_health_sensor_ticks_and_its_rollback_runs_over_rest(
    rest_env: dict, supabase_db_url: str
) -> None:
    set_over_sql(supabase_db_url, {PERCENT: 10})
    defs = build_definitions()
    sensor = defs.resolve_sensor_def(ROLLBACK_ON_HEALTH_TRIGGERS)
    now = dt.datetime.now(dt.UTC)
    with dg.instance_for_test() as instance:
        quiet = tick(sensor, instance)
        assert not quiet.run_requests  # no samples: no data, never a rollback
        insert_samples(supabase_db_url, now, count=6 * 6, failures=9)  # 9% errors, sustained
        [request] = tick(sensor, instance, quiet.cursor).run_requests
        result = defs.resolve_job_def(ROLLBACK_JOB).execute_in_process(
            run_config=request.run_config, instance=instance, tags=request.tags
        )
        assert result.success
        values = flags_over_sql(supabase_db_url)
        assert values[PERCENT] == 0
        assert values[rollout.ROLLOUT_STATE_FLAG]["rollback_reason"].startswith(
            "health trigger breached: error_rate"
        )
        after = tick(sensor, instance)
        assert not after.run_requests and "already in force" in (after.skip_message or "")


def test_canary_sensor_ticks_and_its_promotion_runs_over_rest(
    rest_env: dict, supabase_db_url: str
) -> None:
    defs = build_definitions()
    sensor = defs.resolve_sensor_def(CANARY_PROMOTION)
    now = dt.datetime.now(dt.UTC)
    start = now - dt.timedelta(hours=5)
    state = rollout.RolloutState(step=0, step_started_at=start, paused=False, paused_reason=None)
    set_over_sql(
        supabase_db_url,
        {CRITICAL_EVENTS_SUPABASE: True, rollout.ROLLOUT_STATE_FLAG: state.to_json()},
    )
    insert_samples(supabase_db_url, now, count=80 * 6, failures=0)
    settings = Settings.from_env(rest_env)
    write_clean_reports(
        types.SimpleNamespace(settings=settings),  # type: ignore[arg-type]
        [rollout_floor(start) + dt.timedelta(hours=i) for i in range(6)],
    )
    with dg.instance_for_test() as instance:
        evaluation = tick(sensor, instance)
        assert evaluation.run_requests, evaluation.skip_message
        [request] = evaluation.run_requests
        result = defs.resolve_job_def(PROMOTE_ROLLOUT_JOB).execute_in_process(
            run_config=request.run_config, instance=instance, tags=request.tags
        )
        assert result.success
    values = flags_over_sql(supabase_db_url)
    assert values[PERCENT] == 10 and values[rollout.ROLLOUT_STATE_FLAG]["step"] == 1


def test_the_cli_reads_and_changes_flags_over_rest(
    rest_env: dict, supabase_db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["flags", "set", PERCENT, "10", "--reason", "start canary"]) == 0
    assert "0 -> 10" in capsys.readouterr().out
    assert cli.main(["flags", "list"]) == 0
    listed = dict(line.split() for line in capsys.readouterr().out.splitlines())
    assert listed[PERCENT] == "10" and listed["MONITORING_DUAL_WRITE_ENABLED"] == "true"
    assert cli.main(["flags", "history", PERCENT]) == 0
    assert "start canary" in capsys.readouterr().out
    assert cli.main(["rollout", "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["state"]["step"] == -1
    assert cli.main(["rollback", "--reason", "drill"]) == 0
    assert f"{PERCENT} -> 0" in capsys.readouterr().out
    assert flags_over_sql(supabase_db_url)[PERCENT] == 0
    assert cli.main(["rollout", "resume", "--reason", "fixed"]) == 0
    assert not rollout.RolloutState.from_json(
        flags_over_sql(supabase_db_url)[rollout.ROLLOUT_STATE_FLAG]
    ).rollback_in_force


def test_the_feature_flags_asset_is_observed_over_rest(
    rest_env: dict, supabase_db_url: str
) -> None:
    set_over_sql(supabase_db_url, {PERCENT: 50})
    defs = dg.Definitions(
        assets=[feature_flags],
        jobs=[dg.define_asset_job("observe_flags", selection=[feature_flags])],
        resources={"parity": parity_resource_from_env()},
    )
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("observe_flags").execute_in_process(instance=instance)
    [observation] = [e for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"]
    metadata = observation.event_specific_data.asset_observation.metadata  # type: ignore[union-attr]
    assert metadata[PERCENT].value == "50"
    assert "setup" in metadata["recent_changes"].value

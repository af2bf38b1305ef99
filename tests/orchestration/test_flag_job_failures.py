"""The flag-writing jobs and the flag observation say why they failed: a run of
``rollback_job``, of ``promote_rollout_job`` and of the ``feature_flags`` observation against
an unreachable or an unmigrated database fails its step with Parity's sentence (the UI's
first line), never "Error occurred while executing op", and never with the password; the
commands that do the same by hand exit with the code for it. Real parts: the embedded
PostgreSQL, a closed TCP port, a schema without Parity's tables."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable

import dagster as dg
import pytest

from assets.flags import feature_flags
from assets.resources import parity_resource_from_env
from orchestration.definitions import build_definitions
from orchestration.failures import run_failures
from orchestration.rollout import PROMOTE_ROLLOUT_JOB, ROLLBACK_JOB
from parity.app.cli import main
from parity.core import rollout
from parity.core.errors import EXIT_CONFIGURATION, EXIT_INFRASTRUCTURE
from parity.core.routing import FLAG_DEFAULTS
from tests.orchestration.conftest import World

pytestmark = pytest.mark.integration

SECRET = "fl4g-J0b-Pa55-6e1d"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: name -> (environment that breaks the database, sentence expected, exit code)
BREAKAGES = {
    "unreachable": (
        lambda world: {
            "PARITY_DATABASE_URL": f"postgresql://parity:{SECRET}@127.0.0.1:{closed_port()}/db"
        },
        "cannot connect to PostgreSQL at host=127.0.0.1",
        EXIT_INFRASTRUCTURE,
    ),
    "unmigrated": (
        lambda world: {"PARITY_EVENTS_TABLE": "never_migrated_4c2.monitoring_events"},
        "run `parity db migrate`",
        EXIT_CONFIGURATION,
    ),
}


@pytest.fixture(params=sorted(BREAKAGES))
def broken(request, world_env: World, monkeypatch: pytest.MonkeyPatch) -> tuple[str, int]:
    environment, said, code = BREAKAGES[request.param]
    for key, value in environment(world_env).items():
        monkeypatch.setenv(key, value)
    return said, code


def rollback_run(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    config = {"reason": "drill", "evidence_json": json.dumps({"trigger": "test"})}
    return (
        build_definitions()
        .resolve_job_def(ROLLBACK_JOB)
        .execute_in_process(
            run_config={"ops": {"apply_rollback": {"config": config}}},
            instance=instance,
            raise_on_error=False,
        )
    )


def promote_run(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    state = rollout.RolloutState(step=0, paused=False, paused_reason=None)
    decision = {
        "expected_state": state.to_json(),
        "expected_flags": dict(FLAG_DEFAULTS),
        "flag_changes": {"MONITORING_SUPABASE_ROLLOUT_PERCENTAGE": 10},
        "next_state": rollout.RolloutState(step=1, paused=False, paused_reason=None).to_json(),
        "reason": "canary: stage 0 -> 1",
        "evidence": {},
    }
    return (
        build_definitions()
        .resolve_job_def(PROMOTE_ROLLOUT_JOB)
        .execute_in_process(
            run_config={
                "ops": {"apply_promotion": {"config": {"decision_json": json.dumps(decision)}}}
            },
            instance=instance,
            raise_on_error=False,
        )
    )


def observe_run(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    defs = dg.Definitions(
        assets=[feature_flags],
        jobs=[dg.define_asset_job("observe_flags", selection=[feature_flags])],
        resources={"parity": parity_resource_from_env()},
    )
    return defs.resolve_job_def("observe_flags").execute_in_process(
        instance=instance, raise_on_error=False
    )


@pytest.mark.parametrize(
    ("run", "step"),
    [
        (rollback_run, "apply_rollback"),
        (promote_run, "apply_promotion"),
        (observe_run, "observe_feature_flags"),
    ],
    ids=["rollback_job", "promote_rollout_job", "feature_flags"],
)
def test_a_flag_run_fails_with_the_parity_sentence(
    broken: tuple[str, int],
    run: Callable[[dg.DagsterInstance], dg.ExecuteInProcessResult],
    step: str,
) -> None:
    said, code = broken
    with dg.instance_for_test() as instance:
        result = run(instance)
        assert not result.success
        [stored] = instance.get_runs()
        records = instance.all_logs(stored.run_id)
    [failure] = [
        r.dagster_event for r in records if r.dagster_event and r.dagster_event.is_step_failure
    ]
    assert failure.step_key == step
    data = failure.step_failure_data
    assert data is not None and data.error is not None and data.user_failure_data is not None
    # What the UI shows first: the error's class and message, then the description.
    assert data.error.cls_name == "Failure", data.error.cls_name
    assert said in data.error.message and said in (data.user_failure_data.description or "")
    assert "Error occurred while executing" not in data.error.message
    [parsed] = run_failures(r.dagster_event for r in records if r.dagster_event)
    assert (parsed.step, parsed.exit_code) == (step, code)
    stored_text = "\n".join(
        json.dumps(dg.serialize_value(r), default=str)
        for r in records  # type: ignore[arg-type]
    )
    assert SECRET not in stored_text


@pytest.mark.parametrize(
    "argv",
    [["rollback", "--reason", "drill"], ["rollout", "promote"], ["flags", "list"]],
    ids=["rollback", "rollout-promote", "flags-list"],
)
def test_the_commands_exit_with_the_code_and_sentence(
    broken: tuple[str, int], argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    said, code = broken
    assert main(argv) == code
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert said in text, text
    assert "Traceback" not in text and SECRET not in text

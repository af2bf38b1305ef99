"""A failed run says why: through ``parity reconcile`` / ``parity backfill`` (the sentence
and the exit code) and in the Dagster run itself (the step fails with that sentence, as the
UI shows it), for the ways a deployment really breaks. Real parts: the embedded PostgreSQL,
a role that needs a password, a closed TCP port, a local HTTP server answering as a broken
API gateway would, the real PostgREST with a wrong key."""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pytest

from orchestration.failures import run_failures
from orchestration.headless import reconcile_partitions
from parity.app.cli import main
from parity.core.errors import EXIT_CONFIGURATION, EXIT_INFRASTRUCTURE
from tests.io.test_store_pg import SECRET, password_role, url_with_password
from tests.orchestration.conftest import PARTITION, World, stream_events

pytestmark = pytest.mark.integration

__all__ = ["password_role"]  # a fixture, used by name

REST_KEY = "not-the-service-role-key-3b9f"


@contextmanager
def http_server(status: int, body: dict) -> Iterator[str]:
    """A server on 127.0.0.1 that answers every request with ``status`` and ``body``."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_HEAD = _answer  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def broken(world_env: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A world with one hour logged and stored, and runs recorded in a Dagster instance
    of the test's own; ``break_(**env)`` then changes the environment."""
    events = stream_events("health", "system.health", 5)
    world_env.log(events)
    world_env.insert(events)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    (tmp_path / "dagster").mkdir()

    def break_(**env: str | None) -> None:
        for key, value in env.items():
            if value is None:
                monkeypatch.delenv(key, raising=False)
            else:
                monkeypatch.setenv(key, value)

    return break_


def stored_step_failures() -> list[dg.DagsterEvent]:
    """The step failures the instance at $DAGSTER_HOME recorded: what the UI shows."""
    with dg.DagsterInstance.get() as instance:
        out = []
        for run in instance.get_runs():
            for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
                assert entry.dagster_event is not None
                out.append(entry.dagster_event)
        return out


def assert_said(capsys: pytest.CaptureFixture[str], *fragments: str) -> str:
    captured = capsys.readouterr()
    text = captured.out + captured.err
    for fragment in fragments:
        assert fragment in text, text
    assert "DagsterExecutionStepExecutionError" not in text
    assert "Error occurred while executing" not in text
    assert "Traceback" not in text
    return text


def assert_run_says(*fragments: str) -> None:
    """The step failed with the Parity sentence itself, as the UI shows it."""
    failures = stored_step_failures()
    assert failures, "no step failed in the recorded run"
    descriptions = [
        f.step_failure_data.user_failure_data.description
        for f in failures
        if f.step_failure_data and f.step_failure_data.user_failure_data
    ]
    assert descriptions, [f.step_failure_data for f in failures]
    for fragment in fragments:
        assert any(fragment in d for d in descriptions), descriptions


def test_wrong_password(broken, password_role: str, pg_url: str, capsys) -> None:
    # Refused credentials are a setting to correct (2), not an outage to wait out (3).
    broken(PARITY_DATABASE_URL=url_with_password(pg_url, password_role, SECRET))
    assert main(["reconcile", "--partition", PARTITION]) == EXIT_CONFIGURATION
    text = assert_said(capsys, "password authentication failed", "PARITY_DATABASE_URL")
    assert SECRET not in text
    assert_run_says("password authentication failed", "refused the credentials")
    assert main(["backfill", "--partition", PARTITION]) == EXIT_CONFIGURATION
    assert SECRET not in assert_said(capsys, "password authentication failed")


def test_unreachable_database(broken, capsys) -> None:
    broken(PARITY_DATABASE_URL=f"postgresql://parity:{SECRET}@127.0.0.1:{closed_port()}/db")
    assert main(["reconcile", "--partition", PARTITION]) == EXIT_INFRASTRUCTURE
    text = assert_said(capsys, "cannot connect to PostgreSQL", "host=127.0.0.1")
    assert SECRET not in text
    assert_run_says("cannot connect to PostgreSQL")


def test_missing_table(broken, world_env: World, capsys) -> None:
    broken(PARITY_EVENTS_TABLE=f"{world_env.table.schema}.monitoring_evnets")
    assert main(["reconcile", "--partition", PARTITION]) == EXIT_CONFIGURATION
    assert_said(capsys, "monitoring_evnets does not exist", "parity db migrate")
    assert_run_says("monitoring_evnets does not exist")


def test_missing_log_directory(broken, tmp_path: Path, capsys) -> None:
    missing = tmp_path / "no-such-log"
    broken(PARITY_WS_LOG_DIR=str(missing))
    assert main(["reconcile", "--partition", PARTITION]) == EXIT_CONFIGURATION
    assert_said(capsys, f"WebSocket log directory {missing} does not exist", "PARITY_WS_LOG_DIR")
    assert_run_says("does not exist")
    assert main(["backfill", "--partition", PARTITION]) == EXIT_CONFIGURATION
    assert_said(capsys, "PARITY_WS_LOG_DIR")


def test_bad_rules_file(broken, tmp_path: Path, capsys) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text("[[rule]\ncategory = 'CRITICAL'\n")
    broken(PARITY_CLASSIFICATION_RULES=str(rules))
    assert main(["reconcile", "--partition", PARTITION]) == EXIT_CONFIGURATION
    assert_said(capsys, f"classification rules {rules}", "not valid TOML")
    assert_run_says("not valid TOML")


@pytest.mark.parametrize(
    ("status", "body", "said", "code"),
    [
        (
            401,
            {"code": "PGRST301", "message": "JWSError JWSInvalidSignature"},
            "SUPABASE_SERVICE_ROLE_KEY",
            EXIT_CONFIGURATION,
        ),
        (403, {"code": "42501", "message": "permission denied"}, "key was refused", 2),
        (502, {"message": "An invalid response was received from the upstream server"}, "502", 3),
        (503, {"message": "upstream connect error"}, "HTTP 503", EXIT_INFRASTRUCTURE),
    ],
)
def test_rest_api_refusing_or_down(
    broken, capsys, status: int, body: dict, said: str, code: int
) -> None:
    """A refused key is configuration (2); a gateway or server failing is infrastructure."""
    with http_server(status, body) as url:
        broken(PARITY_DATABASE_URL=None, SUPABASE_URL=url, SUPABASE_SERVICE_ROLE_KEY=REST_KEY)
        assert main(["reconcile", "--partition", PARTITION]) == code
    text = assert_said(capsys, "Supabase REST API at", said)
    assert REST_KEY not in text
    assert_run_says(said)


def test_real_postgrest_refuses_a_wrong_key(
    broken, world_env: World, pg_url: str, tmp_path: Path, capsys
) -> None:
    from tests.restharness import start_supabase_rest

    with start_supabase_rest(
        pg_url, workdir=tmp_path / "rest", schemas=(world_env.table.schema,)
    ) as api:
        broken(PARITY_DATABASE_URL=None, SUPABASE_URL=api.url, SUPABASE_SERVICE_ROLE_KEY=REST_KEY)
        assert main(["reconcile", "--partition", PARTITION]) == EXIT_CONFIGURATION
    text = assert_said(capsys, "HTTP 401", "key was refused", "SUPABASE_SERVICE_ROLE_KEY")
    assert REST_KEY not in text


@pytest.mark.parametrize(
    ("key", "said"),
    [
        ("2026-11-26-23:00", "before the first partition, 2026-11-27-00:00"),
        ("2999-01-01-00:00", "is in the future"),
        ("yesterday", "expected an hourly partition key"),
    ],
)
def test_a_partition_that_does_not_exist(broken, capsys, key: str, said: str) -> None:
    assert main(["reconcile", "--partition", key]) == EXIT_CONFIGURATION
    assert_said(capsys, said)
    assert main(["backfill", "--partition", key]) == EXIT_CONFIGURATION
    assert_said(capsys, said)
    assert stored_step_failures() == []  # refused before any run started


def test_the_current_hour_is_not_over(broken, capsys) -> None:
    now = dt.datetime.now(dt.UTC)
    key = now.strftime("%Y-%m-%d-%H:00")
    assert main(["reconcile", "--partition", key]) == EXIT_CONFIGURATION
    assert_said(capsys, f"partition {key} has not ended yet")


def test_run_failures_reads_a_run_failed_by_a_parity_error(
    world_env: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The library call the CLI makes: the failure carries the sentence and exit code."""
    monkeypatch.setenv("PARITY_WS_LOG_DIR", str(world_env.home / "absent"))
    with dg.instance_for_test() as instance:
        [outcome] = reconcile_partitions([PARTITION], instance=instance)
        assert not outcome.success and outcome.report is None
        [failure] = outcome.failures
        assert failure.step == "ws_log_snapshot"
        assert (failure.error_class, failure.exit_code) == (
            "LogDirectoryMissingError",
            EXIT_CONFIGURATION,
        )
        assert "absent does not exist" in failure.message
        [run] = instance.get_runs()
        events = [
            e.dagster_event for e in instance.all_logs(run.run_id) if e.dagster_event is not None
        ]
        assert run_failures(events) == outcome.failures


def test_a_full_disk_or_a_bug_in_a_step() -> None:
    """An operating-system error (a full disk) fails the step as infrastructure, with its
    message; an error Parity does not know is exit 4 and keeps its class name."""
    import errno

    from assets.failures import surface_parity_errors

    @dg.asset
    @surface_parity_errors
    def full_disk() -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "/parity/snapshots/x.parquet")

    @dg.asset
    @surface_parity_errors
    def buggy():  # a generator asset, as the snapshots are
        yield dg.Output(1 // 0)

    with dg.instance_for_test() as instance:
        result = dg.materialize([full_disk], instance=instance, raise_on_error=False)
        [failure] = run_failures(result.all_events)
        assert failure.exit_code == EXIT_INFRASTRUCTURE and failure.error_class == "OSError"
        assert "No space left on device: '/parity/snapshots/x.parquet'" in failure.message
        result = dg.materialize([buggy], instance=instance, raise_on_error=False)
        [failure] = run_failures(result.all_events)
        assert (failure.step, failure.error_class, failure.exit_code) == (
            "buggy",
            "ZeroDivisionError",
            4,
        )
        assert "by zero" in failure.message

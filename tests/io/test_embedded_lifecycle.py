"""The embedded PostgreSQL is never left behind by a process that did not ask for it, and
every process says which database it uses. Real processes on a real server: each test
starts Python subprocesses on an empty ``PARITY_HOME`` of its own and looks for the
server's processes (``postgres -D <pgdata>``) after they exit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from parity.core.config import Settings

pytestmark = pytest.mark.integration

#: Variables that would point a process at another database than the embedded one.
OTHER_DATABASES = ("PARITY_DATABASE_URL", "SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY")


@pytest.fixture
def home(embedded_home: Path) -> Iterator[Path]:
    """An empty PARITY_HOME; whatever server is left on it is stopped afterwards."""
    from parity.io.embedded import stop_embedded

    try:
        yield embedded_home
    finally:
        if servers(embedded_home):
            stop_embedded(settings_of(embedded_home))


def settings_of(home: Path) -> Settings:
    return Settings.from_env({"PARITY_HOME": str(home)})


def pgdata_of(home: Path) -> Path:
    return settings_of(home).pgdata_dir.resolve()


def servers(home: Path) -> list[int]:
    """Pids of the PostgreSQL processes serving ``home``'s data directory."""
    pgdata = str(pgdata_of(home))
    found = []
    for process in psutil.process_iter(["name", "cmdline", "status"]):
        cmdline = process.info["cmdline"] or []
        if (
            process.info["name"] == "postgres"
            and pgdata in cmdline
            and process.info["status"] != psutil.STATUS_ZOMBIE
        ):
            found.append(process.pid)
    return found


def environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in OTHER_DATABASES}
    env.pop("DAGSTER_HOME", None)
    return {**env, "PARITY_HOME": str(home)}


def python(code: str, home: Path, **kwargs) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh Python process on ``home``; it must succeed."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=home,
        env=environment(home),
        **kwargs,
    )
    assert done.returncode == 0, done.stderr
    return done


#: A process that opens the store as any step does, logging at INFO to stderr.
OPEN_STORE = """
    import datetime as dt, logging, os
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    from parity.core.config import Settings
    from parity.io.store import open_store
    store = open_store(Settings.from_env(os.environ))
    now = dt.datetime.now(dt.UTC)
    print(store.count(now - dt.timedelta(hours=1), now))
"""

#: A process that uses the server until a line arrives on stdin ("ready" once it does).
HOLD = """
    import os, sys
    from parity.core.config import Settings
    from parity.io import embedded
    settings = Settings.from_env(os.environ)
    if "--keep" in sys.argv:
        embedded.keep_what_this_process_starts(settings)
    embedded.ensure_embedded(settings)
    print("ready", flush=True)
    sys.stdin.readline()
"""


def holder(home: Path, *args: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HOLD), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=home,
        env=environment(home),
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line == "ready\n", process.communicate(timeout=60)
    return process


def let_go(process: subprocess.Popen[str]) -> None:
    _, err = process.communicate("\n", timeout=120)
    assert process.returncode == 0, err


def test_a_process_that_starts_the_server_names_it_and_stops_it_at_exit(home: Path) -> None:
    done = python(OPEN_STORE, home)
    assert done.stdout.strip() == "0"
    assert f"database: the embedded PostgreSQL under {pgdata_of(home)} (started by" in done.stderr
    assert servers(home) == []


def test_a_sensor_tick_names_the_database_in_its_log_and_leaves_no_server(home: Path) -> None:
    """The health sensor evaluated as the daemon evaluates it, in a fresh process against an
    empty PARITY_HOME (the code location's default): the tick's log names the embedded
    server, and the server the tick started is gone when the process exits."""
    done = python(
        """
        import dagster as dg
        from assets.resources import parity_resource_from_env
        from orchestration.definitions import build_definitions
        from orchestration.rollout import ROLLBACK_ON_HEALTH_TRIGGERS

        sensor = build_definitions().resolve_sensor_def(ROLLBACK_ON_HEALTH_TRIGGERS)
        with dg.instance_for_test() as instance:
            context = dg.build_sensor_context(
                instance=instance, resources={"parity": parity_resource_from_env()}
            )
            result = sensor.evaluate_tick(context)
        print(result.skip_message)
        """,
        home,
    )
    assert "error_rate NO_DATA" in done.stdout  # evaluated on the fresh, migrated server
    assert f"database: the embedded PostgreSQL under {pgdata_of(home)} (started by" in done.stderr
    assert servers(home) == []


def test_a_run_names_the_database_in_its_event_log_and_leaves_no_server(home: Path) -> None:
    done = python(
        """
        import json
        import dagster as dg
        from orchestration.definitions import build_definitions
        from orchestration.rollout import ROLLBACK_JOB

        job = build_definitions().resolve_job_def(ROLLBACK_JOB)
        with dg.instance_for_test() as instance:
            config = {"ops": {"apply_rollback": {"config": {"reason": "drill"}}}}
            result = job.execute_in_process(run_config=config, instance=instance)
            messages = [r.user_message for r in instance.all_logs(result.run_id)]
        print(json.dumps({"success": result.success, "messages": messages}))
        """,
        home,
    )
    run = json.loads(done.stdout.strip().splitlines()[-1])
    assert run["success"]
    line = f"database: the embedded PostgreSQL under {pgdata_of(home)} (started by"
    assert any(line in m for m in run["messages"]), run["messages"]
    assert servers(home) == []


def test_the_server_stays_while_another_process_uses_it_and_the_last_one_stops_it(
    home: Path,
) -> None:
    first = holder(home)  # starts the server
    try:
        running = servers(home)
        assert running
        python(OPEN_STORE, home)  # attaches and exits: the first still uses it
        assert servers(home) == running
        second = holder(home)
        let_go(first)  # the starter exits, but the second still uses the server
        assert servers(home) == running
        let_go(second)  # the last one out stops it
        assert servers(home) == []
    finally:
        for process in (first, locals().get("second")):
            if process is not None and process.poll() is None:
                process.kill()
                process.communicate()


def test_a_process_using_the_server_stays_registered_when_the_clock_is_set(home: Path) -> None:
    first = holder(home)
    try:
        running = servers(home)
        # The wall clock was set by a second (NTP after a resume): /proc/stat's btime, which
        # psutil adds to every process's start, moved with it, in the next process to look.
        stepped = "import psutil._pslinux as l; b = l.boot_time; l.boot_time = lambda: b() + 1\n"
        python(stepped + textwrap.dedent(OPEN_STORE), home)  # attaches and exits
        assert servers(home) == running  # the holder still counts as a user
    finally:
        let_go(first)
    assert servers(home) == []


def test_a_killed_starter_leaves_the_server_only_until_the_next_user_lets_go(home: Path) -> None:
    starter = holder(home)
    starter.send_signal(signal.SIGKILL)  # no exit handlers run
    starter.communicate(timeout=60)
    assert servers(home)
    done = python(OPEN_STORE, home)
    assert "(already running, postmaster pid" in done.stderr
    assert servers(home) == []


def test_a_server_asked_for_is_kept_and_a_command_leaves_it_running(home: Path) -> None:
    """``parity demo`` (and so scripts/run.sh) asks for its server: the process that starts
    it exits and the server stays; a command that attaches leaves it running."""
    let_go(holder(home, "--keep"))
    running = servers(home)
    assert running
    done = subprocess.run(
        [sys.executable, "-m", "parity.app.cli", "flags", "list"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=home,
        env=environment(home),
    )
    assert done.returncode == 0, done.stderr
    assert "(already running, postmaster pid" in done.stderr and "kept running" in done.stderr
    assert servers(home) == running


def test_a_command_that_starts_the_server_stops_it_and_says_so(home: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "parity.app.cli", "flags", "list"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=home,
        env=environment(home),
    )
    assert done.returncode == 0, done.stderr
    pgdata = pgdata_of(home)
    assert f"parity: database: the embedded PostgreSQL under {pgdata} (started by" in done.stderr
    assert f"parity: stopped the embedded PostgreSQL under {pgdata}" in done.stderr
    assert servers(home) == []


def test_a_run_on_a_configured_database_names_it_without_the_password(
    pg_url: str, pg_table, tmp_path: Path
) -> None:
    """The same line for a database set in PARITY_DATABASE_URL: where, never the password
    (the embedded server trusts its socket, so any password logs in)."""
    from psycopg.conninfo import conninfo_to_dict

    secret = "n4med-Db-Pa55-0c9a"
    socket_dir = conninfo_to_dict(pg_url)["host"]
    url = f"postgresql://postgres:{secret}@/postgres?host={socket_dir}"
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(OBSERVE_FLAGS)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
        env={
            **environment(tmp_path / "home"),
            "PARITY_DATABASE_URL": url,
            "PARITY_EVENTS_TABLE": str(pg_table),
        },
    )
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout.strip().splitlines()[-1])
    assert run["success"]
    named = [m for m in run["messages"] if m.startswith("database: ")]
    [line] = named  # once per process
    assert line.startswith("database: PostgreSQL at host=") and "user=postgres" in line
    assert secret not in done.stdout + done.stderr


#: A run of the feature_flags observation, printing its success and its log messages.
OBSERVE_FLAGS = """
    import json
    import dagster as dg
    from assets.flags import feature_flags
    from assets.resources import parity_resource_from_env

    defs = dg.Definitions(
        assets=[feature_flags],
        jobs=[dg.define_asset_job("observe_flags", selection=[feature_flags])],
        resources={"parity": parity_resource_from_env()},
    )
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("observe_flags").execute_in_process(instance=instance)
        messages = [r.user_message for r in instance.all_logs(result.run_id)]
    print(json.dumps({"success": result.success, "messages": messages}))
"""

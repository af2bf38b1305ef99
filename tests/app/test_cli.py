"""The ``parity`` command as a person meets it: help, usage errors, the database it says it
uses, the servers it leaves behind (none), stored reports found where the demo left them,
output into a closed pipe, flag values and tables that are not there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import psycopg
import pytest
from click.testing import CliRunner

from parity.app.cli import cli, main
from parity.app.common import DEMO_HOME
from parity.core.config import Settings
from parity.core.errors import EXIT_CONFIGURATION, EXIT_DISCREPANCIES, EXIT_OK, FlagError
from parity.core.layout import Layout
from parity.core.routing import parse_flag_value as parse_value
from parity.io.reports import write_report
from tests.core.test_report import clean_report

PARTITION = "2026-11-28-10:00"
PERCENTAGE = "MONITORING_SUPABASE_ROLLOUT_PERCENTAGE"
DATABASE_VARIABLES = (
    "PARITY_DATABASE_URL",
    "SUPABASE_URL",
    "SUPABASE_SERVICE_ROLE_KEY",
    "SUPABASE_SECRET_KEY",
    "PARITY_EVENTS_TABLE",
    "PARITY_WS_LOG_DIR",
    "DAGSTER_HOME",
)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PARITY_HOME", str(tmp_path))
    for name in DATABASE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_help_lists_every_command_and_the_exit_codes() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for command in ("reconcile", "report", "backfill", "flags", "rollout", "record", "demo"):
        assert command in result.output
    assert "infrastructure failure" in result.output


def test_usage_errors_exit_2(home: Path) -> None:
    for argv in (["reconcile", "--bogus"], ["rollout", "sideways"], ["nope"]):
        with pytest.raises(SystemExit) as usage:
            main(argv)
        assert usage.value.code == EXIT_CONFIGURATION
    assert main(["reconcile"]) == EXIT_CONFIGURATION  # no hours named
    assert main(["reconcile", "--partition", PARTITION, "--from", PARTITION]) == 2


def test_report_finds_the_demo_s_report_and_says_so(home: Path, capsys) -> None:
    assert main(["report", PARTITION]) == EXIT_CONFIGURATION
    assert "parity reconcile --partition" in capsys.readouterr().err
    doc = clean_report(PARTITION)
    doc.update(missing_in_supabase=2, delivery_rate=0.5)
    write_report(Layout(home / DEMO_HOME), doc)
    assert main(["report", PARTITION]) == EXIT_DISCREPANCIES
    captured = capsys.readouterr()
    assert "missing_in_supabase: 2" in captured.out
    assert f"showing the demo's, from {home / DEMO_HOME / 'reports'}" in captured.err
    write_report(Layout(home), clean_report(PARTITION))  # the home's own comes first
    assert main(["report", PARTITION]) == EXIT_OK
    assert "demo" not in capsys.readouterr().err


def test_report_into_a_closed_pipe_ends_quietly(home: Path) -> None:
    doc = clean_report(PARTITION)
    doc["missing_keys"] = [[f"stream-{i}", i] for i in range(1, 40_000)]
    write_report(Layout(home), doc)
    proc = subprocess.Popen(
        [sys.executable, "-m", "parity.app.cli", "report", PARTITION, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PARITY_HOME": str(home)},
        cwd=home,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().strip() == b"{"
    proc.stdout.close()  # `| head -1`
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=60) == EXIT_OK  # the reader chose to stop
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


@pytest.mark.parametrize("text", ["1_0", "١٠", "10.0", "+10", "0x10"])
def test_a_percentage_is_ascii_digits_only(text: str) -> None:
    with pytest.raises(FlagError, match="an integer from 0 to 100"):
        parse_value(PERCENTAGE, text)
    assert parse_value(PERCENTAGE, " 10 ") == 10


def test_flag_commands_on_a_schema_without_parity_s_tables(
    home: Path, pg_url: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("PARITY_DATABASE_URL", pg_url)
    monkeypatch.setenv("PARITY_EVENTS_TABLE", f"{pg_schema}.monitoring_events")
    for argv in (["flags", "list"], ["flags", "history"], ["rollout", "status"]):
        assert main(argv) == EXIT_CONFIGURATION
        err = capsys.readouterr().err
        assert "run `parity db migrate`" in err and pg_schema in err, err
        assert "Traceback" not in err and "psycopg" not in err
    assert main(["flags", "set", PERCENTAGE, "1_0", "--reason", "typo"]) == EXIT_CONFIGURATION


@pytest.mark.integration
def test_the_embedded_server_a_command_starts_is_stopped_after_it(
    embedded_home: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from parity.io.embedded import embedded_running, ensure_embedded, stop_embedded

    for name in DATABASE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PARITY_HOME", str(embedded_home))
    settings = Settings.from_env()
    try:
        assert main(["flags", "list"]) == EXIT_OK
        err = capsys.readouterr().err
        started = f"the embedded PostgreSQL under {settings.pgdata_dir} (started by this process"
        assert started in err
        assert "stopped the embedded PostgreSQL" in err
        assert not embedded_running(settings)

        # A misspelt events table on a server that has Parity's tables is refused, not
        # created empty; `parity db migrate` is the way to create another.
        monkeypatch.setenv("PARITY_EVENTS_TABLE", "public.monitoring_event")
        assert main(["flags", "list"]) == EXIT_CONFIGURATION
        err = capsys.readouterr().err
        assert "public.monitoring_event, which the embedded PostgreSQL" in err
        assert "(it has public.monitoring_events)" in err
        assert not embedded_running(settings)
        assert main(["db", "migrate"]) == EXIT_OK
        capsys.readouterr()
        assert main(["flags", "list"]) == EXIT_OK

        # A server someone started (`dagster dev`, the demo with --keep-db) is left running.
        monkeypatch.delenv("PARITY_EVENTS_TABLE")
        url = ensure_embedded(settings)
        assert main(["flags", "list"]) == EXIT_OK
        assert "(already running, postmaster pid" in capsys.readouterr().err
        assert embedded_running(settings)
        with psycopg.connect(url) as conn:
            tables = {
                row[0]
                for row in conn.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
                )
            }
        assert {"monitoring_events", "monitoring_event"} <= tables
    finally:
        stop_embedded(settings)


def test_the_demo_banner_s_advice_works_as_written(home: Path, capsys) -> None:
    """What the banner tells a person to type: the UI's own words, and commands that run
    from any shell (the `parity` of this environment, with the demo's home)."""
    import datetime as dt
    import shlex

    from parity.app.demo_plan import plan_demo
    from parity.app.demo_ui import guide

    plan = plan_demo(7, dt.datetime(2026, 11, 28, 15, 30, tzinfo=dt.UTC), 2, 600)
    demo_home = home / DEMO_HOME
    red = plan.hours[-1]
    hours = {key: {"colour": "red" if key == red else "green"} for key in plan.hours}
    text = guide("http://127.0.0.1:3000", plan, hours, demo_home, "tail -f alerts.log")
    assert "http://127.0.0.1:3000/automation" in text and "Overview -> Sensors" not in text
    [report_line] = [line for line in text.splitlines() if " report " in line]
    argv = shlex.split(report_line)
    assert argv[0] == f"PARITY_HOME={demo_home}"
    assert Path(argv[1]).is_absolute() and os.access(argv[1], os.X_OK)
    assert argv[2:] == ["report", red]

    doc = clean_report(red)
    write_report(Layout(demo_home), doc)
    proc = subprocess.run(
        argv[1:],
        env={**os.environ, "PARITY_HOME": str(demo_home)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == EXIT_OK, proc.stderr
    assert red in proc.stdout


def test_progress_is_drawn_on_a_terminal_only(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from parity.app.common import progress

    def work() -> str:
        with progress(3, "reconciling") as bar:
            for key in ("10:00", "11:00", "12:00"):
                bar.advance(f"reconciled {key}", 1)
                bar.echo(f"{key}  CLEAN")
        captured = capsys.readouterr()
        # The results on stdout, each as it came; the bar never in them.
        assert captured.out == "10:00  CLEAN\n11:00  CLEAN\n12:00  CLEAN\n"
        return captured.err

    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    assert work() == ""  # a pipe or a log file
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich: treat stderr as a terminal
    drawn = work()
    assert "reconciling: reconciled 12:00" in drawn and "3/3" in drawn


def test_a_failure_outside_any_run_is_never_exit_1(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Exit 1 means discrepancies; a file that cannot be read is 3 and a bug is 4, each
    with its message."""
    import parity.app.cli as cli_module

    Layout(home).report(PARTITION).mkdir(parents=True)  # where the file should be
    assert main(["report", PARTITION]) == 3
    assert "Is a directory" in capsys.readouterr().err

    def bug(*args: object) -> None:
        raise KeyError("partition")

    monkeypatch.setattr(cli_module, "load_report", bug)
    assert main(["report", PARTITION]) == 4
    err = capsys.readouterr().err
    assert "unexpected error (a bug in Parity): KeyError('partition')" in err


def test_commands_of_other_modules_load_when_used() -> None:
    """``parity reconcile`` does not import the demo's or the flags' modules; ``--help``
    still lists every command, and each loads under its own name."""
    from parity.app.cli import _LazyGroup

    code = (
        "import sys, parity.app.cli\n"
        "print(sorted(m for m in sys.modules if m.startswith('parity.app.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "parity.app.cli_demo" not in out.stdout and "parity.app.cli_flags" not in out.stdout
    ctx = click.Context(cli)
    assert set(_LazyGroup.lazy) <= set(cli.list_commands(ctx))
    for name in _LazyGroup.lazy:
        command = cli.get_command(ctx, name)
        assert command is not None and command.name == name
    listed = CliRunner().invoke(cli, ["--help"]).output
    assert all(f"  {name} " in listed for name in _LazyGroup.lazy), listed

"""No secret in any output: after a series of failing commands and runs (database URLs of
many broken shapes, an unreachable server with a password, a refused Supabase key, malformed
and unreachable alert webhooks carrying a token), a distinctive password, token and key
appear nowhere: not on stdout or stderr, not in any file under ``PARITY_HOME`` or
``DAGSTER_HOME`` (Dagster's SQLite run and event storage included, read as bytes).

Commands run through the CLI's entry point with the environment set as a user would, and
what reaches the file descriptors and the log records is collected; one reconcile and the
``rollback_job`` run go through a real subprocess (the ``parity`` executable, a fresh
interpreter) as well. ``DAGSTER_HOME`` is in ``tmp_path``, so the Dagster runs land in a real
instance's storage, where the UI would show them. The failures are asserted too: a run that
never failed would prove nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from parity.core.config import TableName
from parity.io import control_pg as flags
from parity.io.migrate import migrate

pytestmark = pytest.mark.integration

PARITY = str(Path(sys.executable).parent / "parity")
PARTITION = "2026-11-28-10:00"
#: Distinctive secrets: a hit anywhere is a leak, never a coincidence.
PW = f"Pw{uuid.uuid4().hex[:12]}"
TOKEN = f"Tk{uuid.uuid4().hex[:12]}"
KEY = f"Ky{uuid.uuid4().hex[:16]}"
SECRETS = (PW, TOKEN, KEY)

#: PARITY_DATABASE_URL shapes: unparseable, misparsed and unreachable, each with PW.
BAD_DATABASE_URLS = [
    f"postgresql+psycopg2://parity:{PW}@127.0.0.1:1/parity",  # deploy/README's DAGSTER_PG_URL
    f"postgresql://parity:{PW}@127.0.0.1:1/parity",  # refused: nothing listens on port 1
    f"postgresql://parity:ab/{PW}@127.0.0.1:1/parity",  # unencoded "/" in the password
    f"postgresql://parity:{PW} x@127.0.0.1:1/parity",  # a space in the password
    f"postgresql://parity:{PW}@[::1/parity",  # an unterminated IPv6 host
    f"postgresql://parity:{PW}@127.0.0.1:port{PW}/parity",  # not a port
    f"postgresql://127.0.0.1:1/parity?password={PW}",  # the password as a parameter
    f"host=127.0.0.1 port=1 dbname=parity user=parity password={PW}",  # conninfo
    f"host=127.0.0.1 port=1 password='{PW}",  # conninfo, unterminated quote
]
BAD_WEBHOOKS = [
    f"http://hooks.example.com:{TOKEN}/services/alerts",  # a port that is not one
    f"http://[{TOKEN}/services/alerts",  # an unterminated IPv6 host
    f"http://alerts:{TOKEN}@127.0.0.1:1/hooks/{TOKEN}?token={TOKEN}",  # unreachable
    f"ht!tp://hooks.example.com/{TOKEN}",  # no such scheme
]


@dataclass
class Outcome:
    case: str
    returncode: int
    output: bytes
    stdout: bytes = b""


@pytest.fixture
def homes(tmp_path: Path) -> tuple[Path, Path]:
    parity_home, dagster_home = tmp_path / "parity-home", tmp_path / "dagster-home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return parity_home, dagster_home


def _env(homes: tuple[Path, Path], **values: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PARITY_", "SUPABASE_", "DAGSTER_"))
    }
    env.update(
        PARITY_HOME=str(homes[0]),
        DAGSTER_HOME=str(homes[1]),
        PARITY_PARTITIONS_START="2026-11-27",
        **values,
    )
    return env


def _run(case: str, args: list[str], env: dict[str, str], cwd: Path) -> Outcome:
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, timeout=300, check=False)
    return Outcome(case, done.returncode, done.stdout + done.stderr, done.stdout)


class Cli:
    """``parity`` through its entry point, in this process: faster than an interpreter per
    case, and the log records are seen too (pytest's handler would hide them from stderr)."""

    def __init__(
        self,
        monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        self.monkeypatch, self.capfd, self.caplog = monkeypatch, capfd, caplog

    def __call__(self, case: str, argv: list[str], env: dict[str, str]) -> Outcome:
        from parity.app.cli import main

        self.caplog.clear()
        with self.monkeypatch.context() as m:
            for name in list(os.environ):
                if name not in env:
                    m.delenv(name)
            for name, value in env.items():
                m.setenv(name, value)
            code = main(argv)
        out, err = self.capfd.readouterr()
        logged = "\n".join(r.getMessage() for r in self.caplog.records)
        return Outcome(case, code, (out + err + logged).encode(), out.encode())


@pytest.fixture
def cli(
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> Cli:
    caplog.set_level("INFO")  # what a user may route into Dagster (python_log_level)
    return Cli(monkeypatch, capfd, caplog)


def _fresh_table(pg_url: str) -> TableName:
    """A migrated table whose rollout is at 50%, dashboards on Supabase: a rollback changes
    what it sets."""
    table = TableName(f"sec_{uuid.uuid4().hex[:10]}", "monitoring_events")
    migrate(pg_url, table)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        flags.set_flags(
            conn,
            table.schema,
            {
                "MONITORING_SUPABASE_ROLLOUT_PERCENTAGE": 50,
                "MONITORING_DASHBOARD_FALLBACK_MODE": False,
            },
            actor="test",
            reason="setup",
        )
    return table


def _rolled_back(pg_url: str, table: TableName) -> bool:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        values = flags.read_flags(conn, table.schema)
    return (
        values["MONITORING_SUPABASE_ROLLOUT_PERCENTAGE"] == 0
        and values["MONITORING_DASHBOARD_FALLBACK_MODE"]
    )


ROLLBACK_JOB_SCRIPT = textwrap.dedent(
    """
    import json, sys, warnings
    import dagster as dg
    warnings.simplefilter("ignore")
    from orchestration.definitions import build_definitions
    job = build_definitions().resolve_job_def("rollback_job")
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(
            instance=instance,
            raise_on_error=False,
            run_config={"ops": {"apply_rollback": {"config": {"reason": "secrets test"}}}},
        )
    print(json.dumps({"success": result.success}))
    """
)


def test_no_secret_in_any_output_after_a_run_of_failures(
    homes: tuple[Path, Path], pg_url: str, tmp_path: Path, cli: Cli
) -> None:
    from tests.restharness import start_supabase_rest

    outcomes: list[Outcome] = []
    cwd = tmp_path / "cwd"
    cwd.mkdir()

    # Database URLs of every broken shape, through the quickest command that connects.
    for i, url in enumerate(BAD_DATABASE_URLS):
        env = _env(homes, PARITY_DATABASE_URL=url)
        outcomes.append(cli(f"db migrate, url shape {i}", ["db", "migrate"], env))
    env = _env(homes, PARITY_DATABASE_URL=BAD_DATABASE_URLS[7])
    outcomes.append(cli("flags list, conninfo", ["flags", "list"], env))
    # Dagster runs that fail on the database, recorded in DAGSTER_HOME's run storage.
    env = _env(homes, PARITY_DATABASE_URL=BAD_DATABASE_URLS[0])
    args = [PARITY, "reconcile", "--partition", PARTITION]
    outcomes.append(_run("reconcile (subprocess), url shape 0", args, env, cwd))
    for i in (1, 7):
        env = _env(homes, PARITY_DATABASE_URL=BAD_DATABASE_URLS[i])
        args = ["reconcile", "--partition", PARTITION]
        outcomes.append(cli(f"reconcile, url shape {i}", args, env))
    env = _env(homes, PARITY_DATABASE_URL=BAD_DATABASE_URLS[1])
    outcomes.append(cli("backfill, unreachable", ["backfill", "--partition", PARTITION], env))

    # The Supabase REST API: a refused key, and URLs that carry a token.
    table = _fresh_table(pg_url)
    with start_supabase_rest(pg_url, workdir=tmp_path / "rest", schemas=(table.schema,)) as api:
        for case, url in [
            ("reconcile, refused key", api.url),
            ("reconcile, malformed SUPABASE_URL", f"https://{TOKEN}@[bad/x?apikey={KEY}"),
            ("reconcile, unreachable SUPABASE_URL", f"http://{TOKEN}@127.0.0.1:1/{TOKEN}"),
        ]:
            env = _env(
                homes,
                SUPABASE_URL=url,
                SUPABASE_SERVICE_ROLE_KEY=KEY,
                PARITY_EVENTS_TABLE=str(table),
            )
            outcomes.append(cli(case, ["reconcile", "--partition", PARTITION], env))

    # Rollbacks with alert webhooks that cannot be delivered: committed, exit 0, no token.
    for i, webhook in enumerate(BAD_WEBHOOKS):
        table = _fresh_table(pg_url)
        env = _env(
            homes,
            PARITY_DATABASE_URL=pg_url,
            PARITY_EVENTS_TABLE=str(table),
            PARITY_ALERT_WEBHOOK_URL=webhook,
        )
        outcome = cli(f"rollback, webhook shape {i}", ["rollback", "--reason", "test"], env)
        assert outcome.returncode == 0, outcome
        assert _rolled_back(pg_url, table), outcome.case
        outcomes.append(outcome)
    # rollback_job in a Dagster run (its own interpreter) with a malformed webhook: succeeds.
    table = _fresh_table(pg_url)
    env = _env(
        homes,
        PARITY_DATABASE_URL=pg_url,
        PARITY_EVENTS_TABLE=str(table),
        PARITY_ALERT_WEBHOOK_URL=BAD_WEBHOOKS[0],
    )
    script = [sys.executable, "-c", ROLLBACK_JOB_SCRIPT]
    job = _run("rollback_job, malformed webhook", script, env, cwd)
    assert json.loads(job.stdout.splitlines()[-1]) == {"success": True}, job.output
    assert _rolled_back(pg_url, table)
    outcomes.append(job)

    # The failures happened, and reached Dagster's run storage.
    failing = [o for o in outcomes if not o.case.startswith(("rollback", "rollback_job"))]
    assert all(o.returncode != 0 for o in failing), [(o.case, o.returncode) for o in failing]
    with dg.DagsterInstance.from_config(str(homes[1])) as instance:
        runs = instance.get_runs()
        statuses = [r.status for r in runs]
    assert statuses.count(dg.DagsterRunStatus.FAILURE) >= 5, statuses
    assert statuses.count(dg.DagsterRunStatus.SUCCESS) >= 1, statuses

    # Zero hits, in every output and every file either home holds.
    forms = {f for s in SECRETS for f in (s, urllib.parse.quote(s), s.lower())}
    leaks = [(o.case, form) for o in outcomes for form in forms if form.encode() in o.output]
    files = [p for home in homes for p in home.rglob("*") if p.is_file()]
    assert any(p.suffix == ".db" for p in files)  # the SQLite run/event storage was read
    for path in files:
        data = path.read_bytes()
        leaks += [(str(path), form) for form in forms if form.encode() in data]
    assert leaks == [], leaks
    # The outputs still say what went wrong and where.
    by_case = {o.case: o.output.decode(errors="replace") for o in outcomes}
    assert "postgresql://" in by_case["db migrate, url shape 0"]
    assert "127.0.0.1" in by_case["db migrate, url shape 1"]
    assert "webhook" in by_case["rollback, webhook shape 0"]

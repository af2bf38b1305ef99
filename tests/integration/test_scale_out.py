"""Scale-out on Dagster's own engine: deploy/dagster.yaml's PostgreSQL-backed instance, a
four-hour backfill run by two processes at once (one run per hour, as the backfill policy
launches them), and the check-failure sensor's cursor on that storage."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import multiprocessing
import os
import shutil
import subprocess
import sys
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from assets.reconciliation import SUPABASE_READS_POOL
from checks.specs import CHECKS
from orchestration.definitions import build_definitions
from orchestration.jobs import RECONCILE_EVENTS_JOB
from orchestration.rollout import ROLLBACK_ON_CHECK_FAILURE, CheckCursor
from parity.core import report as reports
from parity.core.config import TableName
from parity.io.reports import load_report
from tests.orchestration.conftest import World, stream_events

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
FIRST_HOUR = dt.datetime(2026, 11, 27, 10, tzinfo=dt.UTC)
KEYS = [f"2026-11-27-{10 + i:02d}:00" for i in range(4)]
FAULTY = "2026-11-27-12:00"  # one CRITICAL event of this hour never reaches Supabase


def storage_url(pg_url: str, dbname: str) -> str:
    """A SQLAlchemy URL (what dagster-postgres takes) for ``dbname`` on the embedded server,
    which listens on a Unix socket only. The driver is named: SQLAlchemy 2.1 maps a bare
    ``postgresql://`` to psycopg 3, whose server-side parameters break dagster-postgres's
    ``NOTIFY run_events, %s``."""
    params = conninfo_to_dict(pg_url)
    user = params.get("user", "postgres")
    return f"postgresql+psycopg2://{user}@/{dbname}?host={params['host']}"


@pytest.fixture
def dagster_pg_url(pg_url: str) -> Iterator[str]:
    """A database of its own for Dagster's storage, on the session's embedded server."""
    name = f"dagster_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield storage_url(pg_url, name)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def dagster_home(tmp_path: Path, dagster_pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A DAGSTER_HOME holding the shipped deploy/dagster.yaml, unchanged: its storage comes
    from DAGSTER_PG_URL."""
    home = tmp_path / "dagster-home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_PG_URL", dagster_pg_url)
    # The storage schema is created once, before any worker starts, as `dagster instance
    # migrate` or the first webserver start does in a deployment: processes opening a fresh
    # database at the same moment race to create the same tables.
    with dg.DagsterInstance.from_config(str(home)):
        pass
    # The pool is created once here, as deploy/README's steps do before any worker starts:
    # two first runs that each create it on demand race on its unique key.
    env = {**os.environ, "DAGSTER_HOME": str(home), "DAGSTER_PG_URL": dagster_pg_url}
    dagster = Path(sys.executable).with_name("dagster")
    done = subprocess.run(
        [str(dagster), "instance", "concurrency", "set", SUPABASE_READS_POOL, "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return home


@pytest.fixture
def hours(pg_url: str, pg_table: TableName, tmp_path: Path) -> World:
    """Four hours of two CRITICAL streams in the log and in Supabase; one event of FAULTY
    lost on the way to Supabase."""
    world = World(tmp_path / "parity-home", pg_url, pg_table)
    rows = []
    for i, key in enumerate(KEYS):
        start = FIRST_HOUR + dt.timedelta(hours=i)
        health = stream_events("health", "system.health", 12, start=start, first_seq=1 + 12 * i)
        errors = stream_events("errors", "error.raised", 6, start=start, first_seq=1 + 6 * i)
        world.log([*health, *errors])
        rows += [e for e in [*health, *errors] if not (key == FAULTY and e.key == ("health", 30))]
    world.insert(rows)
    world.critical_first(FIRST_HOUR - dt.timedelta(days=1))
    return world


@pytest.fixture
def environ(hours: World, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The code location's environment: resources read it when a run starts (dg.EnvVar)."""
    for key in ("SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_SECRET_KEY", "DAGSTER_HOME"):
        monkeypatch.delenv(key, raising=False)
    for key, value in hours.env.items():
        monkeypatch.setenv(key, value)
    return hours.env


def run_hours(dagster_home: str, pg_storage_url: str, environ: dict, keys: list[str]) -> list:
    """One worker of the backfill, in its own process: one run per hour on the shared
    instance. Returns (partition, run id, success, pid, started, finished) per run.
    Errors come back as RuntimeError with the traceback: Dagster's errors do not pickle."""
    try:
        return _run_hours(dagster_home, pg_storage_url, environ, keys)
    except Exception:
        raise RuntimeError(traceback.format_exc()) from None


def _run_hours(dagster_home: str, pg_storage_url: str, environ: dict, keys: list[str]) -> list:
    os.environ.update(environ, DAGSTER_PG_URL=pg_storage_url)
    defs = build_definitions(environ=environ)
    job = defs.resolve_job_def(RECONCILE_EVENTS_JOB)
    out = []
    with dg.DagsterInstance.from_config(dagster_home) as instance:
        for key in keys:
            started = dt.datetime.now(dt.UTC).timestamp()
            result = job.execute_in_process(
                partition_key=key,
                instance=instance,
                raise_on_error=False,
                tags={"parity/backfill": "scale-out-test"},
            )
            finished = dt.datetime.now(dt.UTC).timestamp()
            out.append((key, result.run_id, result.success, os.getpid(), started, finished))
    return out


def test_four_hour_backfill_runs_in_parallel_on_postgres_storage(
    hours: World, environ: dict[str, str], dagster_home: Path, dagster_pg_url: str
):
    # Two worker processes, two hours each, against one PostgreSQL-backed instance: what the
    # run queue does with max_concurrent_runs >= 2 and the default (process) run launcher.
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=2, mp_context=spawn) as pool:
        futures = [
            pool.submit(run_hours, str(dagster_home), dagster_pg_url, environ, keys)
            for keys in (KEYS[0::2], KEYS[1::2])
        ]
        runs = [run for future in futures for run in future.result(timeout=600)]

    assert sorted(r[0] for r in runs) == KEYS
    assert all(success for _, _, success, *_ in runs), runs  # no blocking check failed
    assert len({pid for *_, pid, _, _ in runs}) == 2
    first, second = ([r for r in runs if r[3] == pid] for pid in {r[3] for r in runs})
    overlap = min(max(r[5] for r in first), max(r[5] for r in second)) - max(
        min(r[4] for r in first), min(r[4] for r in second)
    )
    assert overlap > 0, "the two workers never ran at the same time"

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        # Everything landed in PostgreSQL: runs, their tags, materializations per partition.
        stored = instance.get_runs(dg.RunsFilter(tags={"parity/backfill": "scale-out-test"}))
        assert sorted(run.tags["dagster/partition"] for run in stored) == KEYS
        assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in stored)
        for asset in ("ws_log_snapshot", "supabase_events_snapshot", "event_reconciliation"):
            assert instance.get_materialized_partitions(dg.AssetKey(asset)) == set(KEYS)

    for key in KEYS:
        doc = load_report(hours.settings.layout, key)
        assert doc["expected_in_supabase"] == 18
        assert doc["missing_in_supabase"] == (1 if key == FAULTY else 0)
        assert reports.is_clean(doc) == (key != FAULTY)


def test_check_failure_sensor_cursor_advances_on_postgres_storage(
    environ: dict[str, str], dagster_home: Path
):
    defs = build_definitions(environ=environ)
    sensor = defs.resolve_sensor_def(ROLLBACK_ON_CHECK_FAILURE)
    job = defs.resolve_job_def(RECONCILE_EVENTS_JOB)

    def tick(instance: dg.DagsterInstance, cursor: str | None):
        context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
        return sensor.evaluate_tick(context)

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        for key in KEYS:
            job.execute_in_process(partition_key=key, instance=instance, raise_on_error=False)
        first = tick(instance, None)
        [request] = first.run_requests  # one rollback for the faulty hour's ERROR failures
        config = request.run_config["ops"]["apply_rollback"]["config"]
        assert config["partitions"] == [FAULTY]
        assert "no_critical_events_lost" in config["reason"]
        assert first.cursor
        handled = CheckCursor.parse(first.cursor).handled
        assert sum(len(ids) for ids in handled.values()) == len(CHECKS) * len(KEYS)

    # A new instance object (a new daemon process would make one) on the same storage: the
    # cursor still covers every stored result, so nothing is handled twice.
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        second = tick(instance, first.cursor)
        assert second.run_requests == []
        assert CheckCursor.parse(second.cursor).handled == handled

        # The faulty hour reconciled again: only the new failures count, and the cursor moves.
        job.execute_in_process(partition_key=FAULTY, instance=instance, raise_on_error=False)
        third = tick(instance, second.cursor)
        [again] = third.run_requests
        assert again.run_key != request.run_key
        assert again.run_config["ops"]["apply_rollback"]["config"]["partitions"] == [FAULTY]
        advanced = CheckCursor.parse(third.cursor).handled
        assert sum(len(ids) for ids in advanced.values()) == len(CHECKS) * (len(KEYS) + 1)
        assert all(set(handled[name]) <= set(advanced[name]) for name in handled)
        assert tick(instance, third.cursor).run_requests == []

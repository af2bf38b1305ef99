"""Shared fixtures: one embedded PostgreSQL for the whole session, a fresh schema per test."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from parity.core.config import Runtime, Settings, TableName
from parity.io.runtime import apply_runtime
from tests.restharness import SUPABASE_TABLE, SupabaseRest

# Hypothesis keeps caches in ./.hypothesis unless told otherwise; no test writes to the
# working directory.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", tempfile.mkdtemp(prefix="parity-hypothesis-"))
# The test session is an entry point: PARITY_NO_NATIVE=1 (scripts/test.sh's second pass)
# and PARITY_WORKERS hold for every test, as they would for the CLI.
apply_runtime(Runtime.from_env(os.environ))


@contextmanager
def parity_home() -> Iterator[Path]:
    """A fresh PARITY_HOME for an embedded server, removed afterwards.

    Not under pytest's ``tmp_path``: run as root, pgserver runs PostgreSQL as the user
    ``pgserver`` and opens the directories above ``pgdata`` to it, but every pytest session
    that starts resets ``/tmp/pytest-of-<user>`` to mode 0700, so a server starting while
    another session starts could not reach its data directory.
    """
    home = Path(tempfile.mkdtemp(prefix="parity-test-home-"))
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_settings() -> Iterator[Settings]:
    """Settings whose ``PARITY_HOME`` holds the session's embedded server."""
    with parity_home() as home:
        yield Settings(home=home, ws_log_dir=home / "ws-log")


@pytest.fixture
def embedded_home() -> Iterator[Path]:
    """A PARITY_HOME of the test's own, for tests that start (and stop) a second server."""
    with parity_home() as home:
        yield home


@pytest.fixture(scope="session")
def pg_url(pg_settings: Settings) -> Iterator[str]:
    """URL of a superuser on the session's embedded PostgreSQL (started once, stopped at
    the end). ``public.monitoring_events`` is migrated; tests should use ``pg_schema``."""
    from parity.io.embedded import ensure_embedded, stop_embedded
    from tests.restharness import ensure_roles

    url = ensure_embedded(pg_settings)
    # Supabase's API roles exist from the start, as on a project: every migration in the
    # session applies its role-guarded parts, whichever test happens to run first.
    ensure_roles(url)
    try:
        yield url
    finally:
        stop_embedded(pg_settings)


@pytest.fixture
def pg_schema(pg_url: str) -> Iterator[str]:
    """A schema name no other test uses (not created); dropped with its tables afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def pg_table(pg_url: str, pg_schema: str) -> TableName:
    """``<fresh schema>.monitoring_events``, migrated (with the flag and metric tables)."""
    from parity.io.migrate import migrate

    table = TableName(pg_schema, "monitoring_events")
    migrate(pg_url, table)
    return table


@pytest.fixture(scope="module")
def supabase_db_url(pg_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A database of the test module's own, set up as a Supabase project is (roles, default
    privileges that grant the API roles everything new), then migrated: the events table in
    ``public`` with the flag, audit and metric tables."""
    from parity.io.migrate import migrate
    from tests.restharness import prepare_supabase

    database = "parity_" + request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"drop database if exists {database} with (force)")
        conn.execute(f"create database {database}")
    url = make_conninfo(**{**conninfo_to_dict(pg_url), "dbname": database})  # type: ignore[arg-type]
    prepare_supabase(url, (SUPABASE_TABLE.schema,))
    migrate(url, SUPABASE_TABLE)
    yield url
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"drop database if exists {database} with (force)")


@pytest.fixture(scope="module")
def supabase_api(
    supabase_db_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SupabaseRest]:
    """The real PostgREST over :func:`supabase_db_url`, its schema cache holding the flags."""
    from parity.io.tables import FLAGS_TABLE
    from tests.restharness import start_supabase_rest

    with start_supabase_rest(
        supabase_db_url,
        workdir=tmp_path_factory.mktemp("postgrest"),
        schemas=(SUPABASE_TABLE.schema,),
    ) as running:
        running.reload_schema(wait_for=[(SUPABASE_TABLE.schema, FLAGS_TABLE)])
        yield running


@pytest.fixture
def empty_control_tables(supabase_db_url: str) -> None:
    """The flag, audit and metric tables of :func:`supabase_db_url` emptied before the test."""
    from parity.io.tables import AUDIT_TABLE, FLAGS_TABLE, METRICS_TABLE

    with psycopg.connect(supabase_db_url, autocommit=True) as conn:
        for table in (FLAGS_TABLE, AUDIT_TABLE, METRICS_TABLE):
            ident = sql.Identifier(SUPABASE_TABLE.schema, table)
            conn.execute(sql.SQL("truncate {}").format(ident))

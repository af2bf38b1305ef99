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

from parity.core.config import Runtime, Settings, TableName
from parity.io.runtime import apply_runtime

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

"""Schema migrations for the tables of contract §4.

The SQL lives in ``parity/migrations/NNN_name.sql``, applied in file-name order. The files
hold placeholders (``{schema}``, ``{events}``…) that :func:`compose` fills with
``psycopg.sql.Identifier`` (and, where a name is compared with the catalogs,
``psycopg.sql.Literal``), so any schema or table name works, quotes and dots included.

Bookkeeping: ``<schema>.parity_schema_migrations`` records, per events table, which files
ran. :func:`migrate` runs each pending file in its own transaction, together with its
bookkeeping row, under an advisory lock on the schema, so two processes migrating at once
apply each file once. A failure rolls the file back and raises ``MigrationError``.

The files are idempotent as well (``IF NOT EXISTS``, guarded ``DO`` blocks), so the text of
:func:`migration_sql` can be pasted into the Supabase SQL editor, even twice, and a later
:func:`migrate` sees those files as applied.

A pre-existing events table without ``unique (stream, seq)`` that already holds duplicate
keys is migrated without the constraint: the ``ALTER TABLE … ADD CONSTRAINT`` runs in a
subtransaction, and a ``unique_violation`` leaves the table as it was. :func:`migrate` then
logs a warning; :func:`parity.store_pg.unique_key_exists` tells callers at any time.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg
from psycopg import sql

from parity.core.config import TableName
from parity.core.errors import ConfigurationError, MigrationError
from parity.core.redact import redact
from parity.io.pg_connect import DEFAULT_CONNECT_TIMEOUT_S, DEFAULT_STATEMENT_TIMEOUT_S, connect
from parity.io.store_pg import advisory_key, unique_key_exists
from parity.io.tables import (
    AUDIT_TABLE,
    DECISIONS_TABLE,
    FLAGS_LOCK_KEY,
    FLAGS_TABLE,
    METRICS_TABLE,
    MIGRATIONS_TABLE,
    RECORD_DECISION_FUNCTION,
    SET_FLAGS_FUNCTION,
)

log = logging.getLogger(__name__)

#: PostgreSQL truncates longer identifiers (NAMEDATALEN - 1 bytes).
MAX_IDENTIFIER_BYTES = 63
#: The dollar-quote tag of the DO blocks; a name containing it would end the block early.
DOLLAR_TAG = "$parity$"

# Creates the schema only when missing: CREATE SCHEMA IF NOT EXISTS checks the CREATE
# privilege on the database before it checks existence, and a role allowed to own tables
# in an existing schema (``public`` on Supabase) need not have that privilege.
_BOOTSTRAP = """
DO $parity$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = {schema_name}) THEN
        CREATE SCHEMA IF NOT EXISTS {schema};
    END IF;
END
$parity$;

CREATE TABLE IF NOT EXISTS {schema}.{migrations} (
    events_table text        NOT NULL,
    name         text        NOT NULL,
    checksum     text        NOT NULL,
    applied_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (events_table, name)
);

ALTER TABLE {schema}.{migrations} ENABLE ROW LEVEL SECURITY;
"""

_RECORD = """
INSERT INTO {schema}.{migrations} (events_table, name, checksum)
VALUES ({events_name}, {migration_name}, {checksum})
ON CONFLICT (events_table, name) DO NOTHING;
"""


@dataclass(frozen=True)
class Migration:
    name: str  # file name without .sql, e.g. 001_init
    template: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.template.encode()).hexdigest()


def migrations() -> list[Migration]:
    """The migration files shipped with Parity, in the order they apply."""
    folder = resources.files("parity.io") / "migrations"
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [Migration(f.name.removesuffix(".sql"), f.read_text(encoding="utf-8")) for f in files]


def derived_name(table: str, suffix: str) -> str:
    """``<table>_<suffix>`` as an index or constraint name, shortened with a hash when it
    would exceed PostgreSQL's 63 bytes (a truncated name could collide with another)."""
    name = f"{table}_{suffix}"
    if len(name.encode()) <= MAX_IDENTIFIER_BYTES:
        return name
    digest = hashlib.sha256(table.encode()).hexdigest()[:8]
    keep = MAX_IDENTIFIER_BYTES - len(suffix) - len(digest) - 2
    head = table.encode()[:keep].decode(errors="ignore")
    return f"{head}_{digest}_{suffix}"


def placeholders(table: TableName) -> dict[str, sql.Composable]:
    """What the migration templates refer to, composed safely."""
    for part in (table.schema, table.name):
        if DOLLAR_TAG in part:
            raise ConfigurationError(
                f"table name {table}: a name may not contain {DOLLAR_TAG!r} "
                "(it delimits the migrations' DO blocks)"
            )

    def qualified(name: str) -> sql.Literal:
        # A schema-qualified name as text, for format('%s') in the DO blocks.
        return sql.Literal(sql.Identifier(table.schema, name).as_string())

    return {
        "schema": sql.Identifier(table.schema),
        "schema_name": sql.Literal(table.schema),
        "events": sql.Identifier(table.name),
        "events_name": sql.Literal(table.name),
        "events_key": sql.Identifier(derived_name(table.name, "stream_seq_key")),
        "events_emitted_at_idx": sql.Identifier(derived_name(table.name, "emitted_at_idx")),
        "flags": sql.Identifier(FLAGS_TABLE),
        "flags_name": sql.Literal(FLAGS_TABLE),
        "audit": sql.Identifier(AUDIT_TABLE),
        "audit_name": sql.Literal(AUDIT_TABLE),
        "audit_flag_changed_at_idx": sql.Identifier(f"{AUDIT_TABLE}_flag_changed_at_idx"),
        "metrics": sql.Identifier(METRICS_TABLE),
        "metrics_name": sql.Literal(METRICS_TABLE),
        "metrics_sampled_at_idx": sql.Identifier(f"{METRICS_TABLE}_sampled_at_idx"),
        "migrations": sql.Identifier(MIGRATIONS_TABLE),
        "decisions": sql.Identifier(DECISIONS_TABLE),
        "decisions_decided_at_idx": sql.Identifier(f"{DECISIONS_TABLE}_decided_at_idx"),
        "decisions_regclass": qualified(DECISIONS_TABLE),
        "record_decision_fn": sql.Identifier(RECORD_DECISION_FUNCTION),
        "record_decision_fn_text": qualified(RECORD_DECISION_FUNCTION),
        "set_flags_fn": sql.Identifier(SET_FLAGS_FUNCTION),
        "set_flags_fn_text": qualified(SET_FLAGS_FUNCTION),
        "lock_key": sql.Literal(FLAGS_LOCK_KEY),
        "events_regclass": qualified(table.name),
        "flags_regclass": qualified(FLAGS_TABLE),
        "audit_regclass": qualified(AUDIT_TABLE),
        "metrics_regclass": qualified(METRICS_TABLE),
        "migrations_regclass": qualified(MIGRATIONS_TABLE),
    }


def compose(template: str, table: TableName, **extra: sql.Composable) -> sql.Composed:
    return sql.SQL(template).format(**placeholders(table), **extra)  # type: ignore[arg-type]


def _record(table: TableName, migration: Migration) -> sql.Composed:
    return compose(
        _RECORD,
        table,
        migration_name=sql.Literal(migration.name),
        checksum=sql.Literal(migration.checksum),
    )


def migration_sql(table: TableName) -> str:
    """Every migration for ``table`` as one SQL script (bookkeeping included), for running
    by hand, e.g. in the Supabase SQL editor. Running it twice changes nothing."""
    parts = [
        f"-- Parity migrations for {table}. Safe to run more than once.",
        "BEGIN;",
        compose(_BOOTSTRAP, table).as_string(),
    ]
    for migration in migrations():
        parts.append(f"-- {migration.name}.sql")
        parts.append(compose(migration.template, table).as_string())
        parts.append(_record(table, migration).as_string())
    parts.append("COMMIT;")
    return "\n".join(parts) + "\n"


def migrate(
    conn_or_url: psycopg.Connection[Any] | str,
    table: TableName,
    *,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    statement_timeout_s: float = DEFAULT_STATEMENT_TIMEOUT_S,
) -> list[str]:
    """Apply the pending migrations for ``table``; return the names applied (empty when
    everything was already applied). A connection is used as given: pass one in autocommit
    mode (or commit afterwards)."""
    if isinstance(conn_or_url, str):
        with connect(
            conn_or_url,
            connect_timeout_s=connect_timeout_s,
            statement_timeout_s=statement_timeout_s,
        ) as conn:
            return _migrate(conn, table)
    return _migrate(conn_or_url, table)


def _lock(conn: psycopg.Connection[Any], table: TableName) -> None:
    # Per schema: the flag tables and the bookkeeping table are shared by its events tables.
    conn.execute("SELECT pg_advisory_xact_lock(%s)", [advisory_key("parity.migrate", table.schema)])


def _migrate(conn: psycopg.Connection[Any], table: TableName) -> list[str]:
    try:
        with conn.transaction():
            _lock(conn, table)
            conn.execute(compose(_BOOTSTRAP, table))
    except psycopg.Error as exc:
        raise MigrationError(
            f"creating schema {sql.Identifier(table.schema).as_string()} or its "
            f"{MIGRATIONS_TABLE} table failed for {table}: {_detail(exc)}; rolled back"
        ) from None

    applied: list[str] = []
    skipped: list[str] = []
    for migration in migrations():
        try:
            with conn.transaction():
                _lock(conn, table)
                done = conn.execute(
                    sql.SQL(
                        "SELECT 1 FROM {schema}.{migrations} WHERE events_table = %s AND name = %s"
                    ).format(**placeholders(table)),
                    [table.name, migration.name],
                ).fetchone()
                if done:
                    skipped.append(migration.name)
                    continue
                conn.execute(compose(migration.template, table))
                conn.execute(_record(table, migration))
        except psycopg.Error as exc:
            raise MigrationError(
                f"migration {migration.name}.sql failed on table {table}: {_detail(exc)}; "
                "rolled back, nothing of it was applied"
            ) from None
        applied.append(migration.name)
        log.info("applied migration %s to %s", migration.name, table)
    if skipped:
        log.info("migrations already applied to %s: %s", table, ", ".join(skipped))
    if not unique_key_exists(conn, table):
        log.warning(
            "%s has no unique key on (stream, seq) (it held duplicate keys when migrated, or "
            "was created without one): inserts skip existing keys under a lock and "
            "reconciliation reports duplicates. To add it, delete the surplus copies and run "
            "ALTER TABLE %s ADD CONSTRAINT %s UNIQUE (stream, seq)",
            table,
            table,
            sql.Identifier(derived_name(table.name, "stream_seq_key")).as_string(),
        )
    return applied


def _detail(exc: psycopg.Error) -> str:
    diag = exc.diag
    text = diag.message_primary or str(exc)
    if diag.sqlstate:
        text = f"{text} (SQLSTATE {diag.sqlstate})"
    if diag.context:
        text = f"{text}; {' '.join(diag.context.split())}"
    # A server message can quote a connection string (dblink, a foreign server's options).
    return redact(text)

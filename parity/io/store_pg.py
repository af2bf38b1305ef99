"""The events store over PostgreSQL (contract §4): plain PostgreSQL, the embedded server,
or a Supabase project's direct or session-pooler connection.

psycopg 3 serves control: :meth:`PostgresStore.connection` (flags, delivery metrics),
counts, catalog checks, migrations. Bulk data moves through ADBC, in C++, so no row ever
becomes a Python object: snapshots read ``COPY (query) TO STDOUT (FORMAT binary)`` into
Arrow, inserts bulk-load Arrow into a temporary table by binary COPY (five times faster
than Arrow's CSV writer plus a text COPY through psycopg). ADBC uses COPY only for
statements without bind parameters, so the window bounds travel as parameters of a
``set_config`` call in the same transaction and the query reads them back with
``current_setting``: values stay parameters, the data path stays COPY.

Timeouts and secrets. Connections come from :mod:`parity.io.pg_connect`, with the statement
timeout set session-wide; around each snapshot and insert it is set again, transaction-local.
Transaction-mode poolers (Supabase's port 6543) are not a supported target: they cannot keep
session settings. Messages name host, port, database and user, never the password: every
message built from a driver error or the URL goes through :func:`~parity.io.pg_connect.scrub`.

Refusals. An insert the server refuses for the data itself (SQLSTATE classes 22, data
exception, e.g. jsonb's "unsupported Unicode escape sequence" for ``\u0000``; 23, a
constraint; 54, a value over a limit such as an index row) raises
:class:`StoreRefusedError`, so the backfill can isolate the rows at fault.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import adbc_driver_manager
import adbc_driver_postgresql.dbapi as adbc
import numpy as np
import psycopg
import pyarrow as pa
from psycopg import sql
from psycopg.conninfo import make_conninfo

from parity.core.config import TableName
from parity.core.errors import (
    MissingTableError,
    StoreConnectionError,
    StoreError,
    StoreRefusedError,
)
from parity.core.schema import STORE_SCHEMA
from parity.io.pg_connect import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_STATEMENT_TIMEOUT_S,
    connect,
    connect_timeout_param,
    connection_error,
    describe_target,
    parse_url,
    scrub,
    statement_timeout_param,
)

COLUMNS = tuple(STORE_SCHEMA.names)
#: The order of a snapshot; nulls (a ``received_at`` never set) last.
SORT_KEYS = [("stream", "ascending"), ("seq", "ascending"), ("received_at", "ascending")]
#: Rows per table of :meth:`PostgresStore.snapshot_batches`: large enough that the
#: checksum verification of a batch is worth spreading over the cores, small enough that
#: the batch read ahead while one is verified (:func:`parity.io.store.derived_batches`)
#: costs little memory (about 35 MB).
BATCH_ROWS = 100_000
#: Columns ``insert_events`` requires; ``category`` and ``received_at`` may be absent.
REQUIRED_INSERT_COLUMNS = ("stream", "seq", "event_type", "emitted_at", "payload", "checksum")
#: The temporary table ``insert_events`` ingests into (in ``pg_temp``, one per connection).
INCOMING_TABLE = "parity_incoming"
#: Sort memory for de-duplicating a batch (transaction-local; the server default is 4MB).
INSERT_WORK_MEM = "64MB"

#: SQLSTATE classes of an insert refused for what the rows hold (see the module docstring).
REFUSAL_CLASSES = ("22", "23", "54")
#: SQLAlchemy's ``dialect+driver://`` form (``postgresql+psycopg2://``), which libpq refuses.

# A unique, non-partial index whose key is exactly (stream, seq): what ON CONFLICT needs.
_UNIQUE_KEY_QUERY = """
SELECT EXISTS (
    SELECT 1
    FROM pg_index i
    JOIN pg_class c ON c.oid = i.indrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = %s AND c.relname = %s
      AND i.indisunique AND i.indisvalid AND i.indpred IS NULL AND i.indnkeyatts = 2
      AND (SELECT array_agg(a.attname::text ORDER BY a.attname::text)
           FROM pg_attribute a
           WHERE a.attrelid = c.oid AND a.attnum IN (i.indkey[0], i.indkey[1]))
          = ARRAY['seq', 'stream']
)
"""
#: The same with libpq's numbered parameters, as ADBC takes them.
_UNIQUE_KEY_QUERY_ADBC = _UNIQUE_KEY_QUERY.replace("%s", "$1", 1).replace("%s", "$2", 1)


def unique_key_exists(conn: psycopg.Connection[Any], table: TableName) -> bool:
    """Whether ``table`` has a unique key on exactly (stream, seq) (constraint or index)."""
    row = conn.execute(_UNIQUE_KEY_QUERY, [table.schema, table.name]).fetchone()
    return bool(row and row[0])


def advisory_key(*parts: str) -> int:
    """A signed 64-bit advisory-lock key for a name (stable across processes)."""
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def conform(table: pa.Table) -> pa.Table:
    """``table`` in exactly ``STORE_SCHEMA`` (column order, types, no driver metadata)."""
    columns = []
    for field in STORE_SCHEMA:
        column = table.column(field.name)
        if column.type != field.type:
            column = column.cast(field.type)
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=STORE_SCHEMA)


def _check_window(start: dt.datetime, end: dt.datetime) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("window bounds must be timezone-aware datetimes")
    if end < start:
        raise ValueError(f"window end {end.isoformat()} is before its start {start.isoformat()}")


def _sqlstate(exc: Exception) -> str | None:
    diag = getattr(exc, "diag", None)
    state = getattr(diag, "sqlstate", None) or getattr(exc, "sqlstate", None)
    if state is None:
        match = re.search(r"SQLSTATE: ([0-9A-Z]{5})", str(exc))
        state = match.group(1) if match else None
    return state


def _reason(exc: Exception, url: str) -> str:
    """The server's own words for a refusal: its primary message, without the driver's
    prefixes (ADBC puts ``[libpq] ... ERROR:`` and the failing statement around it)."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None)
    if not primary:
        text = str(exc)
        match = re.search(r"ERROR:\s*(.*?)(?:\s*(?:DETAIL|HINT|CONTEXT|QUERY):|\n|$)", text)
        primary = match.group(1) if match else text
    return scrub(primary, url)


class PostgresStore:
    """Events in a PostgreSQL table. Every call opens its own connection and closes it,
    so one store may be shared between threads and survives server restarts."""

    transport = "postgres"

    def __init__(
        self,
        url: str,
        table: TableName,
        *,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        statement_timeout_s: float = DEFAULT_STATEMENT_TIMEOUT_S,
    ) -> None:
        self.table = table
        self.connect_timeout_s = connect_timeout_s
        self.statement_timeout_s = statement_timeout_s
        parse_url(url)  # a malformed URL is a ConfigurationError when the store is made
        self._url = url
        self._ident = sql.Identifier(table.schema, table.name)
        self._closed = False

    def __repr__(self) -> str:
        return f"PostgresStore({describe_target(self._url)}, table={self.table})"

    @property
    def target(self) -> str:
        """Where the store points, without the password (for metadata and messages)."""
        return describe_target(self._url)

    # -- connections -------------------------------------------------------------------

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A fresh autocommit psycopg connection with the store's timeouts, closed on exit.
        Use ``with conn.transaction():`` for work that must be atomic."""
        if self._closed:
            raise StoreError(f"the store for {self.table} is closed")
        conn = connect(
            self._url,
            connect_timeout_s=self.connect_timeout_s,
            statement_timeout_s=self.statement_timeout_s,
        )
        try:
            yield conn
        finally:
            conn.close()

    def _adbc_connect(self) -> adbc.Connection:
        if self._closed:
            raise StoreError(f"the store for {self.table} is closed")
        conninfo = make_conninfo(
            self._url,
            connect_timeout=connect_timeout_param(self.connect_timeout_s),
            application_name="parity",
        )
        try:
            return adbc.connect(conninfo)
        except adbc_driver_manager.Error as exc:
            raise connection_error(self._url, exc, self.connect_timeout_s) from None

    def close(self) -> None:
        """Refuse further use. Connections are per call, so there is nothing left open."""
        self._closed = True

    # -- errors ------------------------------------------------------------------------

    def _error(self, exc: Exception, action: str) -> StoreError:
        state = _sqlstate(exc)
        detail = scrub(exc, self._url)
        if state == "57014":
            return StoreError(
                f"{action} on {self.table} was cancelled by the statement timeout of "
                f"{self.statement_timeout_s:g} s (is the table locked, or the window too "
                f"large?): {detail}"
            )
        if state == "42P01":
            return MissingTableError(
                f"{action}: table {self.table} does not exist at {self.target}; correct "
                "PARITY_EVENTS_TABLE, or run the migrations to create it: `parity db migrate`"
            )
        if state == "42703":
            return StoreError(
                f"{action}: table {self.table} lacks a column of contract §4 "
                f"(stream, seq, event_type, category, emitted_at, received_at, payload, "
                f"checksum): {detail}"
            )
        if state == "42501":
            return StoreError(f"{action} on {self.table}: permission denied: {detail}")
        if state is not None and state.startswith(REFUSAL_CLASSES):
            reason = _reason(exc, self._url)
            return StoreRefusedError(
                f"{action} into {self.table} refused by the server (SQLSTATE {state}): {reason}",
                reason=reason,
                code=state,
            )
        if (state or "").startswith("08") or (
            state is None
            and isinstance(exc, psycopg.OperationalError | adbc_driver_manager.OperationalError)
        ):
            return StoreConnectionError(
                f"{action} on {self.table} lost the connection to {self.target}: {detail}"
            )
        return StoreError(f"{action} on {self.table} failed: {detail}")

    # -- reads -------------------------------------------------------------------------

    def has_unique_key(self) -> bool:
        """Whether the table has a unique key on (stream, seq) (contract §4: it may not)."""
        with self.connection() as conn:
            try:
                return unique_key_exists(conn, self.table)
            except psycopg.Error as exc:
                raise self._error(exc, "inspecting the unique key") from None

    def count(self, start: dt.datetime, end: dt.datetime) -> int:
        """Rows with ``start <= emitted_at < end`` (duplicates included)."""
        _check_window(start, end)
        query = sql.SQL(
            "SELECT count(*) FROM {table} WHERE emitted_at >= %s AND emitted_at < %s"
        ).format(table=self._ident)
        with self.connection() as conn:
            try:
                row = conn.execute(query, [start, end]).fetchone()
            except psycopg.Error as exc:
                raise self._error(exc, "count") from None
        return int(row[0]) if row else 0

    def snapshot(self, start: dt.datetime, end: dt.datetime) -> pa.Table:
        """Every row with ``start <= emitted_at < end`` (duplicates included), as
        ``STORE_SCHEMA``, sorted by (stream, seq, received_at)."""
        table = pa.concat_tables(list(self.snapshot_batches(start, end)))
        # Sorted here, not by ORDER BY: Arrow orders strings by their bytes whatever the
        # database's collation (Supabase's en_US.UTF-8 would order streams differently
        # from the log side), and in-memory Arrow sorting beats a server sort that spills
        # past work_mem.
        return table.sort_by(SORT_KEYS)

    def snapshot_batches(self, start: dt.datetime, end: dt.datetime) -> Iterator[pa.Table]:
        """The rows of :meth:`snapshot`, unsorted, as a stream of tables (``STORE_SCHEMA``)
        of about ``BATCH_ROWS`` rows: one COPY, never more than a batch in memory."""
        _check_window(start, end)
        query = sql.SQL(
            "SELECT stream, seq, event_type, category, emitted_at, received_at,"
            " payload::text AS payload, checksum"
            " FROM {table}"
            " WHERE emitted_at >= current_setting('parity.window_start')::timestamptz"
            " AND emitted_at < current_setting('parity.window_end')::timestamptz"
        ).format(table=self._ident)
        conn = self._adbc_connect()
        yielded = False
        try:
            # The dbapi connection is not in autocommit mode: both statements run in one
            # transaction, so the transaction-local settings reach the COPY.
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT set_config('statement_timeout', $1, true),"
                    " set_config('parity.window_start', $2, true),"
                    " set_config('parity.window_end', $3, true)",
                    (
                        statement_timeout_param(self.statement_timeout_s),
                        start.astimezone(dt.UTC).isoformat(),
                        end.astimezone(dt.UTC).isoformat(),
                    ),
                )
                cur.fetchall()
                cur.execute(query.as_string())
                reader = cur.fetch_record_batch()
                pending: list[pa.RecordBatch] = []
                rows = 0
                for batch in reader:
                    pending.append(batch)
                    rows += batch.num_rows
                    if rows >= BATCH_ROWS:
                        yield conform(pa.Table.from_batches(pending))
                        yielded, pending, rows = True, [], 0
                if pending or not yielded:
                    yield conform(pa.Table.from_batches(pending, schema=reader.schema))
            conn.rollback()
        except adbc_driver_manager.Error as exc:
            raise self._error(exc, "snapshot") from None
        finally:
            conn.close()

    # -- writes ------------------------------------------------------------------------

    def _incoming(self, rows: pa.Table) -> pa.Table:
        missing = [name for name in REQUIRED_INSERT_COLUMNS if name not in rows.column_names]
        if missing:
            raise StoreError(
                f"insert into {self.table}: rows lack the column(s) {', '.join(missing)} "
                "(STORE_SCHEMA)"
            )
        columns = []
        for field in STORE_SCHEMA:
            if field.name in rows.column_names:
                column = rows.column(field.name)
                try:
                    columns.append(column if column.type == field.type else column.cast(field.type))
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise StoreError(
                        f"insert into {self.table}: column {field.name} of type {column.type} "
                        f"does not convert to {field.type}: {exc}"
                    ) from None
            else:
                columns.append(pa.nulls(rows.num_rows, field.type))
        columns.append(pa.array(np.arange(rows.num_rows, dtype=np.int64)))
        return pa.Table.from_arrays(columns, names=[*COLUMNS, "ord"])

    def insert_events(self, rows: pa.Table) -> int:
        """Insert rows (``STORE_SCHEMA`` columns; ``received_at`` may be absent or null for
        ``now()``), skipping any whose (stream, seq) already exists, in the table or earlier
        in ``rows``. Idempotent. Returns the number of rows written.

        ADBC's bulk ingest (binary COPY straight from Arrow) fills a temporary table, then
        one INSERT … SELECT moves the keys not yet present, all in one transaction. The
        ``NOT EXISTS`` filter makes re-inserting known rows an anti-join instead of one
        speculative insertion per row. With a unique key, ``ON CONFLICT DO NOTHING``
        settles races with concurrent writers; without one, a transaction-scoped advisory
        lock on the table keeps two Parity writers from inserting the same key (writers
        other than Parity are not covered: reconciliation reports the duplicates they make).
        """
        if rows.num_rows == 0:
            return 0
        incoming = self._incoming(rows)
        names = sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
        insert = sql.SQL(
            "INSERT INTO {table} ({names})"
            " SELECT DISTINCT ON (i.stream, i.seq) i.stream, i.seq, i.event_type, i.category,"
            " i.emitted_at, coalesce(i.received_at, now()), i.payload::jsonb, i.checksum"
            " FROM pg_temp.{incoming} i"
            " WHERE NOT EXISTS"
            " (SELECT 1 FROM {table} e WHERE e.stream = i.stream AND e.seq = i.seq)"
            " ORDER BY i.stream, i.seq, i.ord"
        ).format(table=self._ident, names=names, incoming=sql.Identifier(INCOMING_TABLE))
        conn = self._adbc_connect()
        try:
            # Not autocommit: everything below is one transaction, committed at the end.
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT set_config('statement_timeout', $1, true),"
                    " set_config('work_mem', $2, true)",
                    (statement_timeout_param(self.statement_timeout_s), INSERT_WORK_MEM),
                )
                cur.fetchall()
                cur.adbc_ingest(INCOMING_TABLE, incoming, mode="create", temporary=True)
                cur.execute(
                    _UNIQUE_KEY_QUERY_ADBC,
                    (self.table.schema, self.table.name),
                )
                unique = bool(cur.fetchall()[0][0])
                if unique:
                    statement = insert + sql.SQL(" ON CONFLICT (stream, seq) DO NOTHING")
                else:
                    key = advisory_key("parity.insert", self.table.schema, self.table.name)
                    cur.execute("SELECT pg_advisory_xact_lock($1)", (key,))
                    cur.fetchall()
                    statement = insert
                cur.execute(statement.as_string())
                written = cur.rowcount
            conn.commit()
        except adbc_driver_manager.Error as exc:
            raise self._error(exc, "insert") from None
        finally:
            conn.close()
        return max(written, 0)

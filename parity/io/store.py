"""The events store: where Supabase keeps the events (contract §4).

Two transports give the same output shape (``schema.STORE_SCHEMA``):

- ``postgres`` (:mod:`parity.store_pg`): psycopg 3 for control and writes, ADBC's COPY into
  Arrow for snapshots. Works on plain PostgreSQL, the embedded server, and a Supabase
  project's direct or session-pooler connection.
- ``rest`` (:mod:`parity.store_rest`): the ``supabase`` client against PostgREST, keyset
  paginated so the API's row cap never truncates a snapshot.

:func:`open_store` picks one from :class:`parity.config.Settings`.
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from typing import Protocol, runtime_checkable

import pyarrow as pa

from parity.core.config import Settings, TableName
from parity.core.schema import SUPABASE_SNAPSHOT_SCHEMA


@runtime_checkable
class EventStore(Protocol):
    #: ``postgres`` or ``rest``; shown in metadata.
    transport: str
    table: TableName

    def snapshot(self, start: dt.datetime, end: dt.datetime) -> pa.Table:
        """Every row with ``start <= emitted_at < end`` (duplicates included), as
        ``STORE_SCHEMA``, sorted by (stream, seq, received_at)."""
        ...

    def snapshot_batches(self, start: dt.datetime, end: dt.datetime) -> Iterator[pa.Table]:
        """The rows of :meth:`snapshot`, in no particular order, as a stream of tables:
        what a snapshot of any size is read through, a batch at a time."""
        ...

    def insert_events(self, rows: pa.Table) -> int:
        """Insert rows (``STORE_SCHEMA`` columns; ``received_at`` may be absent or null for
        ``now()``), skipping any whose (stream, seq) already exists. Idempotent. Returns
        the number of rows written. Raises :class:`parity.core.errors.StoreRefusedError`
        when the store refuses a row for what it holds (other rows of the call may have
        been written: sending them again is safe)."""
        ...

    def close(self) -> None: ...


#: The configured databases this process has named (see name_database).
_named: set[str] = set()


def describe_database(settings: Settings) -> str:
    """Which database ``settings`` point at, for messages: never a password or a key."""
    if settings.transport == "rest":
        url = urllib.parse.urlsplit(settings.supabase_url or "")
        return f"the Supabase REST API at {url.scheme}://{url.hostname or ''}"
    if settings.database_url:
        from parity.io.pg_connect import describe_target

        return f"PostgreSQL at {describe_target(settings.database_url)}"
    return f"the embedded PostgreSQL under {settings.pgdata_dir}"


def name_database(settings: Settings, announce: Callable[[str], None] | None) -> None:
    """Tell ``announce`` which configured database this process uses, the first time it
    opens it (the embedded server says so itself, when it is started or attached to)."""
    if announce is None or settings.embedded:
        return
    described = describe_database(settings)
    if described not in _named:
        _named.add(described)
        announce(f"database: {described}")


def open_store(
    settings: Settings,
    *,
    connect_timeout_s: float = 10.0,
    statement_timeout_s: float = 300.0,
    announce: Callable[[str], None] | None = None,
) -> EventStore:
    """The store the settings point at; starts the embedded server when none is set
    (``announce``: see :func:`parity.io.embedded.ensure_embedded` and
    :func:`name_database`)."""
    name_database(settings, announce)
    if settings.transport == "rest":
        from parity.io.store_rest import RestStore

        assert settings.supabase_url and settings.supabase_key
        return RestStore(
            settings.supabase_url,
            settings.supabase_key,
            settings.events_table,
            timeout_s=statement_timeout_s,
        )
    from parity.io.store_pg import PostgresStore

    url = settings.database_url
    if url is None:
        from parity.io.embedded import ensure_embedded

        url = ensure_embedded(settings, announce=announce)
    return PostgresStore(
        url,
        settings.events_table,
        connect_timeout_s=connect_timeout_s,
        statement_timeout_s=statement_timeout_s,
    )


def derived_batches(
    store: EventStore,
    start: dt.datetime,
    end: dt.datetime,
    classifier,  # noqa: ANN001
) -> Iterator[pa.Table]:
    """The store's rows of ``[start, end)`` with what Parity derives from them
    (:func:`with_derived_columns`), batch by batch.

    With the native kernel the next batch is read while this one is verified
    (:mod:`parity.io.prefetch`: the read and the kernel both run outside the GIL). Without
    it each batch's verification is spread over the cores by fork, which a reading thread
    would rule out, so the reading waits for it."""
    from parity.io import native
    from parity.io.prefetch import prefetched

    batches: Iterable[pa.Table] = store.snapshot_batches(start, end)
    if native.kernel is not None:
        batches = prefetched(batches)
    with closing(iter(batches)) as rows:  # type: ignore[type-var]
        for batch in rows:
            yield with_derived_columns(batch, classifier)


def with_derived_columns(rows: pa.Table, classifier) -> pa.Table:  # noqa: ANN001
    """Add what Parity derives from stored rows: effective category, unclassified, and
    checksum validity (``SUPABASE_SNAPSHOT_SCHEMA``)."""
    import pyarrow.compute as pc

    from parity.io.verify import verify_checksums

    declared = rows.column("category")
    ruled, unclassified = classifier.classify_column(rows.column("event_type").fill_null(""))
    has_declared = pc.is_valid(declared)
    category = pc.if_else(has_declared, declared, ruled)
    unclassified = pc.and_(pc.invert(has_declared), unclassified)
    out = {
        **{name: rows.column(name) for name in rows.column_names if name != "category"},
        "category": category,
        "declared_category": declared,
        "unclassified": unclassified,
        "checksum_valid": verify_checksums(rows),
    }
    return pa.table(out, schema=SUPABASE_SNAPSHOT_SCHEMA)

"""The events store over the Supabase REST API (PostgREST), via the ``supabase`` client.

PostgREST caps every response at ``max-rows`` (1,000 on Supabase) and says nothing when it
does, so :meth:`RestStore.snapshot` never trusts a page to be the whole answer. It pages by
key, ordered by ``(stream, seq)``, and because the table need not have a unique
``(stream, seq)`` constraint, a key's rows may straddle a page boundary. So each page's last
key is held back and re-read at the start of the next page (``>= key``); a page that holds
only one key is read on its own by offset. A page is the last one only when it is shorter
than both the limit asked for and the largest page the server has already returned (the
server's cap is at least that), so a cap below ``page_size`` cannot end a snapshot early.

Payloads are read as ``payload::text``, jsonb's own text form, so both transports return
byte-identical payload text (and integers beyond 2^53 survive untouched).

An insert refused for what the rows hold (a data-exception, constraint or limit SQLSTATE
from PostgreSQL, PostgREST's own "invalid JSON body", a gateway's 413 for a body over its
size limit, or a value the request body cannot carry at all, like a lone UTF-16 surrogate)
raises :class:`StoreRefusedError`, as on the PostgreSQL transport, so the backfill isolates
the rows at fault. Every message is redacted of the key and the URL's secrets.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import pyarrow as pa
from postgrest import APIError
from postgrest.types import ReturnMethod

from parity.core.config import TableName
from parity.core.errors import (
    CredentialsRefusedError,
    MissingTableError,
    StoreConnectionError,
    StoreError,
    StoreRefusedError,
)
from parity.core.jsontext import loads_exact
from parity.core.redact import redact, redact_url, secrets_of
from parity.core.schema import STORE_SCHEMA, UTC_US
from parity.io.supabase_api import open_client

#: Column list of a snapshot request; ``payload`` is cast so PostgREST returns jsonb's text.
SELECT = "stream,seq,event_type,category,emitted_at,received_at,payload::text,checksum"
#: Total order used to page through the rows of one (stream, seq) key by offset.
KEY_ORDER = ("received_at", "emitted_at", "event_type", "category", "checksum", "payload")
#: Columns an inserted row may carry (``received_at`` is left to the default when null).
INSERT_COLUMNS = ("stream", "seq", "event_type", "category", "emitted_at", "payload", "checksum")

#: PostgreSQL SQLSTATE classes of a refusal for the data itself (see ``store_pg``).
REFUSAL_CLASSES = ("22", "23", "54")
#: PostgREST's codes for a request body it cannot parse or map to the table.
REFUSAL_CODES = ("PGRST102", "PGRST204")

Row = dict[str, Any]


def quote_value(value: str) -> str:
    """A value inside a PostgREST logic tree (``or=(...)``): double-quoted, with ``\\`` and
    ``"`` escaped, so commas, parentheses, dots and quotes in stream names stay data."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _utc_text(value: dt.datetime, name: str) -> str:
    if value.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {value!r}")
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


#: Rows per table of :meth:`RestStore.snapshot_batches`.
BATCH_ROWS = 200_000


class _Columns:
    """Snapshot rows gathered column by column, turned into one Arrow table at the end."""

    def __init__(self) -> None:
        self.data: dict[str, list[Any]] = {f.name: [] for f in STORE_SCHEMA}

    @property
    def rows(self) -> int:
        return len(self.data["stream"])

    def extend(self, rows: Sequence[Row]) -> None:
        for name, column in self.data.items():
            column.extend([row[name] for row in rows])

    def to_table(self) -> pa.Table:
        arrays = [
            _timestamps(self.data[f.name], f.name)
            if f.type == UTC_US
            else pa.array(self.data[f.name], f.type)
            for f in STORE_SCHEMA
        ]
        return pa.Table.from_arrays(arrays, schema=STORE_SCHEMA)


def _timestamps(values: list[str | None], name: str) -> pa.Array:
    """PostgREST's ISO 8601 text (any offset, 0-6 fractional digits) as timestamp[us, UTC]."""
    try:
        return pa.array(values, pa.string()).cast(UTC_US)
    except pa.ArrowInvalid:
        pass
    out: list[dt.datetime | None] = []
    for value in values:
        try:
            out.append(None if value is None else dt.datetime.fromisoformat(value))
        except ValueError:
            raise StoreError(
                f"column {name} holds {value!r}, which Parity cannot represent as a UTC "
                "timestamp with microseconds; fix or delete that row"
            ) from None
    return pa.array(out, UTC_US)


class RestStore:
    """:class:`parity.store.EventStore` over the Supabase REST API (``transport = "rest"``).

    ``key`` is the service-role (or secret) key: row-level security is on for every table,
    and only the service role bypasses it. ``timeout_s`` bounds every wait on the network
    (``connect_timeout_s`` the connect); a timeout raises, it is never retried. With ``retry``
    the client retries a GET that failed at the network level or got 503/520, up to 3 times
    (1, 2, 4 s apart); writes are never retried.
    """

    transport = "rest"

    def __init__(
        self,
        supabase_url: str,
        key: str,
        table: TableName,
        timeout_s: float = 300.0,
        page_size: int = 1000,
        *,
        connect_timeout_s: float = 10.0,
        insert_batch_size: int = 1000,
        retry: bool = True,
    ) -> None:
        if page_size < 1 or insert_batch_size < 1:
            raise ValueError("page_size and insert_batch_size must be positive")
        self.table = table
        self.page_size = page_size
        self.insert_batch_size = insert_batch_size
        self.timeout_s = timeout_s
        self._key = key
        self._secrets = (key, *secrets_of(supabase_url))
        self._where = redact_url(supabase_url)
        self._last_status: int | None = None
        #: The server's row cap is at least the largest page it has returned.
        self._largest_page = 0
        self._http, self._client = open_client(
            supabase_url,
            key,
            table.schema,
            timeout_s=timeout_s,
            connect_timeout_s=connect_timeout_s,
            retry=retry,
            on_response=self._remember_status,
        )

    def _remember_status(self, response: httpx.Response) -> None:
        self._last_status = response.status_code

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RestStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading -----------------------------------------------------------------------------

    def snapshot(self, start: dt.datetime, end: dt.datetime) -> pa.Table:
        tables = list(self.snapshot_batches(start, end))
        return pa.concat_tables(tables).sort_by(
            [("stream", "ascending"), ("seq", "ascending"), ("received_at", "ascending")]
        )

    def snapshot_batches(self, start: dt.datetime, end: dt.datetime) -> Iterator[pa.Table]:
        """The rows of :meth:`snapshot` as tables of about ``BATCH_ROWS`` rows."""
        low, high = _utc_text(start, "start"), _utc_text(end, "end")
        self._refuse_null_keys(low, high)
        columns = _Columns()
        yielded = False
        for rows in self._pages(low, high):
            columns.extend(rows)
            if columns.rows >= BATCH_ROWS:
                yield columns.to_table()
                columns, yielded = _Columns(), True
        if columns.rows or not yielded:
            yield columns.to_table()

    def _window(self) -> Any:
        return self._client.postgrest.from_(self.table.name).select(SELECT)

    def _pages(self, low: str, high: str) -> Iterator[list[Row]]:
        """Every row of the window exactly once, in (stream, seq) order, page by page."""
        start: tuple[str, int] | None = None
        inclusive = False  # whether the next page starts at ``start`` or just after it
        visited: set[tuple[tuple[str, int], bool]] = set()
        while True:
            query = self._window().gte("emitted_at", low).lt("emitted_at", high)
            if start is not None:
                stream, op = quote_value(start[0]), "gte" if inclusive else "gt"
                query = query.or_(f"stream.gt.{stream},and(stream.eq.{stream},seq.{op}.{start[1]})")
            rows = self._fetch(query.order("stream").order("seq").limit(self.page_size))
            if self._is_last(rows):
                yield rows
                return
            last = (rows[-1]["stream"], rows[-1]["seq"])
            cut = len(rows)
            while cut and (rows[cut - 1]["stream"], rows[cut - 1]["seq"]) == last:
                cut -= 1
            if cut:
                # The last key may go on past this page: hold it back, start the next page at it.
                yield rows[:cut]
                start, inclusive = last, True
            else:
                # The page is one key only (as many duplicates as a page holds): read it alone.
                yield self._key_rows(low, high, last)
                start, inclusive = last, False
            if (start, inclusive) in visited:
                # Only a server that misreads the key filter gets here; never loop on it.
                raise StoreError(
                    f"Supabase REST API at {self._where} ({self.table}): paging came back to "
                    f"key {start!r}; the key filter was not applied as sent"
                )
            visited.add((start, inclusive))

    def _is_last(self, rows: list[Row]) -> bool:
        n = len(rows)
        last = n == 0 or (n < self.page_size and n < self._largest_page)
        self._largest_page = max(self._largest_page, n)
        return last

    def _key_rows(self, low: str, high: str, key: tuple[str, int]) -> list[Row]:
        out: list[Row] = []
        while True:
            query = self._window().eq("stream", key[0]).eq("seq", key[1])
            query = query.gte("emitted_at", low).lt("emitted_at", high)
            for column in KEY_ORDER:
                query = query.order(column)
            rows = self._fetch(query.limit(self.page_size).offset(len(out)))
            out.extend(rows)
            if self._is_last(rows):
                return out

    def _refuse_null_keys(self, low: str, high: str) -> None:
        query = self._client.postgrest.from_(self.table.name).select("stream,seq")
        query = query.gte("emitted_at", low).lt("emitted_at", high)
        rows = self._fetch(query.or_("stream.is.null,seq.is.null").limit(1))
        if rows:
            raise StoreError(
                f"{self.table} has rows with a null stream or seq in [{low}, {high}); an event "
                "needs both (contract §2): fix or delete those rows, or add NOT NULL constraints"
            )

    # -- writing -----------------------------------------------------------------------------

    def insert_events(self, rows: pa.Table) -> int:
        missing = [c for c in INSERT_COLUMNS if c != "category" and c not in rows.column_names]
        if missing:
            raise ValueError(f"insert_events needs the columns {missing}")
        written = 0
        for offset in range(0, rows.num_rows, self.insert_batch_size):
            batch = rows.slice(offset, self.insert_batch_size)
            try:
                records = _records(batch)
            except ValueError as exc:  # a payload that is not JSON (a lone surrogate)
                raise self._unsendable(exc) from None
            query = self._client.postgrest.from_(self.table.name).upsert(
                records,
                on_conflict="stream,seq",
                ignore_duplicates=True,
                returning=ReturnMethod.representation,
                default_to_null=False,  # an absent received_at takes the column default
            )
            # ON CONFLICT DO NOTHING ... RETURNING returns only the rows actually inserted.
            try:
                written += len(self._fetch(query.select("seq")))
            except UnicodeEncodeError as exc:
                # The body is encoded when the request is sent: a lone surrogate has no UTF-8.
                raise self._unsendable(exc) from None
        return written

    def _unsendable(self, exc: ValueError) -> StoreRefusedError:
        reason = self._scrub(f"the rows cannot be sent as JSON ({type(exc).__name__}: {exc})")
        return StoreRefusedError(
            f"Supabase REST API at {self._where} ({self.table}): {reason}", reason=reason
        )

    # -- errors ------------------------------------------------------------------------------

    def _fetch(self, query: Any) -> list[Row]:
        self._last_status = None
        try:
            return list(query.execute().data)
        except httpx.TimeoutException as exc:
            phase = "connecting" if isinstance(exc, httpx.ConnectTimeout) else "waiting"
            error = StoreConnectionError if phase == "connecting" else StoreError
            raise error(
                f"Supabase REST API at {self._where} ({self.table}): timed out after "
                f"{self.timeout_s:g} s {phase}; narrow the window or raise the timeout"
            ) from None
        except httpx.HTTPError as exc:
            raise StoreConnectionError(
                f"Supabase REST API at {self._where} ({self.table}) could not be reached: "
                f"{type(exc).__name__}: {self._scrub(str(exc))}; check SUPABASE_URL"
            ) from None
        except APIError as exc:
            raise self._api_error(exc) from None

    def _api_error(self, exc: APIError) -> StoreError:
        status = self._last_status
        code = exc.code or (str(status) if status else "?")
        what = self._scrub(" ".join(str(p) for p in (exc.message, exc.details, exc.hint) if p))
        prefix = f"Supabase REST API at {self._where} ({self.table}): HTTP {status} {code}: {what}"
        if status in (401, 403) or code in ("PGRST300", "PGRST301", "PGRST302", "42501"):
            return CredentialsRefusedError(
                f"{prefix}; the key was refused: set SUPABASE_SERVICE_ROLE_KEY to the project's "
                "service-role (or secret) key"
            )
        if code in ("PGRST106",):
            return StoreError(
                f"{prefix}; expose schema {self.table.schema!r} in the project's API settings"
            )
        if code in ("PGRST205", "42P01") or status == 404:
            return MissingTableError(
                f"{prefix}; correct PARITY_EVENTS_TABLE, or run the migrations to create it: "
                "`parity db migrate`"
            )
        if code == "42P10":
            return StoreError(
                f"{prefix}; insert_events needs unique (stream, seq) on the table: run the "
                "migrations"
            )
        if code.startswith(REFUSAL_CLASSES) or code in REFUSAL_CODES or status == 413:
            # 413: a gateway's body limit; a smaller batch may pass, a single row may not.
            return StoreRefusedError(
                prefix, reason=self._scrub(str(exc.message or what)), code=code
            )
        return StoreError(prefix)

    def _scrub(self, text: str) -> str:
        return redact(text, *self._secrets)


def _records(batch: pa.Table) -> list[Row]:
    """Arrow rows as JSON-ready dicts: payload text parsed (integers kept exact), a null
    ``received_at`` left out so the column default applies."""
    names = [c for c in (*INSERT_COLUMNS, "received_at") if c in batch.column_names]
    columns = {name: batch.column(name).to_pylist() for name in names}
    out: list[Row] = []
    for i in range(batch.num_rows):
        row = {name: columns[name][i] for name in names}
        if row.get("received_at") is None:
            row.pop("received_at", None)
        payload = row["payload"]
        row["payload"] = None if payload is None else loads_exact(payload)
        out.append(row)
    return out

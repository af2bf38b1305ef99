"""The control plane over the Supabase REST API (:class:`parity.io.control.ControlPlane`,
``rest``), through the ``supabase`` client.

Writes call the ``parity_set_flags`` function of migration 003 (and a rollback decision
``parity_record_rollback_decision`` of migration 004) as a PostgREST RPC: one
request, one transaction, its audit rows with it (PostgREST cannot span a transaction over
several requests, so the whole compare-and-set happens inside the function). Reads select
the tables, keyset-paginated on ``id`` so the API's row cap never truncates the audit
history or a day of metric samples. The key must be the service-role (or secret) key: the
migrations give ``anon`` and ``authenticated`` nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx
from postgrest import APIError

from parity.core.errors import (
    ConcurrentUpdateError,
    CredentialsRefusedError,
    FlagError,
    MissingTableError,
    StoreConnectionError,
    StoreError,
)
from parity.core.routing import FLAG_DEFAULTS
from parity.core.samples import MetricSample
from parity.core.schema import HEARTBEAT_EVENT_TYPE
from parity.io.flagrows import (
    AuditRow,
    RollbackDecision,
    audit_row,
    checked_changes,
    decision_row,
    in_force,
)
from parity.io.supabase_api import open_client
from parity.io.tables import (
    AUDIT_TABLE,
    DECISIONS_TABLE,
    FLAGS_TABLE,
    METRICS_TABLE,
    RECORD_DECISION_FUNCTION,
    SET_FLAGS_FUNCTION,
)

Row = dict[str, Any]
AUDIT_COLUMNS = "id,flag,old_value,new_value,changed_at,actor,reason,evidence"
DECISION_COLUMNS = "id,decided_at,mode,reason,changes,source,evidence"
METRIC_COLUMNS = (
    "id,sampled_at,producer,window_s,attempts,failures,latency_p50_ms,latency_p95_ms,"
    "connection_attempts,connection_failures"
)


def _utc_text(value: dt.datetime) -> str:
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: pass a timezone-aware (UTC) instant")
    return value.astimezone(dt.UTC).isoformat()


class RestControlPlane:
    """:class:`parity.io.control.ControlPlane` over PostgREST (a Supabase project's API)."""

    transport = "rest"

    def __init__(
        self,
        supabase_url: str,
        key: str,
        schema: str,
        *,
        events_table: str | None = None,
        timeout_s: float = 60.0,
        connect_timeout_s: float = 10.0,
        page_size: int = 1000,
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be positive")
        self.schema = schema
        self.events_table = events_table
        self.page_size = page_size
        self._timeout_s = timeout_s
        self._key = key
        parts = urlsplit(supabase_url)
        host = f"{parts.hostname or supabase_url}{f':{parts.port}' if parts.port else ''}"
        self.where = f"Supabase REST API at {host} schema {schema!r}"
        self._last_status: int | None = None
        self._http, self._client = open_client(
            supabase_url,
            key,
            schema,
            timeout_s=timeout_s,
            connect_timeout_s=connect_timeout_s,
            retry=False,
            on_response=self._remember_status,
        )

    def _remember_status(self, response: httpx.Response) -> None:
        self._last_status = response.status_code

    def __repr__(self) -> str:
        return f"RestControlPlane({self.where})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RestControlPlane:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reads ---------------------------------------------------------------------------

    def read_flags(self, *, include_reserved: bool = False) -> dict[str, Any]:
        rows = self._keyset(FLAGS_TABLE, "name,value", key="name")
        return in_force({r["name"]: r["value"] for r in rows}, include_reserved=include_reserved)

    def history(self, flag: str | None = None) -> list[AuditRow]:
        def where(query: Any) -> Any:
            return query.eq("flag", flag) if flag is not None else query

        rows = [audit_row(r) for r in self._keyset(AUDIT_TABLE, AUDIT_COLUMNS, filters=where)]
        return sorted(rows, key=lambda r: (r.changed_at, r.id))

    def load_samples(self, since: dt.datetime, until: dt.datetime) -> list[MetricSample]:
        low, high = _utc_text(since), _utc_text(until)

        def window(query: Any) -> Any:
            return query.gt("sampled_at", low).lte("sampled_at", high)

        rows = self._keyset(METRICS_TABLE, METRIC_COLUMNS, filters=window)
        for row in rows:
            row["sampled_at"] = dt.datetime.fromisoformat(row["sampled_at"]).astimezone(dt.UTC)
        rows.sort(key=lambda r: (r["sampled_at"], r["id"]))
        return [MetricSample.from_row(r) for r in rows]

    def load_heartbeats(self, since: dt.datetime, until: dt.datetime) -> dict[str, dt.datetime]:
        if self.events_table is None:  # no events table named: no heartbeats to read
            return {}
        low, high = _utc_text(since), _utc_text(until)

        def beats(query: Any) -> Any:
            return (
                query.eq("event_type", HEARTBEAT_EVENT_TYPE)
                .gt("emitted_at", low)
                .lte("emitted_at", high)
            )

        # Paged on emitted_at: two heartbeats at the same instant on a page boundary may
        # be read as one, which cannot change any producer's newest.
        rows = self._keyset(
            self.events_table,
            "producer:payload->>producer,emitted_at",
            key="emitted_at",
            filters=beats,
        )
        newest: dict[str, dt.datetime] = {}
        for row in rows:
            if row["producer"] is None:
                continue
            at = dt.datetime.fromisoformat(row["emitted_at"]).astimezone(dt.UTC)
            newest[row["producer"]] = max(at, newest.get(row["producer"], at))
        return newest

    def _keyset(
        self,
        table: str,
        columns: str,
        *,
        key: str = "id",
        filters: Callable[[Any], Any] = lambda query: query,
    ) -> list[Row]:
        """Every row of ``table`` the filters keep, page by page in ``key`` order. A page
        is the last only when it is shorter than both the limit asked for and the largest
        page the server has returned (its row cap is at least that)."""
        out: list[Row] = []
        largest = 0
        while True:
            query = filters(self._client.postgrest.from_(table).select(columns))
            if out:
                query = query.gt(key, out[-1][key])
            page = self._execute(query.order(key).limit(self.page_size), table)
            out.extend(page)
            if not page or (len(page) < self.page_size and len(page) < largest):
                return out
            largest = max(largest, len(page))

    # -- the write -----------------------------------------------------------------------

    def set_flags(
        self,
        changes: Mapping[str, Any],
        *,
        actor: str,
        reason: str,
        evidence: Any = None,
        expected: Mapping[str, Any] | None = None,
        now: dt.datetime | None = None,
    ) -> list[AuditRow]:
        params = {
            "p_changes": checked_changes(changes, actor, reason),
            "p_actor": actor,
            "p_reason": reason,
            "p_defaults": dict(FLAG_DEFAULTS),
            "p_evidence": evidence,
            "p_expected": dict(expected) if expected is not None else None,
            "p_changed_at": _utc_text(now) if now is not None else None,
        }
        written = self._execute(self._client.postgrest.rpc(SET_FLAGS_FUNCTION, params), "rpc")
        return [audit_row(r) for r in written]

    def record_decision(
        self,
        *,
        mode: str,
        reason: str,
        changes: Mapping[str, Any],
        source: str,
        evidence: Any = None,
        now: dt.datetime | None = None,
    ) -> RollbackDecision:
        params = {
            "p_mode": mode,
            "p_reason": reason,
            "p_changes": dict(changes),
            "p_source": source,
            "p_evidence": evidence,
            "p_decided_at": _utc_text(now) if now is not None else None,
        }
        row = self._execute(self._client.postgrest.rpc(RECORD_DECISION_FUNCTION, params), "rpc")
        return decision_row(row)

    def decisions(self) -> list[RollbackDecision]:
        rows = [decision_row(r) for r in self._keyset(DECISIONS_TABLE, DECISION_COLUMNS)]
        return sorted(rows, key=lambda r: (r.decided_at, r.id))

    # -- errors --------------------------------------------------------------------------

    def _execute(self, query: Any, what: str) -> Any:
        self._last_status = None
        try:
            return query.execute().data
        except httpx.TimeoutException:
            raise StoreConnectionError(
                f"{self.where} ({what}): timed out after {self._timeout_s:g} s"
            ) from None
        except httpx.HTTPError as exc:
            raise StoreConnectionError(
                f"{self.where} ({what}) could not be reached: {type(exc).__name__}: "
                f"{self._scrub(str(exc))}; check SUPABASE_URL"
            ) from None
        except APIError as exc:
            raise self._api_error(exc, what) from None

    def _api_error(self, exc: APIError, what: str) -> Exception:
        status = self._last_status
        code = exc.code or (str(status) if status else "?")
        detail = self._scrub(" ".join(str(p) for p in (exc.message, exc.details, exc.hint) if p))
        if code == "PT409":
            return ConcurrentUpdateError(f"{detail.removeprefix('parity: ')}; re-read and retry")
        if code == "22023":
            return FlagError(detail.removeprefix("parity: "))
        prefix = f"{self.where} ({what}): HTTP {status} {code}: {detail}"
        if status in (401, 403) or code in ("PGRST300", "PGRST301", "PGRST302", "42501"):
            return CredentialsRefusedError(
                f"{prefix}; the key was refused: set SUPABASE_SERVICE_ROLE_KEY to the project's "
                "service-role (or secret) key (anon and authenticated have no access)"
            )
        if code == "PGRST106":
            return StoreError(
                f"{prefix}; expose schema {self.schema!r} in the project's API settings"
            )
        if code in ("PGRST202", "PGRST205", "42P01", "42883") or status == 404:
            return MissingTableError(f"{prefix}; run the migrations (`parity db migrate`)")
        return StoreError(prefix)

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "<key>") if self._key else text

"""The control plane over PostgreSQL (:class:`parity.io.control.ControlPlane`, ``postgres``).

The functions taking a psycopg connection are the SQL of the flags, the audit and the
metric samples; :class:`PostgresControlPlane` opens a connection per call with Parity's
timeouts. Flags change only through the ``parity_set_flags`` function of migration 003,
the same one the REST implementation calls over PostgREST.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from parity.core.errors import ConcurrentUpdateError, FlagError, MissingTableError, StoreError
from parity.core.rollout import RolloutState
from parity.core.routing import FLAG_DEFAULTS, validate_flag
from parity.core.samples import MetricSample
from parity.core.schema import HEARTBEAT_EVENT_TYPE
from parity.io.flagrows import (
    ROLLOUT_STATE_FLAG,
    AuditRow,
    RollbackDecision,
    audit_row,
    checked_changes,
    decision_row,
    in_force,
    read_state_from,
)
from parity.io.pg_connect import DEFAULT_CONNECT_TIMEOUT_S, connect, describe_target
from parity.io.tables import (
    AUDIT_TABLE,
    DECISIONS_TABLE,
    FLAGS_TABLE,
    METRICS_TABLE,
    RECORD_DECISION_FUNCTION,
    SET_FLAGS_FUNCTION,
)

__all__ = [
    "ROLLOUT_STATE_FLAG",
    "AuditRow",
    "PostgresControlPlane",
    "history",
    "import_history",
    "load_samples",
    "read_flags",
    "read_state",
    "record_decision",
    "set_flags",
]

#: SQLSTATE the SQL function raises on a stale compare-and-set.
STALE_SQLSTATE = "PT409"


def _ident(schema: str, name: str) -> sql.Identifier:
    return sql.Identifier(schema, name)


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _decode(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, (str, bytes)) else value


def read_flags(
    conn: psycopg.Connection[Any], schema: str, *, include_reserved: bool = False
) -> dict[str, Any]:
    """Current values; a flag never set has its default from the migration plan."""
    rows = conn.execute(
        sql.SQL("select name, value from {}").format(_ident(schema, FLAGS_TABLE))
    ).fetchall()
    return in_force(
        {name: _decode(value) for name, value in rows}, include_reserved=include_reserved
    )


def read_state(conn: psycopg.Connection[Any], schema: str) -> RolloutState:
    """The rollout state kept in the reserved ``feature_flags`` row."""
    return read_state_from(read_flags(conn, schema, include_reserved=True))


def set_flags(
    conn: psycopg.Connection[Any],
    schema: str,
    changes: Mapping[str, Any],
    *,
    actor: str,
    reason: str,
    evidence: Any = None,
    expected: Mapping[str, Any] | None = None,
    now: dt.datetime | None = None,
) -> list[AuditRow]:
    """:meth:`parity.io.control.ControlPlane.set_flags` on a connection."""
    checked = checked_changes(changes, actor, reason)
    query = sql.SQL(
        "select {}(%s::jsonb, %s, %s, %s::jsonb, %s::jsonb, %s::jsonb, %s::timestamptz)"
    ).format(_ident(schema, SET_FLAGS_FUNCTION))
    params = (
        _json(checked),
        actor,
        reason,
        _json(FLAG_DEFAULTS),
        _json(evidence),
        _json(dict(expected)) if expected is not None else None,
        now,
    )
    try:
        with conn.transaction():
            row = conn.execute(query, params).fetchone()
    except psycopg.Error as exc:
        raise _error(exc, schema) from None
    assert row is not None  # a function call always yields its row
    return [audit_row(r) for r in _decode(row[0])]


def record_decision(
    conn: psycopg.Connection[Any],
    schema: str,
    *,
    mode: str,
    reason: str,
    changes: Mapping[str, Any],
    source: str,
    evidence: Any = None,
    now: dt.datetime | None = None,
) -> RollbackDecision:
    """:meth:`parity.io.control.ControlPlane.record_decision` on a connection."""
    query = sql.SQL("select {}(%s, %s, %s::jsonb, %s, %s::jsonb, %s::timestamptz)").format(
        _ident(schema, RECORD_DECISION_FUNCTION)
    )
    params = (mode, reason, _json(dict(changes)), source, _json(evidence), now)
    try:
        with conn.transaction():
            row = conn.execute(query, params).fetchone()
    except psycopg.Error as exc:
        raise _error(exc, schema, RECORD_DECISION_FUNCTION) from None
    assert row is not None  # a function call always yields its row
    return decision_row(_decode(row[0]))


def load_heartbeats(
    conn: psycopg.Connection[Any],
    table: sql.Identifier,
    since: dt.datetime,
    until: dt.datetime,
) -> dict[str, dt.datetime]:
    """Each producer's newest heartbeat in ``since < emitted_at <= until``."""
    query = sql.SQL(
        "select payload->>'producer', max(emitted_at) from {} where event_type = %s "
        "and emitted_at > %s and emitted_at <= %s and payload->>'producer' is not null "
        "group by 1"
    ).format(table)
    rows = conn.execute(query, (HEARTBEAT_EVENT_TYPE, since, until)).fetchall()
    return {str(r[0]): r[1].astimezone(dt.UTC) for r in rows}


def decisions(conn: psycopg.Connection[Any], schema: str) -> list[RollbackDecision]:
    """Every rollback decision, oldest first."""
    query = sql.SQL("select to_jsonb(d) from {} d order by decided_at, id").format(
        _ident(schema, DECISIONS_TABLE)
    )
    return [decision_row(_decode(r[0])) for r in conn.execute(query).fetchall()]


def _error(exc: psycopg.Error, schema: str, function: str = SET_FLAGS_FUNCTION) -> Exception:
    state = exc.diag.sqlstate
    text = exc.diag.message_primary or type(exc).__name__
    if state == STALE_SQLSTATE:
        return ConcurrentUpdateError(f"{text.removeprefix('parity: ')}; re-read and retry")
    if state == "22023":
        return FlagError(text.removeprefix("parity: "))
    if state in ("42883", "42P01", "3F000"):
        return MissingTableError(
            f"schema {schema!r} has no {function} function or Parity tables "
            f"({text}): run `parity db migrate`"
        )
    return StoreError(f"calling {function} in schema {schema!r} failed: {text} (SQLSTATE {state})")


def history(
    conn: psycopg.Connection[Any], schema: str, flag: str | None = None, *, limit: int | None = None
) -> list[AuditRow]:
    """Audit rows, oldest first (optionally one flag's, optionally the last ``limit``)."""
    query = sql.SQL(
        "select id, flag, old_value, new_value, changed_at, actor, reason, evidence from {}"
    ).format(_ident(schema, AUDIT_TABLE))
    params: list[Any] = []
    if flag is not None:
        query += sql.SQL(" where flag = %s")
        params.append(flag)
    query += sql.SQL(" order by changed_at, id")
    rows = conn.execute(query, params).fetchall()
    if limit is not None:
        rows = rows[-limit:] if limit > 0 else []
    return [
        AuditRow(r[0], r[1], _decode(r[2]), _decode(r[3]), r[4], r[5], r[6], _decode(r[7]))
        for r in rows
    ]


def import_history(conn: psycopg.Connection[Any], schema: str, rows: list[AuditRow]) -> int:
    """Append history from an earlier flag system (contract §4), keeping its timestamps."""
    for r in rows:  # one bad value refuses the whole import
        validate_flag(r.flag, r.new_value)
    with conn.transaction():
        with conn.cursor() as cur:
            cur.executemany(
                sql.SQL(
                    "insert into {} (flag, old_value, new_value, changed_at, actor, reason, "
                    "evidence) values (%s, %s::jsonb, %s::jsonb, %s, %s, %s, %s::jsonb)"
                ).format(_ident(schema, AUDIT_TABLE)),
                [
                    (
                        r.flag,
                        _json(r.old_value),
                        _json(r.new_value),
                        r.changed_at,
                        r.actor,
                        r.reason,
                        _json(r.evidence),
                    )
                    for r in rows
                ],
            )
    return len(rows)


def load_samples(
    conn: psycopg.Connection[Any], schema: str, since: dt.datetime, until: dt.datetime
) -> list[MetricSample]:
    """Samples with ``since < sampled_at <= until``, oldest first."""
    query = sql.SQL(
        "select sampled_at, producer, window_s, attempts, failures, latency_p50_ms, "
        "latency_p95_ms, connection_attempts, connection_failures from {} "
        "where sampled_at > %s and sampled_at <= %s order by sampled_at, id"
    ).format(_ident(schema, METRICS_TABLE))
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query, (since, until)).fetchall()
    return [MetricSample.from_row(row) for row in rows]


class PostgresControlPlane:
    """:class:`parity.io.control.ControlPlane` over PostgreSQL. Every call opens its own
    connection and closes it, so it survives server restarts and may be shared."""

    transport = "postgres"

    def __init__(
        self,
        url: str,
        schema: str,
        *,
        events_table: str | None = None,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        statement_timeout_s: float = 60.0,
    ) -> None:
        self.schema = schema
        self.events_table = events_table
        self.where = f"{describe_target(url)} schema {schema!r}"
        self._url = url
        self._connect_timeout_s = connect_timeout_s
        self._statement_timeout_s = statement_timeout_s

    def __repr__(self) -> str:
        return f"PostgresControlPlane({self.where})"

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        conn = connect(
            self._url,
            connect_timeout_s=self._connect_timeout_s,
            statement_timeout_s=self._statement_timeout_s,
        )
        try:
            yield conn
        except psycopg.Error as exc:
            state = exc.diag.sqlstate
            text = f"{self.where}: {exc.diag.message_primary or type(exc).__name__}"
            if state in ("42P01", "42883", "3F000"):
                raise MissingTableError(f"{text}: run `parity db migrate`") from None
            raise StoreError(f"{text} (SQLSTATE {state})") from None
        finally:
            conn.close()

    def read_flags(self, *, include_reserved: bool = False) -> dict[str, Any]:
        with self.connection() as conn:
            return read_flags(conn, self.schema, include_reserved=include_reserved)

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
        with self.connection() as conn:
            return set_flags(
                conn,
                self.schema,
                changes,
                actor=actor,
                reason=reason,
                evidence=evidence,
                expected=expected,
                now=now,
            )

    def history(self, flag: str | None = None) -> list[AuditRow]:
        with self.connection() as conn:
            return history(conn, self.schema, flag)

    def load_samples(self, since: dt.datetime, until: dt.datetime) -> list[MetricSample]:
        with self.connection() as conn:
            return load_samples(conn, self.schema, since, until)

    def load_heartbeats(self, since: dt.datetime, until: dt.datetime) -> dict[str, dt.datetime]:
        if self.events_table is None:  # no events table named: no heartbeats to read
            return {}
        with self.connection() as conn:
            return load_heartbeats(conn, _ident(self.schema, self.events_table), since, until)

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
        with self.connection() as conn:
            return record_decision(
                conn,
                self.schema,
                mode=mode,
                reason=reason,
                changes=changes,
                source=source,
                evidence=evidence,
                now=now,
            )

    def decisions(self) -> list[RollbackDecision]:
        with self.connection() as conn:
            return decisions(conn, self.schema)

    def close(self) -> None:
        """Nothing is held between calls."""

    def __enter__(self) -> PostgresControlPlane:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

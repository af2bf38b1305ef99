"""Feature flags in the Supabase ``feature_flags`` table, every change audited (DESIGN 4-5).

Writes take a transaction-scoped advisory lock on the flag tables, read the values in
force, apply only what changes, and append one ``feature_flag_audit`` row per changed flag,
all in one transaction: no lost update, and a second identical change (two rollbacks at
once) finds nothing left to change. ``expected`` turns a write into compare-and-set.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from psycopg import Connection, sql

from parity.core.errors import ConcurrentUpdateError, FlagError
from parity.core.routing import FLAG_DEFAULTS, FlagTimeline

FLAGS_TABLE = "feature_flags"
AUDIT_TABLE = "feature_flag_audit"
PERCENTAGE_FLAG = "MONITORING_SUPABASE_ROLLOUT_PERCENTAGE"
#: Parity's own rollout state is kept beside the flags, audited like them, never set by hand.
ROLLOUT_STATE_FLAG = "PARITY_ROLLOUT_STATE"
RESERVED_FLAGS = frozenset({ROLLOUT_STATE_FLAG})
#: Any constant works; it only has to be the same for every Parity process.
_LOCK_KEY = 0x5041524954590001

FlagValue = bool | int


@dataclass(frozen=True)
class AuditRow:
    id: int
    flag: str
    old_value: Any
    new_value: Any
    changed_at: dt.datetime
    actor: str
    reason: str
    evidence: Any


def validate(name: str, value: object) -> FlagValue:
    """The value, checked against the flag's type; FlagError names what is wrong."""
    if name not in FLAG_DEFAULTS:
        known = ", ".join(sorted(FLAG_DEFAULTS))
        raise FlagError(f"unknown flag {name!r}; known flags: {known}")
    default = FLAG_DEFAULTS[name]
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise FlagError(f"{name} is a boolean flag: use true or false, not {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise FlagError(f"{name} is a percentage: an integer from 0 to 100, not {value!r}")
    return value


def parse_value(name: str, text: str) -> FlagValue:
    """A value typed on a command line (``true``, ``off``, ``50``), validated."""
    lowered = text.strip().lower()
    words = {"true": True, "on": True, "yes": True, "false": False, "off": False, "no": False}
    if lowered in words:
        return validate(name, words[lowered])
    # Only plain ASCII digits are a number: int() would also take "1_0" and "١٠".
    if lowered.isascii() and lowered.lstrip("-").isdigit():
        return validate(name, int(lowered))
    return validate(name, text)


def _ident(schema: str, table: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))


def _decode(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, (str, bytes)) else value


def read_flags(conn: Connection, schema: str, *, include_reserved: bool = False) -> dict[str, Any]:
    """Current values; a flag never set has its default from the migration plan."""
    values: dict[str, Any] = dict(FLAG_DEFAULTS)
    rows = conn.execute(
        sql.SQL("select name, value from {}").format(_ident(schema, FLAGS_TABLE))
    ).fetchall()
    for name, value in rows:
        if name in FLAG_DEFAULTS or (include_reserved and name in RESERVED_FLAGS):
            values[name] = _decode(value)
    return values


def set_flags(
    conn: Connection,
    schema: str,
    changes: Mapping[str, Any],
    *,
    actor: str,
    reason: str,
    evidence: Any = None,
    expected: Mapping[str, Any] | None = None,
    now: dt.datetime | None = None,
) -> list[AuditRow]:
    """Apply ``changes`` in one transaction and audit each flag that actually changed.

    Returns the audit rows written (empty when everything already had these values).
    ``expected`` makes it compare-and-set: if any flag's value in force differs from it,
    nothing is written and ConcurrentUpdateError is raised.
    """
    if not reason.strip():
        raise FlagError("a flag change needs a reason (--reason)")
    if not actor.strip():
        raise FlagError("a flag change needs an actor")
    checked = {
        name: value if name in RESERVED_FLAGS else validate(name, value)
        for name, value in changes.items()
    }
    flags, audit = _ident(schema, FLAGS_TABLE), _ident(schema, AUDIT_TABLE)
    written: list[AuditRow] = []
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        current = read_flags(conn, schema, include_reserved=True)
        if expected is not None:
            stale = {k: current.get(k) for k, v in expected.items() if current.get(k) != v}
            if stale:
                raise ConcurrentUpdateError(
                    f"flags changed since they were read (now {stale}); re-read and retry"
                )
        evidence_json = orjson.dumps(evidence).decode() if evidence is not None else None
        for name, value in checked.items():
            old = current.get(name)
            if old == value and type(old) is type(value):
                continue
            new_json = orjson.dumps(value).decode()
            conn.execute(
                sql.SQL(
                    "insert into {} (name, value, updated_at, updated_by, reason) "
                    "values (%s, %s::jsonb, coalesce(%s, now()), %s, %s) "
                    "on conflict (name) do update set value = excluded.value, "
                    "updated_at = excluded.updated_at, updated_by = excluded.updated_by, "
                    "reason = excluded.reason"
                ).format(flags),
                (name, new_json, now, actor, reason),
            )
            row = conn.execute(
                sql.SQL(
                    "insert into {} (flag, old_value, new_value, changed_at, actor, reason, "
                    "evidence) values (%s, %s::jsonb, %s::jsonb, coalesce(%s, now()), %s, %s, "
                    "%s::jsonb) returning id, changed_at"
                ).format(audit),
                (name, orjson.dumps(old).decode(), new_json, now, actor, reason, evidence_json),
            ).fetchone()
            assert row is not None  # insert ... returning always yields the row
            written.append(AuditRow(row[0], name, old, value, row[1], actor, reason, evidence))
    return written


def history(
    conn: Connection, schema: str, flag: str | None = None, *, limit: int | None = None
) -> list[AuditRow]:
    """Audit rows, oldest first (optionally one flag's)."""
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
        rows = rows[-limit:]
    return [
        AuditRow(r[0], r[1], _decode(r[2]), _decode(r[3]), r[4], r[5], r[6], _decode(r[7]))
        for r in rows
    ]


def import_history(conn: Connection, schema: str, rows: list[AuditRow]) -> int:
    """Append history from an earlier flag system (DESIGN 4), keeping its timestamps."""
    audit = _ident(schema, AUDIT_TABLE)
    with conn.transaction():
        for r in rows:
            validate(r.flag, r.new_value)
            conn.execute(
                sql.SQL(
                    "insert into {} (flag, old_value, new_value, changed_at, actor, reason, "
                    "evidence) values (%s, %s::jsonb, %s::jsonb, %s, %s, %s, %s::jsonb)"
                ).format(audit),
                (
                    r.flag,
                    None if r.old_value is None else orjson.dumps(r.old_value).decode(),
                    orjson.dumps(r.new_value).decode(),
                    r.changed_at,
                    r.actor,
                    r.reason,
                    None if r.evidence is None else orjson.dumps(r.evidence).decode(),
                ),
            )
    return len(rows)


def timeline_from_rows(rows: list[AuditRow]) -> FlagTimeline:
    return FlagTimeline.from_audit(
        [(r.flag, r.new_value, r.changed_at) for r in rows if r.flag in FLAG_DEFAULTS]
    )


def store_flags(store, *, include_reserved: bool = False) -> dict[str, Any]:
    """The values in force through whichever transport the store uses."""
    if hasattr(store, "connection"):
        with store.connection() as conn:
            return read_flags(conn, store.table.schema, include_reserved=include_reserved)
    values: dict[str, Any] = dict(FLAG_DEFAULTS)
    for name, value in store.flag_rows().items():
        if name in FLAG_DEFAULTS or (include_reserved and name in RESERVED_FLAGS):
            values[name] = _decode(value)
    return values


def store_history(store, flag: str | None = None) -> list[AuditRow]:
    """The audit history through whichever transport the store uses."""
    if hasattr(store, "connection"):
        with store.connection() as conn:
            return history(conn, store.table.schema, flag)
    return store.flag_history(flag)


def load_timeline(store) -> FlagTimeline:
    """The flag values in force at any instant, from the store's audit history."""
    return timeline_from_rows(store_history(store))

"""Applying the rollout's decisions to the flag tables: rollback, promotion, pause, resume.

Each runs in one transaction under the flags' advisory lock (``parity.flags``), writes the
flags and the rollout state together, audits them with their evidence, and reads the flags
back to confirm. A rollback already in force is a no-op, so two at once leave one change.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from psycopg import Connection

from parity.core import partitions, rollout
from parity.core import report as reports
from parity.core.errors import ConcurrentUpdateError, FlagError, ReportNotFoundError
from parity.core.layout import Layout
from parity.core.redact import redact, secrets_of
from parity.io import flags as flagdb
from parity.io.notify import Delivery, post_webhook
from parity.io.reports import load_report


@dataclass(frozen=True)
class Applied:
    applied: bool  # False: nothing needed changing (already in force)
    changes: dict[str, Any]
    flags_after: dict[str, Any]
    audit_ids: list[int]
    state: rollout.RolloutState


def read_state(conn: Connection, schema: str) -> rollout.RolloutState:
    values = flagdb.read_flags(conn, schema, include_reserved=True)
    raw = values.get(flagdb.ROLLOUT_STATE_FLAG)
    return rollout.RolloutState() if raw is None else rollout.RolloutState.from_json(raw)


def _confirm(conn: Connection, schema: str, expected: dict[str, Any]) -> dict[str, Any]:
    after = flagdb.read_flags(conn, schema)
    wrong = {k: after.get(k) for k, v in expected.items() if after.get(k) != v}
    if wrong:
        raise FlagError(f"flags read back after the change differ from what was written: {wrong}")
    return after


def apply_rollback(
    conn: Connection,
    schema: str,
    *,
    actor: str,
    reason: str,
    evidence: dict[str, Any],
    now: dt.datetime,
) -> Applied:
    """Set the rollback plan of DESIGN 5 and hold the rollout until a person resumes it."""
    plan = rollout.rollback_plan()
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(%s)", (flagdb._LOCK_KEY,))
        state = read_state(conn, schema)
        current = flagdb.read_flags(conn, schema)
        in_force = all(current.get(k) == v for k, v in plan.items())
        if state.rollback_in_force and in_force:
            return Applied(False, {}, current, [], state)
        transition = rollout.record_rollback(state, now, reason)
        changes: dict[str, Any] = {
            k: v for k, v in transition.flag_changes.items() if current.get(k) != v
        }
        changes[flagdb.ROLLOUT_STATE_FLAG] = transition.state.to_json()
        rows = flagdb.set_flags(
            conn, schema, changes, actor=actor, reason=reason, evidence=evidence, now=now
        )
        after = _confirm(conn, schema, plan)
    changes.pop(flagdb.ROLLOUT_STATE_FLAG)
    return Applied(True, changes, after, [r.id for r in rows], transition.state)


def apply_transition(
    conn: Connection,
    schema: str,
    *,
    expected_state: rollout.RolloutState,
    expected_flags: dict[str, Any],
    flag_changes: dict[str, Any],
    next_state: rollout.RolloutState,
    actor: str,
    reason: str,
    evidence: dict[str, Any],
    now: dt.datetime,
) -> Applied:
    """Write a promotion, pause or resume decided on ``expected_*``: compare-and-set, so a
    decision taken on stale values (a rollback landed meanwhile) is refused, not applied."""
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(%s)", (flagdb._LOCK_KEY,))
        state = read_state(conn, schema)
        current = flagdb.read_flags(conn, schema)
        stale_flags = {
            k: current.get(k) for k in expected_flags if current.get(k) != expected_flags[k]
        }
        if state != expected_state or stale_flags:
            raise ConcurrentUpdateError(
                "the rollout changed since the decision was taken "
                f"(flags now {stale_flags or 'unchanged'}); it will be re-evaluated"
            )
        changes = {**flag_changes, flagdb.ROLLOUT_STATE_FLAG: next_state.to_json()}
        rows = flagdb.set_flags(
            conn, schema, changes, actor=actor, reason=reason, evidence=evidence, now=now
        )
        after = _confirm(conn, schema, dict(flag_changes))
    return Applied(True, dict(flag_changes), after, [r.id for r in rows], next_state)


def reconciled_hours(
    layout: Layout, since: dt.datetime | None, now: dt.datetime, limit: int = 72
) -> list[rollout.ReconciledHour]:
    """Each complete hour from ``since`` (at most ``limit`` hours back) to now: clean,
    dirty, or None when it has no report yet."""
    last = partitions.floor_hour(now)
    hour = max(partitions.floor_hour(since or now), last - dt.timedelta(hours=limit))
    hours = []
    while hour < last:
        try:
            doc = load_report(layout, partitions.format_key(hour))
            clean: bool | None = reports.is_clean(doc)
        except ReportNotFoundError:
            clean = None
        hours.append(rollout.ReconciledHour(hour, clean))
        hour += partitions.HOUR
    return hours


def notify_rollback(
    url: str,
    applied: Applied,
    *,
    reason: str,
    evidence: dict[str, Any],
    run_id: str | None = None,
) -> Delivery:
    """POST the rollback to the alert webhook. Never raises: the rollback is committed
    by now, and no failure to tell about it (a malformed URL, a refused body, a bug in the
    notifier) may undo or fail it. The detail never carries the URL's token."""
    try:
        delivery = post_webhook(
            url,
            {
                "event": "parity.rollback",
                "reason": reason,
                "changes": applied.changes,
                "flags": applied.flags_after,
                "evidence": evidence,
                "run_id": run_id,
            },
        )
    except Exception as exc:
        detail = f"not delivered: {type(exc).__name__}: {exc}"
        delivery = Delivery(False, 0, detail)
    return Delivery(
        delivery.delivered, delivery.attempts, redact(delivery.detail, *secrets_of(url))
    )

"""What surrounds a rollback and a promotion besides the flags: which reconciled hours are
clean, and the alert that a rollback fired. The flag writes are
:func:`parity.io.control.apply_rollback` and :func:`parity.io.control.apply_transition`."""

from __future__ import annotations

import datetime as dt
from typing import Any

from parity.core import alerts, partitions, rollout
from parity.core import report as reports
from parity.core.errors import ReportNotFoundError
from parity.core.layout import Layout
from parity.io import control
from parity.io.control import Applied, ControlPlane
from parity.io.notify import Delivery, Notifier
from parity.io.reports import load_report


def preview_rollback(plane: ControlPlane) -> Applied:
    """What a rollback would change now, changing nothing (rollback dry-run mode):
    ``changes`` holds the flags it would set, ``applied`` is False."""
    state = control.read_state(plane)
    current = plane.read_flags()
    changes = {k: v for k, v in rollout.rollback_plan().items() if current.get(k) != v}
    return Applied(False, changes, current, [], state)


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
    notifier: Notifier,
    applied: Applied,
    *,
    reason: str,
    evidence: dict[str, Any],
    run_id: str | None = None,
    dry_run: bool = False,
) -> Delivery:
    """Alert the rollback, or in dry-run mode the rollback that would have been made.
    Never raises: the rollback is committed by now, and no failure to tell about it may
    fail it (the detail names no URL: they carry tokens)."""
    try:
        return notifier.send(
            alerts.rollback_alert(
                reason=reason,
                changes=applied.changes,
                flags=applied.flags_after,
                evidence=evidence,
                run_id=run_id,
                dry_run=dry_run,
            )
        )
    except Exception as exc:
        return Delivery(False, 0, f"alert not sent ({type(exc).__name__})")

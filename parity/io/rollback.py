"""What surrounds a rollback and a promotion besides the flags: which reconciled hours are
clean, and the alert that a rollback fired. The flag writes are
:func:`parity.io.control.apply_rollback` and :func:`parity.io.control.apply_transition`."""

from __future__ import annotations

import datetime as dt
from typing import Any

from parity.core import partitions, rollout
from parity.core import report as reports
from parity.core.errors import ReportNotFoundError
from parity.core.layout import Layout
from parity.core.redact import redact, secrets_of
from parity.io.control import Applied
from parity.io.notify import Delivery, post_webhook
from parity.io.reports import load_report


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

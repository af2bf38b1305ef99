"""``MONITORING_DATA_VALIDATION_ENABLED``: the plan's switch for continuous validation.

When it is false, scheduled reconciliation and automatic repair pause, each tick skipping
with the reason below so the pause is visible in the UI. Runs a person launches still run:
the switch pauses automation, not Parity.
"""

from __future__ import annotations

import logging

from assets.resources import ParityResource
from parity.core.routing import DATA_VALIDATION_ENABLED


def validation_paused(
    parity: ParityResource, what: str, log: logging.Logger | None = None
) -> str | None:
    """Why ``what`` (e.g. "scheduled reconciliation") is paused, or None when it is not
    (``log``: the tick's, where to say which embedded database is in use)."""
    plane = parity.open_control_plane(log)
    try:
        enabled = plane.read_flags().get(DATA_VALIDATION_ENABLED, True)
    finally:
        plane.close()
    if enabled is False:
        return (
            f"{what} paused: {DATA_VALIDATION_ENABLED} is false "
            "(`parity flags set MONITORING_DATA_VALIDATION_ENABLED true` resumes it; "
            "runs launched by hand still run)"
        )
    return None

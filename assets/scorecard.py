"""The migration scorecard: every recent hour's verdict at a glance.

An external asset: its materializations are reported by the ``migration_scorecard``
sensor (``orchestration/scorecard.py``) whenever an hour is reconciled again, from the
reconciliations' own metadata. Its metadata holds a table of the recent hours (green /
yellow / red, why, the repair state) and a chart of delivery rate and p95 latency per hour
against the SLOs. What the colours mean is in the description, where a person reads it.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

import dagster as dg

from checks.criteria import SuccessCriteria
from checks.specs import EVENT_RECONCILIATION
from parity.core import scorecard

MIGRATION_SCORECARD = "migration_scorecard"
GROUP = "reconciliation"

migration_scorecard = dg.AssetSpec(
    MIGRATION_SCORECARD,
    deps=[EVENT_RECONCILIATION],
    group_name=GROUP,
    kinds={"python"},
    description=(
        "Recent hours at a glance, newest first (refreshed after every reconciliation). "
        "GREEN: every event the rollout cohort sent is in Supabase intact and every check "
        "passed. YELLOW: nothing is lost or corrupted, but a finding deserves a look "
        "(latency above the SLO, a fault of the WebSocket log, quarantined lines, retry "
        "copies, out-of-order arrivals). RED: events are missing and not yet repaired "
        "(the repair loop backfills them; 'repair impossible' means a person must look), or "
        "a rollback reason: the delivery SLO, a lost CRITICAL event, corruption of what "
        "Supabase holds."
    ),
)


def scorecard_metadata(
    rows: Sequence[scorecard.HourRow], criteria: SuccessCriteria
) -> dict[str, dg.MetadataValue]:
    tally = scorecard.counts(rows)
    png = scorecard.chart_png(
        rows,
        min_delivery_rate=criteria.min_delivery_rate,
        max_p95_ms=criteria.max_latency_p95_ms,
    )
    image = base64.b64encode(png).decode()
    red = sorted(r.partition for r in rows if r.colour == "red")
    return {
        "hours": dg.MetadataValue.md(scorecard.markdown(rows)),
        "red_hours": dg.MetadataValue.json(red),
        "green": dg.MetadataValue.int(tally["green"]),
        "yellow": dg.MetadataValue.int(tally["yellow"]),
        "red": dg.MetadataValue.int(tally["red"]),
        "chart": dg.MetadataValue.md(f"![delivery and latency](data:image/png;base64,{image})"),
    }

"""The ``migration_scorecard`` sensor: after any hour is reconciled (or its repair state
changes), reports a new materialization of the scorecard asset built from the latest
reconciliation of each recent hour.

Cursor: the newest ``event_reconciliation`` event (materialization or observation) storage
id already summarised. A tick that sees a newer one rebuilds the whole scorecard from the
latest records, so an event that became visible late is included at the next change.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from assets.reconciliation import VERDICT, VERDICT_REASONS
from assets.scorecard import MIGRATION_SCORECARD, scorecard_metadata
from checks.criteria import SuccessCriteria
from checks.specs import EVENT_RECONCILIATION
from parity.core import repair, scorecard

SCORECARD_SENSOR = "migration_scorecard_refresh"
RECONCILIATION_KEY = dg.AssetKey(EVENT_RECONCILIATION)
#: Hours the scorecard shows.
RECENT_HOURS = 48
SENSOR_INTERVAL_S = 30


def _value(metadata: Any, key: str) -> Any:
    entry = metadata.get(key)
    return getattr(entry, "value", entry)


def scorecard_rows(instance: dg.DagsterInstance) -> tuple[list[scorecard.HourRow], int]:
    """The latest verdict of each of the most recent hours, and the newest storage id read."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=RECONCILIATION_KEY),
        limit=10 * RECENT_HOURS,
        ascending=False,
    ).records
    newest = max((r.storage_id for r in records), default=0)
    observed = instance.fetch_observations(
        dg.AssetRecordsFilter(asset_key=RECONCILIATION_KEY), limit=RECENT_HOURS, ascending=False
    ).records
    newest = max([newest, *(r.storage_id for r in observed)])
    latest_observation: dict[str, Any] = {}
    for record in observed:
        if record.partition_key and record.partition_key not in latest_observation:
            latest_observation[record.partition_key] = record
    rows: dict[str, scorecard.HourRow] = {}
    for record in records:
        key, materialization = record.partition_key, record.asset_materialization
        if key is None or materialization is None or key in rows:
            continue
        meta = materialization.metadata
        reasons = tuple(_value(meta, VERDICT_REASONS) or ())
        repair_state = str(_value(meta, repair.REPAIR_STATE) or "none")
        colour = str(_value(meta, VERDICT) or "red")
        later = latest_observation.get(key)
        if later is not None and later.storage_id > record.storage_id:
            # The repair sensor found that no repair will come.
            observation = later.asset_observation
            state = _value(observation.metadata, repair.REPAIR_STATE) if observation else None
            if state:
                repair_state = str(state)
                reasons = tuple(r.replace("repair pending", f"repair {state}") for r in reasons)
        rows[key] = scorecard.HourRow(
            partition=key,
            colour=colour,
            reasons=reasons,
            repair=repair_state,
            delivery_rate=_value(meta, "delivery_rate"),
            latency_p95_ms=_value(meta, "latency_p95_ms"),
            missing=int(_value(meta, repair.MISSING_IN_SUPABASE) or 0),
        )
        if len(rows) >= RECENT_HOURS:
            break
    return list(rows.values()), newest


def build_scorecard_sensor(criteria: SuccessCriteria) -> dg.SensorDefinition:
    """``criteria``: the SLOs the chart draws (the knobs in force)."""

    @dg.sensor(
        name=SCORECARD_SENSOR,
        minimum_interval_seconds=SENSOR_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Refreshes migration_scorecard (recent hours green / yellow / red, why, "
        "the repair state, delivery rate and p95 latency against the SLOs) whenever an hour "
        "is reconciled again.",
    )
    def migration_scorecard_refresh(context: dg.SensorEvaluationContext):
        seen = int(context.cursor or 0)
        rows, newest = scorecard_rows(context.instance)
        if newest <= seen or not rows:
            return dg.SkipReason("no hour reconciled since the last scorecard")
        context.update_cursor(str(newest))
        return dg.SensorResult(
            asset_events=[
                dg.AssetMaterialization(
                    asset_key=MIGRATION_SCORECARD,
                    metadata=scorecard_metadata(rows, criteria),
                    description=f"{len(rows)} recent hours",
                )
            ]
        )

    return migration_scorecard_refresh

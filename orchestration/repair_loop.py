"""The repair loop without the daemon (``parity demo --no-ui``): tick the repair sensors as
the daemon would and launch what they request in this process, until nothing more is asked;
the discrepancy alerts are ticked before and after each round, so each hour alerts red and,
once repaired, green again, as under the daemon.

Each tick evaluates a sensor with its stored cursor, records the asset events it reports
and launches each requested run with the run key and sensor tags the daemon gives it,
skipping a run key that was launched already. The runs are recorded in the instance, so a
UI started afterwards shows rollback -> backfill -> reconcile as it would have happened.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import dagster as dg

from orchestration.alerts import ALERT_ON_DISCREPANCIES
from orchestration.backfill_sensors import RECONCILE_AFTER_BACKFILL, REPAIR_LOST_EVENTS

RUN_KEY_TAG = "dagster/run_key"
SENSOR_NAME_TAG = "dagster/sensor_name"
#: Rounds of (repair, reconcile after it); each round makes one attempt per hour at most.
MAX_ROUNDS = 6
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


@dataclass
class LoopRun:
    sensor: str
    job: str
    partition: str | None
    success: bool


@dataclass
class SensorTicker:
    """Ticks sensors of ``defs`` on ``instance`` and launches their runs in process."""

    defs: dg.Definitions
    instance: dg.DagsterInstance
    cursors: dict[str, str | None] = field(default_factory=dict)

    def tick(self, name: str) -> list[LoopRun]:
        sensor = self.defs.resolve_sensor_def(name)
        context = dg.build_sensor_context(
            instance=self.instance,
            cursor=self.cursors.get(name),
            definitions=self.defs,
            resources=dict(self.defs.resources or {}),
        )
        data = sensor.evaluate_tick(context)
        self.cursors[name] = data.cursor
        for event in data.asset_events or []:
            self.instance.report_runless_asset_event(event)
        runs = []
        for request in data.run_requests or []:
            if request.run_key and self.instance.get_runs(
                filters=dg.RunsFilter(tags={RUN_KEY_TAG: request.run_key, SENSOR_NAME_TAG: name})
            ):
                continue
            job_name = request.job_name or sensor.job_name
            assert job_name is not None, f"{name} requested a run without a job"
            tags = {**request.tags, SENSOR_NAME_TAG: name}
            if request.run_key:
                tags[RUN_KEY_TAG] = request.run_key
            config = request.run_config or {}
            result = self.defs.resolve_job_def(job_name).execute_in_process(
                instance=self.instance,
                partition_key=request.partition_key,
                run_config={**QUIET, **config} if isinstance(config, Mapping) else config,
                tags=tags,
                raise_on_error=False,
            )
            runs.append(LoopRun(name, job_name, request.partition_key, result.success))
        return runs


def run_repair_loop(
    instance: dg.DagsterInstance, environ: Mapping[str, str] | None = None
) -> list[LoopRun]:
    """Repair every reconciled hour that lost events, then reconcile it again, as
    ``repair_lost_events`` and ``reconcile_after_backfill`` would under the daemon, with
    ``alert_on_discrepancies`` ticked between the rounds."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        warnings.simplefilter("ignore", dg.PreviewWarning)
        from orchestration.definitions import build_definitions

        defs = build_definitions(environ)
    ticker = SensorTicker(defs, instance)
    runs: list[LoopRun] = []
    for _ in range(MAX_ROUNDS):
        ticker.tick(ALERT_ON_DISCREPANCIES)
        launched = ticker.tick(REPAIR_LOST_EVENTS) + ticker.tick(RECONCILE_AFTER_BACKFILL)
        runs.extend(launched)
        if not launched:
            break
    ticker.tick(ALERT_ON_DISCREPANCIES)
    return runs


def hour_verdicts(instance: dg.DagsterInstance, keys: list[str]) -> dict[str, dict]:
    """Each hour's latest verdict, as its reconciliation recorded it."""
    from assets.reconciliation import VERDICT, VERDICT_REASONS
    from checks.specs import EVENT_RECONCILIATION
    from parity.core.repair import REPAIR_STATE

    out: dict[str, dict] = {}
    for key in keys:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=dg.AssetKey(EVENT_RECONCILIATION), asset_partitions=[key]
            ),
            limit=1,
        ).records
        materialization = records[0].asset_materialization if records else None
        if materialization is None:
            out[key] = {"colour": "red", "reasons": ["not reconciled"], "repair": "none"}
            continue
        meta = materialization.metadata
        reasons = getattr(meta.get(VERDICT_REASONS), "value", None)
        out[key] = {
            "colour": str(getattr(meta.get(VERDICT), "value", "red")),
            "reasons": [str(r) for r in reasons] if isinstance(reasons, list) else [],
            "repair": str(getattr(meta.get(REPAIR_STATE), "value", "none")),
        }
    return out

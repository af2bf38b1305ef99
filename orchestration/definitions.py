"""The code location: one ``Definitions`` built from explicit lists.

Built when Dagster loads the location (``@dg.definitions``), not at import. The settings
(``Settings.from_env``) are built and validated here once: a bad value stops the location
from loading with an error naming the variable. Everything below receives them: the
resource carries them into steps (secrets as ``dg.EnvVar``, knobs as visible values) and the
sensors and the schedule are built with the knobs in force.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping

import dagster as dg

from assets.backfill import build_backfill_assets
from assets.flags import feature_flags
from assets.reconciliation import build_reconciliation_assets
from assets.resources import parity_resource
from assets.scorecard import migration_scorecard
from checks.specs import reconciliation_check_specs
from orchestration.alerts import (
    build_delivery_alert_sensor,
    build_discrepancy_alert_sensor,
    build_run_alert_sensor,
)
from orchestration.backfill_sensors import build_backfill_definitions
from orchestration.io_manager import ParquetSnapshotIOManager
from orchestration.jobs import build_jobs
from orchestration.rollout import (
    build_canary_sensor,
    build_check_failure_sensor,
    build_health_sensor,
    promote_rollout_job,
    rollback_job,
)
from orchestration.scorecard import build_scorecard_sensor
from parity.core.config import Settings
from parity.core.repair import RepairPolicy
from parity.io.notify import load_targets
from parity.io.runtime import apply_runtime


def hourly_partitions(settings: Settings, now: dt.datetime) -> dg.HourlyPartitionsDefinition:
    start = settings.partitions_start_or_default(now)
    return dg.HourlyPartitionsDefinition(
        start_date=start.strftime("%Y-%m-%d-%H:%M"), timezone="UTC"
    )


def build_definitions(
    environ: Mapping[str, str] | None = None, now: dt.datetime | None = None
) -> dg.Definitions:
    environ = dict(os.environ) if environ is None else dict(environ)
    now = now or dt.datetime.now(dt.UTC)
    settings = Settings.from_env(environ)
    apply_runtime(settings.runtime)
    if settings.alert_urls:
        load_targets(settings.alert_urls)  # an unusable alert URL stops the load, named
    knobs = settings.knobs
    shown = knobs.to_env()
    partitions_def = hourly_partitions(settings, now)
    parity = parity_resource(settings, environ)
    check_specs = reconciliation_check_specs(partitions_def)
    check_keys = [spec.key for specs in check_specs.values() for spec in specs]
    repair_policy = RepairPolicy(max_attempts=knobs.repair_attempts, settle=knobs.repair_settle)
    assets = build_reconciliation_assets(partitions_def, check_specs, repair_policy)
    jobs, schedules, _ = build_jobs(assets, partitions_def, lag=knobs.schedule_lag)
    backfill_assets = build_backfill_assets(partitions_def)
    backfill_job, backfill_sensors = build_backfill_definitions(
        partitions_def, backfill_assets, repair_policy
    )
    sensors = [
        build_check_failure_sensor(check_keys, dry_run=knobs.rollback_dry_run),
        build_health_sensor(knobs.triggers, shown),
        build_canary_sensor(knobs.triggers, knobs.rollout, shown),
        *backfill_sensors,
        build_scorecard_sensor(knobs.slo),
        build_discrepancy_alert_sensor(check_keys, knobs.alerts, shown),
        build_delivery_alert_sensor(knobs.alerts, knobs.triggers, shown),
    ]
    all_jobs = [*jobs, rollback_job, promote_rollout_job, backfill_job]
    sensors.append(build_run_alert_sensor([job.name for job in all_jobs]))
    return dg.Definitions(
        assets=[feature_flags, *assets, *backfill_assets, migration_scorecard],
        jobs=all_jobs,
        schedules=schedules,
        sensors=sensors,
        resources={
            "parity": parity,
            "snapshot_io_manager": ParquetSnapshotIOManager(home=parity.home),
        },
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()

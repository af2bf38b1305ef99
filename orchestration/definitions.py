"""The code location: one ``Definitions`` built from explicit lists.

Built when Dagster loads the location (``@dg.definitions``), not at import: the partition
start date and the resource bindings depend on the environment.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping

import dagster as dg

from assets.backfill import build_backfill_assets
from assets.flags import feature_flags
from assets.reconciliation import build_reconciliation_assets
from assets.resources import parity_resource_from_env
from assets.scorecard import migration_scorecard
from checks.specs import reconciliation_check_specs
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
from parity.core.errors import ConfigurationError
from parity.core.repair import RepairPolicy
from parity.core.rollout import RolloutConfig
from parity.core.triggers import TriggerConfig

DEFAULT_SCHEDULE_LAG_MINUTES = 15


def hourly_partitions(
    environ: Mapping[str, str], now: dt.datetime
) -> dg.HourlyPartitionsDefinition:
    settings = Settings.from_env(environ)
    start = settings.partitions_start_or_default(now)
    return dg.HourlyPartitionsDefinition(
        start_date=start.strftime("%Y-%m-%d-%H:%M"), timezone="UTC"
    )


def schedule_lag(environ: Mapping[str, str]) -> dt.timedelta:
    raw = environ.get("PARITY_SCHEDULE_LAG_MINUTES", "").strip()
    if not raw:
        return dt.timedelta(minutes=DEFAULT_SCHEDULE_LAG_MINUTES)
    if not raw.isdigit():
        raise ConfigurationError(
            f"PARITY_SCHEDULE_LAG_MINUTES={raw!r}: expected a whole number of minutes"
        )
    return dt.timedelta(minutes=int(raw))


def repair_policy_from(settings: Settings) -> RepairPolicy:
    return RepairPolicy(
        max_attempts=settings.repair_max_attempts,
        settle=dt.timedelta(minutes=settings.repair_settle_minutes),
    )


def build_definitions(
    environ: Mapping[str, str] | None = None, now: dt.datetime | None = None
) -> dg.Definitions:
    environ = dict(os.environ) if environ is None else dict(environ)
    now = now or dt.datetime.now(dt.UTC)
    partitions_def = hourly_partitions(environ, now)
    parity = parity_resource_from_env(environ)
    check_specs = reconciliation_check_specs()
    repair_policy = repair_policy_from(Settings.from_env(environ))
    assets = build_reconciliation_assets(partitions_def, check_specs, repair_policy)
    jobs, schedules, _ = build_jobs(assets, partitions_def, lag=schedule_lag(environ))
    backfill_assets = build_backfill_assets(partitions_def)
    backfill_job, backfill_sensors = build_backfill_definitions(
        partitions_def, backfill_assets, repair_policy
    )
    trigger_config = TriggerConfig()
    sensors = [
        build_check_failure_sensor(spec.key for specs in check_specs.values() for spec in specs),
        build_health_sensor(trigger_config),
        build_canary_sensor(trigger_config, RolloutConfig()),
        *backfill_sensors,
        build_scorecard_sensor(),
    ]
    return dg.Definitions(
        assets=[feature_flags, *assets, *backfill_assets, migration_scorecard],
        jobs=[*jobs, rollback_job, promote_rollout_job, backfill_job],
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

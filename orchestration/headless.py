"""Run Parity's jobs without the UI (``parity reconcile``): the same assets and checks as the
schedule runs, executed in this process."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from orchestration.jobs import RECONCILE_EVENTS_JOB
from parity.core import report as reports
from parity.core.config import Settings
from parity.core.redact import redact
from parity.io.reports import load_report

#: The CLI prints its own summary; Dagster's console log shows only errors that are not
#: already in it (check failures are).
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


@dataclass
class PartitionOutcome:
    partition: str
    success: bool
    report: dict[str, Any] | None
    failed_checks: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    @property
    def clean(self) -> bool:
        return (
            self.success
            and self.report is not None
            and reports.is_clean(self.report)
            and not any(c["severity"] == "ERROR" for c in self.failed_checks)
        )


@contextmanager
def instance_for_cli() -> Iterator[dg.DagsterInstance]:
    """The instance at $DAGSTER_HOME when there is one (runs then show in the UI and the
    sensors see them), else an ephemeral in-memory one."""
    if os.environ.get("DAGSTER_HOME"):
        with dg.DagsterInstance.get() as instance:
            yield instance
    else:
        with dg.DagsterInstance.ephemeral() as instance:
            yield instance


def reconcile_partitions(
    keys: list[str],
    *,
    environ: Mapping[str, str] | None = None,
    instance: dg.DagsterInstance | None = None,
) -> list[PartitionOutcome]:
    with warnings.catch_warnings():
        # Dagster's beta/preview notices (observable source assets, sensor owners) are for
        # the authors of definitions, not for someone running `parity reconcile`.
        warnings.simplefilter("ignore", dg.BetaWarning)
        warnings.simplefilter("ignore", dg.PreviewWarning)
        from orchestration.definitions import build_definitions

        defs = build_definitions(environ)
        job = defs.resolve_job_def(RECONCILE_EVENTS_JOB)
    settings = Settings.from_env(environ)
    outcomes = []
    with _maybe_instance(instance) as inst:
        for key in keys:
            result = job.execute_in_process(
                partition_key=key, instance=inst, raise_on_error=False, run_config=QUIET
            )
            failed = [
                {
                    "check": ev.check_name,
                    "asset": ev.asset_key.to_user_string(),
                    "severity": ev.severity.value,
                }
                for ev in result.get_asset_check_evaluations()
                if not ev.passed
            ]
            materialized = {
                e.asset_key.to_user_string()
                for e in result.get_asset_materialization_events()
                if e.asset_key is not None
            }
            report = None
            if "event_reconciliation" in materialized:
                report = load_report(settings.layout, key)
            error = None
            if not result.success:
                failures = [e for e in result.all_events if e.is_step_failure]
                messages = [
                    f"{e.step_key}: {redact(_last_line(e.step_failure_data.error.message))}"
                    for e in failures
                    if e.step_failure_data
                    and e.step_failure_data.error
                    and e.step_failure_data.error.cls_name != "DagsterAssetCheckFailedError"
                ]
                error = "; ".join(messages) or None
            outcomes.append(PartitionOutcome(key, result.success, report, failed, error))
    return outcomes


@contextmanager
def _maybe_instance(instance: dg.DagsterInstance | None) -> Iterator[dg.DagsterInstance]:
    if instance is not None:
        yield instance
    else:
        with instance_for_cli() as inst:
            yield inst


def _last_line(message: str) -> str:
    lines = message.strip().splitlines()
    return lines[-1] if lines else message

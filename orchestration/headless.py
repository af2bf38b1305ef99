"""Run Parity's jobs without the UI (``parity reconcile``): the same assets and checks as the
schedule runs, executed in this process."""

from __future__ import annotations

import datetime as dt
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from orchestration.failures import StepFailure, run_failures
from orchestration.jobs import RECONCILE_EVENTS_JOB
from parity.core import partitions
from parity.core import report as reports
from parity.core.config import Settings
from parity.io.reports import load_report

#: The CLI prints its own summary; Dagster's console log shows only errors that are not
#: already in it (check failures are).
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}

#: Called after each unit of work with what was done and how many hours it covered.
Advance = Callable[[str, int], None]


@dataclass
class PartitionOutcome:
    partition: str
    success: bool
    report: dict[str, Any] | None
    failed_checks: list[dict[str, Any]] = field(default_factory=list)
    failures: list[StepFailure] = field(default_factory=list)

    @property
    def error(self) -> str | None:
        """The failed steps' sentences, one line (None when no step failed)."""
        return "; ".join(str(f) for f in self.failures) or None

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


def check_partitions(
    keys: list[str], environ: Mapping[str, str] | None = None, now: dt.datetime | None = None
) -> None:
    """Refuse, before any run starts, an hour the code location has no partition for (before
    PARITY_PARTITIONS_START, the current hour, the future), with a sentence naming it."""
    now = now or dt.datetime.now(dt.UTC)
    first = Settings.from_env(environ).partitions_start_or_default(now)
    for key in keys:
        partitions.check_complete(key, first, now)


def build_job(name: str, environ: Mapping[str, str] | None) -> dg.JobDefinition:
    """The job ``name`` of the code location. Build it while the instance it will run on is
    entered: loading definitions reads the *current* instance's definitions state, which
    Dagster keeps in a context variable; outside the instance's ``with`` that variable may
    still name an instance disposed of earlier in the process, and the load fails with
    "Attempted to resolve undefined DagsterInstance weakref"."""
    with warnings.catch_warnings():
        # Dagster's beta/preview notices (observable source assets, sensor owners) are for
        # the authors of definitions, not for someone running `parity reconcile`.
        warnings.simplefilter("ignore", dg.BetaWarning)
        warnings.simplefilter("ignore", dg.PreviewWarning)
        from orchestration.definitions import build_definitions

        return build_definitions(environ).resolve_job_def(name)


def reconcile_partitions(
    keys: list[str],
    *,
    environ: Mapping[str, str] | None = None,
    instance: dg.DagsterInstance | None = None,
    advance: Advance | None = None,
    on_outcome: Callable[[PartitionOutcome], None] | None = None,
) -> list[PartitionOutcome]:
    """Reconcile each hour in its own run; ``on_outcome`` sees each hour as it is done."""
    check_partitions(keys, environ)
    settings = Settings.from_env(environ)
    outcomes = []
    with _maybe_instance(instance) as inst:
        job = build_job(RECONCILE_EVENTS_JOB, environ)  # with its instance current: see there
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
            failures = [] if result.success else run_failures(result.all_events)
            outcomes.append(PartitionOutcome(key, result.success, report, failed, failures))
            if on_outcome is not None:
                on_outcome(outcomes[-1])
            if advance is not None:
                advance(f"reconciled {key}", 1)
    return outcomes


@contextmanager
def _maybe_instance(instance: dg.DagsterInstance | None) -> Iterator[dg.DagsterInstance]:
    if instance is not None:
        yield instance
    else:
        with instance_for_cli() as inst:
            yield inst

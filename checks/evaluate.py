"""Evaluate the asset checks for one asset's data and yield Dagster check results.

Called from inside the asset's step with the data it just produced (see
:func:`checks.specs.reconciliation_check_specs` for why). For each selected check: derive
its small frame (:mod:`checks.suites`), validate it with Great Expectations
(:mod:`checks.adapter`; in a helper process when one runs, :mod:`checks.ge_process`), and
turn GE's verdict into an ``AssetCheckResult`` whose severity is the highest GE severity
among the failed expectations (``critical`` is ERROR, anything else WARN). GE's validation
results for the partition are kept as JSON at ``reports/<partition>.ge.<asset>.json``,
next to the report (:class:`parity.core.layout.Layout`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa

from checks import adapter, ge_process, report_checks, snapshot_checks, specs, suites
from checks.criteria import SuccessCriteria
from parity.core.layout import Layout
from parity.io.files import write_json_atomic

PLAN_CRITERIA = SuccessCriteria()


def evaluate_checks(
    asset: str,
    data: object,
    selected: set[str],
    partition_key: str,
    layout: Layout | None = None,
    criteria: SuccessCriteria = PLAN_CRITERIA,
) -> Iterator[dg.AssetCheckResult]:
    """Yield a result for each check of ``asset`` named in ``selected``.

    ``data``: for the snapshot assets, the snapshot as a table or as anything with
    ``parts(columns)`` (:class:`checks.snapshot_checks.SnapshotParts`), read once, part by part;
    for ``event_reconciliation``, the report dict. ``layout``: where GE's results are
    written (nothing is written when None). ``criteria``: the thresholds; the asset passes
    those of the settings the code location was built with (the plan's by default).
    """
    checks = [c for c in specs.checks_for(asset) if c.name in selected]
    if not checks:
        return
    path = layout.ge_results(partition_key, asset) if layout else None
    documents: dict[str, Any] = {}
    results = []
    for check, prepared in zip(checks, _prepare(asset, checks, data, criteria), strict=True):
        outcome = ge_process.validate(
            f"{asset}.{check.name}", prepared.frame, prepared.expectations
        )
        documents[check.name] = outcome.document
        results.append(_result(check, prepared, outcome, partition_key, path))
    if path is not None:
        write_json_atomic(
            path,
            {
                "partition": partition_key,
                "asset": asset,
                "evaluated_at": dt.datetime.now(dt.UTC).isoformat(),
                "criteria": criteria.to_json(),
                "validations": documents,
            },
        )
    yield from results


def _prepare(
    asset: str, checks: list[specs.CheckDef], data: object, criteria: SuccessCriteria
) -> list[suites.Prepared]:
    names = [check.name for check in checks]
    if all(name in snapshot_checks.SNAPSHOT_CHECKS for name in names):
        if not isinstance(data, pa.Table | snapshot_checks.SnapshotParts):
            raise TypeError(
                f"{asset}: expected the snapshot as a pyarrow Table or an object with "
                f".parts(columns), got {type(data).__name__}"
            )
        return snapshot_checks.prepare_snapshot(names, data)
    if not isinstance(data, Mapping):
        raise TypeError(f"{asset}: expected the report as a mapping, got {type(data).__name__}")
    return [report_checks.BUILDERS[name](data, criteria) for name in names]


def _result(
    check: specs.CheckDef,
    prepared: suites.Prepared,
    outcome: adapter.Outcome,
    partition_key: str,
    path: Path | None,
) -> dg.AssetCheckResult:
    if outcome.success:
        severity = check.severity
    elif any(f["severity"] == "critical" for f in outcome.failed):
        severity = specs.ERROR
    else:
        severity = specs.WARN
    metadata: dict[str, Any] = {
        "partition": partition_key,
        "observed_value": _number(prepared.observed),
        "threshold": _number(prepared.threshold),
        "failed_expectations": dg.MetadataValue.json(outcome.failed),
        "sample": dg.MetadataValue.json(prepared.sample),
        **{k: _number(v) if isinstance(v, int | float) else v for k, v in prepared.details.items()},
    }
    if prepared.note:
        metadata["note"] = prepared.note
    if path is not None:
        metadata["ge_results"] = dg.MetadataValue.path(str(path))
    return dg.AssetCheckResult(
        check_name=check.name,
        asset_key=dg.AssetKey(check.asset),
        passed=outcome.success,
        severity=severity,
        metadata=metadata,
    )


def _number(value: float | int | None) -> dg.MetadataValue:
    if value is None:
        return dg.MetadataValue.null()
    if isinstance(value, bool):
        return dg.MetadataValue.bool(value)
    if isinstance(value, int):
        return dg.MetadataValue.int(value)
    return dg.MetadataValue.float(float(value))

"""The checks of the reconciliation's report: delivery rate, lost events (all and
CRITICAL), checksum mismatches, p95 latency and the quarantined share, each a one-row frame
for GE with the bound it must meet."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pyarrow as pa

from checks import specs
from checks.adapter import ExpectationSpec
from checks.criteria import SAMPLE_LIMIT, SuccessCriteria
from checks.suites import CRITICAL, Prepared, level

_ZERO = {"min_value": 0, "max_value": 0}


def _bounded_value(
    column: str,
    value: float | int | None,
    bounds: Mapping[str, Any],
    level: str,
    *,
    threshold: float | int,
    sample: list[Any],
    details: dict[str, Any] | None = None,
    note: str | None = None,
) -> Prepared:
    """A report figure as a one-row frame, expected within ``bounds``
    (``ExpectColumnValuesToBeBetween``): the shape of every reconciliation check."""
    kind = pa.float64() if isinstance(value, float) or value is None else pa.int64()
    return Prepared(
        frame=pa.table({column: pa.array([value], kind)}),
        expectations=(
            ExpectationSpec("ExpectColumnValuesToBeBetween", {"column": column, **bounds}, level),
        ),
        observed=value,
        threshold=threshold,
        sample=sample[:SAMPLE_LIMIT],
        details=details or {},
        note=note,
    )


def delivery_rate(report: Mapping[str, Any], criteria: SuccessCriteria, level: str) -> Prepared:
    return _bounded_value(
        "delivery_rate",
        float(report["delivery_rate"]),
        {"min_value": criteria.min_delivery_rate},
        level,
        threshold=criteria.min_delivery_rate,
        sample=list(report.get("missing_keys", [])),
        details={
            "matched": int(report["matched"]),
            "expected_in_supabase": int(report["expected_in_supabase"]),
            "missing_in_supabase": int(report["missing_in_supabase"]),
        },
    )


def events_lost(report: Mapping[str, Any], level: str) -> Prepared:
    """Zero events missing from Supabase within the cohort, any category; the result says
    where the repair stands (the reconciliation adds ``repair`` to the report)."""
    repair = report.get("repair") or {}
    missing = int(report["missing_in_supabase"])
    return _bounded_value(
        "missing_in_supabase",
        missing,
        _ZERO,
        level,
        threshold=0,
        sample=list(report.get("missing_keys", [])),
        details={
            "expected_in_supabase": int(report["expected_in_supabase"]),
            "missing_critical": int(
                report["by_category"].get(CRITICAL, {}).get("missing_in_supabase", 0)
            ),
            "repair_state": str(repair.get("state", "none")),
            "repair_reason": str(repair.get("reason", "")),
        },
        note=f"repair {repair['state']}: {repair.get('reason', '')}"
        if missing and repair.get("state")
        else None,
    )


def critical_events_lost(report: Mapping[str, Any], level: str) -> Prepared:
    lost = int(report["by_category"].get(CRITICAL, {}).get("missing_in_supabase", 0))
    missing_all = int(report["missing_in_supabase"])
    # The report lists missing keys without their category: when every missing key is
    # CRITICAL the list is exact; otherwise the sample may include other categories.
    if "missing_critical_keys" in report:
        sample, exact = report["missing_critical_keys"], True
    else:
        sample, exact = (report.get("missing_keys", []) if lost else []), lost == missing_all
    return _bounded_value(
        "critical_missing_in_supabase",
        lost,
        _ZERO,
        level,
        threshold=0,
        sample=list(sample),
        details={
            "critical_expected_in_supabase": int(
                report["by_category"].get(CRITICAL, {}).get("expected_in_supabase", 0)
            ),
            "missing_in_supabase_all_categories": missing_all,
            "sample_is_critical_only": exact,
        },
    )


def checksum_mismatches(report: Mapping[str, Any], level: str) -> Prepared:
    return _bounded_value(
        "checksum_mismatches",
        int(report["checksum_mismatches"]),
        _ZERO,
        level,
        threshold=0,
        sample=list(report.get("checksum_mismatch_keys", [])),
    )


def latency_p95(report: Mapping[str, Any], criteria: SuccessCriteria, level: str) -> Prepared:
    p95 = (report.get("latency_ms") or {}).get("p95")
    value = None if p95 is None else float(p95)
    # A null is "missing" to GE's column-values expectations, so no matched events passes.
    return _bounded_value(
        "latency_p95_ms",
        value,
        {"max_value": criteria.max_latency_p95_ms, "strict_max": True},
        level,
        threshold=criteria.max_latency_p95_ms,
        sample=[],
        details={"matched": int(report["matched"])},
        note=None
        if value is not None
        else "no matched events this hour: nothing to measure "
        "(lost events fail no_events_lost instead)",
    )


def quarantine_share(report: Mapping[str, Any], criteria: SuccessCriteria, level: str) -> Prepared:
    quarantined, valid = int(report["quarantined_lines"]), int(report["ws_events"])
    lines = quarantined + valid
    return _bounded_value(
        "quarantine_share",
        quarantined / lines if lines else 0.0,
        {"min_value": 0, "max_value": criteria.max_quarantine_share},
        level,
        threshold=criteria.max_quarantine_share,
        sample=[],
        details={"quarantined_lines": quarantined, "log_lines": lines},
    )


#: A count that must be zero.
_ZERO = {"min_value": 0, "max_value": 0}


Builder = Callable[[Mapping[str, Any], SuccessCriteria], Prepared]

#: Check name -> builder of its Prepared from the reconciliation's report dict.
BUILDERS: dict[str, Builder] = {
    specs.NO_EVENTS_LOST: lambda r, c: events_lost(r, level(specs.NO_EVENTS_LOST)),
    specs.DELIVERY_RATE_MEETS_SLO: lambda r, c: delivery_rate(
        r, c, level(specs.DELIVERY_RATE_MEETS_SLO)
    ),
    specs.NO_CRITICAL_EVENTS_LOST: lambda r, c: critical_events_lost(
        r, level(specs.NO_CRITICAL_EVENTS_LOST)
    ),
    specs.NO_CHECKSUM_MISMATCHES: lambda r, c: checksum_mismatches(
        r, level(specs.NO_CHECKSUM_MISMATCHES)
    ),
    specs.LATENCY_P95_WITHIN_SLO: lambda r, c: latency_p95(
        r, c, level(specs.LATENCY_P95_WITHIN_SLO)
    ),
    specs.QUARANTINE_WITHIN_TOLERANCE: lambda r, c: quarantine_share(
        r, c, level(specs.QUARANTINE_WITHIN_TOLERANCE)
    ),
}

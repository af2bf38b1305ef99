"""What each check validates: a small frame derived from the asset's data, and the
Great Expectations expectations that frame must meet.

The checks of the snapshot assets are :mod:`checks.snapshot_checks`, those of the
reconciliation's report :mod:`checks.report_checks`; this module holds what both hand to
GE (:class:`Prepared`) and the severities.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from checks import specs
from checks.adapter import ExpectationSpec

CRITICAL = "CRITICAL"
#: GE's severity for an expectation whose failure is a Dagster ERROR or WARN.
GE_SEVERITY = {specs.ERROR: "critical", specs.WARN: "warning"}


@dataclass(frozen=True)
class Prepared:
    """A check ready for GE: the frame, its expectations, and what the result reports.

    ``frame`` holds only the columns the expectations need (GE's per-batch cost grows
    with string columns); the keys for people are in ``sample``.
    """

    frame: pa.Table
    expectations: tuple[ExpectationSpec, ...]
    observed: float | int | None
    threshold: float | int
    sample: list[Any]
    details: dict[str, Any] = field(default_factory=dict)
    note: str | None = None


def level(name: str) -> str:
    """GE's severity for the check ``name``."""
    return GE_SEVERITY[specs.CHECKS_BY_NAME[name].severity]

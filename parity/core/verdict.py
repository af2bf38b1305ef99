"""An hour's verdict at a glance: green, yellow or red, and why (pure).

- **red**: the hour is not proven whole, or it holds a reason to roll the migration back.
  Events are missing from Supabase and not (yet) repaired, an ERROR-severity check failed
  (the delivery SLO, a lost CRITICAL event, corruption of what Supabase holds), or the
  reconciliation itself failed.
- **yellow**: every event the cohort sent is in Supabase intact, but something deserves a
  look: a WARN-severity check failed (latency above the SLO, a fault of the WebSocket log,
  quarantined lines, retry copies in Supabase), or the report lists a discrepancy that no
  check fails on (identical retry copies in the log, out-of-order arrivals).
- **green**: whole, and every check passed.

An hour repaired by the backfill is green once the reconciliation after the repair finds
nothing missing: the repair is in its report (``backfilled_rows``), not held against it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from parity.core import report as reports
from parity.core.repair import RepairState

#: The check that owns lost events; its failure is WARN (a loss is repaired), but the
#: hour stays red until the loss is.
NO_EVENTS_LOST = "no_events_lost"


#: Report counts that are corruption of what Supabase holds: a rollback reason whichever
#: check reports it (the snapshot checks are on another asset).
CORRUPTION = {
    "invalid_checksums_supabase": "invalid checksums in Supabase",
    "checksum_mismatches": "checksum mismatches (Supabase holds another event)",
    "duplicates_supabase_conflicting": "conflicting copies in Supabase",
}


class Colour(StrEnum):
    GREEN = "green"
    YELLOW = "yellow"
    RED = "red"


@dataclass(frozen=True)
class CheckOutcome:
    """One check's result for the hour: its name, whether it passed, and the severity of
    the result (``ERROR`` or ``WARN``)."""

    name: str
    passed: bool
    severity: str


@dataclass(frozen=True)
class Verdict:
    partition: str
    colour: Colour
    reasons: tuple[str, ...]
    repair: RepairState

    def to_json(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "colour": self.colour.value,
            "reasons": list(self.reasons),
            "repair": self.repair.value,
        }

    @property
    def summary(self) -> str:
        return f"{self.partition} {self.colour.value}: " + (
            "; ".join(self.reasons) or "whole, every check passed"
        )


def hour_verdict(
    report: Mapping[str, Any] | None,
    checks: Iterable[CheckOutcome],
    repair: RepairState = RepairState.NONE,
    *,
    partition: str | None = None,
) -> Verdict:
    """The verdict of one reconciled hour from its report, its checks' latest results and
    its repair state. ``report`` None: the hour has no reconciliation (red)."""
    key = partition or (str(report["partition"]) if report else "?")
    if report is None:
        return Verdict(key, Colour.RED, ("not reconciled",), repair)
    outcomes = list(checks)
    red: list[str] = []
    yellow: list[str] = []
    missing = int(report.get("missing_in_supabase") or 0)
    if missing:
        state = {
            RepairState.IMPOSSIBLE: "repair impossible",
            RepairState.PENDING: "repair pending",
        }.get(repair, f"repair {repair.value}")
        red.append(f"{missing} events missing from Supabase ({state})")
    for name, what in CORRUPTION.items():
        if int(report.get(name) or 0):
            red.append(f"{what}: {int(report[name])}")
    for check in outcomes:
        if check.passed or check.name == NO_EVENTS_LOST:
            continue
        if check.severity == "ERROR":
            red.append(f"{check.name} failed (ERROR)")
        else:
            yellow.append(f"{check.name} failed (WARN)")
    failed = {c.name for c in outcomes if not c.passed}
    if not failed and not missing:
        for name, count in reports.discrepancies(dict(report)).items():
            yellow.append(f"{name}: {count}")
    if red:
        return Verdict(key, Colour.RED, tuple(red + yellow), repair)
    if yellow:
        return Verdict(key, Colour.YELLOW, tuple(yellow), repair)
    return Verdict(key, Colour.GREEN, (), repair)

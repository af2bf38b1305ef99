"""The demo's plan: the reconciled hours are complete, in the past, and end well before the
simulated outage, whatever the minute the demo starts at."""

import datetime as dt

import pytest

from parity.app.demo_plan import OUTAGE_MARGIN, plan_demo
from parity.core import partitions


@pytest.mark.parametrize("minute", [0, 1, 5, 6, 7, 20, 21, 22, 45, 59])
def test_reconciled_hours_end_before_the_outage_with_a_margin(minute: int) -> None:
    now = dt.datetime(2026, 11, 28, 15, minute, 30, tzinfo=dt.UTC)
    plan = plan_demo(11, now, 2, 600)
    assert len(plan.hours) == 2
    starts = [partitions.window(key)[0] for key in plan.hours]
    assert starts[1] - starts[0] == partitions.HOUR
    last_end = partitions.window(plan.hours[-1])[1]
    assert plan.faults.outage_start - last_end >= OUTAGE_MARGIN
    # no more than one complete hour sits unreconciled between them
    assert plan.faults.outage_start - last_end < OUTAGE_MARGIN + partitions.HOUR
    # every dropped write is in the last reconciled hour, before the outage
    assert all(
        partitions.window(plan.hours[-1])[0] <= e.at < last_end
        for e in plan.events
        if (e.stream, e.seq) in plan.faults.dropped
    )


def test_the_ui_finds_the_checkouts_workspace() -> None:
    from pathlib import Path

    from parity.app.demo_ui import workspace_file

    path = workspace_file()
    assert path == Path(__file__).resolve().parents[2] / "workspace.yaml"
    assert "orchestration.definitions" in path.read_text()


def test_the_lost_hours_are_those_with_dropped_writes() -> None:
    from parity.app.demo_results import lost_hours

    plan = plan_demo(11, dt.datetime(2026, 11, 28, 15, 30, tzinfo=dt.UTC), 2, 600)
    assert lost_hours(plan) == [plan.hours[-1]]

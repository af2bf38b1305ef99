"""An hour's verdict: green, yellow or red, and why."""

from __future__ import annotations

from parity.core.repair import RepairState
from parity.core.verdict import CheckOutcome, Colour, hour_verdict


def report(**counts) -> dict:
    base = {
        "partition": "2026-11-28-10:00",
        "missing_in_supabase": 0,
        "unexpected_in_supabase": 0,
        "duplicates_ws": 0,
        "duplicates_supabase": 0,
        "checksum_mismatches": 0,
        "invalid_checksums_ws": 0,
        "invalid_checksums_supabase": 0,
        "out_of_order_supabase": 0,
        "quarantined_lines": 0,
        "sequence_gaps_ws": [],
    }
    return {**base, **counts}


def test_a_clean_hour_is_green() -> None:
    v = hour_verdict(report(), [CheckOutcome("no_events_lost", True, "WARN")])
    assert v.colour == Colour.GREEN and v.reasons == ()


def test_a_loss_is_red_until_repaired_whatever_its_check_severity() -> None:
    lost = hour_verdict(
        report(missing_in_supabase=1),
        [CheckOutcome("no_events_lost", False, "WARN")],
        RepairState.PENDING,
    )
    assert lost.colour == Colour.RED
    assert lost.reasons == ("1 events missing from Supabase (repair pending)",)
    impossible = hour_verdict(report(missing_in_supabase=1), [], RepairState.IMPOSSIBLE)
    assert "repair impossible" in impossible.reasons[0]
    repaired = hour_verdict(report(), [], RepairState.DONE)
    assert repaired.colour == Colour.GREEN and repaired.repair == RepairState.DONE


def test_corruption_and_error_checks_are_red() -> None:
    assert hour_verdict(report(invalid_checksums_supabase=1), []).colour == Colour.RED
    failed = hour_verdict(report(), [CheckOutcome("delivery_rate_meets_slo", False, "ERROR")])
    assert failed.colour == Colour.RED
    assert failed.reasons == ("delivery_rate_meets_slo failed (ERROR)",)


def test_findings_that_lose_nothing_are_yellow() -> None:
    slow = hour_verdict(report(), [CheckOutcome("latency_p95_within_slo", False, "WARN")])
    assert slow.colour == Colour.YELLOW
    retried = hour_verdict(report(duplicates_ws=3), [])
    assert retried.colour == Colour.YELLOW and retried.reasons == ("duplicates_ws: 3",)


def test_an_hour_without_a_report_is_red() -> None:
    v = hour_verdict(None, [], partition="2026-11-28-10:00")
    assert v.colour == Colour.RED and v.summary.startswith("2026-11-28-10:00 red")

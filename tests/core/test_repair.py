"""The repair decision: when a lost event is backfilled, and when a person is told instead."""

from __future__ import annotations

import datetime as dt

import pytest

from parity.core.errors import ConfigurationError
from parity.core.repair import (
    Attempt,
    RepairPolicy,
    RepairState,
    decide,
    keys_digest,
    unwritten_digest,
)

END = dt.datetime(2026, 11, 28, 11, tzinfo=dt.UTC)
LATER = END + dt.timedelta(minutes=30)
POLICY = RepairPolicy(max_attempts=2, settle=dt.timedelta(minutes=10))
DIGEST = keys_digest([["s", 1], ["s", 2]])


def run(**kwargs):
    args = {
        "missing": 2,
        "digest": DIGEST,
        "window_end": END,
        "reconciled_order": 10,
        "attempts": [],
        "policy": POLICY,
        "now": LATER,
    }
    return decide(**{**args, **kwargs})


def test_the_digest_is_one_set_of_keys_in_any_order() -> None:
    assert keys_digest([["s", 2], ["s", 1]]) == DIGEST
    assert keys_digest([["s", 1]]) != DIGEST
    assert keys_digest([["s1", 1]]) != keys_digest([["s", 11]])


def test_nothing_missing_is_none_or_done() -> None:
    assert run(missing=0).state == RepairState.NONE
    done = run(missing=0, attempts=[Attempt(5, DIGEST, 2)])
    assert done.state == RepairState.DONE and not done.repair


def test_a_loss_is_repaired_once_the_hour_has_settled() -> None:
    early = run(now=END + dt.timedelta(minutes=5))
    assert early.state == RepairState.PENDING and not early.repair
    assert "11:10" in early.reason
    due = run()
    assert due.repair and due.attempt == 1 and due.state == RepairState.PENDING


def test_no_second_request_while_a_repair_runs_or_awaits_its_reconciliation() -> None:
    assert not run(running=True).repair
    waiting = run(attempts=[Attempt(11, DIGEST, 2)])  # newer than the reconciliation
    assert not waiting.repair and "awaits" in waiting.reason


def test_attempts_are_bounded_per_set_of_keys() -> None:
    one = run(attempts=[Attempt(5, DIGEST, 1)])
    assert one.repair and one.attempt == 2
    spent = run(attempts=[Attempt(5, DIGEST, 1)], automatic_runs=2)
    assert spent.state == RepairState.IMPOSSIBLE and not spent.repair
    assert "PARITY_REPAIR_MAX_ATTEMPTS" in spent.reason
    # A different set of missing keys (a new loss) starts its own count.
    other = run(digest=keys_digest([["s", 9]]), attempts=[Attempt(5, DIGEST, 1)], automatic_runs=0)
    assert other.repair and other.attempt == 1


def test_a_backfill_that_wrote_none_of_the_keys_makes_the_hour_impossible() -> None:
    attempt = Attempt(5, DIGEST, 0, {"conflicts": 1, "skipped_existing": 1})
    decision = run(attempts=[attempt])
    assert decision.state == RepairState.IMPOSSIBLE and not decision.repair
    assert "conflicting copies" in decision.reason
    assert "outside the hour" in decision.reason


def test_what_a_partial_backfill_could_not_write_is_not_tried_again() -> None:
    asked = [["s", 1], ["s", 2], ["s", 3]]
    left = unwritten_digest(asked, [("s", 1), ("s", 3)])
    assert left == keys_digest([["s", 2]]) and unwritten_digest(asked, asked) is None
    partial = Attempt(5, keys_digest(asked), 2, {"refused": 1}, unwritten_digest=left)
    rest = run(missing=1, digest=left, attempts=[partial])
    assert rest.state == RepairState.IMPOSSIBLE and not rest.repair
    assert "wrote 2" in rest.reason and "1 rows the store refused" in rest.reason
    # Other keys missing after it (e.g. a new loss): a repair of its own.
    other = run(missing=1, digest=keys_digest([["s", 9]]), attempts=[partial])
    assert other.repair and other.state == RepairState.PENDING


def test_attempts_read_back_from_backfill_metadata() -> None:
    entry = {"written": 0, "conflicts": 2, "invalid": 0, "missing_keys_digest": DIGEST}
    attempt = Attempt.from_metadata(7, entry)
    assert attempt == Attempt(7, DIGEST, 0, {"conflicts": 2})
    partial = {**entry, "written": 1, "refused": 1, "unwritten_keys_digest": "d"}
    assert Attempt.from_metadata(8, partial) == Attempt(
        8, DIGEST, 1, {"conflicts": 2, "refused": 1}, "d"
    )


@pytest.mark.parametrize("kwargs", [{"max_attempts": 0}, {"settle": dt.timedelta(minutes=-1)}])
def test_a_bad_policy_names_its_variable(kwargs) -> None:
    with pytest.raises(ConfigurationError, match="PARITY_REPAIR_"):
        RepairPolicy(**kwargs)

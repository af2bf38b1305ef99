"""Great Expectations in a helper process gives the outcome validating here gives, the
latency chart drawn there is the one drawn here, and a helper that is gone is only a slower
path, never a failed check."""

from __future__ import annotations

import pyarrow as pa
import pytest

from checks import adapter, ge_process

pytestmark = [
    pytest.mark.filterwarnings("ignore:module 'sre_constants' is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:module 'sre_parse' is deprecated:DeprecationWarning"),
]

FRAME = pa.table({"stream": ["a", "b", "c"], "gap": [0, 3, 0]})
EXPECTATIONS = [
    adapter.ExpectationSpec("ExpectColumnValuesToBeBetween", {"column": "gap", "max_value": 0}),
    adapter.ExpectationSpec("ExpectTableRowCountToEqual", {"value": 3}, severity="warning"),
]


def _essentials(outcome: adapter.Outcome) -> tuple:
    return outcome.success, outcome.failed, [r["success"] for r in outcome.document["results"]]


@pytest.fixture
def helper():
    started = ge_process._Helper()
    yield started
    started.stop()


@pytest.fixture
def dead_helper(helper: ge_process._Helper, monkeypatch: pytest.MonkeyPatch) -> ge_process._Helper:
    """A helper that died after it started, installed as the process's helper."""
    helper.process.kill()
    helper.process.wait()
    monkeypatch.setattr(ge_process, "_helper", helper)
    return helper


def _validate(helper: ge_process._Helper, suite: str, expectations: list) -> adapter.Outcome:
    return helper.ask((ge_process._VALIDATE, suite, FRAME, expectations), adapter.Outcome)


def test_the_helper_validates_as_this_process_does(helper: ge_process._Helper) -> None:
    there = _validate(helper, "suite.gaps", EXPECTATIONS)
    here = adapter.validate("suite.gaps", FRAME, EXPECTATIONS)
    assert there is not None
    assert not there.success
    assert _essentials(there) == _essentials(here)
    assert there.failed[0]["result"]["partial_unexpected_list"] == [3]
    # It keeps serving: a second request on the same context.
    again = _validate(helper, "suite.rows", EXPECTATIONS[1:])
    assert again is not None and again.success


def test_a_dead_helper_falls_back_to_this_process(dead_helper: ge_process._Helper) -> None:
    outcome = ge_process.validate("suite.gaps", FRAME, EXPECTATIONS)
    assert not outcome.success
    assert [f["type"] for f in outcome.failed] == ["expect_column_values_to_be_between"]
    assert ge_process._helper is None  # given up on, not asked again


def test_a_failing_validation_is_raised_here(
    helper: ge_process._Helper, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ge_process, "_helper", helper)
    wrong = [adapter.ExpectationSpec("ExpectColumnValuesToBeBetween", {"column": "gap"})]
    with pytest.raises(Exception, match="min_value and max_value cannot both be None"):
        ge_process.validate("suite.wrong", FRAME, wrong)
    assert helper.process.poll() is not None  # the helper gave no answer and was stopped


HISTOGRAM = {"edges_ms": [0, 10, 100, 1000], "counts": [5, 40, 2], "below": 1, "above": 0}


def test_the_helper_draws_the_chart_this_process_would(
    helper: ge_process._Helper, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess
    import sys

    from parity.core import report

    monkeypatch.setattr(ge_process, "_helper", helper)
    there = ge_process.latency_histogram_png(HISTOGRAM, title="latency, 10:00 UTC")
    assert ge_process._helper is helper  # answered, not given up on
    assert there == report.latency_histogram_png(HISTOGRAM, title="latency, 10:00 UTC")
    assert there.startswith(b"\x89PNG")
    # A process that asks the helper never imports matplotlib itself.
    code = (
        "import sys\n"
        "from checks import ge_process\n"
        "ge_process.start()\n"
        f"png = ge_process.latency_histogram_png({HISTOGRAM!r}, title='t')\n"
        "assert png.startswith(b'\\x89PNG')\n"
        "assert ge_process._helper is not None\n"
        "print('matplotlib' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_dead_helper_draws_the_chart_here(dead_helper: ge_process._Helper) -> None:
    from parity.core import report

    png = ge_process.latency_histogram_png(HISTOGRAM, title="t")
    assert png == report.latency_histogram_png(HISTOGRAM, title="t")
    assert ge_process._helper is None


def test_the_helper_yields_the_cores_to_its_parent(helper: ge_process._Helper) -> None:
    import os

    ours = os.getpriority(os.PRIO_PROCESS, 0)
    assert _validate(helper, "suite.rows", EXPECTATIONS[1:]) is not None  # it is running
    theirs = os.getpriority(os.PRIO_PROCESS, helper.process.pid)
    assert theirs == min(ours + ge_process.NICENESS, 19)

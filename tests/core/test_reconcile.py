"""Reconciliation on hand-built snapshots: one test per discrepancy kind, each counted
exactly, plus the cohort, merging, empty inputs and a clean-against-itself property."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parity.core.reconcile import reconcile, reconcile_in_parts, split_by_stream
from parity.core.reconciliation import DETAIL_KEYS, Reconciliation
from parity.core.report import REPORT_KEYS, is_clean
from parity.core.routing import (
    CRITICAL_EVENTS_SUPABASE,
    SUPABASE_ROLLOUT_PERCENTAGE,
    FlagChange,
    FlagTimeline,
)
from parity.core.schema import SUPABASE_SNAPSHOT_SCHEMA, WS_SNAPSHOT_SCHEMA

HOUR = dt.datetime(2026, 11, 28, 10, tzinfo=dt.UTC)
END = HOUR + dt.timedelta(hours=1)
ALL = FlagTimeline.constant({SUPABASE_ROLLOUT_PERCENTAGE: 100})
NONE = FlagTimeline()
CATEGORY_OF = {"system.health": "CRITICAL", "debug.log": "INFORMATIONAL", "deprecated.x": "LEGACY"}
TYPE_OF = {v: k for k, v in CATEGORY_OF.items()}


def checksum(stream: str, seq: int, version: str = "") -> str:
    return hashlib.sha256(f"{stream}:{seq}:{version}".encode()).hexdigest()


def _event(row: dict[str, Any]) -> dict[str, Any]:
    stream, seq = row.get("stream", "s"), row["seq"]
    category = row.get("category", "CRITICAL")
    return {
        "stream": stream,
        "seq": seq,
        "event_type": row.get("event_type", TYPE_OF[category]),
        "category": category,
        "declared_category": None,
        "unclassified": row.get("unclassified", False),
        "emitted_at": row.get("emitted_at") or HOUR + dt.timedelta(seconds=seq % 3000),
        "payload": "{}",
        "checksum": row.get("checksum", checksum(stream, seq, row.get("version", ""))),
        "checksum_valid": row.get("valid", True),
    }


def ws_table(rows: list[dict[str, Any]]) -> pa.Table:
    """A log snapshot from partial rows (``stream`` defaults to "s", ``version`` alters
    the checksum, ``valid`` sets checksum_valid)."""
    full = [
        {**_event(r), "logged_at": None, "source_file": "2026-11-28/10.jsonl", "source_line": i}
        for i, r in enumerate(rows, 1)
    ]
    return pa.Table.from_pylist(full, schema=WS_SNAPSHOT_SCHEMA)


def sb_table(rows: list[dict[str, Any]]) -> pa.Table:
    """A Supabase snapshot; ``latency_ms`` (default 5) sets received_at after emitted_at,
    or ``received`` sets it outright."""
    full = []
    for r in rows:
        event = _event(r)
        received = r.get(
            "received", event["emitted_at"] + dt.timedelta(milliseconds=r.get("latency_ms", 5))
        )
        full.append({**event, "received_at": received})
    return pa.Table.from_pylist(full, schema=SUPABASE_SNAPSHOT_SCHEMA)


def seqs(*numbers: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"seq": n, **extra} for n in numbers]


def run(ws_rows, sb_rows, timeline: FlagTimeline = ALL, **kw: Any) -> dict[str, Any]:
    result = reconcile(
        ws_table(ws_rows),
        sb_table(sb_rows),
        timeline=timeline,
        window_start=HOUR,
        window_end=END,
        partition="2026-11-28-10:00",
        **kw,
    )
    report = result.to_report()
    json.dumps(report)  # always serialisable
    assert report["clean"] is is_clean(report)  # agrees with the report module's verdict
    return report


COUNT_KEYS = (
    "missing_in_supabase", "unexpected_in_supabase", "duplicates_ws", "duplicates_supabase",
    "checksum_mismatches", "invalid_checksums_ws", "invalid_checksums_supabase",
    "out_of_order_supabase", "duplicates_ws_retry", "duplicates_ws_conflicting",
    "duplicates_supabase_retry", "duplicates_supabase_conflicting",
    "expected_checksum_mismatches",
)  # fmt: skip


def discrepancies(report: dict[str, Any]) -> dict[str, int]:
    """The non-zero discrepancy counts, to assert that nothing else was found."""
    return {k: report[k] for k in COUNT_KEYS if report[k]}


def test_clean_hour_has_every_key_and_nothing_to_report():
    report = run(seqs(1, 2, 3), seqs(1, 2, 3))
    assert tuple(report) == REPORT_KEYS + DETAIL_KEYS
    assert report["clean"] is True
    assert discrepancies(report) == {}
    assert (report["ws_events"], report["supabase_events"]) == (3, 3)
    assert (report["expected_in_supabase"], report["matched"]) == (3, 3)
    assert report["delivery_rate"] == 1.0
    assert report["window_start"] == "2026-11-28T10:00:00Z"
    assert report["window_end"] == "2026-11-28T11:00:00Z"
    assert report["partition"] == "2026-11-28-10:00"


def test_missing_events_are_listed_and_interior_ones_are_supabase_gaps():
    report = run(seqs(1, 2, 3, 4, 5, 6), seqs(1, 4, 6))
    assert discrepancies(report) == {"missing_in_supabase": 3}
    assert report["missing_keys"] == [["s", 2], ["s", 3], ["s", 5]]
    assert report["matched"] == 3
    assert report["delivery_rate"] == 0.5
    assert report["sequence_gaps_supabase"] == [
        {"stream": "s", "first_missing": 2, "last_missing": 3},
        {"stream": "s", "first_missing": 5, "last_missing": 5},
    ]
    assert report["sequence_gaps_ws"] == []


def test_losses_at_the_edges_are_missing_but_not_gaps():
    report = run(seqs(1, 2, 3, 4), seqs(2, 3))
    assert report["missing_keys"] == [["s", 1], ["s", 4]]
    assert report["sequence_gaps_supabase"] == []


def test_supabase_gaps_skip_what_the_log_itself_lacks():
    # The log lacks 3 (its own gap); Supabase lacks 2 and 4 of what the log has.
    report = run(seqs(1, 2, 4, 5), seqs(1, 5))
    assert report["sequence_gaps_ws"] == [{"stream": "s", "first_missing": 3, "last_missing": 3}]
    assert report["sequence_gaps_supabase"] == [
        {"stream": "s", "first_missing": 2, "last_missing": 2},
        {"stream": "s", "first_missing": 4, "last_missing": 4},
    ]


def test_unexpected_rows_are_distinct_keys_the_log_lacks():
    sb = [*seqs(1, 2, 3), {"seq": 9}, {"seq": 9}, {"stream": "ghost", "seq": 1}]
    report = run(seqs(1, 2, 3), sb)
    assert report["unexpected_in_supabase"] == 2
    assert report["unexpected_keys"] == [["ghost", 1], ["s", 9]]
    assert report["duplicates_supabase"] == 1  # the second copy of s:9
    assert report["missing_in_supabase"] == 0
    assert report["supabase_events"] == 6


@pytest.mark.parametrize("side", ["ws", "supabase"])
def test_duplicates_split_into_retries_and_conflicts(side: str):
    copies = [{"seq": 2}, {"seq": 2}, {"seq": 2, "version": "b"}, {"seq": 3}, {"seq": 3}]
    base = seqs(1, 4)
    ws_rows, sb_rows = (
        (base + copies, seqs(1, 2, 3, 4)) if side == "ws" else (seqs(1, 2, 3, 4), base + copies)
    )
    report = run(ws_rows, sb_rows)
    assert report[f"duplicates_{side}"] == 3
    assert report[f"duplicates_{side}_retry"] == 2  # one extra s:2 and one extra s:3
    assert report[f"duplicates_{side}_conflicting"] == 1  # the s:2 with another checksum
    other = "supabase" if side == "ws" else "ws"
    assert report[f"duplicates_{other}"] == 0
    # A retry or a conflicting copy still matches through the copy that agrees.
    assert report["matched"] == 4
    assert report["checksum_mismatches"] == 0
    assert report["expected_in_supabase"] == 4
    assert report["ws_events" if side == "ws" else "supabase_events"] == 7


def test_checksum_mismatch_is_neither_matched_nor_missing():
    report = run(seqs(1, 2, 3), [{"seq": 1}, {"seq": 2, "version": "tampered"}, {"seq": 3}])
    assert discrepancies(report) == {"checksum_mismatches": 1, "expected_checksum_mismatches": 1}
    assert report["checksum_mismatch_keys"] == [["s", 2]]
    assert report["matched"] == 2
    assert report["missing_in_supabase"] == 0
    assert report["delivery_rate"] == pytest.approx(2 / 3)


def test_mismatch_when_no_copy_agrees_with_any_log_copy():
    ws_rows = [{"seq": 1}, {"seq": 1, "version": "x"}]
    sb_rows = [{"seq": 1, "version": "y"}, {"seq": 1, "version": "z"}]
    report = run(ws_rows, sb_rows)
    assert report["checksum_mismatches"] == 1
    assert report["matched"] == 0
    assert report["duplicates_ws_conflicting"] == 1
    assert report["duplicates_supabase_conflicting"] == 1


def test_null_checksum_in_supabase_matches_nothing():
    sb = sb_table(seqs(1, 2)).set_column(
        6, "checksum", pa.array([checksum("s", 1), None], pa.string())
    )
    result = reconcile(
        ws_table(seqs(1, 2)), sb, timeline=ALL, window_start=HOUR, window_end=END, partition="p"
    )
    assert result.counts["checksum_mismatches"] == 1
    assert result.counts["matched"] == 1


def test_invalid_checksums_are_counted_per_side():
    ws_rows = [{"seq": 1, "valid": False}, {"seq": 2}, {"seq": 3, "valid": False}]
    sb_rows = [{"seq": 1}, {"seq": 2, "valid": False}, {"seq": 3}]
    report = run(ws_rows, sb_rows)
    assert discrepancies(report) == {"invalid_checksums_ws": 2, "invalid_checksums_supabase": 1}
    assert report["matched"] == 3  # validity is reported, not a reason to call it missing


def test_log_gaps_are_ranges_per_stream():
    ws_rows = [*seqs(1, 2, 5, 6, 9), *[{"stream": "t", "seq": n} for n in (10, 11, 13)]]
    report = run(ws_rows, ws_rows)
    assert report["sequence_gaps_ws"] == [
        {"stream": "s", "first_missing": 3, "last_missing": 4},
        {"stream": "s", "first_missing": 7, "last_missing": 8},
        {"stream": "t", "first_missing": 12, "last_missing": 12},
    ]
    assert report["sequence_gaps_supabase"] == []
    assert report["clean"] is False


def test_out_of_order_rows_are_those_arriving_after_a_higher_seq():
    at = [HOUR + dt.timedelta(seconds=s) for s in range(10, 20)]
    sb_rows = [
        {"seq": 1, "received": at[0]},
        {"seq": 3, "received": at[1]},
        {"seq": 2, "received": at[2]},  # after 3
        {"seq": 5, "received": at[3]},
        {"seq": 4, "received": at[4]},  # after 5
        {"seq": 6, "received": at[5]},
        {"stream": "t", "seq": 2, "received": at[0]},
        {"stream": "t", "seq": 1, "received": at[0]},  # same instant: seq order decides
    ]
    ws_rows = [*seqs(1, 2, 3, 4, 5, 6), {"stream": "t", "seq": 1}, {"stream": "t", "seq": 2}]
    report = run(ws_rows, sb_rows)
    assert discrepancies(report) == {"out_of_order_supabase": 2}
    assert report["out_of_order_keys"] == [["s", 2], ["s", 4]]


def test_out_of_order_counts_every_late_row_behind_a_jump():
    at = [HOUR + dt.timedelta(seconds=s) for s in range(10, 20)]
    sb_rows = [{"seq": 4, "received": at[0]}] + [{"seq": n, "received": at[n]} for n in (1, 2, 3)]
    report = run(seqs(1, 2, 3, 4), sb_rows)
    assert report["out_of_order_supabase"] == 3


def test_latency_percentiles_over_matched_events():
    ws_rows = seqs(*range(1, 12))
    sb_rows = [{"seq": n, "latency_ms": 10 * n} for n in range(1, 11)]
    sb_rows.append({"seq": 11, "version": "bad", "latency_ms": 99_999})  # not matched
    report = run(ws_rows, sb_rows)
    # Linear interpolation over 10, 20, ..., 100 ms.
    assert report["latency_ms"] == {"p50": 55.0, "p95": 95.5, "p99": 99.1, "max": 100.0}
    histogram = report["latency_histogram"]
    bins = dict(zip(histogram["edges_ms"], histogram["counts"], strict=False))
    assert (bins[10], bins[20], bins[50], bins[100]) == (1, 3, 5, 1)  # [10, 20) holds 10 ...
    assert sum(histogram["counts"]) == 10
    assert histogram["below"] == histogram["above"] == 0


def test_latency_uses_the_earliest_matching_copy():
    sb_rows = [
        {"seq": 1, "latency_ms": 40},
        {"seq": 1, "latency_ms": 20},
        {"seq": 1, "version": "other", "latency_ms": 1},  # earliest, but does not match
    ]
    report = run(seqs(1), sb_rows)
    assert report["latency_ms"]["max"] == 20.0


def test_latency_is_null_when_nothing_matched():
    report = run(seqs(1, 2), [])
    assert report["latency_ms"] == {"p50": None, "p95": None, "p99": None, "max": None}


def test_delivery_rate_is_one_when_nothing_was_expected():
    report = run(seqs(1, 2), [], timeline=NONE)
    assert report["expected_in_supabase"] == 0
    assert report["delivery_rate"] == 1.0
    assert report["missing_in_supabase"] == 0


def test_events_outside_the_cohort_are_never_missing():
    informational = [{"seq": n, "category": "INFORMATIONAL"} for n in (1, 2, 3)]
    critical_only = FlagTimeline.constant({CRITICAL_EVENTS_SUPABASE: True})
    report = run(informational, informational[:1], timeline=critical_only)
    assert report["expected_in_supabase"] == 0
    assert report["missing_in_supabase"] == 0
    assert report["present_outside_cohort"] == 1
    assert report["unexpected_in_supabase"] == 0


def test_critical_flag_expects_only_critical_events():
    ws_rows = [
        {"stream": "a", "seq": 1, "category": "CRITICAL"},
        {"stream": "a", "seq": 2, "category": "INFORMATIONAL"},
        {"stream": "a", "seq": 3, "category": "LEGACY"},
        {"stream": "b", "seq": 1, "category": "CRITICAL"},
    ]
    critical_only = FlagTimeline.constant({CRITICAL_EVENTS_SUPABASE: True})
    report = run(ws_rows, [], timeline=critical_only)
    assert report["missing_keys"] == [["a", 1], ["b", 1]]


def test_rollout_raised_mid_hour_applies_by_each_events_emitted_at():
    switch = HOUR + dt.timedelta(minutes=30)
    timeline = FlagTimeline((FlagChange(SUPABASE_ROLLOUT_PERCENTAGE, 100, switch),))
    ws_rows = [
        {"seq": 1, "emitted_at": switch - dt.timedelta(seconds=1)},
        {"seq": 2, "emitted_at": switch},
        {"seq": 3, "emitted_at": switch + dt.timedelta(seconds=1)},
    ]
    report = run(ws_rows, [], timeline=timeline)
    assert report["expected_in_supabase"] == 2
    assert report["missing_keys"] == [["s", 2], ["s", 3]]


def test_an_explicit_expected_mask_is_the_cohort():
    result = reconcile(
        ws_table(seqs(1, 2, 3)),
        sb_table(seqs(1)),
        expected=pa.array([True, False, None]),
        window_start=HOUR,
        window_end=END,
        partition="p",
    )
    assert result.counts["expected_in_supabase"] == 1
    assert result.counts["missing_in_supabase"] == 0
    assert result.counts["present_outside_cohort"] == 0


def test_by_category_splits_every_count_by_the_log_category():
    ws_rows = [
        {"stream": "a", "seq": 1, "category": "CRITICAL"},
        {"stream": "a", "seq": 2, "category": "CRITICAL"},
        {"stream": "a", "seq": 3, "category": "LEGACY"},
        {"stream": "a", "seq": 3, "category": "LEGACY"},
        {"stream": "b", "seq": 1, "category": "INFORMATIONAL", "valid": False},
    ]
    sb_rows = [
        {"stream": "a", "seq": 1, "category": "INFORMATIONAL"},  # the log's category counts
        {"stream": "a", "seq": 3, "category": "LEGACY", "version": "x"},
        {"stream": "z", "seq": 1, "category": "LEGACY"},  # unexpected: its own category
        {"stream": "b", "seq": 1, "category": "INFORMATIONAL"},
    ]
    report = run(ws_rows, sb_rows)
    by = report["by_category"]
    assert set(by) == {"CRITICAL", "INFORMATIONAL", "LEGACY"}
    critical = {"ws_events": 2, "supabase_events": 1, "expected_in_supabase": 2, "matched": 1,
                "missing_in_supabase": 1, "delivery_rate": 0.5}  # fmt: skip
    assert {k: by["CRITICAL"][k] for k in critical} == critical
    assert by["LEGACY"]["duplicates_ws"] == 1
    assert by["LEGACY"]["checksum_mismatches"] == 1
    assert by["LEGACY"]["unexpected_in_supabase"] == 1
    assert by["LEGACY"]["supabase_events"] == 2
    assert by["INFORMATIONAL"]["invalid_checksums_ws"] == 1
    assert by["INFORMATIONAL"]["matched"] == 1
    for key in (
        "ws_events",
        "supabase_events",
        "matched",
        "missing_in_supabase",
        "unexpected_in_supabase",
        "checksum_mismatches",
        "duplicates_ws",
    ):
        assert sum(by[c][key] for c in by) == report[key], key


def test_unclassified_types_are_counted_per_side():
    ws_rows = [{"seq": 1, "event_type": "odd.thing", "category": "INFORMATIONAL",
                "unclassified": True}, {"seq": 2}]  # fmt: skip
    report = run(ws_rows, ws_rows)
    assert report["unclassified_types"] == {"ws": {"odd.thing": 1}, "supabase": {"odd.thing": 1}}


def test_empty_inputs():
    report = run([], [])
    assert tuple(report) == REPORT_KEYS + DETAIL_KEYS
    assert report["ws_events"] == report["supabase_events"] == report["matched"] == 0
    assert report["delivery_rate"] == 1.0
    assert report["missing_keys"] == [] and report["sequence_gaps_ws"] == []
    assert report["by_category"]["CRITICAL"]["ws_events"] == 0
    assert report["clean"] is True


def test_empty_supabase_makes_every_expected_event_missing():
    report = run(seqs(1, 2), [])
    assert report["missing_keys"] == [["s", 1], ["s", 2]]
    assert report["sequence_gaps_supabase"] == []


def test_empty_log_makes_every_supabase_row_unexpected():
    report = run([], seqs(1, 2, 2))
    assert report["unexpected_in_supabase"] == 2
    assert report["duplicates_supabase_retry"] == 1


def test_extreme_seqs_fall_back_to_ranked_keys():
    big = 2**53 - 1
    ws_rows = [{"seq": 1}, {"seq": 3}, {"seq": big}]
    sb_rows = [{"seq": 1}, {"seq": big}, {"seq": -(2**62)}]  # a bigint the contract forbids
    report = run(ws_rows, sb_rows)
    assert report["missing_keys"] == [["s", 3]]
    assert report["unexpected_keys"] == [["s", -(2**62)]]
    assert report["sequence_gaps_ws"] == [
        {"stream": "s", "first_missing": 2, "last_missing": 2},
        {"stream": "s", "first_missing": 4, "last_missing": big - 1},
    ]


def test_quarantined_lines_are_passed_through():
    assert run(seqs(1), seqs(1), quarantined_lines=4)["quarantined_lines"] == 4


def test_samples_are_capped_but_missing_keys_are_complete():
    report = run(seqs(*range(1, 21)), [{"seq": n} for n in range(21, 41)], sample_limit=3)
    assert len(report["missing_keys"]) == 20
    assert report["unexpected_keys"] == [["s", 21], ["s", 22], ["s", 23]]


def test_cohort_is_given_exactly_once():
    with pytest.raises(ValueError, match="exactly one"):
        reconcile(ws_table([]), sb_table([]), window_start=HOUR, window_end=END, partition="p")
    with pytest.raises(ValueError, match="lacks column"):
        reconcile(ws_table([]).drop_columns(["checksum"]), sb_table([]), timeline=ALL,
                  window_start=HOUR, window_end=END, partition="p")  # fmt: skip


def messy_hour(seed: int, streams: int = 12) -> tuple[pa.Table, pa.Table]:
    """A small hour with every kind of discrepancy, seeded."""
    rng = random.Random(seed)
    ws_rows, sb_rows = [], []
    for i in range(streams):
        stream = f"stream-{i:02d}"
        category = rng.choice(["CRITICAL", "INFORMATIONAL", "LEGACY"])
        for seq in range(1, rng.randint(2, 40)):
            if rng.random() < 0.05:
                continue  # a log gap
            row = {"stream": stream, "seq": seq, "category": category,
                   "valid": rng.random() > 0.05}  # fmt: skip
            ws_rows.extend([row] * (2 if rng.random() < 0.05 else 1))
            fate = rng.random()
            if fate < 0.1:
                continue  # missing
            copy = {**row, "latency_ms": rng.randint(1, 500), "valid": rng.random() > 0.05}
            if fate < 0.15:
                copy["version"] = "tampered"
            sb_rows.append(copy)
            if fate > 0.95:
                sb_rows.append({**copy, "version": rng.choice(["", "retry-other"])})
        sb_rows.append({"stream": stream, "seq": 1000, "category": category})  # unexpected
    return ws_table(ws_rows), sb_table(sb_rows)


@pytest.mark.parametrize("parts", [1, 3, 7])
def test_merging_stream_pieces_equals_the_whole(parts: int):
    ws, sb = messy_hour(seed=parts)
    switch = HOUR + dt.timedelta(seconds=20)
    timeline = FlagTimeline(
        (
            FlagChange(CRITICAL_EVENTS_SUPABASE, True, HOUR),
            FlagChange(SUPABASE_ROLLOUT_PERCENTAGE, 60, HOUR),
            FlagChange(SUPABASE_ROLLOUT_PERCENTAGE, 100, switch),
        )
    )
    kw = dict(timeline=timeline, window_start=HOUR, window_end=END, partition="p",
              quarantined_lines=2, sample_limit=5)  # fmt: skip
    whole = reconcile(ws, sb, **kw).to_report()
    pieces = reconcile_in_parts(split_by_stream(ws, sb, parts), **kw).to_report()
    assert pieces == whole
    assert whole["missing_in_supabase"] > 0 and whole["duplicates_ws"] > 0
    assert whole["checksum_mismatches"] > 0 and whole["sequence_gaps_ws"]


def test_merge_refuses_different_hours():
    a = reconcile(ws_table([]), sb_table([]), timeline=ALL, window_start=HOUR, window_end=END,
                  partition="a")  # fmt: skip
    b = reconcile(ws_table([]), sb_table([]), timeline=ALL, window_start=END,
                  window_end=END + dt.timedelta(hours=1), partition="b")  # fmt: skip
    with pytest.raises(ValueError, match="different hours"):
        a.merge(b)


def test_no_pieces_is_an_empty_hour():
    result = reconcile_in_parts(
        [], timeline=ALL, window_start=HOUR, window_end=END, partition="p", quarantined_lines=1
    )
    assert isinstance(result, Reconciliation)
    assert result.to_report()["quarantined_lines"] == 1
    assert result.to_report()["ws_events"] == 0


streams_st = st.dictionaries(
    st.text(alphabet="abcxyz-é0", min_size=1, max_size=6),
    st.tuples(
        st.integers(1, 2**53 - 60),
        st.integers(1, 30),
        st.sampled_from(["CRITICAL", "INFORMATIONAL", "LEGACY"]),
    ),
    max_size=6,
)


@settings(max_examples=60, deadline=None)
@given(streams_st, st.integers(0, 1000))
def test_a_log_reconciled_against_itself_is_clean(streams, latency_ms):
    rows = [
        {"stream": name, "seq": start + i, "category": category,
         "emitted_at": HOUR + dt.timedelta(seconds=i), "latency_ms": latency_ms}
        for name, (start, length, category) in streams.items()
        for i in range(length)
    ]  # fmt: skip
    random.Random(len(rows)).shuffle(rows)
    report = run(rows, rows)
    assert report["clean"] is True
    assert discrepancies(report) == {}
    assert report["delivery_rate"] == 1.0
    assert report["matched"] == report["expected_in_supabase"] == len(rows)
    if rows:
        assert report["latency_ms"]["max"] == float(latency_ms)


def _with_received(sb: pa.Table, micros: list[int | None]) -> pa.Table:
    column = pa.array(micros, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    return sb.set_column(sb.schema.get_field_index("received_at"), "received_at", column)


@pytest.mark.parametrize(
    "received",
    [
        [10, None, 30, 20, 40],  # seq 4 arrives before seq 3; seq 2 has no received_at
        [-(2**62), None, 2**62, 0, 2**62 + 5],  # a span too wide to pack: ranked instead
    ],
)
def test_out_of_order_ignores_rows_without_received_at(received: list[int | None]):
    sb = _with_received(sb_table(seqs(1, 2, 3, 4, 5)), received)
    result = reconcile(
        ws_table(seqs(1, 2, 3, 4, 5)),
        sb,
        timeline=ALL,
        window_start=HOUR,
        window_end=END,
        partition="p",
    )
    assert result.counts["out_of_order_supabase"] == 1
    assert result.to_report()["out_of_order_keys"] == [["s", 3]]
    assert result.counts["matched"] == 5


def test_a_key_is_expected_when_any_log_copy_is():
    switch = HOUR + dt.timedelta(minutes=30)
    timeline = FlagTimeline((FlagChange(SUPABASE_ROLLOUT_PERCENTAGE, 100, switch),))
    early, late = switch - dt.timedelta(minutes=1), switch + dt.timedelta(minutes=1)
    ws_rows = [
        {"seq": 1, "emitted_at": early},
        {"seq": 1, "emitted_at": late, "version": "re-emitted"},  # a conflicting copy
        {"seq": 2, "emitted_at": early},
        {"seq": 2, "emitted_at": early},
    ]
    report = run(ws_rows, [], timeline=timeline)
    assert report["expected_in_supabase"] == 1
    assert report["missing_keys"] == [["s", 1]]
    assert report["duplicates_ws_conflicting"] == 1
    assert report["duplicates_ws_retry"] == 1


def test_backfilled_rows_count_as_delivered_but_not_as_arrivals():
    """A backfill writes missed events hours later with received_at = now(): they complete
    the hour, but their timing is the backfill's, not a delivery's."""
    later = END + dt.timedelta(hours=3)
    sb_rows = [{"seq": n, "latency_ms": 10} for n in (1, 2, 4, 5)]
    sb_rows.append({"seq": 3, "received": later})  # written by the backfill
    backfilled = pa.table({"stream": ["s", "s"], "seq": [3, 99]})  # 99: not in the hour
    with_ledger = run(seqs(1, 2, 3, 4, 5), sb_rows, backfilled=backfilled)
    assert discrepancies(with_ledger) == {}
    assert with_ledger["matched"] == 5 and with_ledger["backfilled_rows"] == 1
    assert with_ledger["latency_ms"]["max"] == 10.0

    without = run(seqs(1, 2, 3, 4, 5), sb_rows)  # the same rows, no ledger
    assert without["out_of_order_supabase"] == 1  # 3 arrived after 4 and 5
    assert without["latency_ms"]["max"] > 3 * 3600 * 1000


messy_rows_st = st.lists(
    st.fixed_dictionaries(
        {
            "stream": st.sampled_from(["a", "b", "é"]),
            "seq": st.integers(1, 12),
            "version": st.sampled_from(["", "", "v2"]),
            "latency_ms": st.integers(0, 5000),
        }
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(messy_rows_st, messy_rows_st, st.randoms(use_true_random=False))
def test_sorted_snapshots_report_as_shuffled_ones(ws_rows, sb_rows, rng):
    """Snapshot parts arrive sorted by (stream, seq) and reconcile then skips its own sort:
    with duplicates, gaps, mismatches and late rows, the report is the one of any order."""

    def by_key(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return sorted(rows, key=lambda r: (r["stream"].encode(), r["seq"]))

    shuffled_ws, shuffled_sb = ws_rows[:], sb_rows[:]
    rng.shuffle(shuffled_ws)
    rng.shuffle(shuffled_sb)
    sorted_report = run(by_key(ws_rows), by_key(sb_rows))
    shuffled_report = run(shuffled_ws, shuffled_sb)
    for report in (sorted_report, shuffled_report):
        report.pop("generated_at", None)
    assert sorted_report == shuffled_report

"""Asset checks evaluated in-process on hand-built snapshots and reports: each passes on a
clean hour and fails, with its severity and evidence, on the one fault it guards against."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import dagster as dg
import orjson
import pyarrow as pa
import pytest

from checks import specs
from checks.criteria import SAMPLE_LIMIT, SuccessCriteria
from checks.evaluate import evaluate_checks
from parity.core.events import CATEGORIES, make_event
from parity.core.layout import Layout
from parity.core.report import REPORT_KEYS
from parity.core.schema import SUPABASE_SNAPSHOT_SCHEMA, WS_SNAPSHOT_SCHEMA
from parity.io.verify import verify_checksums

# GE 1.24 imports the deprecated sre_constants / sre_parse modules; nothing to do about it here.
pytestmark = [
    pytest.mark.filterwarnings("ignore:module 'sre_constants' is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:module 'sre_parse' is deprecated:DeprecationWarning"),
]

PARTITION = "2026-11-28-10:00"
HOUR = dt.datetime(2026, 11, 28, 10, tzinfo=dt.UTC)
RECEIVED_AFTER = dt.timedelta(milliseconds=40)
TYPES = {"CRITICAL": "error.raised", "INFORMATIONAL": "user.action", "LEGACY": "deprecated.x"}

Key = tuple[str, int]


def rows(
    streams: dict[str, Iterable[int]], categories: dict[Key, str] | None = None
) -> list[dict[str, Any]]:
    """Valid events: one per (stream, seq), INFORMATIONAL unless ``categories`` says."""
    out = []
    for stream, seqs in streams.items():
        for seq in seqs:
            category = (categories or {}).get((stream, seq), "INFORMATIONAL")
            event = make_event(
                stream,
                seq,
                TYPES[category],
                HOUR + dt.timedelta(seconds=seq),
                {"n": seq, "stream": stream},
            )
            out.append(
                {
                    "stream": stream,
                    "seq": seq,
                    "event_type": event.event_type,
                    "category": category,
                    "emitted_at": event.emitted_at,
                    "payload": orjson.dumps(event.payload, option=orjson.OPT_SORT_KEYS).decode(),
                    "checksum": event.checksum,
                }
            )
    return out


def corrupt(rows_: list[dict[str, Any]], key: Key, **changes: Any) -> None:
    """Change a row's columns but keep its stored checksum (it then no longer recomputes)."""
    for row in rows_:
        if (row["stream"], row["seq"]) == key:
            row.update(changes)


def ws_table(rows_: list[dict[str, Any]]) -> pa.Table:
    columns = {
        **_columns(rows_, ("stream", "seq", "event_type", "category")),
        "declared_category": [None] * len(rows_),
        "unclassified": [False] * len(rows_),
        "emitted_at": [r["emitted_at"] for r in rows_],
        "logged_at": [r["emitted_at"] for r in rows_],
        "payload": [r["payload"] for r in rows_],
        "checksum": [r["checksum"] for r in rows_],
        "checksum_valid": [True] * len(rows_),
        "source_file": ["2026-11-28/10.jsonl"] * len(rows_),
        "source_line": list(range(1, len(rows_) + 1)),
    }
    table = pa.table(columns, schema=WS_SNAPSHOT_SCHEMA)
    return table.set_column(
        table.schema.get_field_index("checksum_valid"), "checksum_valid", verify_checksums(table)
    )


def sb_table(rows_: list[dict[str, Any]]) -> pa.Table:
    columns = {
        **_columns(rows_, ("stream", "seq", "event_type", "emitted_at")),
        "received_at": [r["emitted_at"] + RECEIVED_AFTER for r in rows_],
        "payload": [r["payload"] for r in rows_],
        "checksum": [r["checksum"] for r in rows_],
        "category": [r["category"] for r in rows_],
        "declared_category": [None] * len(rows_),
        "unclassified": [False] * len(rows_),
        "checksum_valid": [True] * len(rows_),
    }
    table = pa.table(columns, schema=SUPABASE_SNAPSHOT_SCHEMA)
    return table.set_column(
        table.schema.get_field_index("checksum_valid"), "checksum_valid", verify_checksums(table)
    )


def _columns(rows_: list[dict[str, Any]], names: tuple[str, ...]) -> dict[str, list[Any]]:
    return {name: [r[name] for r in rows_] for name in names}


def report(**overrides: Any) -> dict[str, Any]:
    """A clean hour's report with every key of contract §6; ``overrides`` set top-level keys."""
    by_category = {
        c: {"expected_in_supabase": 0, "matched": 0, "missing_in_supabase": 0} for c in CATEGORIES
    }
    by_category["INFORMATIONAL"] = {
        "expected_in_supabase": 1000,
        "matched": 1000,
        "missing_in_supabase": 0,
    }
    doc: dict[str, Any] = {
        "partition": PARTITION,
        "window_start": "2026-11-28T10:00:00Z",
        "window_end": "2026-11-28T11:00:00Z",
        "ws_events": 1000,
        "supabase_events": 1000,
        "expected_in_supabase": 1000,
        "matched": 1000,
        "missing_in_supabase": 0,
        "unexpected_in_supabase": 0,
        "duplicates_ws": 0,
        "duplicates_supabase": 0,
        "checksum_mismatches": 0,
        "invalid_checksums_ws": 0,
        "invalid_checksums_supabase": 0,
        "sequence_gaps_ws": [],
        "out_of_order_supabase": 0,
        "quarantined_lines": 0,
        "latency_ms": {"p50": 40.0, "p95": 120.0, "p99": 300.0, "max": 450.0},
        "delivery_rate": 1.0,
        "by_category": by_category,
        "missing_keys": [],
    }
    assert set(REPORT_KEYS) <= set(doc)
    doc.update(overrides)
    return doc


def evaluate(
    asset: str, data: object, check: str, tmp_path: Path | None = None, **kw: Any
) -> dg.AssetCheckResult:
    """The one result of ``check``."""
    results = list(
        evaluate_checks(
            asset, data, {check}, PARTITION, Layout(tmp_path) if tmp_path else None, **kw
        )
    )
    assert [r.check_name for r in results] == [check]
    return results[0]


def meta(result: dg.AssetCheckResult, key: str) -> Any:
    value = result.metadata[key]
    return getattr(value, "value", value)


def assert_failed(
    result: dg.AssetCheckResult,
    severity: dg.AssetCheckSeverity,
    observed: Any,
    threshold: Any,
    expectation: str,
) -> None:
    assert not result.passed
    assert result.severity == severity
    assert meta(result, "observed_value") == observed
    assert meta(result, "threshold") == threshold
    assert expectation in [f["type"] for f in meta(result, "failed_expectations")]


def assert_passed(result: dg.AssetCheckResult) -> None:
    assert result.passed, meta(result, "failed_expectations")
    assert meta(result, "failed_expectations") == []


CLEAN = {"health": range(1, 41), "session-a": range(5, 30)}


# --- ws_log_snapshot --------------------------------------------------------------------


def test_ws_sequence_is_continuous_passes_on_a_clean_log():
    assert_passed(
        evaluate(specs.WS_LOG_SNAPSHOT, ws_table(rows(CLEAN)), specs.WS_SEQUENCE_IS_CONTINUOUS)
    )


def test_ws_sequence_is_continuous_reports_gaps_as_ranges_with_their_streams():
    log = ws_table(rows({"health": [1, 2, 5, 6, 10], "session-a": range(5, 30)}))
    result = evaluate(specs.WS_LOG_SNAPSHOT, log, specs.WS_SEQUENCE_IS_CONTINUOUS)
    assert_failed(result, dg.AssetCheckSeverity.WARN, 5, 0, "expect_table_row_count_to_equal")
    assert meta(result, "sample") == [
        {"stream": "health", "first_missing": 3, "last_missing": 4},
        {"stream": "health", "first_missing": 7, "last_missing": 9},
    ]
    assert meta(result, "gaps") == 2
    assert meta(result, "streams_with_gaps") == 1
    sums = [
        f
        for f in meta(result, "failed_expectations")
        if f["type"] == "expect_column_sum_to_be_between"
    ]
    assert sums[0]["result"]["observed_value"] == 5


def test_ws_checksums_are_valid_passes_on_a_clean_log():
    assert_passed(
        evaluate(specs.WS_LOG_SNAPSHOT, ws_table(rows(CLEAN)), specs.WS_CHECKSUMS_ARE_VALID)
    )


def test_ws_checksums_are_valid_fails_on_an_event_altered_after_its_checksum():
    log_rows = rows(CLEAN)
    corrupt(log_rows, ("health", 7), payload='{"n":700}')
    result = evaluate(specs.WS_LOG_SNAPSHOT, ws_table(log_rows), specs.WS_CHECKSUMS_ARE_VALID)
    assert_failed(result, dg.AssetCheckSeverity.WARN, 1, 0, "expect_table_row_count_to_equal")
    assert meta(result, "sample") == [["health", 7]]
    assert meta(result, "failed_expectations")[0]["result"] == {"observed_value": 1}


def test_ws_keys_are_unique_passes_with_identical_retry_copies():
    log_rows = rows(CLEAN)
    log_rows.append(dict(log_rows[3]))  # a retry: the same event logged twice
    result = evaluate(specs.WS_LOG_SNAPSHOT, ws_table(log_rows), specs.WS_KEYS_ARE_UNIQUE)
    assert_passed(result)
    assert meta(result, "duplicated_keys") == 1
    assert meta(result, "retry_copies") == 1


def test_ws_keys_are_unique_fails_on_two_different_events_with_one_key():
    log_rows = rows(CLEAN)
    other = rows({"session-a": [12]}, {("session-a", 12): "CRITICAL"})[0]
    log_rows.append(other)
    result = evaluate(specs.WS_LOG_SNAPSHOT, ws_table(log_rows), specs.WS_KEYS_ARE_UNIQUE)
    assert_failed(result, dg.AssetCheckSeverity.WARN, 1, 0, "expect_column_values_to_be_in_set")
    assert meta(result, "sample") == [["session-a", 12]]
    assert meta(result, "conflicting_copies") == 1


# --- supabase_events_snapshot -----------------------------------------------------------


def test_supabase_sequence_is_continuous_passes_on_a_clean_table():
    assert_passed(
        evaluate(
            specs.SUPABASE_EVENTS_SNAPSHOT,
            sb_table(rows(CLEAN)),
            specs.SUPABASE_SEQUENCE_IS_CONTINUOUS,
        )
    )


def test_supabase_sequence_is_continuous_fails_on_rows_lost_inside_a_stream():
    table = sb_table(rows({"health": [1, 2, 3, 7, 8], "session-a": range(5, 30)}))
    result = evaluate(specs.SUPABASE_EVENTS_SNAPSHOT, table, specs.SUPABASE_SEQUENCE_IS_CONTINUOUS)
    # A lost event is repaired, not rolled back for: WARN (no_events_lost owns the loss).
    assert_failed(result, dg.AssetCheckSeverity.WARN, 3, 0, "expect_table_row_count_to_equal")
    assert meta(result, "sample") == [{"stream": "health", "first_missing": 4, "last_missing": 6}]


def test_supabase_continuity_ignores_critical_events_routed_outside_the_cohort():
    # Stage 0: only CRITICAL events of a mixed stream reach Supabase (seq 3 and 9); then the
    # stream joins the cohort at seq 20 and every event follows. No event was lost.
    critical = {("session-b", s): "CRITICAL" for s in (3, 9, 21)}
    table = sb_table(rows({"session-b": [3, 9, *range(20, 30)]}, critical))
    assert_passed(
        evaluate(specs.SUPABASE_EVENTS_SNAPSHOT, table, specs.SUPABASE_SEQUENCE_IS_CONTINUOUS)
    )


def test_supabase_checksums_are_valid_passes_on_a_clean_table():
    assert_passed(
        evaluate(
            specs.SUPABASE_EVENTS_SNAPSHOT,
            sb_table(rows(CLEAN)),
            specs.SUPABASE_CHECKSUMS_ARE_VALID,
        )
    )


def test_supabase_checksums_are_valid_fails_on_a_corrupted_row():
    sb_rows = rows(CLEAN)
    corrupt(sb_rows, ("session-a", 9), event_type="user.other")
    result = evaluate(
        specs.SUPABASE_EVENTS_SNAPSHOT, sb_table(sb_rows), specs.SUPABASE_CHECKSUMS_ARE_VALID
    )
    assert_failed(result, dg.AssetCheckSeverity.ERROR, 1, 0, "expect_table_row_count_to_equal")
    assert meta(result, "sample") == [["session-a", 9]]


def test_supabase_keys_are_unique_passes_on_a_clean_table():
    assert_passed(
        evaluate(
            specs.SUPABASE_EVENTS_SNAPSHOT, sb_table(rows(CLEAN)), specs.SUPABASE_KEYS_ARE_UNIQUE
        )
    )


def test_supabase_keys_are_unique_fails_with_error_on_conflicting_copies():
    sb_rows = rows(CLEAN)
    sb_rows.append(rows({"health": [4]}, {("health", 4): "LEGACY"})[0])
    result = evaluate(
        specs.SUPABASE_EVENTS_SNAPSHOT, sb_table(sb_rows), specs.SUPABASE_KEYS_ARE_UNIQUE
    )
    assert_failed(result, dg.AssetCheckSeverity.ERROR, 1, 0, "expect_column_values_to_be_in_set")
    assert meta(result, "sample") == [["health", 4]]


def test_supabase_keys_are_unique_warns_on_identical_retry_copies():
    sb_rows = rows(CLEAN)
    sb_rows += [dict(sb_rows[0]), dict(sb_rows[0]), dict(sb_rows[50])]
    result = evaluate(
        specs.SUPABASE_EVENTS_SNAPSHOT, sb_table(sb_rows), specs.SUPABASE_KEYS_ARE_UNIQUE
    )
    assert_failed(result, dg.AssetCheckSeverity.WARN, 2, 0, "expect_table_row_count_to_equal")
    assert meta(result, "sample") == [["health", 1], ["session-a", 15]]
    assert meta(result, "retry_copies") == 3
    assert meta(result, "conflicting_keys") == 0


# --- event_reconciliation ---------------------------------------------------------------


def test_delivery_rate_meets_slo_passes_at_the_threshold():
    doc = report(
        matched=999, missing_in_supabase=1, delivery_rate=0.999, missing_keys=[["session-a", 7]]
    )
    assert_passed(evaluate(specs.EVENT_RECONCILIATION, doc, specs.DELIVERY_RATE_MEETS_SLO))


def test_delivery_rate_meets_slo_fails_below_the_threshold():
    missing = [["session-a", s] for s in range(1, 31)]
    doc = report(matched=970, missing_in_supabase=30, delivery_rate=0.97, missing_keys=missing)
    result = evaluate(specs.EVENT_RECONCILIATION, doc, specs.DELIVERY_RATE_MEETS_SLO)
    assert_failed(
        result, dg.AssetCheckSeverity.ERROR, 0.97, 0.999, "expect_column_values_to_be_between"
    )
    assert meta(result, "sample") == missing[:SAMPLE_LIMIT]
    assert meta(result, "failed_expectations")[0]["result"]["partial_unexpected_list"] == [0.97]


def test_no_critical_events_lost_passes_when_only_other_categories_are_missing():
    doc = report(missing_in_supabase=1, missing_keys=[["session-a", 7]])
    doc["by_category"]["INFORMATIONAL"]["missing_in_supabase"] = 1
    assert_passed(evaluate(specs.EVENT_RECONCILIATION, doc, specs.NO_CRITICAL_EVENTS_LOST))


def test_no_critical_events_lost_fails_on_one_lost_critical_event():
    doc = report(
        matched=999, missing_in_supabase=1, delivery_rate=0.999, missing_keys=[["errors", 12]]
    )
    doc["by_category"]["CRITICAL"] = {
        "expected_in_supabase": 10,
        "matched": 9,
        "missing_in_supabase": 1,
    }
    result = evaluate(specs.EVENT_RECONCILIATION, doc, specs.NO_CRITICAL_EVENTS_LOST)
    assert_failed(result, dg.AssetCheckSeverity.ERROR, 1, 0, "expect_column_values_to_be_between")
    assert meta(result, "sample") == [["errors", 12]]
    assert meta(result, "sample_is_critical_only") is True


def test_no_checksum_mismatches_passes_on_a_clean_report():
    assert_passed(evaluate(specs.EVENT_RECONCILIATION, report(), specs.NO_CHECKSUM_MISMATCHES))


def test_no_checksum_mismatches_fails_on_one_mismatch():
    doc = report(checksum_mismatches=1, checksum_mismatch_keys=[["health", 3]])
    result = evaluate(specs.EVENT_RECONCILIATION, doc, specs.NO_CHECKSUM_MISMATCHES)
    assert_failed(result, dg.AssetCheckSeverity.ERROR, 1, 0, "expect_column_values_to_be_between")
    assert meta(result, "sample") == [["health", 3]]


def test_latency_p95_within_slo_passes_below_the_threshold():
    assert_passed(evaluate(specs.EVENT_RECONCILIATION, report(), specs.LATENCY_P95_WITHIN_SLO))


def test_latency_p95_within_slo_fails_at_the_threshold():
    doc = report(latency_ms={"p50": 100.0, "p95": 500.0, "p99": 900.0, "max": 1200.0})
    result = evaluate(specs.EVENT_RECONCILIATION, doc, specs.LATENCY_P95_WITHIN_SLO)
    assert_failed(
        result, dg.AssetCheckSeverity.WARN, 500.0, 500.0, "expect_column_values_to_be_between"
    )


def test_latency_p95_within_slo_passes_with_a_note_without_matched_events():
    doc = report(
        matched=0,
        expected_in_supabase=0,
        latency_ms={"p50": None, "p95": None, "p99": None, "max": None},
    )
    result = evaluate(specs.EVENT_RECONCILIATION, doc, specs.LATENCY_P95_WITHIN_SLO)
    assert_passed(result)
    assert meta(result, "observed_value") is None
    assert "no matched events" in meta(result, "note")


def test_quarantine_within_tolerance_passes_at_the_threshold():
    doc = report(ws_events=999, quarantined_lines=1)
    assert_passed(evaluate(specs.EVENT_RECONCILIATION, doc, specs.QUARANTINE_WITHIN_TOLERANCE))


def test_quarantine_within_tolerance_fails_above_the_threshold():
    doc = report(ws_events=990, quarantined_lines=10)
    result = evaluate(specs.EVENT_RECONCILIATION, doc, specs.QUARANTINE_WITHIN_TOLERANCE)
    assert_failed(
        result, dg.AssetCheckSeverity.WARN, 0.01, 0.001, "expect_column_values_to_be_between"
    )
    assert meta(result, "quarantined_lines") == 10


def test_thresholds_come_from_the_criteria():
    doc = report(delivery_rate=0.97, matched=970, missing_in_supabase=30)
    lenient = SuccessCriteria(min_delivery_rate=0.95)
    result = evaluate(
        specs.EVENT_RECONCILIATION, doc, specs.DELIVERY_RATE_MEETS_SLO, criteria=lenient
    )
    assert result.passed
    assert meta(result, "threshold") == 0.95


# --- selection, results file, specs, criteria -----------------------------------------------


def test_only_selected_checks_are_emitted():
    selected = {specs.NO_CHECKSUM_MISMATCHES, specs.WS_KEYS_ARE_UNIQUE}
    results = list(evaluate_checks(specs.EVENT_RECONCILIATION, report(), selected, PARTITION))
    assert [r.check_name for r in results] == [specs.NO_CHECKSUM_MISMATCHES]
    assert all(r.asset_key == dg.AssetKey(specs.EVENT_RECONCILIATION) for r in results)
    assert list(evaluate_checks(specs.WS_LOG_SNAPSHOT, ws_table([]), set(), PARTITION)) == []


def test_every_check_of_an_asset_is_emitted_when_all_are_selected(tmp_path: Path):
    names = {c.name for c in specs.checks_for(specs.SUPABASE_EVENTS_SNAPSHOT)}
    results = list(
        evaluate_checks(
            specs.SUPABASE_EVENTS_SNAPSHOT, sb_table([]), names, PARTITION, Layout(tmp_path)
        )
    )
    assert {r.check_name for r in results} == names
    assert all(r.passed for r in results)


def test_ge_validation_results_are_written_next_to_the_report(tmp_path: Path):
    selected = {c.name for c in specs.checks_for(specs.WS_LOG_SNAPSHOT)}
    log = ws_table(rows({"health": [1, 2, 4]}))
    layout = Layout(tmp_path)
    results = list(evaluate_checks(specs.WS_LOG_SNAPSHOT, log, selected, PARTITION, layout))
    path = layout.ge_results(PARTITION, specs.WS_LOG_SNAPSHOT)
    assert path == tmp_path / "reports" / f"{PARTITION}.ge.ws_log_snapshot.json"
    doc = json.loads(path.read_text("utf-8"))
    assert doc["partition"] == PARTITION
    assert set(doc["validations"]) == selected
    gaps = doc["validations"][specs.WS_SEQUENCE_IS_CONTINUOUS]
    assert gaps["success"] is False
    assert gaps["meta"]["great_expectations_version"].startswith("1.")
    assert all(meta(r, "ge_results") == str(path) for r in results)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary files left


def test_specs_name_every_check_on_its_asset():
    by_asset = specs.reconciliation_check_specs()
    assert {a: [s.name for s in ss] for a, ss in by_asset.items()} == {
        specs.WS_LOG_SNAPSHOT: [
            specs.WS_SEQUENCE_IS_CONTINUOUS,
            specs.WS_CHECKSUMS_ARE_VALID,
            specs.WS_KEYS_ARE_UNIQUE,
        ],
        specs.SUPABASE_EVENTS_SNAPSHOT: [
            specs.SUPABASE_SEQUENCE_IS_CONTINUOUS,
            specs.SUPABASE_CHECKSUMS_ARE_VALID,
            specs.SUPABASE_KEYS_ARE_UNIQUE,
        ],
        specs.EVENT_RECONCILIATION: [
            specs.NO_EVENTS_LOST,
            specs.DELIVERY_RATE_MEETS_SLO,
            specs.NO_CRITICAL_EVENTS_LOST,
            specs.NO_CHECKSUM_MISMATCHES,
            specs.LATENCY_P95_WITHIN_SLO,
            specs.QUARANTINE_WITHIN_TOLERANCE,
        ],
    }
    blocking = {s.name for ss in by_asset.values() for s in ss if s.blocking}
    # Lost events must not block the backfill downstream; corruption stops repair.
    assert blocking == {specs.NO_CHECKSUM_MISMATCHES}
    assert all(s.asset_key == dg.AssetKey(a) for a, ss in by_asset.items() for s in ss)


def test_one_severity_rule_only_the_plans_rollback_reasons_are_error():
    errors = {c.name for c in specs.CHECKS if c.severity == specs.ERROR}
    assert errors == {
        specs.DELIVERY_RATE_MEETS_SLO,
        specs.NO_CRITICAL_EVENTS_LOST,
        specs.SUPABASE_CHECKSUMS_ARE_VALID,
        specs.SUPABASE_KEYS_ARE_UNIQUE,
        specs.NO_CHECKSUM_MISMATCHES,
    }


def _report(**counts):
    base = {
        "partition": "2026-11-28-10:00",
        "ws_events": 2000,
        "expected_in_supabase": 2000,
        "matched": 1999,
        "missing_in_supabase": 1,
        "missing_keys": [["debug", 1000]],
        "by_category": {"INFORMATIONAL": {"missing_in_supabase": 1}},
        "repair": {"state": "pending", "reason": "1 missing; repair 1 of at most 3"},
    }
    return {**base, **counts}


def test_no_events_lost_names_the_keys_and_the_repair_state():
    [result] = evaluate_checks(
        specs.EVENT_RECONCILIATION, _report(), {specs.NO_EVENTS_LOST}, "2026-11-28-10:00"
    )
    assert not result.passed and result.severity == dg.AssetCheckSeverity.WARN
    assert result.metadata["sample"].value == [["debug", 1000]]
    assert result.metadata["repair_state"].value == "pending"
    assert result.metadata["note"].value.startswith("repair pending")
    [whole] = evaluate_checks(
        specs.EVENT_RECONCILIATION,
        _report(matched=2000, missing_in_supabase=0, missing_keys=[], repair={"state": "done"}),
        {specs.NO_EVENTS_LOST},
        "2026-11-28-10:00",
    )
    assert whole.passed and whole.metadata["repair_state"].value == "done"

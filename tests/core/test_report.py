import os

import pytest

from parity.core import report
from parity.core.errors import ReportNotFoundError
from parity.core.layout import Layout
from parity.io.reports import load_report, write_report


def clean_report(partition="2026-11-28-10:00"):
    doc = {key: 0 for key in report.REPORT_KEYS}
    doc.update(
        partition=partition,
        window_start="2026-11-28T10:00:00Z",
        window_end="2026-11-28T11:00:00Z",
        sequence_gaps_ws=[],
        missing_keys=[],
        latency_ms={"p50": 10.0, "p95": 40.0, "p99": 90.0, "max": 120.0},
        delivery_rate=1.0,
        by_category={c: {} for c in ("CRITICAL", "INFORMATIONAL", "LEGACY")},
    )
    return doc


def test_write_and_load_round_trip(tmp_path):
    doc = clean_report()
    path = write_report(Layout(tmp_path), doc)
    assert path.name == "2026-11-28-10:00.json"
    assert load_report(Layout(tmp_path), "2026-11-28-10:00") == doc
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind


def test_failed_write_keeps_the_previous_report(tmp_path, monkeypatch):
    write_report(Layout(tmp_path), clean_report())

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_report(Layout(tmp_path), clean_report() | {"matched": 5})
    monkeypatch.undo()
    assert load_report(Layout(tmp_path), "2026-11-28-10:00")["matched"] == 0
    assert len(list((tmp_path / "reports").iterdir())) == 1


def test_report_must_have_every_key(tmp_path):
    doc = clean_report()
    del doc["latency_ms"]
    with pytest.raises(ValueError, match="latency_ms"):
        write_report(Layout(tmp_path), doc)


def test_missing_report_says_what_to_run(tmp_path):
    with pytest.raises(ReportNotFoundError, match="parity reconcile --partition 2026-11-28-09:00"):
        load_report(Layout(tmp_path), "2026-11-28-09:00")


def test_clean_and_discrepancies():
    doc = clean_report()
    assert report.is_clean(doc)
    doc["missing_in_supabase"] = 3
    doc["sequence_gaps_ws"] = [{"stream": "a", "first_missing": 5, "last_missing": 7}]
    assert report.discrepancies(doc) == {"missing_in_supabase": 3, "sequence_gaps_ws": 3}
    assert "DISCREPANCIES" in report.summary_text(doc)


def test_category_table_lists_every_category():
    doc = clean_report()
    doc["by_category"]["CRITICAL"] = {"expected_in_supabase": 7, "matched": 6}
    table = report.category_table_markdown(doc)
    assert "| CRITICAL | 7 | 6 |" in table
    assert "| LEGACY |" in table and "| INFORMATIONAL |" in table


def test_histogram_png_is_a_png():
    histogram = {"edges_ms": [0, 10, 100, 1000], "counts": [3, 1, 0], "below": 1, "above": 2}
    png = report.latency_histogram_png(histogram, title="t")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    empty = report.latency_histogram_png({}, title="t")
    assert empty[:8] == b"\x89PNG\r\n\x1a\n"

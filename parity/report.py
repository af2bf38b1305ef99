"""The per-hour report (DESIGN 7): stored atomically as JSON, rendered for people."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from parity.errors import ReportNotFoundError
from parity.events import CATEGORIES
from parity.files import write_json_atomic

#: Top-level keys every report has (DESIGN 7).
REPORT_KEYS = (
    "partition",
    "window_start",
    "window_end",
    "ws_events",
    "supabase_events",
    "expected_in_supabase",
    "matched",
    "missing_in_supabase",
    "unexpected_in_supabase",
    "duplicates_ws",
    "duplicates_supabase",
    "checksum_mismatches",
    "invalid_checksums_ws",
    "invalid_checksums_supabase",
    "sequence_gaps_ws",
    "out_of_order_supabase",
    "quarantined_lines",
    "latency_ms",
    "delivery_rate",
    "by_category",
    "missing_keys",
)
#: The counts that make an hour "not clean" when non-zero.
DISCREPANCY_KEYS = (
    "missing_in_supabase",
    "unexpected_in_supabase",
    "duplicates_ws",
    "duplicates_supabase",
    "checksum_mismatches",
    "invalid_checksums_ws",
    "invalid_checksums_supabase",
    "out_of_order_supabase",
    "quarantined_lines",
)


def report_path(reports_dir: Path, partition: str) -> Path:
    return reports_dir / f"{partition}.json"


def write_report(reports_dir: Path, report: dict[str, Any]) -> Path:
    missing = [k for k in REPORT_KEYS if k not in report]
    if missing:
        raise ValueError(f"report for {report.get('partition')!r} lacks keys {missing}")
    path = report_path(reports_dir, report["partition"])
    write_json_atomic(path, report)
    return path


def load_report(reports_dir: Path, partition: str) -> dict[str, Any]:
    path = report_path(reports_dir, partition)
    try:
        return json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise ReportNotFoundError(
            f"no report for partition {partition} at {path}: run `parity reconcile "
            f"--partition {partition}` first"
        ) from None


def gap_count(gaps: list[dict[str, Any]]) -> int:
    return sum(int(g["last_missing"]) - int(g["first_missing"]) + 1 for g in gaps)


def discrepancies(report: dict[str, Any]) -> dict[str, int]:
    """Non-zero discrepancy counts (sequence gaps counted in events)."""
    found = {k: int(report[k]) for k in DISCREPANCY_KEYS if report.get(k)}
    gaps = gap_count(report.get("sequence_gaps_ws", []))
    if gaps:
        found["sequence_gaps_ws"] = gaps
    return found


def is_clean(report: dict[str, Any]) -> bool:
    return not discrepancies(report)


def summary_text(report: dict[str, Any]) -> str:
    """A few lines for a terminal."""
    lat = report.get("latency_ms") or {}
    p95 = lat.get("p95")
    lines = [
        f"{report['partition']}  {'clean' if is_clean(report) else 'DISCREPANCIES'}",
        f"  log events {report['ws_events']}, supabase rows {report['supabase_events']}, "
        f"expected {report['expected_in_supabase']}, matched {report['matched']}, "
        f"delivery {report['delivery_rate']:.4%}, p95 latency "
        + (f"{p95:.0f} ms" if p95 is not None else "n/a"),
    ]
    for key, value in discrepancies(report).items():
        lines.append(f"  {key}: {value}")
    return "\n".join(lines)


def category_table_markdown(report: dict[str, Any]) -> str:
    """One markdown table: a row per category, a column per count."""
    columns = (
        "expected_in_supabase",
        "matched",
        "missing_in_supabase",
        "unexpected_in_supabase",
        "checksum_mismatches",
        "duplicates_supabase",
    )
    head = "| category | " + " | ".join(c.replace("_", " ") for c in columns) + " |"
    rule = "|---|" + "---:|" * len(columns)
    rows = [head, rule]
    for category in CATEGORIES:
        counts = report["by_category"].get(category, {})
        rows.append(f"| {category} | " + " | ".join(str(counts.get(c, 0)) for c in columns) + " |")
    return "\n".join(rows)


def latency_histogram_png(edges_ms: list[float], counts: list[int], *, title: str) -> bytes:
    """A bar chart of the latency histogram as PNG bytes (matplotlib, no display)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 2.6), dpi=100)
    ax = fig.add_subplot()
    if counts and sum(counts):
        widths = [b - a for a, b in zip(edges_ms[:-1], edges_ms[1:], strict=True)]
        ax.bar(edges_ms[:-1], counts, width=widths, align="edge", color="#4f43dd")
    else:
        ax.text(0.5, 0.5, "no matched events", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("received_at - emitted_at (ms)")
    ax.set_ylabel("events")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()

"""The per-hour report (contract §6): stored atomically as JSON, rendered for people."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from parity.core.events import CATEGORIES

#: Top-level keys every report has (contract §6).
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


def gap_count(gaps: list[dict[str, Any]]) -> int:
    return sum(int(g["last_missing"]) - int(g["first_missing"]) + 1 for g in gaps)


def discrepancy_counts(counts: Mapping[str, Any], log_gap_events: int) -> dict[str, int]:
    """The one rule of what is a discrepancy: the non-zero :data:`DISCREPANCY_KEYS` of
    ``counts`` and the events missing from the log's sequences. Outside-cohort presence is
    not one, and Supabase gaps are runs of missing keys, counted in ``missing_in_supabase``."""
    found = {k: int(counts[k]) for k in DISCREPANCY_KEYS if counts.get(k)}
    if log_gap_events:
        found["sequence_gaps_ws"] = log_gap_events
    return found


def discrepancies(report: dict[str, Any]) -> dict[str, int]:
    """Non-zero discrepancy counts of a stored report (sequence gaps counted in events)."""
    return discrepancy_counts(report, gap_count(report.get("sequence_gaps_ws", [])))


def is_clean(report: dict[str, Any]) -> bool:
    """A report with no discrepancy (see :func:`discrepancy_counts`)."""
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


def _ms_label(value: float) -> str:
    return f"{value / 1000:g}s" if value >= 1000 else f"{value:g}"


def warm_charts() -> None:
    """Import what :func:`latency_histogram_png` draws with (matplotlib, most of a second)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.figure  # noqa: F401


def latency_histogram_png(histogram: dict[str, Any], *, title: str) -> bytes:
    """The latency histogram as a PNG bar chart: one equal-width bar per bin (the bins grow
    roughly tenfold, so a linear axis would squeeze everything into its first pixels),
    from the first bin holding events to the last, plus bars for the values below the
    first edge (clock skew) and above the last."""
    warm_charts()
    from matplotlib.figure import Figure

    edges = list(histogram.get("edges_ms") or [])
    counts = list(histogram.get("counts") or [])
    labels = [f"{_ms_label(a)}-{_ms_label(b)}" for a, b in zip(edges[:-1], edges[1:], strict=True)]
    if histogram.get("below"):
        labels.insert(0, f"<{_ms_label(edges[0])}")
        counts.insert(0, int(histogram["below"]))
    if histogram.get("above"):
        labels.append(f">{_ms_label(edges[-1])}")
        counts.append(int(histogram["above"]))
    used = [i for i, c in enumerate(counts) if c]
    fig = Figure(figsize=(7, 2.8), dpi=100)
    ax = fig.add_subplot()
    if used:
        lo, hi = max(0, used[0] - 1), min(len(counts), used[-1] + 2)
        shown = range(lo, hi)
        ax.bar(range(len(shown)), [counts[i] for i in shown], color="#4f43dd")
        ax.set_xticks(
            range(len(shown)), [labels[i] for i in shown], rotation=30, ha="right", fontsize=8
        )
    else:
        ax.text(0.5, 0.5, "no matched events", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
    ax.set_xlabel("received_at - emitted_at (ms)")
    ax.set_ylabel("events")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()

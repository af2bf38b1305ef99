"""The migration scorecard: recent hours at a glance (pure, but for the PNG it renders).

One row per reconciled hour: its verdict (:mod:`parity.core.verdict`), why, the repair
state, delivery rate and p95 latency; and a chart of delivery rate and p95 latency per hour
against the SLOs.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

MARK = {"green": "🟢", "yellow": "🟡", "red": "🔴"}


@dataclass(frozen=True)
class HourRow:
    partition: str
    colour: str
    reasons: tuple[str, ...]
    repair: str
    delivery_rate: float | None
    latency_p95_ms: float | None
    missing: int


def counts(rows: Sequence[HourRow]) -> dict[str, int]:
    out = {"green": 0, "yellow": 0, "red": 0}
    for row in rows:
        out[row.colour] = out.get(row.colour, 0) + 1
    return out


def markdown(rows: Sequence[HourRow]) -> str:
    """The hours, newest first, as a markdown table with a coloured mark per hour."""
    lines = [
        "| hour (UTC) | verdict | why | repair | delivery rate | p95 ms | missing |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for row in sorted(rows, key=lambda r: r.partition, reverse=True):
        rate = "-" if row.delivery_rate is None else f"{row.delivery_rate:.4%}"
        p95 = "-" if row.latency_p95_ms is None else f"{row.latency_p95_ms:.0f}"
        why = "; ".join(row.reasons).replace("|", "/") or "whole, every check passed"
        lines.append(
            f"| {row.partition} | {MARK.get(row.colour, '')} {row.colour} | {why} | "
            f"{row.repair} | {rate} | {p95} | {row.missing} |"
        )
    return "\n".join(lines)


def chart_png(rows: Sequence[HourRow], *, min_delivery_rate: float, max_p95_ms: float) -> bytes:
    """Delivery rate and p95 latency per hour (oldest left), each against its SLO line;
    the bars are coloured by the hour's verdict."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    ordered = sorted(rows, key=lambda r: r.partition)
    colours = {"green": "#2e9d5b", "yellow": "#e0b000", "red": "#d2393d"}
    labels = [r.partition[5:] for r in ordered]
    x = range(len(ordered))
    fig = Figure(figsize=(8, 4.2), dpi=100)
    rate_ax, p95_ax = fig.subplots(2, 1, sharex=True)
    rate_ax.bar(
        x,
        [100 * (r.delivery_rate if r.delivery_rate is not None else 0) for r in ordered],
        color=[colours.get(r.colour, "#888") for r in ordered],
    )
    rate_ax.axhline(100 * min_delivery_rate, color="#333", linestyle="--", linewidth=1)
    rate_ax.set_ylabel("delivery %")
    low = min([100 * (r.delivery_rate or 0) for r in ordered] + [100 * min_delivery_rate])
    rate_ax.set_ylim(max(0.0, low - 0.5), 100.05)
    rate_ax.set_title(f"per hour; dashed: SLOs ({min_delivery_rate:.1%}, {max_p95_ms:g} ms)")
    p95_ax.bar(
        x,
        [r.latency_p95_ms or 0 for r in ordered],
        color=[colours.get(r.colour, "#888") for r in ordered],
    )
    p95_ax.axhline(max_p95_ms, color="#333", linestyle="--", linewidth=1)
    p95_ax.set_ylabel("p95 latency ms")
    p95_ax.set_xticks(list(x), labels, rotation=45, ha="right", fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()

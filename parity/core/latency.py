"""Latency of delivered events: the report's percentiles and its histogram."""

from __future__ import annotations

from typing import Any

import numpy as np

#: Edges (ms) of the latency histogram's bins, each [edge, next edge).
LATENCY_EDGES_MS = (
    0,
    1,
    2,
    5,
    10,
    20,
    50,
    100,
    200,
    500,
    1_000,
    2_000,
    5_000,
    10_000,
    30_000,
    60_000,
    300_000,
)


def latency_summary(latencies_us: np.ndarray) -> dict[str, float | None]:
    """p50/p95/p99/max in milliseconds (linear interpolation); nulls when empty."""
    if latencies_us.size == 0:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    p50, p95, p99 = np.percentile(latencies_us, [50, 95, 99]) / 1000.0
    return {
        "p50": round(float(p50), 3),
        "p95": round(float(p95), 3),
        "p99": round(float(p99), 3),
        "max": round(float(latencies_us.max()) / 1000.0, 3),
    }


def latency_histogram(latencies_us: np.ndarray) -> dict[str, Any]:
    """Counts per bin [edges_ms[i], edges_ms[i + 1]), plus those below the first edge
    (clock skew) and at or above the last."""
    edges_us = np.array(LATENCY_EDGES_MS, np.int64) * 1000
    bins = np.bincount(
        np.searchsorted(edges_us, latencies_us, side="right"), minlength=edges_us.size + 1
    )
    return {
        "edges_ms": list(LATENCY_EDGES_MS),
        "counts": [int(n) for n in bins[1:-1]],
        "below": int(bins[0]),
        "above": int(bins[-1]),
    }

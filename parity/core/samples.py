"""``delivery_metrics`` samples (contract §4) and the grid the health triggers read them on.

The grid: samples are aggregated across producers on a grid of ``interval_s`` seconds
aligned to the Unix epoch; a sample belongs to the grid window ``(t - interval, t]`` that
holds its ``sampled_at``. Within a grid window attempts, failures, connection attempts and
connection failures are summed over all producers (so the error rate is weighted by
attempts); latency is the *largest* p95 any producer reported — the slowest producer
decides, because a mean of percentiles is not a percentile and would hide one degraded
producer behind healthy ones. A grid window with zero attempts has no error rate; one where
no producer reported a p95 has no latency.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from parity.core.partitions import aware_utc

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class MetricSample:
    """One ``delivery_metrics`` row: one producer's sampling window ending at ``sampled_at``."""

    sampled_at: dt.datetime
    producer: str
    window_s: int
    attempts: int
    failures: int
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    connection_attempts: int = 0
    connection_failures: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "sampled_at", aware_utc(self.sampled_at, "sampled_at"))
        where = f"delivery_metrics sample {self.producer!r} at {self.sampled_at.isoformat()}"
        if (
            min(self.window_s, self.attempts, self.failures) < 0
            or min(self.connection_attempts, self.connection_failures) < 0
        ):
            raise ValueError(f"{where}: counts and window_s must not be negative")
        if self.failures > self.attempts:
            raise ValueError(f"{where}: failures ({self.failures}) > attempts ({self.attempts})")
        if self.connection_failures > self.connection_attempts:
            raise ValueError(
                f"{where}: connection_failures ({self.connection_failures})"
                f" > connection_attempts ({self.connection_attempts})"
            )

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> MetricSample:
        """Build from a ``delivery_metrics`` row mapping (extra keys such as ``id`` ignored)."""

        def opt_float(key: str) -> float | None:
            value = row.get(key)
            return None if value is None else float(value)

        return cls(
            sampled_at=row["sampled_at"],
            producer=str(row["producer"]),
            window_s=int(row["window_s"]),
            attempts=int(row["attempts"]),
            failures=int(row["failures"]),
            latency_p50_ms=opt_float("latency_p50_ms"),
            latency_p95_ms=opt_float("latency_p95_ms"),
            connection_attempts=int(row.get("connection_attempts") or 0),
            connection_failures=int(row.get("connection_failures") or 0),
        )


@dataclass
class GridWindow:
    """The samples of one grid window, summed across producers (latency: the largest p95)."""

    attempts: int = 0
    failures: int = 0
    latency_p95_ms: float | None = None
    connection_attempts: int = 0
    connection_failures: int = 0
    latest: dt.datetime = _EPOCH

    def error_rate(self) -> float | None:
        return self.failures / self.attempts if self.attempts else None


def grid(
    samples: Iterable[MetricSample], since: dt.datetime, now: dt.datetime, interval_s: float
) -> dict[dt.datetime, GridWindow]:
    """Samples in ``(since, now]`` summed per grid window, keyed by the window's end."""
    buckets: dict[dt.datetime, GridWindow] = {}
    for s in samples:
        if not since < s.sampled_at <= now:
            continue
        offset = (s.sampled_at - _EPOCH).total_seconds()
        end = _EPOCH + dt.timedelta(seconds=math.ceil(offset / interval_s) * interval_s)
        b = buckets.setdefault(end, GridWindow())
        b.attempts += s.attempts
        b.failures += s.failures
        b.connection_attempts += s.connection_attempts
        b.connection_failures += s.connection_failures
        if s.latency_p95_ms is not None and (
            b.latency_p95_ms is None or s.latency_p95_ms > b.latency_p95_ms
        ):
            b.latency_p95_ms = s.latency_p95_ms
        b.latest = max(b.latest, s.sampled_at)
    return dict(sorted(buckets.items()))

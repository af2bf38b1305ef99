"""Automated rollback triggers (contract §5) evaluated over ``delivery_metrics`` rows (contract §4).

Pure: ``evaluate(samples, now, config)`` reads frozen samples and returns a verdict; the
health sensor fetches the rows and acts on the verdict. Every trigger answers one of three
states: ``BREACH`` (roll back), ``OK`` (healthy), ``NO_DATA`` (too little data to say
either: it never rolls back, never lets the rollout promote, and is shown).

Definitions (the plan's numbers are the defaults of :class:`TriggerConfig`):

Sampling grid
    Samples are aggregated across producers on a grid of ``sampling_interval_s`` seconds
    aligned to the Unix epoch: counts summed, latency the largest p95 any producer reported
    (:mod:`parity.core.samples` says why).

Evaluation window
    A trigger with duration D looks at the grid windows whose newest sample has
    ``sampled_at`` in ``(now - D, now]``; samples after ``now`` are ignored.

Sustained (error rate, latency)
    The trigger breaches when the window is *covered* and *every* covered grid window is
    strictly above the threshold (exactly at the threshold is not a breach). Covered means:
    at least ``ceil(min_coverage * D / interval)`` grid windows have a value, and no stretch
    without a value — between the window start, the valued grid windows and ``now`` — is
    longer than ``max_gap_s`` (default three sampling intervals). A window that is not
    covered is ``NO_DATA`` even if what little data there is breaches: a rollback needs a
    sustained breach, and a promotion needs proof of health. ``observed`` is the lowest
    value in the window, the level that was sustained throughout.

Latency baseline
    The median of the per-grid-window latency over the ``baseline_window_s`` (default 24 h)
    that ends where the latency evaluation window starts, so a slow stretch being judged
    does not raise its own bar. Fewer than ``baseline_min_samples`` valued grid windows, or
    a median of zero, is ``NO_DATA`` (insufficient baseline). ``latency_baseline_ms`` fixes
    the baseline instead.

Consecutive connection failures
    Samples only carry counts, so order is known between grid windows but not inside one.
    Over the grid windows of the last ``connection_window_s`` (default 60 s), in time order:
    a grid window whose connection attempts all failed adds its failures to the current
    run; one with any successful connection resets the run to zero (its failures may have
    come before the success); one without connection attempts leaves the run as it is. The
    trigger breaches when a run inside the window reaches ``connection_failures`` (default 3);
    failures spread over more than the window never add up. It is ``NO_DATA`` when the
    newest sample is older than ``max_gap_s`` (the metrics stopped), otherwise ``OK``.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

from parity.core.errors import ConfigurationError
from parity.core.partitions import aware_utc
from parity.core.samples import GridWindow, MetricSample, grid

ERROR_RATE = "error_rate"
LATENCY = "latency"
CONNECTION_FAILURES = "connection_failures"
TRIGGER_NAMES = (ERROR_RATE, LATENCY, CONNECTION_FAILURES)


class TriggerState(StrEnum):
    BREACH = "BREACH"
    OK = "OK"
    NO_DATA = "NO_DATA"


@dataclass(frozen=True)
class TriggerConfig:
    """The plan's rollback triggers (``ROLLBACK_TRIGGERS``) plus how much data makes a verdict."""

    error_rate_threshold: float = 0.05
    error_rate_duration_s: float = 300.0
    latency_factor: float = 2.0
    latency_duration_s: float = 600.0
    connection_failures: int = 3
    connection_window_s: float = 60.0
    sampling_interval_s: float = 10.0
    #: Fraction of the grid windows of an evaluation window that must carry a value.
    min_coverage: float = 0.8
    #: Longest stretch without a value inside a window before it stops being "sustained".
    max_gap_s: float = 30.0
    baseline_window_s: float = 86_400.0
    baseline_min_samples: int = 360
    #: A fixed latency baseline (ms) instead of the trailing median.
    latency_baseline_ms: float | None = None

    def __post_init__(self) -> None:
        positive = {
            "error_rate_duration_s": self.error_rate_duration_s,
            "latency_duration_s": self.latency_duration_s,
            "latency_factor": self.latency_factor,
            "connection_window_s": self.connection_window_s,
            "sampling_interval_s": self.sampling_interval_s,
            "max_gap_s": self.max_gap_s,
            "baseline_window_s": self.baseline_window_s,
            "connection_failures": self.connection_failures,
            "baseline_min_samples": self.baseline_min_samples,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ConfigurationError(f"trigger setting {name}={value!r}: must be > 0")
        if not 0 <= self.error_rate_threshold < 1:
            raise ConfigurationError(
                f"trigger setting error_rate_threshold={self.error_rate_threshold!r}:"
                " must be a fraction in [0, 1), e.g. 0.05 for 5%"
            )
        if not 0 < self.min_coverage <= 1:
            raise ConfigurationError(
                f"trigger setting min_coverage={self.min_coverage!r}: must be in (0, 1]"
            )
        if self.max_gap_s < self.sampling_interval_s:
            raise ConfigurationError(
                f"trigger setting max_gap_s={self.max_gap_s!r}: must be at least"
                f" sampling_interval_s={self.sampling_interval_s!r}"
            )
        if self.latency_baseline_ms is not None and not self.latency_baseline_ms > 0:
            raise ConfigurationError(
                f"trigger setting latency_baseline_ms={self.latency_baseline_ms!r}: must be > 0"
            )

    @classmethod
    def from_plan(
        cls, triggers: Mapping[str, Mapping[str, float]], **overrides: Any
    ) -> TriggerConfig:
        """Build from the plan's ``ROLLBACK_TRIGGERS`` shape: ``{name: {threshold, duration}}``."""
        unknown = set(triggers) - set(TRIGGER_NAMES)
        if unknown:
            raise ConfigurationError(
                f"rollback triggers: unknown {sorted(unknown)}; known: {list(TRIGGER_NAMES)}"
            )
        keys = {
            ERROR_RATE: ("error_rate_threshold", "error_rate_duration_s"),
            LATENCY: ("latency_factor", "latency_duration_s"),
            CONNECTION_FAILURES: ("connection_failures", "connection_window_s"),
        }
        values: dict[str, Any] = {}
        for name, spec in triggers.items():
            threshold_key, duration_key = keys[name]
            if "threshold" in spec:
                values[threshold_key] = spec["threshold"]
            if "duration" in spec:
                values[duration_key] = float(spec["duration"])
        if "connection_failures" in values:
            values["connection_failures"] = int(values["connection_failures"])
        return cls(**{**values, **overrides})

    def min_samples(self, duration_s: float) -> int:
        """Valued grid windows a window of ``duration_s`` needs to count as covered."""
        return max(1, math.ceil(self.min_coverage * duration_s / self.sampling_interval_s - 1e-9))


@dataclass(frozen=True)
class TriggerResult:
    """One trigger's verdict over ``[window_start, window_end]``."""

    name: str
    state: TriggerState
    observed: float | None
    threshold: float | None
    window_start: dt.datetime
    window_end: dt.datetime
    detail: str
    #: Grid windows that carried a value for this trigger.
    samples: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state.value,
            "observed": self.observed,
            "threshold": self.threshold,
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "samples": self.samples,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class HealthVerdict:
    """All triggers at ``evaluated_at``. ``breached``: any BREACH; ``no_data``: any NO_DATA."""

    evaluated_at: dt.datetime
    results: tuple[TriggerResult, ...]
    config: TriggerConfig = field(default_factory=TriggerConfig)

    @property
    def breached(self) -> bool:
        return any(r.state is TriggerState.BREACH for r in self.results)

    @property
    def no_data(self) -> bool:
        return any(r.state is TriggerState.NO_DATA for r in self.results)

    @property
    def breaches(self) -> tuple[TriggerResult, ...]:
        return tuple(r for r in self.results if r.state is TriggerState.BREACH)

    def result(self, name: str) -> TriggerResult:
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(name)

    def summary(self) -> str:
        """One line for logs and the audit ``reason``."""
        if self.breached:
            return "; ".join(f"{r.name} breached: {r.detail}" for r in self.breaches)
        return ", ".join(f"{r.name} {r.state.value}" for r in self.results)

    def evidence(self) -> dict[str, Any]:
        """JSON-serialisable evidence for the ``feature_flag_audit`` row."""
        return {
            "evaluated_at": self.evaluated_at.isoformat(),
            "breached": self.breached,
            "no_data": self.no_data,
            "triggers": [r.to_json() for r in self.results],
            "config": asdict(self.config),
        }


def _coverage_problem(
    valued: list[dt.datetime], start: dt.datetime, end: dt.datetime, config: TriggerConfig
) -> str | None:
    """Why the valued grid windows (their ends) do not cover ``(start, end]``, or None."""
    needed = config.min_samples((end - start).total_seconds())
    if len(valued) < needed:
        return f"{len(valued)} of the {needed} sampling windows needed have data"
    points = [start, *(min(max(t, start), end) for t in valued), end]
    widest = max(points[i + 1] - points[i] for i in range(len(points) - 1))
    if widest.total_seconds() > config.max_gap_s:
        at = next(points[i] for i in range(len(points) - 1) if points[i + 1] - points[i] == widest)
        return (
            f"a {widest.total_seconds():g} s gap without data after {at.isoformat()}"
            f" (max {config.max_gap_s:g} s)"
        )
    return None


def _sustained(
    name: str,
    values: dict[dt.datetime, float],
    threshold: float,
    start: dt.datetime,
    end: dt.datetime,
    config: TriggerConfig,
    unit: str,
) -> TriggerResult:
    observed = min(values.values()) if values else None
    base = TriggerResult(
        name=name,
        state=TriggerState.NO_DATA,
        observed=observed,
        threshold=threshold,
        window_start=start,
        window_end=end,
        detail="",
        samples=len(values),
    )
    problem = _coverage_problem(list(values), start, end, config)
    if problem is not None or observed is None:
        return replace(base, detail=f"not enough data: {problem}")
    above = sum(1 for v in values.values() if v > threshold)
    latest = values[max(values)]
    stats = (
        f"lowest {observed:.4g}{unit}, latest {latest:.4g}{unit},"
        f" {above}/{len(values)} sampling windows above {threshold:.4g}{unit}"
    )
    if observed > threshold:
        seconds = (end - start).total_seconds()
        return replace(
            base,
            state=TriggerState.BREACH,
            detail=f"above {threshold:.4g}{unit} for {seconds:g} s: {stats}",
        )
    return replace(base, state=TriggerState.OK, detail=stats)


def _error_rate(
    buckets: dict[dt.datetime, GridWindow], now: dt.datetime, config: TriggerConfig
) -> TriggerResult:
    start = now - dt.timedelta(seconds=config.error_rate_duration_s)
    values = {
        t: rate
        for t, b in buckets.items()
        if b.latest > start and (rate := b.error_rate()) is not None
    }
    return _sustained(ERROR_RATE, values, config.error_rate_threshold, start, now, config, "")


def _latency(
    buckets: dict[dt.datetime, GridWindow], now: dt.datetime, config: TriggerConfig
) -> TriggerResult:
    start = now - dt.timedelta(seconds=config.latency_duration_s)
    values = {
        t: b.latency_p95_ms
        for t, b in buckets.items()
        if b.latest > start and b.latency_p95_ms is not None
    }
    if config.latency_baseline_ms is not None:
        baseline, source = config.latency_baseline_ms, "fixed"
    else:
        baseline_start = start - dt.timedelta(seconds=config.baseline_window_s)
        history = [
            b.latency_p95_ms
            for b in buckets.values()
            if baseline_start < b.latest <= start and b.latency_p95_ms is not None
        ]
        if len(history) < config.baseline_min_samples or statistics.median(history) <= 0:
            why = (
                f"{len(history)} sampling windows with latency (need {config.baseline_min_samples})"
                if len(history) < config.baseline_min_samples
                else "median latency is 0 ms"
            )
            return TriggerResult(
                name=LATENCY,
                state=TriggerState.NO_DATA,
                observed=min(values.values()) if values else None,
                threshold=None,
                window_start=start,
                window_end=now,
                detail=(
                    f"insufficient baseline: {why} between {baseline_start.isoformat()}"
                    f" and {start.isoformat()}"
                ),
                samples=len(values),
            )
        baseline, source = float(statistics.median(history)), f"median of {len(history)} windows"
    result = _sustained(
        LATENCY, values, config.latency_factor * baseline, start, now, config, " ms"
    )
    detail = (
        f"{result.detail}; baseline p95 {baseline:.4g} ms ({source}) x {config.latency_factor:g}"
    )
    return replace(result, detail=detail)


def _connection_failures(
    buckets: dict[dt.datetime, GridWindow], now: dt.datetime, config: TriggerConfig
) -> TriggerResult:
    start = now - dt.timedelta(seconds=config.connection_window_s)
    run = longest = 0
    windows = 0
    newest: dt.datetime | None = None
    for b in buckets.values():
        if b.latest <= start:
            continue
        newest = b.latest if newest is None else max(newest, b.latest)
        if b.connection_attempts == 0:
            continue
        windows += 1
        if b.connection_failures == b.connection_attempts:
            run += b.connection_failures
        else:
            run = 0
        longest = max(longest, run)
    base = TriggerResult(
        name=CONNECTION_FAILURES,
        state=TriggerState.OK,
        observed=float(longest),
        threshold=float(config.connection_failures),
        window_start=start,
        window_end=now,
        detail="",
        samples=windows,
    )
    if longest >= config.connection_failures:
        return replace(
            base,
            state=TriggerState.BREACH,
            detail=(
                f"{longest} consecutive connection failures within"
                f" {config.connection_window_s:g} s (limit {config.connection_failures})"
            ),
        )
    if newest is None or (now - newest).total_seconds() > config.max_gap_s:
        seen = "no samples" if newest is None else f"newest sample at {newest.isoformat()}"
        return replace(
            base,
            state=TriggerState.NO_DATA,
            detail=f"not enough data: {seen} (max age {config.max_gap_s:g} s)",
        )
    return replace(
        base,
        detail=(
            f"longest run {longest} consecutive connection failures over"
            f" {windows} sampling windows with connection attempts"
        ),
    )


def evaluate(
    samples: Iterable[MetricSample], now: dt.datetime, config: TriggerConfig | None = None
) -> HealthVerdict:
    """Evaluate every rollback trigger at ``now`` (see the module docstring for definitions)."""
    config = config or TriggerConfig()
    now = aware_utc(now, "now")
    horizon = max(
        config.error_rate_duration_s,
        config.connection_window_s,
        config.latency_duration_s + config.baseline_window_s,
    )
    buckets = grid(samples, now - dt.timedelta(seconds=horizon), now, config.sampling_interval_s)
    results = (
        _error_rate(buckets, now, config),
        _latency(buckets, now, config),
        _connection_failures(buckets, now, config),
    )
    return HealthVerdict(evaluated_at=now, results=results, config=config)

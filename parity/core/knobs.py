"""The plan's knobs: every threshold that decides a rollback, a promotion, a repair or an
alert, in one validated object (:class:`Knobs`), read from environment variables.

Each knob is one variable (:data:`KNOBS`). A bad value is refused when the settings are
built (the code location loads, the CLI starts) with a :class:`ConfigurationError` naming
the variable. ``Knobs.to_env()`` gives every knob's effective value under its variable name:
that mapping is what the Dagster resource shows in the UI and hands back to
``Settings.from_env`` in a step, so there is one route from the environment to the code.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from parity.core.errors import ConfigurationError
from parity.core.rollout import RolloutConfig
from parity.core.triggers import TriggerConfig

MINUTE = dt.timedelta(minutes=1)


@dataclass(frozen=True)
class SuccessCriteria:
    """Pass marks of the reconciliation checks (the plan's success criteria).

    ``min_delivery_rate``: passes when the delivery rate is at or above it.
    ``max_latency_p95_ms``: passes when p95 latency is strictly below it.
    ``max_quarantine_share``: passes when quarantined / (valid + quarantined) log lines is
    at or below it.
    """

    min_delivery_rate: float = 0.999
    max_latency_p95_ms: float = 500.0
    max_quarantine_share: float = 0.001

    def __post_init__(self) -> None:
        if not 0 < self.min_delivery_rate <= 1:
            raise ConfigurationError(
                f"PARITY_SLO_DELIVERY_RATE={self.min_delivery_rate!r}: must be a fraction in"
                " (0, 1], e.g. 0.999 for 99.9%"
            )
        if not (math.isfinite(self.max_latency_p95_ms) and self.max_latency_p95_ms > 0):
            raise ConfigurationError(
                f"PARITY_SLO_P95_MS={self.max_latency_p95_ms!r}: must be a positive number of"
                " milliseconds, e.g. 500"
            )
        if not 0 <= self.max_quarantine_share < 1:
            raise ConfigurationError(
                f"PARITY_QUARANTINE_MAX_SHARE={self.max_quarantine_share!r}: must be a fraction"
                " in [0, 1), e.g. 0.001 for 0.1% of log lines"
            )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AlertPolicy:
    """When Parity tells a person, beyond rollbacks (the plan's alert thresholds)."""

    #: A failed WARN check turns an hour red too (ERROR failures always do).
    on_warn: bool = False
    #: A producer that reported in the last hour and has been silent this long.
    producer_silence: dt.timedelta = dt.timedelta(minutes=5)
    #: The plan's metrics table: error rate < 0.1%, connection recovery < 30 s.
    error_rate: float = 0.001
    recovery_s: float = 30.0
    #: How long a threshold must be exceeded before it alerts.
    window: dt.timedelta = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class Knobs:
    triggers: TriggerConfig = field(default_factory=TriggerConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    slo: SuccessCriteria = field(default_factory=SuccessCriteria)
    alerts: AlertPolicy = field(default_factory=AlertPolicy)
    #: The schedule reconciles an hour this long after it ends.
    schedule_lag: dt.timedelta = dt.timedelta(minutes=15)
    #: A repair waits this long after an hour ends (late writes) before backfilling it.
    repair_settle: dt.timedelta = dt.timedelta(minutes=10)
    #: Backfill-and-reconcile rounds per hour before the repair gives up and alerts.
    repair_attempts: int = 3
    #: Evaluate, audit and alert rollbacks as "would roll back"; never touch the flags.
    rollback_dry_run: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Knobs:
        """Defaults, overridden by each knob variable that is set and non-empty."""
        groups: dict[str, dict[str, Any]] = {}
        named: dict[str, list[str]] = {}
        for knob in KNOBS:
            raw = env.get(knob.env, "").strip()
            if not raw:
                continue
            group, attribute = knob.path
            groups.setdefault(group, {})[attribute] = knob.parse(knob.env, raw)
            named.setdefault(group, []).append(knob.env)
        built: dict[str, Any] = {}
        defaults = cls()
        for group, values in groups.items():
            try:
                if group == "":
                    built.update(values)
                else:
                    built[group] = replace(getattr(defaults, group), **values)
            except ConfigurationError as exc:
                raise ConfigurationError(f"{', '.join(named[group])}: {exc}") from None
        knobs = replace(defaults, **built)
        settled = knobs.schedule_lag + MINUTE * 15
        if "PARITY_ROLLOUT_RECONCILE_LAG_MINUTES" not in named.get("rollout", []):
            # The rollout waits for the schedule's report: unset, its lag follows the schedule.
            reconcile_lag = max(knobs.rollout.reconcile_lag, settled)
            knobs = replace(knobs, rollout=replace(knobs.rollout, reconcile_lag=reconcile_lag))
        elif knobs.rollout.reconcile_lag < knobs.schedule_lag:
            raise ConfigurationError(
                f"PARITY_ROLLOUT_RECONCILE_LAG_MINUTES ({_minutes(knobs.rollout.reconcile_lag)})"
                f" must be at least PARITY_SCHEDULE_LAG_MINUTES"
                f" ({_minutes(knobs.schedule_lag)}): the rollout waits for the schedule's report"
            )
        return knobs

    def to_env(self) -> dict[str, str]:
        """Every knob's effective value, as the variable would spell it."""
        out = {}
        for knob in KNOBS:
            group, attribute = knob.path
            value = getattr(getattr(self, group) if group else self, attribute)
            if value is not None:
                out[knob.env] = knob.show(value)
        return out


# -- parsing ---------------------------------------------------------------------------


def _number(env: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{env}={raw!r}: expected a number") from None
    if not math.isfinite(value):
        raise ConfigurationError(f"{env}={raw!r}: expected a finite number")
    return value


def positive(env: str, raw: str) -> float:
    value = _number(env, raw)
    if value <= 0:
        raise ConfigurationError(f"{env}={raw!r}: must be greater than 0")
    return value


def fraction(env: str, raw: str) -> float:
    value = _number(env, raw)
    if not 0 <= value < 1:
        raise ConfigurationError(f"{env}={raw!r}: must be a fraction in [0, 1), e.g. 0.05 for 5%")
    return value


def rate(env: str, raw: str) -> float:
    value = _number(env, raw)
    if not 0 < value <= 1:
        raise ConfigurationError(f"{env}={raw!r}: must be a fraction in (0, 1], e.g. 0.999")
    return value


def count(env: str, raw: str) -> int:
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigurationError(f"{env}={raw!r}: expected a whole number >= 1")
    return int(raw)


def minutes(env: str, raw: str) -> dt.timedelta:
    if not raw.isdigit():
        raise ConfigurationError(f"{env}={raw!r}: expected a whole number of minutes (>= 0)")
    return dt.timedelta(minutes=int(raw))


def lag_minutes(env: str, raw: str) -> dt.timedelta:
    value = minutes(env, raw)
    if value >= dt.timedelta(days=1):
        raise ConfigurationError(f"{env}={raw!r}: must be under a day (1440 minutes)")
    return value


def positive_minutes(env: str, raw: str) -> dt.timedelta:
    value = minutes(env, raw)
    if not value:
        raise ConfigurationError(f"{env}={raw!r}: must be at least 1 minute")
    return value


def boolean(env: str, raw: str) -> bool:
    text = raw.lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{env}={raw!r}: expected true or false")


def steps(env: str, raw: str) -> tuple[int, ...]:
    parts = [p.strip() for p in raw.split(",")]
    if not all(p.isdigit() for p in parts):
        raise ConfigurationError(f"{env}={raw!r}: expected comma-separated percentages, 10,50,100")
    values = tuple(int(p) for p in parts)
    if any(not 0 < p <= 100 for p in values) or any(
        a >= b for a, b in zip(values, values[1:], strict=False)
    ):
        raise ConfigurationError(f"{env}={raw!r}: percentages must rise strictly within 1..100")
    return values


def _minutes(value: dt.timedelta) -> str:
    return f"{int(value.total_seconds() // 60)}"


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.timedelta):
        return _minutes(value)
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


@dataclass(frozen=True)
class Knob:
    env: str
    #: (group attribute of Knobs, or "" for Knobs itself; attribute)
    path: tuple[str, str]
    parse: Callable[[str, str], Any]
    meaning: str
    show: Callable[[Any], str] = _show


#: Every knob: variable, where it lands, how it is read, what it means (the README's table).
KNOBS: tuple[Knob, ...] = (
    Knob(
        "PARITY_TRIGGER_ERROR_RATE",
        ("triggers", "error_rate_threshold"),
        fraction,
        "rollback: write error rate above this in every sampling window ...",
    ),
    Knob(
        "PARITY_TRIGGER_ERROR_RATE_SECONDS",
        ("triggers", "error_rate_duration_s"),
        positive,
        "... for this long",
    ),
    Knob(
        "PARITY_TRIGGER_LATENCY_FACTOR",
        ("triggers", "latency_factor"),
        positive,
        "rollback: p95 latency above this times the baseline ...",
    ),
    Knob(
        "PARITY_TRIGGER_LATENCY_SECONDS",
        ("triggers", "latency_duration_s"),
        positive,
        "... for this long",
    ),
    Knob(
        "PARITY_TRIGGER_LATENCY_BASELINE_MS",
        ("triggers", "latency_baseline_ms"),
        positive,
        "a fixed latency baseline instead of the 24-hour median",
    ),
    Knob(
        "PARITY_TRIGGER_CONNECTION_FAILURES",
        ("triggers", "connection_failures"),
        count,
        "rollback: this many consecutive connection failures ...",
    ),
    Knob(
        "PARITY_TRIGGER_CONNECTION_SECONDS",
        ("triggers", "connection_window_s"),
        positive,
        "... within this many seconds",
    ),
    Knob(
        "PARITY_SLO_DELIVERY_RATE",
        ("slo", "min_delivery_rate"),
        rate,
        "delivery_rate_meets_slo passes at or above this fraction",
    ),
    Knob(
        "PARITY_SLO_P95_MS",
        ("slo", "max_latency_p95_ms"),
        positive,
        "latency_p95_within_slo passes below this",
    ),
    Knob(
        "PARITY_QUARANTINE_MAX_SHARE",
        ("slo", "max_quarantine_share"),
        fraction,
        "quarantine_within_tolerance passes at or below this fraction",
    ),
    Knob(
        "PARITY_ROLLOUT_STEPS",
        ("rollout", "steps"),
        steps,
        "canary percentages after critical events",
    ),
    Knob(
        "PARITY_ROLLOUT_CLEAN_HOURS",
        ("rollout", "required_clean_hours"),
        count,
        "consecutive clean reconciled hours before a promotion",
    ),
    Knob(
        "PARITY_ROLLOUT_SOAK_MINUTES",
        ("rollout", "min_soak"),
        minutes,
        "time at a stage before the next",
    ),
    Knob(
        "PARITY_ROLLOUT_COOLDOWN_MINUTES",
        ("rollout", "cooldown"),
        minutes,
        "after a resume, time before the first promotion",
    ),
    Knob(
        "PARITY_ROLLOUT_RECONCILE_LAG_MINUTES",
        ("rollout", "reconcile_lag"),
        minutes,
        "an hour without a report this long after it ended holds the rollout"
        " (unset: the schedule lag + 15, at least 30)",
    ),
    Knob(
        "PARITY_SCHEDULE_LAG_MINUTES",
        ("", "schedule_lag"),
        lag_minutes,
        "how long after an hour ends the schedule reconciles it",
    ),
    Knob(
        "PARITY_REPAIR_SETTLE_MINUTES",
        ("", "repair_settle"),
        minutes,
        "a repair waits this long after an hour ends",
    ),
    Knob(
        "PARITY_REPAIR_MAX_ATTEMPTS",
        ("", "repair_attempts"),
        count,
        "backfill-and-reconcile rounds per hour before the repair gives up and alerts",
    ),
    Knob(
        "PARITY_ROLLBACK_DRY_RUN",
        ("", "rollback_dry_run"),
        boolean,
        "evaluate, audit and alert rollbacks as 'would roll back'; never touch the flags",
    ),
    Knob(
        "PARITY_ALERT_ON_WARN",
        ("alerts", "on_warn"),
        boolean,
        "a failed WARN check turns an hour red too (ERROR always does)",
    ),
    Knob(
        "PARITY_ALERT_PRODUCER_SILENCE_MINUTES",
        ("alerts", "producer_silence"),
        positive_minutes,
        "alert when a producer seen in the last hour is silent this long",
    ),
    Knob(
        "PARITY_ALERT_ERROR_RATE",
        ("alerts", "error_rate"),
        fraction,
        "alert when the write error rate stays above this ...",
    ),
    Knob(
        "PARITY_ALERT_RECOVERY_SECONDS",
        ("alerts", "recovery_s"),
        positive,
        "alert when connection recovery takes longer than this ...",
    ),
    Knob(
        "PARITY_ALERT_WINDOW_MINUTES",
        ("alerts", "window"),
        positive_minutes,
        "... sustained over this window",
    ),
)

KNOB_NAMES = frozenset(k.env for k in KNOBS)

"""The thresholds the asset checks judge against: one frozen object, defaults from the
migration plan's success criteria, overridable from the environment.

| variable | passes when | default |
|---|---|---|
| `PARITY_SLO_DELIVERY_RATE` | `matched / expected_in_supabase` >= it (a fraction) | `0.999` |
| `PARITY_SLO_P95_MS` | p95 of `received_at - emitted_at` < it (milliseconds) | `500` |
| `PARITY_QUARANTINE_MAX_SHARE` | quarantined / all log lines <= it (a fraction) | `0.001` |

Read when the checks run (never at import), so a changed variable applies to the next run.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from parity.core.errors import ConfigurationError

ENV_DELIVERY_RATE = "PARITY_SLO_DELIVERY_RATE"
ENV_P95_MS = "PARITY_SLO_P95_MS"
ENV_QUARANTINE_MAX_SHARE = "PARITY_QUARANTINE_MAX_SHARE"

#: Offending keys a check result carries in its metadata (the report keeps the full lists).
SAMPLE_LIMIT = 20


@dataclass(frozen=True)
class SuccessCriteria:
    """Pass marks of the reconciliation checks.

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
                f"{ENV_DELIVERY_RATE}={self.min_delivery_rate!r}: must be a fraction in (0, 1],"
                " e.g. 0.999 for 99.9%"
            )
        if not (math.isfinite(self.max_latency_p95_ms) and self.max_latency_p95_ms > 0):
            raise ConfigurationError(
                f"{ENV_P95_MS}={self.max_latency_p95_ms!r}: must be a positive number of"
                " milliseconds, e.g. 500"
            )
        if not 0 <= self.max_quarantine_share < 1:
            raise ConfigurationError(
                f"{ENV_QUARANTINE_MAX_SHARE}={self.max_quarantine_share!r}: must be a fraction"
                " in [0, 1), e.g. 0.001 for 0.1% of log lines"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SuccessCriteria:
        """Defaults, overridden by whichever of the variables are set and non-empty."""
        env = os.environ if environ is None else environ
        values: dict[str, float] = {}
        for variable, attribute in (
            (ENV_DELIVERY_RATE, "min_delivery_rate"),
            (ENV_P95_MS, "max_latency_p95_ms"),
            (ENV_QUARANTINE_MAX_SHARE, "max_quarantine_share"),
        ):
            raw = env.get(variable, "").strip()
            if not raw:
                continue
            try:
                values[attribute] = float(raw)
            except ValueError:
                raise ConfigurationError(
                    f"{variable}={raw!r}: expected a number (see the README's environment table)"
                ) from None
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

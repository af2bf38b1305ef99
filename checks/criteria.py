"""The thresholds the asset checks judge against.

:class:`SuccessCriteria` is one of the plan's knobs (``parity.core.knobs``): built with the
settings when the code location loads, handed to the checks by the asset that runs them.

| variable | passes when | default |
|---|---|---|
| `PARITY_SLO_DELIVERY_RATE` | `matched / expected_in_supabase` >= it (a fraction) | `0.999` |
| `PARITY_SLO_P95_MS` | p95 of `received_at - emitted_at` < it (milliseconds) | `500` |
| `PARITY_QUARANTINE_MAX_SHARE` | quarantined / all log lines <= it (a fraction) | `0.001` |
"""

from parity.core.knobs import SuccessCriteria

#: Offending keys a check result carries in its metadata (the report keeps the full lists).
SAMPLE_LIMIT = 20

__all__ = ["SAMPLE_LIMIT", "SuccessCriteria"]

"""Reading ``delivery_metrics`` (DESIGN 4) for the health triggers."""

from __future__ import annotations

import datetime as dt

from psycopg import Connection, sql
from psycopg.rows import dict_row

from parity.core.triggers import MetricSample, TriggerConfig

METRICS_TABLE = "delivery_metrics"


def lookback(config: TriggerConfig) -> dt.timedelta:
    """How far back the triggers look: the latency baseline's window before the latency
    window, or the longest trigger window, whichever reaches further."""
    longest = max(
        config.error_rate_duration_s, config.latency_duration_s, config.connection_window_s
    )
    baseline = config.baseline_window_s + config.latency_duration_s
    return dt.timedelta(seconds=max(longest, baseline) + 2 * config.sampling_interval_s)


def load_samples(
    conn: Connection, schema: str, since: dt.datetime, until: dt.datetime
) -> list[MetricSample]:
    """Samples with ``since < sampled_at <= until``, oldest first."""
    query = sql.SQL(
        "select sampled_at, producer, window_s, attempts, failures, latency_p50_ms, "
        "latency_p95_ms, connection_attempts, connection_failures from {}.{} "
        "where sampled_at > %s and sampled_at <= %s order by sampled_at, id"
    ).format(sql.Identifier(schema), sql.Identifier(METRICS_TABLE))
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query, (since, until)).fetchall()
    return [MetricSample.from_row(row) for row in rows]

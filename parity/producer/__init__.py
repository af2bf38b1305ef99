"""The producer SDK: what a service embeds to publish monitoring events (migration plan 2.6.2).

:class:`DualWriter` numbers each event per stream, checksums and classifies it (contract §2),
broadcasts it to WebSocket subscribers and, when the cohort rule of contract §5 says so,
writes it to the Supabase events table through an :class:`~parity.store.EventStore`.

Decisions:

- **Acknowledgement.** ``await writer.emit(...)`` returns once the event is broadcast (if at
  all) and, when routed to Supabase, inserted or appended to the buffer file and fsynced.
  A crash after ``emit`` returns loses nothing.
- **Dual write off.** ``MONITORING_DUAL_WRITE_ENABLED = false`` means the cohort has moved:
  events routed to Supabase go to Supabase *only*; events outside the cohort are still
  broadcast. On (the default, and what rollback sets) every event is broadcast.
- **Category.** The event carries the category it was routed by (declared, else the
  classifier's), so reconciliation derives the cohort the producer actually used.
- **Sequence numbers** are reserved in blocks in a state file (JSON; temporary file, fsync,
  rename, directory fsync) *before* any number of a block is used: a crash can skip numbers
  (a visible gap), never reuse one. A clean stop records the exact last number, so a clean
  restart has no gap. The file is ``flock``-ed: one producer per state file. Without a state
  file numbers restart at 1.
- **Failures.** A failed write puts its events in the buffer (JSON lines in the wire form of
  :meth:`Event.to_json_dict`, appended with one ``write`` and fsynced); new events then
  queue behind them, so every stream reaches Supabase in order. The replayer retries the
  oldest entries with exponential backoff (1 s doubling to 30 s); after 5 consecutive
  failures the circuit breaker opens and lets one half-open probe through every
  ``breaker_reset_s``; a success closes it. Replayed entries are skipped by an in-memory
  offset and removed by compaction (rewrite, fsync, rename); after a crash the whole file is
  replayed again, harmless as inserts are idempotent on (stream, seq). A torn last line (a
  crash mid-append, never acknowledged) is cut off when the buffer is opened.
- **Heartbeat.** Every ``heartbeat_s`` (30 s) a ``system.health.heartbeat`` event on stream
  ``<name>.heartbeat`` goes through the normal path: subscribers see liveness on the wire,
  and (CRITICAL by the default rules) it probes the Supabase path when critical events go
  there. Its payload has the backlog size, breaker state and subscriber count.
- **Metrics.** Every ``metrics_window_s`` (10 s) one ``delivery_metrics`` row (contract §4)
  goes to a :class:`MetricsSink`: store write attempts, failures, p50/p95 latency of the
  successes. Each store call opens a connection, so connection attempts equal attempts and
  connection failures are the :class:`StoreConnectionError` ones.
"""

from parity.producer.base import (
    HEARTBEAT_EVENT_TYPE,
    Clock,
    FlagSource,
    ProducerConfig,
    Sleep,
    utc_now,
)
from parity.producer.cohort import FlagCache, postgres_flag_source, routes_to_supabase
from parity.producer.delivery import (
    Broadcaster,
    CircuitBreaker,
    MetricsSink,
    PostgresMetricsSink,
    percentile,
)
from parity.producer.durability import DurableBuffer, SeqState
from parity.producer.writer import DualWriter

__all__ = [
    "Broadcaster",
    "CircuitBreaker",
    "Clock",
    "DualWriter",
    "DurableBuffer",
    "FlagCache",
    "FlagSource",
    "HEARTBEAT_EVENT_TYPE",
    "MetricsSink",
    "PostgresMetricsSink",
    "ProducerConfig",
    "SeqState",
    "Sleep",
    "percentile",
    "postgres_flag_source",
    "routes_to_supabase",
    "utc_now",
]

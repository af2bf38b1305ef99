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

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson
import psycopg
import pyarrow as pa
from psycopg import sql
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve

from parity.core import routing
from parity.core.classify import Classifier, load_rules
from parity.core.config import TableName
from parity.core.errors import (
    ConfigurationError,
    InvalidEventError,
    StoreConnectionError,
    StoreError,
)
from parity.core.events import MAX_STREAM_LENGTH, Event, loads_exact, make_event, parse_timestamp
from parity.core.schema import STORE_SCHEMA
from parity.core.triggers import MetricSample
from parity.io.files import write_bytes_atomic
from parity.io.tables import METRICS_TABLE

log = logging.getLogger(__name__)

HEARTBEAT_EVENT_TYPE = "system.health.heartbeat"

Clock = Callable[[], dt.datetime]
Sleep = Callable[[float], Awaitable[None]]
#: Returns the current flag values (name -> value); missing flags take their defaults.
FlagSource = Callable[[], Mapping[str, Any]]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class ProducerConfig:
    """Tuning of a :class:`DualWriter`; the defaults follow the migration plan."""

    name: str = "parity-producer"
    state_path: Path | None = None  # seq counters; None: numbers restart at 1
    buffer_path: Path | None = None  # failed writes; None: ``<state_path>.buffer.jsonl``
    host: str = "127.0.0.1"
    port: int = 0  # 0: any free port (see ``DualWriter.url``)
    flag_refresh_s: float = 5.0
    batch_max_delay_s: float = 0.02
    batch_max_rows: int = 500
    replay_chunk_rows: int = 1000
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0
    breaker_failures: int = 5
    breaker_reset_s: float = 30.0
    heartbeat_s: float | None = 30.0
    metrics_window_s: float = 10.0
    stop_drain_s: float = 5.0  # how long stop() waits for the buffer to reach the store
    seq_reserve_block: int = 100

    def resolved_buffer_path(self) -> Path:
        if self.buffer_path is not None:
            return Path(self.buffer_path)
        if self.state_path is not None:
            return Path(str(self.state_path) + ".buffer.jsonl")
        raise ConfigurationError(
            "the producer needs a buffer file for failed writes: set buffer_path or state_path"
        )


class SeqState:
    """Per-stream sequence numbers, reserved in blocks in a state file before use."""

    def __init__(self, path: Path | None, *, block: int = 100) -> None:
        if block < 1:
            raise ConfigurationError(f"seq_reserve_block must be >= 1, got {block}")
        self.path = Path(path) if path is not None else None
        self.block = block
        self._last: dict[str, int] = {}
        self._reserved: dict[str, int] = {}
        self._lock_fd: int | None = None
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(str(self.path) + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise ConfigurationError(
                f"sequence state {self.path} is in use by another producer; give each "
                "producer its own state file"
            ) from None
        if self.path.exists():
            try:
                data = orjson.loads(self.path.read_bytes())
                reserved = {str(k): int(v) for k, v in data["reserved"].items()}
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                self.close(persist=False)
                raise ConfigurationError(
                    f"sequence state {self.path} is unreadable ({exc}); refusing to restart "
                    "numbering (that could reuse sequence numbers): fix or move the file"
                ) from None
            self._reserved = reserved
            self._last = dict(reserved)

    def peek(self, stream: str) -> int:
        """The number the next event of ``stream`` gets (not yet used)."""
        return self._last.get(stream, 0) + 1

    def commit(self, stream: str, seq: int) -> None:
        """Mark ``seq`` used, reserving a new block first when it lies beyond the last one."""
        if seq > self._reserved.get(stream, 0):
            self._reserved[stream] = seq + self.block - 1
            self._persist(self._reserved)
        self._last[stream] = seq

    def last(self, stream: str) -> int:
        return self._last.get(stream, 0)

    def _persist(self, reserved: Mapping[str, int]) -> None:
        if self.path is not None:
            write_bytes_atomic(self.path, orjson.dumps({"version": 1, "reserved": dict(reserved)}))

    def close(self, *, persist: bool = True) -> None:
        """Record the exact last numbers (a clean restart continues gaplessly); unlock."""
        if self._lock_fd is None:
            return
        try:
            if persist and self._reserved != self._last:
                self._persist(self._last)
                self._reserved = dict(self._last)
        finally:
            os.close(self._lock_fd)
            self._lock_fd = None


class DurableBuffer:
    """Events waiting for the store: JSON lines, appended and fsynced, replayed oldest first.

    Replayed entries are skipped by an in-memory offset and removed by compaction (the
    rest rewritten to a temporary file, fsynced, renamed over). After a crash the offset is
    lost and everything in the file is replayed again: harmless, inserts are idempotent.
    """

    COMPACT_BYTES = 1 << 20

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._offset = 0
        data = self.path.read_bytes() if self.path.exists() else b""
        if data and not data.endswith(b"\n"):
            # A crash mid-append: that line was never acknowledged, so it is cut off.
            keep = data[: data.rfind(b"\n") + 1]
            log.warning("buffer %s: cutting off a torn, unacknowledged last line", self.path)
            write_bytes_atomic(self.path, keep)
            data = keep
        self.pending = data.count(b"\n")
        self._size = len(data)
        self._fh = open(self.path, "ab")

    def append(self, records: list[dict[str, Any]]) -> None:
        """Append and fsync; on failure the file is cut back so no torn line remains."""
        data = b"".join(orjson.dumps(r) + b"\n" for r in records)
        try:
            self._fh.write(data)
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fh.fileno(), self._size)
            raise
        self.pending += len(records)
        self._size += len(data)

    def peek(self, max_rows: int) -> tuple[list[dict[str, Any]], int, int]:
        """The oldest unreplayed entries, how many lines they took, and the offset after."""
        records: list[dict[str, Any]] = []
        lines, end = 0, self._offset
        with open(self.path, "rb") as fh:
            fh.seek(self._offset)
            for line in fh:
                if lines >= max_rows or not line.endswith(b"\n"):
                    break
                lines, end = lines + 1, end + len(line)
                try:
                    records.append(loads_exact(line))
                except ValueError:  # only a damaged disk gets here: nothing to replay
                    log.error("buffer %s: unreadable entry before byte %d skipped", self.path, end)
        return records, lines, end

    def consume(self, lines: int, end: int) -> None:
        self._offset = end
        self.pending -= lines
        if self.pending <= 0 or self._offset >= max(self.COMPACT_BYTES, self._size // 2):
            self.compact()

    def compact(self) -> None:
        with open(self.path, "rb") as fh:
            fh.seek(self._offset)
            rest = fh.read()
        self._fh.close()
        write_bytes_atomic(self.path, rest)
        self._fh = open(self.path, "ab")
        self._offset = 0
        self._size = len(rest)
        self.pending = rest.count(b"\n")

    def close(self) -> None:
        self._fh.close()


# -- flags, breaker, metrics ---------------------------------------------------------------


class FlagCache:
    """Flag values from a :data:`FlagSource`, re-read when older than ``refresh_s``.

    A failing source keeps the last values (at first: the plan's defaults, which route
    nothing to Supabase), so a flag outage never stops the producer.
    """

    def __init__(self, source: FlagSource, refresh_s: float, clock: Clock = utc_now) -> None:
        self.source = source
        self.refresh_s = refresh_s
        self.clock = clock
        self.values: dict[str, bool | int] = dict(routing.FLAG_DEFAULTS)
        self._read_at: dt.datetime | None = None
        self.lock = asyncio.Lock()

    def _stale(self) -> bool:
        if self._read_at is None:
            return True
        age = (self.clock() - self._read_at).total_seconds()
        return age >= self.refresh_s or age < 0

    async def current(self) -> Mapping[str, bool | int]:
        if self._stale():
            async with self.lock:
                if self._stale():
                    await self._refresh()
        return self.values

    async def _refresh(self) -> None:
        self._read_at = self.clock()
        try:
            raw = await asyncio.to_thread(self.source)
            values = dict(routing.FLAG_DEFAULTS)
            for name, value in raw.items():
                if name in routing.FLAG_DEFAULTS:
                    values[name] = routing.coerce_flag_value(name, value)
        except Exception as exc:  # noqa: BLE001 - any source failure keeps the last values
            log.warning("reading feature flags failed, keeping the last values: %s", exc)
            return
        self.values = values


def postgres_flag_source(store: Any) -> FlagSource:
    """Flags from the ``feature_flags`` table of a :class:`~parity.store_pg.PostgresStore`."""
    from parity.io.control_pg import read_flags

    def read() -> Mapping[str, Any]:
        with store.connection() as conn:
            return read_flags(conn, store.table.schema)

    return read


def routes_to_supabase(category: str, stream: str, flags: Mapping[str, bool | int]) -> bool:
    """The cohort rule of contract §5 for one event under the given flag values."""
    if category == routing.CRITICAL and flags[routing.CRITICAL_EVENTS_SUPABASE]:
        return True
    return routing.stream_bucket(stream) < int(flags[routing.SUPABASE_ROLLOUT_PERCENTAGE])


class CircuitBreaker:
    """Closed -> open after ``threshold`` consecutive failures -> half-open (one probe)
    after ``reset_s`` -> closed on success, open again on failure."""

    CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

    def __init__(self, threshold: int, reset_s: float, clock: Clock = utc_now) -> None:
        self.threshold = threshold
        self.reset_s = reset_s
        self.clock = clock
        self.state = self.CLOSED
        self.failures = 0  # consecutive
        self.opened_at: dt.datetime | None = None

    def seconds_until_probe(self) -> float:
        if self.state != self.OPEN or self.opened_at is None:
            return 0.0
        return max(0.0, self.reset_s - (self.clock() - self.opened_at).total_seconds())

    def allow(self) -> bool:
        if self.state == self.OPEN and self.seconds_until_probe() <= 0:
            self.state = self.HALF_OPEN  # this caller is the probe
            return True
        return self.state == self.CLOSED

    def record_success(self) -> None:
        self.state, self.failures, self.opened_at = self.CLOSED, 0, None

    def record_failure(self) -> None:
        self.failures += 1
        if self.state == self.HALF_OPEN or (
            self.state == self.CLOSED and self.failures >= self.threshold
        ):
            if self.state == self.CLOSED:
                log.warning("circuit breaker open after %d consecutive failures", self.failures)
            self.state, self.opened_at = self.OPEN, self.clock()


class MetricsSink(Protocol):
    def write_sample(self, sample: MetricSample) -> None: ...


class PostgresMetricsSink:
    """``delivery_metrics`` rows (contract §4) in the schema of the events table."""

    def __init__(
        self, connect: Callable[[], contextlib.AbstractContextManager[Any]], table: TableName
    ) -> None:
        self._connect = connect
        self._ident = sql.Identifier(table.schema, METRICS_TABLE)

    @classmethod
    def for_store(cls, store: Any) -> PostgresMetricsSink:
        """Use a :class:`~parity.store_pg.PostgresStore`'s connections and schema."""
        return cls(store.connection, store.table)

    def write_sample(self, sample: MetricSample) -> None:
        # MetricSample's fields are the table's columns, in order.
        names = [f.name for f in fields(MetricSample)]
        statement = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            self._ident,
            sql.SQL(", ").join(map(sql.Identifier, names)),
            sql.SQL(", ").join(sql.Placeholder() * len(names)),
        )
        try:
            with self._connect() as conn:
                conn.execute(statement, [getattr(sample, name) for name in names])
        except psycopg.Error as exc:
            raise StoreError(f"writing delivery_metrics failed: {exc}") from None


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), None for no values."""
    return float(np.percentile(values, q)) if values else None


@dataclass
class _Window:
    attempts: int = 0
    failures: int = 0
    connection_attempts: int = 0
    connection_failures: int = 0
    latencies_ms: list[float] = field(default_factory=list)


class Broadcaster:
    """A ``websockets`` server that sends every event, as JSON text, to every client."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self.clients: set[ServerConnection] = set()
        self._server: Server | None = None

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/"

    async def start(self) -> None:
        self._server = await serve(self._handle, self.host, self.port)
        self.port = next(iter(self._server.sockets)).getsockname()[1]

    async def _handle(self, connection: ServerConnection) -> None:
        self.clients.add(connection)
        try:
            await connection.wait_closed()
        finally:
            self.clients.discard(connection)

    def send(self, event: Event) -> None:
        broadcast(self.clients, orjson.dumps(event.to_json_dict()).decode())

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None


# -- the writer ----------------------------------------------------------------------------


def _store_rows(records: list[dict[str, Any]]) -> pa.Table:
    """Wire-form events as ``STORE_SCHEMA`` rows (``received_at`` null: the store's now())."""
    rows = [
        {
            **r,
            "emitted_at": parse_timestamp(r["emitted_at"]),
            "payload": orjson.dumps(r["payload"]).decode(),
            "received_at": None,
        }
        for r in records
    ]
    return pa.Table.from_pylist(rows, schema=STORE_SCHEMA)


_Item = tuple[dict[str, Any], "asyncio.Future[None]"]


class DualWriter:
    """Publish events over WebSocket and, for the cohort, to the events store.

    Use as ``async with DualWriter(store, flags, config) as writer: await writer.emit(...)``
    or call :meth:`start` and :meth:`stop`. ``clock`` gives wall time (``emitted_at``, flag
    refresh, breaker, metrics); ``sleep`` waits between retries and periodic tasks.
    """

    def __init__(
        self,
        store: Any,
        flags: FlagSource,
        config: ProducerConfig | None = None,
        *,
        classifier: Classifier | None = None,
        metrics: MetricsSink | None = None,
        clock: Clock = utc_now,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.config = config or ProducerConfig()
        self.store = store
        self.classifier = classifier or load_rules()
        self.metrics = metrics
        self.clock = clock
        self._sleep = sleep
        self.flags = FlagCache(flags, self.config.flag_refresh_s, clock)
        self.breaker = CircuitBreaker(
            self.config.breaker_failures, self.config.breaker_reset_s, clock
        )
        self.broadcaster = Broadcaster(self.config.host, self.config.port)
        self.seqs: SeqState | None = None
        self.buffer: DurableBuffer | None = None
        self._window = _Window()
        self._window_start = clock()
        self._queue: asyncio.Queue[_Item | None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()  # replaced in start(): bound to the running loop
        self._stopping = asyncio.Event()
        self._started_at = clock()
        self._running = False

    @property
    def url(self) -> str:
        """Where subscribers connect (``ws://127.0.0.1:<port>/``)."""
        return self.broadcaster.url

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        self.seqs = SeqState(cfg.state_path, block=cfg.seq_reserve_block)
        try:
            self.buffer = DurableBuffer(cfg.resolved_buffer_path())
            await self.broadcaster.start()
        except BaseException:
            self.seqs.close()
            if self.buffer is not None:
                self.buffer.close()
            raise
        self._queue = asyncio.Queue()
        self._wake, self._stopping = asyncio.Event(), asyncio.Event()
        self.flags.lock = asyncio.Lock()
        self._started_at = self._window_start = self.clock()
        self._running = True
        self._tasks = [
            asyncio.create_task(self._batcher(), name="parity-producer-batcher"),
            asyncio.create_task(self._replayer(), name="parity-producer-replayer"),
        ]
        if self.metrics is not None:
            self._tasks.append(asyncio.create_task(self._sampler(), name="parity-producer-metrics"))
        if cfg.heartbeat_s:
            self._tasks.append(asyncio.create_task(self._heartbeat(), name="parity-heartbeat"))
        if self.buffer.pending:
            log.info("replaying %d buffered events from an earlier run", self.buffer.pending)
            self._wake.set()

    async def stop(self) -> None:
        """Flush queued events, give the buffer ``stop_drain_s`` to reach the store, stop
        every task, close the server. What is still buffered stays on disk for the next
        start to replay."""
        if not self._running:
            return
        self._running = False
        assert self._queue is not None and self.buffer is not None and self.seqs is not None
        await self._queue.put(None)
        try:
            await self._tasks[0]  # the batcher: every event is now stored or buffered
            deadline = asyncio.get_running_loop().time() + self.config.stop_drain_s
            while self.buffer.pending and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
            self._stopping.set()
            await asyncio.gather(*self._tasks)
        finally:
            self._tasks = []
            try:
                await self._write_metrics(final=True)
            finally:
                await self.broadcaster.stop()
                self.buffer.close()
                self.seqs.close()

    async def __aenter__(self) -> DualWriter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- emitting --------------------------------------------------------------------------

    async def emit(
        self,
        stream: str,
        event_type: str,
        payload: dict[str, Any],
        *,
        category: str | None = None,
        emitted_at: dt.datetime | None = None,
    ) -> Event:
        """Number, checksum, classify and publish one event; see the module docstring for
        when this returns. Raises InvalidEventError for an event the contract refuses
        (no number is used up then)."""
        if not self._running or self.seqs is None or self._queue is None:
            raise StoreError("the producer is not running: call start() first")
        for name, ok in (
            ("stream", isinstance(stream, str) and 1 <= len(stream) <= MAX_STREAM_LENGTH),
            ("event_type", isinstance(event_type, str) and event_type),
            ("payload", isinstance(payload, dict)),
        ):
            if not ok:
                raise InvalidEventError(
                    "invalid_field", f"{name} does not satisfy contract §2", field=name
                )
        flags = await self.flags.current()
        if not self._running:  # stopped while the flags were read
            raise StoreError("the producer stopped before the event was published")
        effective = category or self.classifier.classify(event_type)
        seq = self.seqs.peek(stream)
        event = make_event(
            stream, seq, event_type, emitted_at or self.clock(), payload, category=effective
        )
        self.seqs.commit(stream, seq)
        to_store = routes_to_supabase(effective, stream, flags)
        if not to_store or flags[routing.DUAL_WRITE_ENABLED]:
            self.broadcaster.send(event)
        if to_store:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            # No await between the running check and this put: stop() queues its end
            # marker only after clearing _running, so nothing lands behind the marker.
            self._queue.put_nowait((event.to_json_dict(), done))
            await done
        return event

    # -- store path ------------------------------------------------------------------------

    async def _batcher(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        stop = False
        while not stop:
            item = await self._queue.get()
            if item is None:
                break
            batch = [item]
            deadline = loop.time() + self.config.batch_max_delay_s
            while len(batch) < self.config.batch_max_rows:
                try:
                    nxt = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    timeout = deadline - loop.time()
                    if timeout <= 0 or self._backlog():
                        break
                    try:
                        nxt = await asyncio.wait_for(self._queue.get(), timeout)
                    except TimeoutError:
                        break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            await self._deliver(batch)

    def _backlog(self) -> bool:
        assert self.buffer is not None
        return self.buffer.pending > 0 or self.breaker.state != CircuitBreaker.CLOSED

    async def _deliver(self, batch: list[_Item]) -> None:
        assert self.buffer is not None
        records = [record for record, _ in batch]
        try:
            if self._backlog() or not await self._write(records):
                self.buffer.append(records)
                self._wake.set()
        except OSError as exc:
            error = StoreError(
                f"the write to the store failed and the buffer {self.buffer.path} could not "
                f"take the events either ({exc}); they are not durable"
            )
            for _, done in batch:
                if not done.done():
                    done.set_exception(error)
            return
        for _, done in batch:
            if not done.done():
                done.set_result(None)

    async def _write(self, records: list[dict[str, Any]]) -> bool:
        """One store call; True when it succeeded. Failures are counted, never raised.
        Counts go to the window in which the call ends, with its latency."""
        started = time.perf_counter()
        try:
            rows = _store_rows(records)
            await asyncio.to_thread(self.store.insert_events, rows)
        except Exception as exc:  # noqa: BLE001 - nothing may lose an event; all are retried
            self._count(failed=True, connection=isinstance(exc, StoreConnectionError))
            self.breaker.record_failure()
            log.warning("store write failed (%d in a row): %s", self.breaker.failures, exc)
            return False
        self._count(failed=False, connection=False)
        self._window.latencies_ms.append((time.perf_counter() - started) * 1000.0)
        self.breaker.record_success()
        return True

    def _count(self, *, failed: bool, connection: bool) -> None:
        # Each store call opens its own connection: a call is a connection attempt.
        window = self._window
        window.attempts += 1
        window.connection_attempts += 1
        window.failures += failed
        window.connection_failures += connection

    def backoff_s(self) -> float:
        """Delay before the next retry: 0, then 1 s doubling up to 30 s by failure count."""
        n, cfg = self.breaker.failures, self.config
        return min(cfg.backoff_initial_s * 2 ** (n - 1), cfg.backoff_max_s) if n else 0.0

    async def _replayer(self) -> None:
        assert self.buffer is not None
        while not self._stopping.is_set():
            if self.buffer.pending == 0:
                self._wake.clear()
                if await self._wait_or_stop(self._wake.wait()):
                    return
                continue
            delay = max(self.backoff_s(), self.breaker.seconds_until_probe())
            if delay > 0 and await self._wait_or_stop(self._sleep(delay)):
                return
            if not self.breaker.allow():
                continue
            records, lines, end = self.buffer.peek(self.config.replay_chunk_rows)
            if lines == 0:
                self.buffer.compact()  # recounts: nothing complete is left
            elif not records or await self._write(records):
                self.buffer.consume(lines, end)

    async def _wait_or_stop(self, waiting: Awaitable[object]) -> bool:
        """Wait for ``waiting`` or for stop; True when stopping."""
        task = asyncio.ensure_future(waiting)
        stopper = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        for t in (task, stopper):
            if not t.done():
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t
        return self._stopping.is_set()

    # -- heartbeat and metrics -------------------------------------------------------------

    async def _heartbeat(self) -> None:
        assert self.config.heartbeat_s
        while not await self._wait_or_stop(self._sleep(self.config.heartbeat_s)):
            if not self._running:  # stopping: draining the buffer
                continue
            assert self.buffer is not None
            uptime = (self.clock() - self._started_at).total_seconds()
            body = {"producer": self.config.name, "uptime_s": int(uptime)}
            body |= {"buffered": self.buffer.pending, "breaker": self.breaker.state}
            body["subscribers"] = len(self.broadcaster.clients)
            stream = f"{self.config.name}.heartbeat"[:MAX_STREAM_LENGTH]
            try:
                await self.emit(stream, HEARTBEAT_EVENT_TYPE, body)
            except StoreError as exc:
                log.error("heartbeat could not be published: %s", exc)

    async def _sampler(self) -> None:
        while not await self._wait_or_stop(self._sleep(self.config.metrics_window_s)):
            await self._write_metrics()

    def take_sample(self, *, final: bool = False) -> MetricSample | None:
        """Close the current sampling window and return its ``delivery_metrics`` row
        (None for a final, partial window without any attempt)."""
        now = self.clock()
        window, self._window = self._window, _Window()
        elapsed = (now - self._window_start).total_seconds()
        self._window_start = now
        if final and window.attempts == 0:
            return None
        return MetricSample(
            sampled_at=now,
            producer=self.config.name,
            window_s=max(1, round(elapsed if final else self.config.metrics_window_s)),
            attempts=window.attempts,
            failures=window.failures,
            latency_p50_ms=percentile(window.latencies_ms, 50),
            latency_p95_ms=percentile(window.latencies_ms, 95),
            connection_attempts=window.connection_attempts,
            connection_failures=window.connection_failures,
        )

    async def _write_metrics(self, *, final: bool = False) -> None:
        sample = self.take_sample(final=final) if self.metrics is not None else None
        if sample is None or self.metrics is None:
            return
        try:
            await asyncio.to_thread(self.metrics.write_sample, sample)
        except Exception as exc:  # noqa: BLE001 - metrics are best effort, events are not
            log.warning("delivery_metrics sample of %s dropped: %s", self.config.name, exc)

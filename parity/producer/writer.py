"""DualWriter: number, checksum, classify, broadcast and dual-write each event."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Awaitable
from typing import Any

import orjson
import pyarrow as pa

from parity.core import routing
from parity.core.classify import Classifier, load_rules
from parity.core.errors import (
    InvalidEventError,
    StoreConnectionError,
    StoreError,
)
from parity.core.events import MAX_STREAM_LENGTH, Event, make_event
from parity.core.samples import MetricSample
from parity.core.schema import STORE_SCHEMA
from parity.core.timestamps import parse_timestamp
from parity.producer.base import (
    HEARTBEAT_EVENT_TYPE,
    Clock,
    FlagSource,
    ProducerConfig,
    Sleep,
    utc_now,
)
from parity.producer.cohort import FlagCache, routes_to_supabase
from parity.producer.delivery import (
    Broadcaster,
    CircuitBreaker,
    DeliveryWindow,
    MetricsSink,
    percentile,
)
from parity.producer.durability import DurableBuffer, SeqState

log = logging.getLogger(__name__)


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
        self._window = DeliveryWindow()
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
        window, self._window = self._window, DeliveryWindow()
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

"""``parity demo``: the whole migration story on the embedded default, in simulated time.

A seeded plan (:func:`plan_demo`, pure) describes several past hours of monitoring traffic
from dozens of streams in every category, the canary's flag history, and the faults to
inject. :class:`Traffic` plays it through the real pipeline: a :class:`DualWriter` with its
WebSocket broadcaster on 127.0.0.1, a :class:`Recorder` subscribed over a real loopback
connection writing the hour files, and the embedded PostgreSQL as "Supabase", behind a
:class:`FaultyStore` that injects the store-side faults.

Simulated time. One :class:`~parity.app.demo_clock.SimClock` is injected into the writer
(``emitted_at``, flag reads, breaker, retry back-off, metrics windows, heartbeats) and the
recorder (``logged_at``). The player advances it event by event and, between two events, sleeper
deadline by sleeper deadline, each woken task done before time moves on, so hours of traffic
take seconds and every metrics window and retry still happens at its simulated instant. The
plan ends at the real *now* of its making; the player then catches up with the seconds
spent playing and switches the clock to real time ("live"), so ``delivery_metrics`` reach
the present without a gap and the health sensor of a running ``dagster dev`` sees the
outage in its window.

Faults, and where they show:

========================  ==============================================  =================
fault                     injected by                                     detected by
========================  ==============================================  =================
dropped writes            FaultyStore drops chosen rows silently          report
                                                                          ``missing_keys``;
                                                                          checks
                                                                          no_critical_...,
                                                                          delivery_rate_...
retry duplicates          the broadcaster sends chosen events twice, so   report
                          the recorder logs them twice (the events        ``duplicates_ws``
                          table has ``unique (stream, seq)``: duplicates
                          can only be log-side)
corrupted payload         FaultyStore alters a payload, keeps its         supabase_checksums
                          checksum                                        _are_valid,
                                                                          no_checksum_...
latency spike             FaultyStore sets ``received_at`` seconds late   latency_p95_within
                          for a stretch of an hour                        _slo (WARN)
Supabase outage           FaultyStore raises StoreConnectionError from    health triggers
                          the last minutes to the end; the writer         over
                          buffers and retries                             delivery_metrics
========================  ==============================================  =================

``received_at``: the writer leaves it to the store's ``now()``, which is real time; the
FaultyStore sets the simulated emit time plus a realistic latency instead (a replayed
event: the simulated time of its write plus that latency).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from parity.app.demo_clock import SimClock
from parity.app.demo_plan import (
    FLAG_REFRESH_S,
    PRODUCER_NAME,
    RETRY_MAX_S,
    DemoPlan,
    Key,
    PlannedEvent,
    latency_ms,
)
from parity.core import routing
from parity.core.errors import StoreConnectionError
from parity.core.events import Event
from parity.core.schema import STORE_SCHEMA
from parity.io.recorder import Recorder, RecorderConfig
from parity.producer import Broadcaster, DualWriter, PostgresMetricsSink, ProducerConfig

log = logging.getLogger(__name__)


class FaultyStore:
    """An :class:`~parity.store.EventStore` wrapper standing in for an unreliable Supabase:
    drops, corrupts, delays (``received_at``) and fails writes as the plan says."""

    def __init__(self, inner: Any, plan: DemoPlan, clock: SimClock) -> None:
        self.inner = inner
        self.table = inner.table
        self.transport = inner.transport
        self.plan = plan
        self.clock = clock
        self.outage_end: dt.datetime | None = None
        self.dropped: set[Key] = set()
        self.corrupted: set[Key] = set()
        self.failed_calls = 0
        self.last_received: dict[str, dt.datetime] = {}

    def in_outage(self, at: dt.datetime) -> bool:
        f = self.plan.faults
        return at >= f.outage_start and (self.outage_end is None or at < self.outage_end)

    def insert_events(self, rows: pa.Table) -> int:
        now = self.clock.now()
        if self.in_outage(now):
            self.failed_calls += 1
            raise StoreConnectionError(
                "cannot connect to Supabase (simulated outage by parity demo)"
            )
        f = self.plan.faults
        out = []
        for row in rows.to_pylist():
            key = (row["stream"], int(row["seq"]))
            if key in f.dropped:
                self.dropped.add(key)
                continue
            if key in f.corrupted:
                payload = orjson.loads(row["payload"])
                payload["altered_in_transit"] = True
                row["payload"] = orjson.dumps(payload).decode()
                self.corrupted.add(key)
            emitted = row["emitted_at"]
            spike = f.latency_spike[0] <= emitted < f.latency_spike[1]
            delay = dt.timedelta(milliseconds=latency_ms(self.plan.seed, key, spike))
            # On-time writes arrive after their latency; replays (written after the outage)
            # arrive when written.
            base = max(emitted, now) if emitted >= f.outage_start else emitted
            # One producer writes a stream in order, so Supabase receives a stream's events
            # in seq order: a sampled latency never puts one before its predecessor.
            received = base + delay
            last = self.last_received.get(row["stream"])
            if last is not None and received <= last:
                received = last + dt.timedelta(microseconds=1)
            self.last_received[row["stream"]] = received
            row["received_at"] = received
            out.append(row)
        if not out:
            return 0
        return self.inner.insert_events(pa.Table.from_pylist(out, schema=STORE_SCHEMA))

    def snapshot(self, start: dt.datetime, end: dt.datetime) -> pa.Table:
        return self.inner.snapshot(start, end)

    def snapshot_batches(self, start: dt.datetime, end: dt.datetime) -> Iterator[pa.Table]:
        return self.inner.snapshot_batches(start, end)

    def close(self) -> None:
        self.inner.close()


class QueuedMetricsSink:
    """``delivery_metrics`` rows written by a thread of their own. The producer's sampler
    hands a sample over and is asleep again at once, so the player, which waits for the
    tasks it wakes (:meth:`SimClock.advance_and_settle`), never waits on a database write
    to move simulated time on; each row still carries its simulated ``sampled_at``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._drain, name="parity-demo-metrics", daemon=True)
        self._thread.start()

    def write_sample(self, sample: Any) -> None:
        self._queue.put(sample)

    def _drain(self) -> None:
        while (sample := self._queue.get()) is not None:
            try:
                self.inner.write_sample(sample)
            except Exception as exc:  # noqa: BLE001 - as the producer's own sink: best effort
                log.warning("delivery_metrics sample dropped: %s", exc)

    def close(self) -> None:
        """Every sample handed over is written when this returns."""
        self._queue.put(None)
        self._thread.join()


class RetryingBroadcaster(Broadcaster):
    """Sends chosen events twice, as a broadcaster retrying an unacknowledged send would:
    the recorder logs them twice."""

    def __init__(self, duplicated: frozenset[Key], host: str = "127.0.0.1") -> None:
        super().__init__(host, 0)
        self.duplicated = duplicated
        self.sent = 0
        self.resent: set[Key] = set()

    def send(self, event: Event) -> None:
        super().send(event)
        self.sent += len(self.clients)
        key = (event.stream, event.seq)
        if key in self.duplicated:
            super().send(event)
            self.sent += len(self.clients)
            self.resent.add(key)


@dataclass
class TrafficStats:
    planned: int = 0
    emitted: int = 0
    live_emitted: int = 0
    seq_mismatches: int = 0
    logged: int = 0
    buffered_at_stop: int = 0
    outage_store_failures: int = 0
    dropped: list[Key] = field(default_factory=list)
    corrupted: list[Key] = field(default_factory=list)
    resent: list[Key] = field(default_factory=list)
    sim_seconds: float = 0.0
    play_seconds: float = 0.0
    end: dt.datetime | None = None


class Traffic:
    """Plays a :class:`DemoPlan` through the real producer -> WebSocket -> recorder path in
    a thread of its own (an asyncio loop), then keeps producing live until stopped."""

    MAX_IN_FLIGHT = 4000

    def __init__(
        self,
        plan: DemoPlan,
        store: Any,
        metrics_conn: Any,
        ws_log_dir: Path,
        state_dir: Path,
        live_flags: Callable[[], Mapping[str, Any]],
    ) -> None:
        self.plan = plan
        self.clock = SimClock(plan.first_hour - dt.timedelta(minutes=1))
        self.store = FaultyStore(store, plan, self.clock)
        self.metrics_conn = metrics_conn
        self.ws_log_dir = ws_log_dir
        self.state_dir = state_dir
        self.live_flags = live_flags
        self.timeline = plan.timeline()
        self.stats = TrafficStats(planned=len(plan.events))
        self.caught_up = threading.Event()
        self.finished = threading.Event()
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._keep_live = False
        self.broadcaster: RetryingBroadcaster | None = None

    def current_stats(self) -> TrafficStats:
        """The stats so far, while the traffic is still live."""
        self.stats.dropped = sorted(self.store.dropped)
        self.stats.corrupted = sorted(self.store.corrupted)
        self.stats.outage_store_failures = self.store.failed_calls
        if self.broadcaster is not None:
            self.stats.resent = sorted(self.broadcaster.resent)
        return self.stats

    # -- control from the main thread ------------------------------------------------------

    def start(self, *, keep_live: bool) -> None:
        self._keep_live = keep_live
        self._thread = threading.Thread(target=self._main, name="parity-demo-traffic", daemon=True)
        self._thread.start()

    def wait_caught_up(self, timeout: float | None = None) -> None:
        while not self.caught_up.wait(0.2):
            if self.finished.is_set() or (timeout is not None and (timeout := timeout - 0.2) < 0):
                break
        if self.error is not None:
            raise self.error
        if not self.caught_up.is_set():
            raise TimeoutError("the demo traffic did not catch up with real time")

    def end_outage(self) -> None:
        """Supabase is back: the writer's buffered events are replayed."""
        self.store.outage_end = self.clock.now()

    def stop(self, timeout: float = 30.0) -> TrafficStats:
        if self._loop is not None and self._stop is not None and not self.finished.is_set():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)
        if self.error is not None:
            raise self.error
        return self.stats

    # -- the loop --------------------------------------------------------------------------

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self.error = exc
        finally:
            self.finished.set()
            self.caught_up.set()

    def _flags(self) -> Mapping[str, Any]:
        if self.clock.live:
            return self.live_flags()
        now = self.clock.now()
        return {name: self.timeline.value_at(name, now) for name in routing.FLAG_DEFAULTS}

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        config = ProducerConfig(
            name=PRODUCER_NAME,
            state_path=self.state_dir / "seq-state.json",
            flag_refresh_s=FLAG_REFRESH_S,
            backoff_max_s=RETRY_MAX_S,
            breaker_reset_s=RETRY_MAX_S,
            stop_drain_s=1.0,
            # Simulated hours pass in real seconds: batch by the queue, hardly by time.
            batch_max_delay_s=0.002,
            seq_reserve_block=1000,
        )
        sink = QueuedMetricsSink(
            PostgresMetricsSink(lambda: contextlib.nullcontext(self.metrics_conn), self.store.table)
        )
        writer = DualWriter(
            self.store,
            self._flags,
            config,
            metrics=sink,
            clock=self.clock.now,
            sleep=self.clock.sleep,
        )
        broadcaster = RetryingBroadcaster(self.plan.faults.duplicated)
        writer.broadcaster = self.broadcaster = broadcaster
        started = time.monotonic()
        await writer.start()
        recorder = Recorder(
            RecorderConfig(url=writer.url, out=self.ws_log_dir, progress=False),
            clock=self.clock.now,
        )
        recording = asyncio.create_task(recorder.run())
        try:
            while not broadcaster.clients:
                if recording.done():
                    await recording  # raises what stopped it
                await asyncio.sleep(0.01)
            pending: set[asyncio.Task[Event]] = set()
            await self._play(writer, self.plan.events, pending, broadcaster, recorder)
            # Catch up with the seconds spent playing, then switch to real time.
            while (gap := dt.datetime.now(dt.UTC) - self.clock.t) > dt.timedelta(seconds=0.5):
                more = self.plan.generator.between(self.clock.t, self.clock.t + gap)
                self.stats.planned += len(more)
                await self._play(writer, more, pending, broadcaster, recorder)
                await self.clock.advance_and_settle(self.clock.t + gap)
            self.clock.go_live()
            self.stats.sim_seconds = (self.clock.t - self.plan.first_hour).total_seconds()
            self.stats.play_seconds = time.monotonic() - started
            self.caught_up.set()
            if self._keep_live:
                await self._live(writer, pending)
            if pending:
                await asyncio.wait(pending)
        finally:
            self.stats.end = self.clock.now()
            await writer.stop()
            await asyncio.to_thread(sink.close)
            self.stats.buffered_at_stop = writer.buffer.pending if writer.buffer else 0
            deadline = time.monotonic() + 20
            while recorder.stats.written < broadcaster.sent and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            recorder.stop()
            await recording
            self.stats.logged = recorder.stats.written
            self.stats.outage_store_failures = self.store.failed_calls
            self.stats.dropped = sorted(self.store.dropped)
            self.stats.corrupted = sorted(self.store.corrupted)
            self.stats.resent = sorted(broadcaster.resent)

    async def _play(
        self,
        writer: DualWriter,
        events: Sequence[PlannedEvent],
        pending: set[asyncio.Task[Event]],
        broadcaster: RetryingBroadcaster,
        recorder: Recorder,
    ) -> None:
        for ev in events:
            await self.clock.advance_and_settle(ev.at)
            await writer.flags.current()  # re-read at this instant when due
            task = asyncio.create_task(
                writer.emit(ev.stream, ev.event_type, ev.payload, emitted_at=ev.at)
            )
            task.add_done_callback(functools.partial(self._emitted, ev=ev))
            pending.add(task)
            task.add_done_callback(pending.discard)
            await asyncio.sleep(0)  # the emit numbers and broadcasts it now, at ev.at
            if len(pending) > self.MAX_IN_FLIGHT:
                await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            while broadcaster.sent - recorder.stats.written > self.MAX_IN_FLIGHT:
                await asyncio.sleep(0.001)

    def _emitted(self, task: asyncio.Task[Event], ev: PlannedEvent | None) -> None:
        if task.cancelled() or task.exception() is not None:
            if not task.cancelled():
                log.error("demo event not published: %s", task.exception())
            return
        self.stats.emitted += 1
        if ev is not None and task.result().seq != ev.seq:
            self.stats.seq_mismatches += 1
        if ev is None:
            self.stats.live_emitted += 1

    async def _live(self, writer: DualWriter, pending: set[asyncio.Task[Event]]) -> None:
        assert self._stop is not None
        gen = self.plan.generator
        last = self.clock.now()
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 0.25)
            now = self.clock.now()
            for ev in gen.between(last, now):
                task = asyncio.create_task(
                    writer.emit(ev.stream, ev.event_type, ev.payload, emitted_at=ev.at)
                )
                task.add_done_callback(functools.partial(self._emitted, ev=None))
                pending.add(task)
                task.add_done_callback(pending.discard)
            last = now

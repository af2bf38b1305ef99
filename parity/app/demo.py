"""``parity demo``: the whole migration story on the embedded default, in simulated time.

A seeded plan (:func:`plan_demo`, pure) describes several past hours of monitoring traffic
from dozens of streams in every category, the canary's flag history, and the faults to
inject. :class:`Traffic` plays it through the real pipeline: a :class:`DualWriter` with its
WebSocket broadcaster on 127.0.0.1, a :class:`Recorder` subscribed over a real loopback
connection writing the hour files, and the embedded PostgreSQL as "Supabase", behind a
:class:`FaultyStore` that injects the store-side faults.

Simulated time. One :class:`SimClock` is injected into the writer (``emitted_at``, flag
reads, breaker, retry back-off, metrics windows, heartbeats) and the recorder
(``logged_at``). The player advances it event by event, waking the writer's sleepers whose
deadline has passed, so hours of traffic take seconds. The plan ends at the real *now* of
its making; the player then catches up with the seconds spent playing and switches the
clock to real time ("live"), so ``delivery_metrics`` reach the present without a gap and
the health sensor of a running ``dagster dev`` sees the outage in its window.

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
import hashlib
import heapq
import itertools
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from parity.core import partitions, routing
from parity.core.errors import StoreConnectionError
from parity.core.events import Event
from parity.core.schema import STORE_SCHEMA
from parity.io.recorder import Recorder, RecorderConfig
from parity.producer import Broadcaster, DualWriter, PostgresMetricsSink, ProducerConfig

log = logging.getLogger(__name__)

PRODUCER_NAME = "demo-producer"
OUTAGE = dt.timedelta(minutes=6)
#: The reconciled hours end at least this long (simulated) before the outage starts.
#: Simulated minutes pass in fractions of a real second, and the writer's Supabase writes
#: may trail the clock by that much on a busy machine: without the margin, a run started in
#: the first minutes of an hour saw the outage catch the last writes of the last reconciled
#: hour, and reported them missing.
OUTAGE_MARGIN = dt.timedelta(minutes=15)
#: The producer re-reads flags this often (simulated seconds); no event is planned in the
#: first seconds after a flag change, so the cache never routes by stale values.
FLAG_REFRESH_S = 5.0
QUIET_AFTER_FLAG_CHANGE = dt.timedelta(seconds=FLAG_REFRESH_S + 1)
#: The demo producer retries every 5 s at most (library default: 30 s), so an outage shows
#: in every 10 s metrics window: the error-rate and connection triggers both see it.
RETRY_MAX_S = 5.0
LATENCY_MEDIAN_MS = 45.0
SPIKE_MS = (1500.0, 6000.0)
DEMO_ACTOR = "parity:demo"
HEALTH_ACTOR = "parity:rollback_on_health_triggers"
N_SESSIONS = 48
MIN_SESSIONS_IN_CANARY = 4
CANARY_PERCENTAGE = 10

Key = tuple[str, int]

# (stream or None for a session stream, event_type, weight)
_MIX: tuple[tuple[str | None, str, float], ...] = (
    ("health.api", "system.health", 4.0),
    ("health.db", "system.health", 3.0),
    ("errors", "error.raised", 4.0),
    ("perf", "perf.alert", 3.0),
    ("connections", "connection.status", 6.0),
    ("debug", "debug.log", 14.0),
    ("metrics", "metrics.verbose", 14.0),
    (None, "user.action", 46.0),
    (None, "error.raised", 2.0),
    ("legacy", "deprecated.x", 4.0),
)


# -- the plan (pure) ------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedEvent:
    at: dt.datetime
    stream: str
    event_type: str
    payload: dict[str, Any]
    seq: int  # the number the producer will give it (numbers start at 1 per stream)


@dataclass(frozen=True)
class FlagStep:
    at: dt.datetime
    changes: dict[str, Any]
    reason: str


@dataclass(frozen=True)
class Faults:
    dropped: frozenset[Key]
    dropped_critical: frozenset[Key]
    duplicated: frozenset[Key]
    corrupted: frozenset[Key]
    latency_spike: tuple[dt.datetime, dt.datetime]
    outage_start: dt.datetime

    def hour_of(self, key: Key, events: Mapping[Key, PlannedEvent]) -> str:
        return partitions.format_key(events[key].at)

    def to_json(self, events: Mapping[Key, PlannedEvent]) -> dict[str, Any]:
        def keys(ks: frozenset[Key]) -> list[dict[str, Any]]:
            return [
                {"stream": s, "seq": q, "partition": self.hour_of((s, q), events)}
                for s, q in sorted(ks)
            ]

        return {
            "dropped_writes": keys(self.dropped),
            "dropped_critical": keys(self.dropped_critical),
            "retry_duplicates": keys(self.duplicated),
            "corrupted_payloads": keys(self.corrupted),
            "latency_spike": [t.isoformat() for t in self.latency_spike],
            "outage_start": self.outage_start.isoformat(),
        }


@dataclass(frozen=True)
class DemoPlan:
    seed: int
    first_hour: dt.datetime
    end: dt.datetime  # real time when planned: where the simulated past ends
    hours: tuple[str, ...]  # the complete hours the demo reconciles
    events: tuple[PlannedEvent, ...]
    flag_steps: tuple[FlagStep, ...]
    faults: Faults
    generator: TrafficGenerator = field(repr=False, compare=False)

    def timeline(self) -> routing.FlagTimeline:
        return routing.FlagTimeline(
            tuple(
                routing.FlagChange(name, value, step.at)
                for step in self.flag_steps
                for name, value in step.changes.items()
                if name in routing.FLAG_DEFAULTS
            )
        )

    def by_key(self) -> dict[Key, PlannedEvent]:
        return {(e.stream, e.seq): e for e in self.events}


class TrafficGenerator:
    """Seeded, realistic traffic: fixed system streams, dozens of session streams (each
    opening with ``session.started``), every category. Keeps per-stream numbering across
    calls, so the live tail continues the planned past."""

    def __init__(self, seed: int, events_per_hour: int) -> None:
        self.rng = random.Random(seed)
        self.rate_per_s = events_per_hour / 3600.0
        self.sessions = self._session_names()
        self.seqs: dict[str, int] = {}
        self.quiet: list[tuple[dt.datetime, dt.datetime]] = []
        self._weights = [w for _, _, w in _MIX]

    def _session_names(self) -> list[str]:
        names: list[str] = []
        in_canary = 0
        while len(names) < N_SESSIONS:
            name = f"session-{self.rng.getrandbits(40):010x}"
            canary = routing.stream_bucket(name) < CANARY_PERCENTAGE
            # Enough sessions in the 10% canary that the cohort visibly changes.
            if not canary and len(names) >= N_SESSIONS - (MIN_SESSIONS_IN_CANARY - in_canary):
                continue
            in_canary += canary
            names.append(name)
        return names

    def between(self, start: dt.datetime, end: dt.datetime) -> list[PlannedEvent]:
        """Events with ``start <= at < end``, in time order, numbered."""
        seconds = (end - start).total_seconds()
        if seconds <= 0:
            return []
        n = _poisson(self.rng, self.rate_per_s * seconds)
        offsets = sorted(self.rng.random() * seconds for _ in range(n))
        out = []
        for off in offsets:
            at = start + dt.timedelta(microseconds=int(off * 1e6))
            if any(a <= at < b for a, b in self.quiet):
                continue
            stream, event_type, _ = self.rng.choices(_MIX, self._weights)[0]
            if stream is None:
                stream = self.rng.choice(self.sessions)
                if self.seqs.get(stream, 0) == 0:
                    event_type = "session.started"
            seq = self.seqs.get(stream, 0) + 1
            self.seqs[stream] = seq
            out.append(PlannedEvent(at, stream, event_type, self._payload(event_type), seq))
        return out

    def _payload(self, event_type: str) -> dict[str, Any]:
        r = self.rng
        if event_type == "system.health":
            return {
                "component": r.choice(["api", "db", "cache", "queue"]),
                "status": r.choices(["ok", "degraded"], [0.95, 0.05])[0],
                "cpu": round(r.uniform(3, 95), 1),
                "mem_mb": r.randint(200, 4000),
            }
        if event_type == "error.raised":
            return {
                "code": r.choice(["E_TIMEOUT", "E_UPSTREAM", "E_VALIDATION", "E_QUOTA"]),
                "message": r.choice(["upstream timed out", "bad request", "quota exceeded"]),
                "retryable": r.random() < 0.5,
            }
        if event_type == "perf.alert":
            return {"metric": "p95_ms", "value": r.randint(400, 3000), "threshold": 500}
        if event_type == "connection.status":
            return {
                "client": f"ws-{r.randint(1, 400)}",
                "state": r.choice(["connected", "disconnected", "reconnecting"]),
            }
        if event_type == "debug.log":
            return {"logger": r.choice(["router", "auth", "cache"]), "message": "tick"}
        if event_type == "metrics.verbose":
            return {"name": r.choice(["rss", "gc_ms", "qps"]), "value": round(r.random() * 1e3, 2)}
        if event_type == "session.started":
            return {"user": f"u{r.randint(1, 9999)}", "agent": r.choice(["web", "ios", "cli"])}
        if event_type == "user.action":
            return {
                "action": r.choice(["click", "view", "search", "export"]),
                "target": r.choice(["dashboard", "chart", "filter", "report"]),
            }
        return {"legacy_field": r.randint(0, 9), "format": "v1"}


def _poisson(rng: random.Random, mean: float) -> int:
    # Normal approximation: the demo's means are in the hundreds or thousands.
    if mean < 30:
        k, p, limit = 0, 1.0, math.exp(-mean)
        while True:
            p *= rng.random()
            if p <= limit:
                return k
            k += 1
    return max(0, round(rng.gauss(mean, math.sqrt(mean))))


def _critical(event_type: str) -> bool:
    return event_type.split(".")[0] in ("system", "error", "perf", "connection")


def plan_demo(seed: int, now: dt.datetime, hours: int, events_per_hour: int) -> DemoPlan:
    """The demo's timeline ending at ``now``: ``hours`` complete hours to reconcile, ending
    at least ``OUTAGE_MARGIN`` before the outage, then the traffic up to ``now`` (the hour
    or two holding the outage's start and its last minutes), which is not reconciled."""
    if hours < 1:
        raise ValueError("the demo needs at least one complete hour")
    if events_per_hour < 600:
        raise ValueError("the demo needs at least 600 events per hour")
    now = now.astimezone(dt.UTC)
    outage_start = now - OUTAGE
    first_hour = partitions.floor_hour(outage_start - OUTAGE_MARGIN) - hours * partitions.HOUR
    keys = tuple(partitions.format_key(first_hour + i * partitions.HOUR) for i in range(hours))
    canary_at = first_hour + partitions.HOUR
    critical_at = first_hour - dt.timedelta(minutes=10)
    flag_steps = (
        FlagStep(
            critical_at,
            {
                routing.CRITICAL_EVENTS_SUPABASE: True,
                "PARITY_ROLLOUT_STATE": _state(0, critical_at),
            },
            "canary stage 0: critical events to Supabase",
        ),
        FlagStep(
            canary_at,
            {
                routing.SUPABASE_ROLLOUT_PERCENTAGE: CANARY_PERCENTAGE,
                "PARITY_ROLLOUT_STATE": _state(1, canary_at),
            },
            f"canary stage 1: {CANARY_PERCENTAGE}% of streams to Supabase",
        ),
    )
    gen = TrafficGenerator(seed, events_per_hour)
    gen.quiet = [(s.at, s.at + QUIET_AFTER_FLAG_CHANGE) for s in flag_steps]
    events = tuple(gen.between(first_hour, now))

    rng = random.Random(seed ^ 0x5EED)
    timeline = routing.FlagTimeline(
        tuple(
            routing.FlagChange(k, v, s.at)
            for s in flag_steps
            for k, v in s.changes.items()
            if k in routing.FLAG_DEFAULTS
        )
    )

    def routed(e: PlannedEvent) -> bool:
        flags = {name: timeline.value_at(name, e.at) for name in routing.FLAG_DEFAULTS}
        return _routes(e, flags)

    def in_hour(key: str) -> list[PlannedEvent]:
        start, end = partitions.window(key)
        # Away from the hour's edges: an event's hour is then unambiguous in every view.
        return [
            e
            for e in events
            if start + dt.timedelta(minutes=1) <= e.at < end - dt.timedelta(minutes=1)
        ]

    first, last = in_hour(keys[0]), in_hour(keys[-1])
    spike_start = first_hour + dt.timedelta(minutes=20)
    spike = (spike_start, spike_start + dt.timedelta(minutes=12))
    taken: set[Key] = set()

    def pick(pool: Sequence[PlannedEvent], n: int) -> list[Key]:
        candidates = [e for e in pool if (e.stream, e.seq) not in taken]
        chosen = [(e.stream, e.seq) for e in rng.sample(candidates, min(n, len(candidates)))]
        taken.update(chosen)
        return chosen

    outside_spike = [e for e in first if not spike[0] <= e.at < spike[1]]
    corrupted = pick([e for e in outside_spike if _critical(e.event_type) and routed(e)], 1)
    duplicated = pick(outside_spike, 3)
    dropped_critical = pick([e for e in last if _critical(e.event_type) and routed(e)], 3)
    dropped_info = pick([e for e in last if not _critical(e.event_type) and routed(e)], 2)
    faults = Faults(
        dropped=frozenset(dropped_critical + dropped_info),
        dropped_critical=frozenset(dropped_critical),
        duplicated=frozenset(duplicated),
        corrupted=frozenset(corrupted),
        latency_spike=spike,
        outage_start=outage_start,
    )
    return DemoPlan(seed, first_hour, now, keys, events, flag_steps, faults, gen)


def _state(step: int, at: dt.datetime) -> dict[str, Any]:
    return {
        "version": 1,
        "step": step,
        "step_started_at": at.isoformat(),
        "paused": False,
        "paused_reason": None,
        "rollback_at": None,
        "rollback_reason": None,
        "cooldown_until": None,
    }


def _routes(event: PlannedEvent, flags: Mapping[str, Any]) -> bool:
    category = routing.CRITICAL if _critical(event.event_type) else "INFORMATIONAL"
    if category == routing.CRITICAL and flags[routing.CRITICAL_EVENTS_SUPABASE]:
        return True
    return routing.stream_bucket(event.stream) < int(flags[routing.SUPABASE_ROLLOUT_PERCENTAGE])


def latency_ms(seed: int, key: Key, spike: bool) -> float:
    """A deterministic write latency for an event: lognormal around 45 ms; 1.5-6 s in a
    spike."""
    digest = hashlib.sha256(f"{seed}:{key[0]}:{key[1]}".encode()).digest()
    u1 = (int.from_bytes(digest[:4], "big") + 1) / 2**32
    u2 = int.from_bytes(digest[4:8], "big") / 2**32
    if spike:
        return SPIKE_MS[0] + u1 * (SPIKE_MS[1] - SPIKE_MS[0])
    z = math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2)
    return LATENCY_MEDIAN_MS * math.exp(0.45 * z)


# -- simulated time -------------------------------------------------------------------------


class SimClock:
    """Simulated UTC time, advanced by the player; real time once :meth:`go_live` is called.

    :meth:`sleep` waits in simulated time: it returns when the player advances past its
    deadline (after ``go_live``: when that instant arrives in real time).
    """

    def __init__(self, start: dt.datetime) -> None:
        self.t = start
        self.live = False
        self._waiters: list[tuple[dt.datetime, int, asyncio.Future[None]]] = []
        self._ids = itertools.count()

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) if self.live else self.t

    async def sleep(self, seconds: float) -> None:
        if self.live:
            await asyncio.sleep(seconds)
            return
        future = asyncio.get_running_loop().create_future()
        deadline = self.t + dt.timedelta(seconds=seconds)
        heapq.heappush(self._waiters, (deadline, next(self._ids), future))
        await future

    def advance(self, to: dt.datetime) -> int:
        """Move to ``to`` (never backwards); how many sleepers were woken."""
        self.t = max(self.t, to)
        woke = 0
        while self._waiters and self._waiters[0][0] <= self.t:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)
                woke += 1
        return woke

    async def advance_and_settle(self, to: dt.datetime, timeout_s: float = 0.05) -> None:
        """:meth:`advance`, then let the woken tasks run until they sleep again (or
        ``timeout_s`` of real time): a metrics sample or a retry is then taken at its
        simulated instant, not seconds of simulated time later."""
        before = len(self._waiters)
        woke = self.advance(to)
        if not woke:
            return
        deadline = time.monotonic() + timeout_s
        for spin in itertools.count():
            await asyncio.sleep(0 if spin < 20 else 0.0002)
            if len(self._waiters) >= before or time.monotonic() > deadline:
                return

    def go_live(self) -> None:
        loop = asyncio.get_running_loop()
        self.t = max(self.t, dt.datetime.now(dt.UTC))
        self.live = True
        for deadline, _, future in self._waiters:
            delay = max(0.0, (deadline - dt.datetime.now(dt.UTC)).total_seconds())
            loop.call_later(delay, _resolve, future)
        self._waiters = []


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


# -- fault injection ------------------------------------------------------------------------


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


# -- the player -----------------------------------------------------------------------------


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
        sink = PostgresMetricsSink(
            lambda: contextlib.nullcontext(self.metrics_conn), self.store.table
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
                self.clock.advance(self.clock.t + gap)
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

"""The demo's plan, pure: seeded hours of traffic, the flag history and the faults to inject."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from parity.core import partitions, routing

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

"""DualWriter against the embedded PostgreSQL and a real websockets client.

Supabase being "down" is simulated with a store wrapper that raises StoreConnectionError
while a switch is on (stopping the shared embedded server would disturb other tests); the
writes that do go through hit the real table.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest
from psycopg import sql
from websockets.asyncio.client import connect

from parity.core.config import TableName
from parity.core.errors import ConfigurationError, StoreConnectionError, StoreError
from parity.core.events import parse_event
from parity.core.routing import (
    CRITICAL_EVENTS_SUPABASE,
    DUAL_WRITE_ENABLED,
    FLAG_DEFAULTS,
    SUPABASE_ROLLOUT_PERCENTAGE,
    stream_bucket,
)
from parity.core.triggers import MetricSample
from parity.io.control_pg import set_flags
from parity.io.store_pg import PostgresStore
from parity.io.verify import verify_checksums
from parity.producer import (
    HEARTBEAT_EVENT_TYPE,
    CircuitBreaker,
    DualWriter,
    DurableBuffer,
    PostgresMetricsSink,
    ProducerConfig,
    SeqState,
    percentile,
    postgres_flag_source,
    routes_to_supabase,
)
from tests.waiting import until

pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 11, 28, 10, 0, tzinfo=dt.UTC)
WIDE = (dt.datetime(2000, 1, 1, tzinfo=dt.UTC), dt.datetime(2100, 1, 1, tzinfo=dt.UTC))


class FakeClock:
    def __init__(self, start: dt.datetime = T0) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


async def fast_sleep(_seconds: float) -> None:
    """Backoff waits take no time; the fake clock decides when the breaker may probe."""
    await asyncio.sleep(0.001)


class FlakyStore:
    """The real store behind a switch: while ``down``, every insert raises."""

    transport = "postgres"

    def __init__(self, inner: PostgresStore) -> None:
        self.inner = inner
        self.table = inner.table
        self.down = False
        self.attempts = 0
        self.inserted: list[tuple[str, int]] = []  # in the order the store received them

    def insert_events(self, rows: pa.Table) -> int:
        self.attempts += 1
        if self.down:
            raise StoreConnectionError("simulated outage: connection refused")
        written = self.inner.insert_events(rows)
        self.inserted.extend(zip(rows["stream"].to_pylist(), rows["seq"].to_pylist(), strict=True))
        return written

    def snapshot(self, start: dt.datetime, end: dt.datetime) -> pa.Table:
        return self.inner.snapshot(start, end)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def store(pg_url: str, pg_table: TableName) -> FlakyStore:
    return FlakyStore(PostgresStore(pg_url, pg_table))


def flags_source(values: dict[str, Any]) -> Callable[[], Mapping[str, Any]]:
    calls = []

    def read() -> Mapping[str, Any]:
        calls.append(1)
        return dict(values)

    read.calls = calls  # type: ignore[attr-defined]
    return read


def config(tmp_path: Path, **overrides: Any) -> ProducerConfig:
    base: dict[str, Any] = {
        "name": "test-producer",
        "state_path": tmp_path / "seq.json",
        "heartbeat_s": None,
        "flag_refresh_s": 5.0,
        "batch_max_delay_s": 0.005,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.05,
        "breaker_reset_s": 0.05,
    }
    base.update(overrides)
    return ProducerConfig(**base)


def stored_keys(store: FlakyStore) -> list[tuple[str, int]]:
    snap = store.snapshot(*WIDE)
    return list(zip(snap["stream"].to_pylist(), snap["seq"].to_pylist(), strict=True))


def test_sequences_and_checksums_are_correct(tmp_path: Path, store: FlakyStore) -> None:
    async def scenario() -> list:
        source = flags_source({SUPABASE_ROLLOUT_PERCENTAGE: 100})
        async with DualWriter(store, source, config(tmp_path), clock=FakeClock()) as writer:
            return [
                await writer.emit(stream, "error.raised", {"i": i, "text": "é"})
                for i in range(3)
                for stream in ("health", "errors")
            ]

    events = asyncio.run(scenario())
    assert [(e.stream, e.seq) for e in events if e.stream == "health"] == [
        ("health", 1),
        ("health", 2),
        ("health", 3),
    ]
    assert all(e.checksum_is_valid() for e in events)
    assert {e.category for e in events} == {"CRITICAL"}  # classified by the default rules
    # What travels is a valid event of the contract.
    assert parse_event(orjson.loads(orjson.dumps(events[0].to_json_dict()))) == events[0]
    snap = store.snapshot(*WIDE)
    assert snap.num_rows == 6
    assert verify_checksums(snap).to_pylist() == [True] * 6
    assert sorted(snap["seq"].to_pylist()) == [1, 1, 2, 2, 3, 3]
    assert set(snap["checksum"].to_pylist()) == {e.checksum for e in events}


@pytest.mark.parametrize("percentage", [0, 10, 100])
def test_the_cohort_is_obeyed(tmp_path: Path, store: FlakyStore, percentage: int) -> None:
    streams = [f"session-{i}" for i in range(60)]
    expected = {s for s in streams if stream_bucket(s) < percentage}

    async def scenario() -> None:
        source = flags_source({SUPABASE_ROLLOUT_PERCENTAGE: percentage})
        async with DualWriter(store, source, config(tmp_path)) as writer:
            for s in streams:
                await writer.emit(s, "user.action", {"click": 1})
                await writer.emit(s, "error.raised", {"oops": 1})  # critical flag is off

    asyncio.run(scenario())
    keys = stored_keys(store)
    assert {s for s, _ in keys} == expected
    assert len(keys) == 2 * len(expected)  # whole streams move: both events, seq 1 and 2
    if percentage == 10:
        assert 0 < len(expected) < len(streams)


def test_critical_events_follow_their_flag(tmp_path: Path, store: FlakyStore) -> None:
    async def scenario() -> None:
        source = flags_source({CRITICAL_EVENTS_SUPABASE: True})
        async with DualWriter(store, source, config(tmp_path)) as writer:
            await writer.emit("s", "error.raised", {})
            await writer.emit("s", "debug.log", {})
            await writer.emit("s", "debug.log", {}, category="CRITICAL")  # declared wins

    asyncio.run(scenario())
    assert stored_keys(store) == [("s", 1), ("s", 3)]


def test_outage_is_buffered_and_replayed_in_order(tmp_path: Path, store: FlakyStore) -> None:
    cfg = config(tmp_path)

    async def scenario(writer_sleep: Any) -> DualWriter:
        source = flags_source({SUPABASE_ROLLOUT_PERCENTAGE: 100})
        writer = DualWriter(store, source, cfg, sleep=writer_sleep)
        async with writer:
            await writer.emit("a", "user.action", {"n": 0})
            store.down = True
            for n in range(1, 21):
                await writer.emit("a" if n % 2 else "b", "user.action", {"n": n})
            # Every emit returned: the events are durable in the buffer file.
            assert writer.buffer is not None
            lines = writer.buffer.path.read_bytes().splitlines()
            assert len(lines) == 20
            assert [orjson.loads(x)["payload"]["n"] for x in lines] == list(range(1, 21))
            await until(lambda: writer.breaker.state != CircuitBreaker.CLOSED)
            store.down = False
            await writer.emit("a", "user.action", {"n": 21})  # joins the backlog, in order
            await until(lambda: writer.buffer is not None and writer.buffer.pending == 0)
            assert writer.breaker.state == CircuitBreaker.CLOSED
        return writer

    writer = asyncio.run(scenario(asyncio.sleep))
    keys = stored_keys(store)
    assert sorted(keys) == [("a", n) for n in range(1, 13)] + [("b", n) for n in range(1, 11)]
    for stream in ("a", "b"):  # the store received every stream in sequence order
        seqs = [seq for s, seq in store.inserted if s == stream]
        assert seqs == sorted(seqs)
    assert writer.buffer is not None and writer.buffer.path.read_bytes() == b""


def test_stop_gives_the_buffer_time_to_drain(tmp_path: Path, store: FlakyStore) -> None:
    async def scenario() -> None:
        source = flags_source({SUPABASE_ROLLOUT_PERCENTAGE: 100})
        writer = DualWriter(store, source, config(tmp_path, stop_drain_s=10.0))
        async with writer:
            store.down = True
            for _ in range(3):
                await writer.emit("a", "user.action", {})
            asyncio.get_running_loop().call_later(0.1, setattr, store, "down", False)
        assert writer.buffer is not None and writer.buffer.pending == 0

    asyncio.run(scenario())
    assert stored_keys(store) == [("a", 1), ("a", 2), ("a", 3)]


def test_breaker_opens_after_five_failures_and_probes(tmp_path: Path, store: FlakyStore) -> None:
    clock = FakeClock()
    cfg = config(tmp_path, breaker_reset_s=30.0, backoff_max_s=30.0)

    async def scenario() -> None:
        source = flags_source({SUPABASE_ROLLOUT_PERCENTAGE: 100})
        async with DualWriter(store, source, cfg, clock=clock, sleep=fast_sleep) as writer:
            store.down = True
            await writer.emit("a", "user.action", {})
            await until(lambda: writer.breaker.state == CircuitBreaker.OPEN)
            await asyncio.sleep(0.05)  # frozen clock: no probe may happen meanwhile
            assert store.attempts == 5
            assert writer.breaker.failures == 5
            await writer.emit("a", "user.action", {})  # goes straight to the buffer
            assert store.attempts == 5
            clock.advance(30)  # half-open: exactly one probe, which fails
            await until(lambda: store.attempts == 6)
            await asyncio.sleep(0.05)
            assert store.attempts == 6 and writer.breaker.state == CircuitBreaker.OPEN
            store.down = False
            clock.advance(30)
            await until(lambda: writer.buffer is not None and writer.buffer.pending == 0)
            assert writer.breaker.state == CircuitBreaker.CLOSED
            sample = writer.take_sample()
            assert sample is not None
            assert (sample.attempts, sample.failures) == (7, 6)
            assert (sample.connection_attempts, sample.connection_failures) == (7, 6)

    asyncio.run(scenario())
    assert stored_keys(store) == [("a", 1), ("a", 2)]


def test_backoff_doubles_from_initial_to_max(tmp_path: Path, store: FlakyStore) -> None:
    writer = DualWriter(
        store,
        flags_source({}),
        config(tmp_path, backoff_initial_s=1.0, backoff_max_s=30.0, breaker_failures=99),
    )
    delays = []
    for _ in range(7):
        writer.breaker.record_failure()
        delays.append(writer.backoff_s())
    assert delays == [1, 2, 4, 8, 16, 30, 30]


def test_a_flag_change_is_observed_within_the_refresh_interval(
    tmp_path: Path, store: FlakyStore
) -> None:
    clock = FakeClock()
    values: dict[str, Any] = {SUPABASE_ROLLOUT_PERCENTAGE: 100}
    source = flags_source(values)

    async def scenario() -> None:
        cfg = config(tmp_path, flag_refresh_s=5.0)
        async with DualWriter(store, source, cfg, clock=clock) as writer:
            await writer.emit("s", "user.action", {})  # seq 1: in the cohort
            values[SUPABASE_ROLLOUT_PERCENTAGE] = 0  # a rollback
            clock.advance(4.9)
            await writer.emit("s", "user.action", {})  # seq 2: cached flags, still routed
            clock.advance(0.1)
            await writer.emit("s", "user.action", {})  # seq 3: refreshed, not routed

    asyncio.run(scenario())
    assert stored_keys(store) == [("s", 1), ("s", 2)]
    assert len(source.calls) == 2  # type: ignore[attr-defined]


def test_flags_are_read_from_the_flag_table(tmp_path: Path, store: FlakyStore) -> None:
    clock = FakeClock()
    source = postgres_flag_source(store.inner)

    def set_percentage(value: int) -> None:
        with store.inner.connection() as conn:
            set_flags(
                conn,
                store.table.schema,
                {SUPABASE_ROLLOUT_PERCENTAGE: value},
                actor="test",
                reason="canary",
            )

    async def scenario() -> None:
        async with DualWriter(store, source, config(tmp_path), clock=clock) as writer:
            await writer.emit("s", "user.action", {})  # defaults: rollout 0
            set_percentage(100)
            clock.advance(5)
            await writer.emit("s", "user.action", {})
            set_percentage(0)  # rollback
            clock.advance(5)
            await writer.emit("s", "user.action", {})

    asyncio.run(scenario())
    assert stored_keys(store) == [("s", 2)]


def test_sequence_numbers_survive_a_restart(tmp_path: Path, store: FlakyStore) -> None:
    cfg = config(tmp_path, seq_reserve_block=10)
    source = flags_source({SUPABASE_ROLLOUT_PERCENTAGE: 100})

    async def run(n: int) -> list[int]:
        async with DualWriter(store, source, cfg) as writer:
            return [(await writer.emit("s", "user.action", {})).seq for _ in range(n)]

    assert asyncio.run(run(3)) == [1, 2, 3]
    assert asyncio.run(run(2)) == [4, 5]  # a clean stop records the exact last number
    assert stored_keys(store) == [("s", n) for n in range(1, 6)]

    # A crash (no clean stop) skips to the end of the reserved block, never reuses.
    state = SeqState(cfg.state_path, block=10)
    for seq in (6, 7):
        state.commit("s", state.peek("s"))
        assert state.last("s") == seq
    with pytest.raises(ConfigurationError, match="in use by another producer"):
        SeqState(cfg.state_path)
    state.close(persist=False)  # the process dies
    assert SeqState(cfg.state_path).peek("s") == 16


def test_subscribers_receive_the_broadcast(tmp_path: Path, store: FlakyStore) -> None:
    async def scenario() -> tuple[list, list[dict]]:
        source = flags_source({})  # defaults: nothing to Supabase, everything broadcast
        async with DualWriter(store, source, config(tmp_path)) as writer:
            async with connect(writer.url) as client:
                await until(lambda: len(writer.broadcaster.clients) == 1)
                sent = [await writer.emit("ui", "user.action", {"i": i}) for i in range(3)]
                received = [orjson.loads(await client.recv()) for _ in sent]
        return sent, received

    sent, received = asyncio.run(scenario())
    assert received == [e.to_json_dict() for e in sent]
    assert stored_keys(store) == []


def test_dual_write_off_sends_the_cohort_to_supabase_only(
    tmp_path: Path, store: FlakyStore
) -> None:
    flags = {CRITICAL_EVENTS_SUPABASE: True, DUAL_WRITE_ENABLED: False}

    async def scenario() -> list[dict]:
        async with DualWriter(store, flags_source(flags), config(tmp_path)) as writer:
            async with connect(writer.url) as client:
                await until(lambda: len(writer.broadcaster.clients) == 1)
                await writer.emit("s", "error.raised", {})  # cohort: Supabase only
                await writer.emit("s", "debug.log", {})  # not in the cohort: broadcast
                return [orjson.loads(await client.recv())]

    received = asyncio.run(scenario())
    assert [(m["seq"], m["event_type"]) for m in received] == [(2, "debug.log")]
    assert stored_keys(store) == [("s", 1)]


def test_heartbeat_and_delivery_metrics(
    tmp_path: Path, store: FlakyStore, pg_url: str, pg_table: TableName
) -> None:
    sink = PostgresMetricsSink.for_store(store.inner)
    cfg = config(tmp_path, heartbeat_s=0.05, metrics_window_s=0.05)

    async def scenario() -> dict:
        source = flags_source({CRITICAL_EVENTS_SUPABASE: True})
        async with DualWriter(store, source, cfg, metrics=sink) as writer:
            async with connect(writer.url) as client:
                beat = orjson.loads(await asyncio.wait_for(client.recv(), 5))
                await writer.emit("x", "error.raised", {})
                await asyncio.sleep(0.15)
        return beat

    beat = asyncio.run(scenario())
    assert beat["event_type"] == HEARTBEAT_EVENT_TYPE
    assert beat["stream"] == "test-producer.heartbeat"
    assert beat["payload"]["producer"] == "test-producer"
    with store.inner.connection() as conn:
        rows = conn.execute(
            sql.SQL(
                "select producer, window_s, attempts, failures, latency_p50_ms, latency_p95_ms,"
                " connection_attempts, connection_failures from {}"
            ).format(sql.Identifier(pg_table.schema, "delivery_metrics"))
        ).fetchall()
    assert rows and {r[0] for r in rows} == {"test-producer"}
    assert sum(r[2] for r in rows) >= 2 and sum(r[3] for r in rows) == 0
    assert all(r[4] is not None and r[5] >= r[4] for r in rows if r[2])
    assert sum(r[6] for r in rows) == sum(r[2] for r in rows)


def test_buffer_cuts_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "buffer.jsonl"
    path.write_bytes(b'{"seq":1}\n{"seq":2}\n{"se')
    buffer = DurableBuffer(path)
    assert buffer.pending == 2
    buffer.append([{"seq": 3}])
    records, lines, end = buffer.peek(10)
    assert [r["seq"] for r in records] == [1, 2, 3] and lines == 3
    buffer.consume(2, len(b'{"seq":1}\n{"seq":2}\n'))
    records, lines, end = buffer.peek(10)
    assert [r["seq"] for r in records] == [3] and buffer.pending == 1
    buffer.compact()  # rewrite-then-rename drops the replayed prefix
    assert path.read_bytes() == b'{"seq":3}\n'
    buffer.consume(1, len(b'{"seq":3}\n'))
    assert path.read_bytes() == b"" and buffer.pending == 0  # compacted when drained
    buffer.close()
    reopened = DurableBuffer(path)
    assert reopened.pending == 0
    reopened.close()


def test_routing_rule_and_percentiles() -> None:
    flags = dict(FLAG_DEFAULTS)
    assert not routes_to_supabase("CRITICAL", "s", flags)
    flags[CRITICAL_EVENTS_SUPABASE] = True
    assert routes_to_supabase("CRITICAL", "s", flags)
    assert not routes_to_supabase("INFORMATIONAL", "s", flags)
    flags[SUPABASE_ROLLOUT_PERCENTAGE] = stream_bucket("s") + 1
    assert routes_to_supabase("LEGACY", "s", flags)
    assert percentile([], 50) is None
    assert percentile([10.0], 95) == 10.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    assert percentile([1.0, 2.0], 95) == pytest.approx(1.95)


def test_a_failed_metrics_write_never_prints_the_password() -> None:
    """libpq quotes a conninfo it cannot parse whole, password included (the SQLAlchemy
    form, easy to paste); the sink's error keeps the cause and drops the secret."""
    import psycopg

    url = f"postgresql+psycopg2://parity:{METRICS_SECRET}@127.0.0.1/db"
    sink = PostgresMetricsSink(lambda: psycopg.connect(url), TableName("public", "events"))
    sample = MetricSample(dt.datetime.now(dt.UTC), "p", 10, attempts=1, failures=0)
    with pytest.raises(StoreError) as err:
        sink.write_sample(sample)
    message = str(err.value)
    assert message.startswith("writing delivery_metrics failed: ")
    assert 'missing "="' in message  # the driver's reason is kept
    assert METRICS_SECRET not in message


METRICS_SECRET = "m3trics-Pa55-9d2e"

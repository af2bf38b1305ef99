"""A small world for Dagster tests: a WebSocket log, an events table on the embedded
PostgreSQL, and the environment a code location would load with."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import orjson
import psycopg
import pyarrow as pa
import pytest
from psycopg import sql

from parity.core.config import Settings, TableName
from parity.core.events import Event, make_event
from parity.core.schema import STORE_SCHEMA
from parity.io.store_pg import PostgresStore
from parity.io.wslog import write_events

HOUR = dt.datetime(2026, 11, 28, 10, tzinfo=dt.UTC)
PARTITION = "2026-11-28-10:00"


@dataclass
class World:
    home: Path
    url: str
    table: TableName

    @property
    def env(self) -> dict[str, str]:
        return {
            "PARITY_HOME": str(self.home),
            "PARITY_DATABASE_URL": self.url,
            "PARITY_EVENTS_TABLE": str(self.table),
            "PARITY_PARTITIONS_START": "2026-11-27",
        }

    @property
    def settings(self) -> Settings:
        return Settings.from_env(self.env)

    def store(self) -> PostgresStore:
        return PostgresStore(self.url, self.table)

    def log(self, events: Iterable[Event]) -> None:
        write_events(self.settings.ws_log_dir, events)

    def log_raw(self, hour: dt.datetime, data: bytes) -> None:
        path = self.settings.ws_log_dir / hour.strftime("%Y-%m-%d") / f"{hour:%H}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as fh:
            fh.write(data)

    def insert(self, events: Iterable[Event], latency_ms: int | dict = 50) -> int:
        """Insert events as Supabase rows, received ``latency_ms`` after emission
        (a dict maps (stream, seq) to a latency; others get 50 ms)."""
        rows = list(events)

        def received(e: Event) -> dt.datetime:
            ms = latency_ms.get(e.key, 50) if isinstance(latency_ms, dict) else latency_ms
            return e.emitted_at + dt.timedelta(milliseconds=ms)

        table = pa.table(
            {
                "stream": [e.stream for e in rows],
                "seq": [e.seq for e in rows],
                "event_type": [e.event_type for e in rows],
                "category": [e.category for e in rows],
                "emitted_at": [e.emitted_at for e in rows],
                "received_at": [received(e) for e in rows],
                "payload": [orjson.dumps(e.payload).decode() for e in rows],
                "checksum": [e.checksum for e in rows],
            },
            schema=STORE_SCHEMA,
        )
        return self.store().insert_events(table)

    def critical_first(self, since: dt.datetime) -> None:
        """The canary's first stage in force since ``since``: CRITICAL events to Supabase."""
        from parity.io.control_pg import set_flags

        with self.store().connection() as conn:
            set_flags(
                conn,
                self.table.schema,
                {"MONITORING_CRITICAL_EVENTS_SUPABASE": True},
                actor="test",
                reason="critical events first",
                now=since,
            )

    def duplicate_row(self, stream: str, seq: int) -> None:
        """Copy a stored row, as a retry does on a table without the unique key (which
        this drops first; reconciliation must work on such tables, contract §4)."""
        ident = sql.Identifier(self.table.schema, self.table.name)
        with psycopg.connect(self.url, autocommit=True) as conn:
            names = conn.execute(
                "select conname from pg_constraint where conrelid = %s::regclass and contype = 'u'",
                (str(self.table),),
            ).fetchall()
            for (name,) in names:
                conn.execute(
                    sql.SQL("alter table {} drop constraint {}").format(ident, sql.Identifier(name))
                )
            conn.execute(
                sql.SQL("insert into {} select * from {} where stream = %s and seq = %s").format(
                    ident, ident
                ),
                (stream, seq),
            )


def stream_events(
    stream: str, event_type: str, count: int, *, start: dt.datetime = HOUR, first_seq: int = 1
) -> list[Event]:
    """``count`` valid events of one stream, a minute apart from ``start`` + 30 s."""
    return [
        make_event(
            stream,
            seq,
            event_type,
            start + dt.timedelta(seconds=30 + 60 * i),
            {"i": i, "note": "ok ✓", "nested": {"v": [1, 2.5, None]}},
        )
        for i, seq in enumerate(range(first_seq, first_seq + count))
    ]


def corrupted(event: Event) -> Event:
    """The same key and checksum with a different payload: the stored checksum no longer
    recomputes."""
    return replace(event, payload={**event.payload, "i": -1})


@pytest.fixture
def world(pg_url: str, pg_table: TableName, tmp_path: Path) -> World:
    return World(tmp_path / "home", pg_url, pg_table)


@pytest.fixture
def world_env(world: World, monkeypatch: pytest.MonkeyPatch) -> World:
    """The world's variables in the environment, as a code location would see them."""
    for key, value in world.env.items():
        monkeypatch.setenv(key, value)
    for key in (
        "SUPABASE_URL",
        "SUPABASE_SERVICE_ROLE_KEY",
        "SUPABASE_SECRET_KEY",
        "PARITY_WS_LOG_DIR",
        "PARITY_ALERT_WEBHOOK_URL",
        "DAGSTER_HOME",
    ):
        monkeypatch.delenv(key, raising=False)
    return world


@pytest.fixture(autouse=True)
def fresh_dagster_instance_context():
    """Dagster keeps the current instance's defs-state storage in a context variable that
    can outlive a test's instance; loading definitions later then touches a disposed
    instance. Each test runs inside a test instance of its own.

    Collected first: an instance context an earlier test left to the garbage collector
    (a cycle holding an entered instance) resets that variable, when it is finally closed,
    to what it was when it was entered, a long-gone instance. Closed now, it cannot do so
    in the middle of this test (the likely way "Attempted to resolve undefined
    DagsterInstance weakref" came once in CI)."""
    import gc

    import dagster as dg

    gc.collect()
    with dg.instance_for_test():
        yield


class Receiver(http.server.BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["content-length"]))
        Receiver.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def alerts_to(world_env: World, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict]]:
    """A real HTTP receiver, configured as the Apprise json:// target."""
    Receiver.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("PARITY_ALERT_URLS", f"json://127.0.0.1:{server.server_address[1]}/a")
    yield Receiver.received
    server.shutdown()
    server.server_close()

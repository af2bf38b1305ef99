"""Rows the store refuses do not block a repair: on the embedded PostgreSQL and through the
real PostgREST, a backfill writes every other missing event, reports each refused key with
the store's reason, and a re-run tries the refused keys once more and ends.

The refusals are the shapes of one fault: a value the store cannot hold (``\\u0000`` in a
payload value, a payload key, a nested array, a stream name, an event type), a value over a
column's limit, and values violating the user's own constraints (a stream longer than the
table allows, a payload over a size check). Lone surrogates cannot reach the store: an event
holding one has no RFC 8785 form, so its checksum is invalid and the plan reports it."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pytest
from psycopg import sql

from parity.core import backfill_plan
from parity.core.classify import load_rules
from parity.core.config import TableName
from parity.core.errors import StoreRefusedError
from parity.core.events import Event, make_event
from parity.core.routing import CRITICAL_EVENTS_SUPABASE, FlagTimeline
from parity.io import backfill as bf
from parity.io.store import EventStore
from parity.io.store_pg import PostgresStore
from parity.io.wslog import read_window
from tests.io.stores import CountingStore

pytestmark = pytest.mark.integration

H = dt.datetime(2026, 11, 28, 10, tzinfo=dt.UTC)
END = H + dt.timedelta(hours=1)
PARTITION = "2026-11-28-10:00"
TIMELINE = FlagTimeline.constant({CRITICAL_EVENTS_SUPABASE: True})
FAST = {"sleep": lambda s: None}
NUL = re.compile(r"\\u0000|0x00|Unicode escape", re.IGNORECASE)

#: name -> (stream, event_type, payload, what the store's reason must say)
BAD: dict[str, tuple[str, str, dict[str, Any], re.Pattern[str]]] = {
    "nul_in_value": ("bad", "system.health", {"note": "a\u0000b"}, NUL),
    "nul_in_key": ("bad", "system.health", {"k\u0000": 1}, NUL),
    "nul_nested": ("bad", "system.health", {"a": {"b": ["x", "\u0000"]}}, NUL),
    "nul_in_stream": ("bad\u0000s", "system.health", {"a": 1}, NUL),
    "nul_in_event_type": ("bad", "system.he\u0000alth", {"a": 1}, NUL),
    "event_type_over_column_limit": (
        "bad",
        "system.health." + "x" * 60,
        {"a": 1},
        re.compile("too long", re.IGNORECASE),
    ),
    "stream_over_table_check": ("s" * 100, "system.health", {"a": 1}, re.compile("stream_len")),
    "payload_over_size_check": (
        "bad",
        "system.health",
        {"blob": "x" * 20_000},
        re.compile("payload_size"),
    ),
}


def _constrain(conn: psycopg.Connection[Any], table: TableName) -> None:
    """The user's table is stricter than Parity's migration (it may be: contract §4)."""
    ident = sql.Identifier(table.schema, table.name)
    conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN event_type TYPE varchar(40)").format(ident))
    conn.execute(
        sql.SQL(
            "ALTER TABLE {} ADD CONSTRAINT stream_len CHECK (char_length(stream) <= 64)"
        ).format(ident)
    )
    conn.execute(
        sql.SQL(
            "ALTER TABLE {} ADD CONSTRAINT payload_size CHECK (pg_column_size(payload) <= 8192)"
        ).format(ident)
    )


@pytest.fixture(scope="module")
def table(pg_url: str) -> Iterator[TableName]:
    from parity.io.migrate import migrate

    name = TableName(f"r_{uuid.uuid4().hex[:10]}", "monitoring_events")
    migrate(pg_url, name)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        _constrain(conn, name)
    yield name
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name.schema)))


@pytest.fixture(scope="module")
def rest_api(pg_url: str, table: TableName, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.restharness import start_supabase_rest

    workdir = tmp_path_factory.mktemp("postgrest")
    with start_supabase_rest(pg_url, workdir=workdir, schemas=(table.schema,)) as api:
        yield api


@pytest.fixture(params=["postgres", "rest"])
def store(request: pytest.FixtureRequest, pg_url: str, table: TableName) -> Iterator[Any]:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(table.schema, table.name)))
    if request.param == "postgres":
        inner: EventStore = PostgresStore(pg_url, table)
    else:
        from parity.io.store_rest import RestStore

        api = request.getfixturevalue("rest_api")
        inner = RestStore(api.url, api.service_role_key, table, timeout_s=30.0)
    counting = CountingStore(inner)
    yield counting
    counting.close()


def _log(tmp_path: Path) -> tuple[pa.Table, list[Event], dict[str, Event]]:
    """40 good events of stream ``good`` with the bad ones spread between them."""
    good = [
        make_event("good", seq, "system.health", H + dt.timedelta(seconds=seq), {"seq": seq})
        for seq in range(1, 41)
    ]
    bad = {
        name: make_event(stream, 100 + i, etype, H + dt.timedelta(seconds=100 + i), payload)
        for i, (name, (stream, etype, payload, _)) in enumerate(BAD.items())
    }
    lines = []
    for i, event in enumerate(good):
        lines.append(event)
        if i % 5 == 2 and i // 5 < len(bad):
            lines.append(list(bad.values())[i // 5])
    log_dir = tmp_path / "ws-log" / "2026-11-28"
    log_dir.mkdir(parents=True)
    text = "".join(json.dumps(e.to_json_dict(), ensure_ascii=True) + "\n" for e in lines)
    (log_dir / "10.jsonl").write_text(text)
    ws = read_window(tmp_path / "ws-log", H, END, classifier=load_rules()).events
    assert ws.num_rows == len(good) + len(bad)  # every shape is a valid event of the log
    return ws, good, bad


def _run(ws: pa.Table, store: Any) -> bf.BackfillResult:
    options = bf.BackfillOptions(batch_size=8, all_missing=True, **FAST)
    return bf.backfill(ws, store, partition=PARTITION, timeline=TIMELINE, options=options)


def _stored(store: Any) -> dict[tuple[str, int], int]:
    counts: dict[tuple[str, int], int] = {}
    for row in store.snapshot(H, END).select(["stream", "seq"]).to_pylist():
        key = (row["stream"], row["seq"])
        counts[key] = counts.get(key, 0) + 1
    return counts


def test_refused_rows_are_isolated_reported_and_the_rest_written(
    tmp_path: Path, store: CountingStore
) -> None:
    ws, good, bad = _log(tmp_path)
    result = _run(ws, store)

    stored = _stored(store)
    assert stored == {(e.stream, e.seq): 1 for e in good}  # all the rest, once each
    assert result.written == len(good) and result.skipped_existing == 0
    assert result.refused == len(bad) and not result.complete
    by_key = {(r.stream, r.seq): r for r in result.refused_sample}
    assert set(by_key) == {(e.stream, e.seq) for e in bad.values()}
    for name, event in bad.items():
        reason = by_key[(event.stream, event.seq)].reason
        assert BAD[name][3].search(reason), f"{name}: {reason}"
    doc = result.to_dict()
    assert {(r["stream"], r["seq"]) for r in doc["refused_sample"]} == set(by_key)
    assert all(r["reason"] for r in doc["refused_sample"])
    sent = set(
        zip(*(result.sent_keys.column(c).to_pylist() for c in ("stream", "seq")), strict=True)
    )
    assert sent == {(e.stream, e.seq) for e in good}  # the ledger never claims a refused key
    # Halving: each bad row costs about 2*log2(batch) inserts, not one per row of the hour.
    assert store.inserts <= 6 + len(bad) * 2 * 3 + 1

    store.inserts = 0
    again = _run(ws, store)
    assert (again.planned, again.written, again.refused) == (len(bad), 0, len(bad))
    assert again.already_present == len(good)
    assert _stored(store) == stored
    assert store.inserts <= 2 * len(bad)  # tried once more each, then the run ends


def test_a_lone_surrogate_never_reaches_the_store(tmp_path: Path) -> None:
    log_dir = tmp_path / "ws-log" / "2026-11-28"
    log_dir.mkdir(parents=True)
    event = make_event("s", 1, "system.health", H, {"ok": 1}).to_json_dict()
    event["payload"] = {"s": "\ud800"}
    (log_dir / "10.jsonl").write_text(json.dumps(event, ensure_ascii=True) + "\n")
    read = read_window(tmp_path / "ws-log", H, END, classifier=load_rules())
    assert read.events.num_rows == 0
    assert read.quarantined.column("source_line").to_pylist() == [1]  # kept, reported
    plan = backfill_plan.plan_backfill(read.events, read.events.slice(0, 0), timeline=TIMELINE)
    assert plan.rows.num_rows == 0


def test_the_rest_store_refuses_a_body_it_cannot_encode(store: CountingStore) -> None:
    """A lone surrogate handed straight to a store is a refusal on either transport, never
    an unhandled encoding error."""
    rows = pa.table(
        {
            "stream": ["s"],
            "seq": [1],
            "event_type": ["system.health"],
            "category": ["CRITICAL"],
            "emitted_at": pa.array([H], pa.timestamp("us", "UTC")),
            "payload": ['{"s": "\\ud800"}'],
            "checksum": ["0" * 64],
        }
    )
    with pytest.raises(StoreRefusedError) as caught:
        store.insert_events(rows)
    assert caught.value.reason


def test_a_gateway_body_limit_refuses_only_the_rows_over_it(
    tmp_path: Path, pg_url: str, table: TableName, rest_api: Any
) -> None:
    """Supabase's gateway answers 413 to a request body over its limit: batches are split
    until they fit, and only an event too large on its own is refused."""
    from parity.io.store_rest import RestStore

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(table.schema, table.name)))
    good = [
        make_event("good", seq, "system.health", H + dt.timedelta(seconds=seq), {"seq": seq})
        for seq in range(1, 25)
    ]
    large = make_event("good", 25, "system.health", H + dt.timedelta(seconds=25), {"b": "x" * 6000})
    log_dir = tmp_path / "ws-log" / "2026-11-28"
    log_dir.mkdir(parents=True)
    text = "".join(json.dumps(e.to_json_dict()) + "\n" for e in [*good[:12], large, *good[12:]])
    (log_dir / "10.jsonl").write_text(text)
    ws = read_window(tmp_path / "ws-log", H, END, classifier=load_rules()).events
    rest_api.proxy.max_body_bytes = 4000
    try:
        with RestStore(rest_api.url, rest_api.service_role_key, table, timeout_s=30.0) as rest:
            result = _run(ws, rest)
            stored = _stored(rest)
    finally:
        rest_api.proxy.max_body_bytes = None
    assert stored == {(e.stream, e.seq): 1 for e in good}
    assert result.written == len(good)
    assert [(r.stream, r.seq, r.code) for r in result.refused_sample] == [("good", 25, "413")]

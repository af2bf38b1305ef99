"""The backfill library on the embedded PostgreSQL (and through PostgREST): missing events
written once, conflicts and corrupted events reported and left alone, the cohort respected,
interruptions and concurrent runs leaving no duplicates."""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pyarrow as pa
import pytest
from psycopg import sql

from parity.core import backfill_plan
from parity.core.classify import load_rules
from parity.core.config import TableName
from parity.core.errors import CredentialsRefusedError, StoreConnectionError
from parity.core.events import Event, make_event
from parity.core.reconcile import reconcile
from parity.core.routing import CRITICAL_EVENTS_SUPABASE, FlagTimeline
from parity.core.schema import STORE_SCHEMA
from parity.io import backfill as bf
from parity.io.snapshot import SnapshotFile
from parity.io.store import EventStore, with_derived_columns
from parity.io.store_pg import PostgresStore
from parity.io.wslog import read_window, write_events
from tests.io.stores import FailingStore

H = dt.datetime(2026, 11, 28, 10, tzinfo=dt.UTC)
END = H + dt.timedelta(hours=1)
PARTITION = "2026-11-28-10:00"
CRITICAL_ON = FlagTimeline.constant({CRITICAL_EVENTS_SUPABASE: True})
FAST = {"sleep": lambda s: None}


def events(stream: str, event_type: str, count: int) -> list[Event]:
    return [
        make_event(stream, seq, event_type, H + dt.timedelta(seconds=seq * 7), {"seq": seq})
        for seq in range(1, count + 1)
    ]


def corrupted(event: Event) -> Event:
    """Same key and checksum, other payload: the checksum no longer recomputes."""
    return replace(event, payload={"tampered": True})


def rival(event: Event) -> Event:
    """A valid event with the same key and different content."""
    return make_event(event.stream, event.seq, event.event_type, event.emitted_at, {"other": 1})


def to_rows(evs: list[Event]) -> pa.Table:
    return pa.table(
        {
            "stream": [e.stream for e in evs],
            "seq": [e.seq for e in evs],
            "event_type": [e.event_type for e in evs],
            "category": [e.category for e in evs],
            "emitted_at": [e.emitted_at for e in evs],
            "received_at": [e.emitted_at + dt.timedelta(milliseconds=40) for e in evs],
            "payload": [orjson.dumps(e.payload).decode() for e in evs],
            "checksum": [e.checksum for e in evs],
        },
        schema=STORE_SCHEMA,
    )


def log_snapshot(tmp_path: Path, evs: list[Event]) -> pa.Table:
    log_dir = tmp_path / "ws-log"
    log_dir.mkdir(parents=True, exist_ok=True)
    write_events(log_dir, evs)
    return read_window(log_dir, H, END, classifier=load_rules()).events


def rows_by_key(store: EventStore) -> dict[tuple[str, int], list[dict[str, Any]]]:
    out: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in store.snapshot(H, END).to_pylist():
        out.setdefault((row["stream"], row["seq"]), []).append(row)
    return out


def missing_after(ws: pa.Table, store: EventStore, timeline: FlagTimeline = CRITICAL_ON):
    sb = with_derived_columns(store.snapshot(H, END), load_rules())
    result = reconcile(
        ws, sb, timeline=timeline, window_start=H, window_end=END, partition=PARTITION
    )
    return result.to_report()


@pytest.fixture
def store(pg_url: str, pg_table: TableName) -> PostgresStore:
    return PostgresStore(pg_url, pg_table)


def drop_unique_key(url: str, table: TableName) -> None:
    ident = sql.Identifier(table.schema, table.name)
    with psycopg.connect(url, autocommit=True) as conn:
        names = conn.execute(
            "select conname from pg_constraint where conrelid = %s::regclass and contype = 'u'",
            (str(table),),
        ).fetchall()
        for (name,) in names:
            conn.execute(
                sql.SQL("alter table {} drop constraint {}").format(ident, sql.Identifier(name))
            )


# -- the main scenario ---------------------------------------------------------------------


def faulty_partition(tmp_path: Path, store: EventStore) -> tuple[pa.Table, list[Event]]:
    """health 1-20 (CRITICAL, expected). Supabase lacks 3, 4, 5, 6, 8, 9, 10 and holds a
    rival of 7. The log has 8 only corrupted, 9 in two valid versions, 10 corrupted and
    valid."""
    health = events("health", "system.health", 20)
    by_seq = {e.seq: e for e in health}
    log = [e for e in health if e.seq not in (8, 9, 10)]
    log += [corrupted(by_seq[8]), by_seq[9], rival(by_seq[9]), corrupted(by_seq[10]), by_seq[10]]
    ws = log_snapshot(tmp_path, log)
    present = [e for e in health if e.seq not in (3, 4, 5, 6, 7, 8, 9, 10)] + [rival(by_seq[7])]
    assert store.insert_events(to_rows(present)) == 13
    return ws, health


def check_faulty_partition(ws: pa.Table, store: EventStore, health: list[Event]) -> None:
    by_seq = {e.seq: e for e in health}
    report = missing_after(ws, store)
    keys = report["missing_keys"]
    assert keys == [["health", s] for s in (3, 4, 5, 6, 8, 9, 10)]
    # The report is stale by the time the backfill runs: another writer stored 6 differently.
    store.insert_events(to_rows([rival(by_seq[6])]))
    before = rows_by_key(store)

    result = bf.backfill(
        ws,
        store,
        partition=PARTITION,
        timeline=CRITICAL_ON,
        keys=keys,
        options=bf.BackfillOptions(batch_size=2, **FAST),
    )

    assert (result.planned, result.written, result.skipped_existing) == (4, 4, 0)
    assert result.batches == 2 and result.complete
    assert result.already_present == 0
    assert result.conflicts == 2
    assert {(c.stream, c.seq, c.reason) for c in result.conflict_sample} == {
        ("health", 6, backfill_plan.STORE_DIFFERS),
        ("health", 9, backfill_plan.LOG_COPIES_DIFFER),
    }
    six = next(c for c in result.conflict_sample if c.seq == 6)
    assert six.store_checksums == (rival(by_seq[6]).checksum,)
    assert six.log_checksums == (by_seq[6].checksum,)
    assert result.invalid == 1 and result.invalid_sample == (("health", 8),)
    assert result.skipped_outside_cohort == 0 and result.not_in_log == 0
    assert sorted(result.sent_keys.column("seq").to_pylist()) == [3, 4, 5, 10]

    after = rows_by_key(store)
    assert all(len(rows) == 1 for rows in after.values())
    for seq in (6, 7):  # conflicts are left exactly as they were
        assert after[("health", seq)] == before[("health", seq)]
    assert ("health", 8) not in after and ("health", 9) not in after
    assert after[("health", 10)][0]["checksum"] == by_seq[10].checksum  # the valid copy
    written = [after[("health", s)][0] for s in (3, 4, 5, 10)]
    # received_at is the store's now(), not the emission time (hence a large latency).
    now = dt.datetime.now(dt.UTC)
    assert all(abs(r["received_at"] - now) < dt.timedelta(minutes=5) for r in written)
    report = missing_after(ws, store)
    assert report["missing_keys"] == [["health", 8], ["health", 9]]  # nothing writable is left
    assert report["checksum_mismatch_keys"] == [["health", 6], ["health", 7]]

    again = bf.backfill(
        ws,
        store,
        partition=PARTITION,
        timeline=CRITICAL_ON,
        keys=keys,
        options=bf.BackfillOptions(),
    )
    assert (again.planned, again.written, again.batches) == (0, 0, 0)
    assert (again.already_present, again.conflicts, again.invalid) == (4, 2, 1)
    assert rows_by_key(store) == after


def test_missing_conflicting_and_invalid_events(tmp_path: Path, store: PostgresStore) -> None:
    ws, health = faulty_partition(tmp_path, store)
    check_faulty_partition(ws, store, health)


def test_a_table_without_the_unique_key_gets_no_duplicates(
    tmp_path: Path, store: PostgresStore, pg_url: str, pg_table: TableName
) -> None:
    drop_unique_key(pg_url, pg_table)
    ws, health = faulty_partition(tmp_path, store)
    check_faulty_partition(ws, store, health)


# -- the cohort and dry runs ---------------------------------------------------------------


def test_only_the_cohort_is_written_unless_all_missing(
    tmp_path: Path, store: PostgresStore
) -> None:
    health = events("health", "system.health", 5)  # CRITICAL: in the cohort
    sessions = events("sess-a", "session.started", 4)  # INFORMATIONAL at 0%: not
    ws = log_snapshot(tmp_path, health + sessions)
    store.insert_events(to_rows(health[:2] + sessions[:1]))

    dry = bf.backfill(
        ws,
        store,
        partition=PARTITION,
        timeline=CRITICAL_ON,
        options=bf.BackfillOptions(dry_run=True),
    )
    assert (dry.planned, dry.written, dry.batches) == (3, 0, 0)
    assert dry.skipped_outside_cohort == 3 and dry.already_present == 3
    assert len(rows_by_key(store)) == 3  # a dry run writes nothing

    cohort = bf.backfill(ws, store, partition=PARTITION, timeline=CRITICAL_ON)
    assert (cohort.written, cohort.skipped_outside_cohort) == (3, 3)
    assert set(rows_by_key(store)) == {e.key for e in health} | {("sess-a", 1)}

    everything = bf.backfill(
        ws,
        store,
        partition=PARTITION,
        timeline=CRITICAL_ON,
        options=bf.BackfillOptions(all_missing=True),
    )
    assert (everything.written, everything.skipped_outside_cohort) == (3, 0)
    assert set(rows_by_key(store)) == {e.key for e in health + sessions}


def test_the_cohort_is_judged_at_each_events_emitted_at(tmp_path: Path, store: PostgresStore):
    health = events("health", "system.health", 10)  # seq * 7 s after the hour
    switched_on = H + dt.timedelta(seconds=36)  # seq 6 onwards
    timeline = FlagTimeline.from_audit([(CRITICAL_EVENTS_SUPABASE, True, switched_on)])
    ws = log_snapshot(tmp_path, health)

    result = bf.backfill(ws, store, partition=PARTITION, timeline=timeline)

    assert (result.written, result.skipped_outside_cohort) == (5, 5)
    assert sorted(s for _, s in rows_by_key(store)) == [6, 7, 8, 9, 10]


# -- interruptions, retries, concurrency ---------------------------------------------------


def test_an_interrupted_backfill_completes_on_rerun(tmp_path: Path, store: PostgresStore):
    health = events("health", "system.health", 25)
    ws = log_snapshot(tmp_path, health)
    sleeps: list[float] = []
    options = bf.BackfillOptions(batch_size=10, max_attempts=3, backoff_s=0.5, sleep=sleeps.append)

    with pytest.raises(bf.BackfillInterruptedError, match="run the backfill again") as caught:
        bf.backfill(
            ws,
            FailingStore(store, ok_batches=1),
            partition=PARTITION,
            timeline=CRITICAL_ON,
            options=options,
        )
    partial = caught.value.result
    assert (partial.planned, partial.written, partial.batches) == (25, 10, 1)
    assert not partial.complete
    assert sleeps == [0.5, 1.0]  # exponential backoff between the three attempts
    assert len(rows_by_key(store)) == 10

    rerun = bf.backfill(ws, store, partition=PARTITION, timeline=CRITICAL_ON, options=options)
    assert (rerun.planned, rerun.written, rerun.already_present) == (15, 15, 10)
    rows = rows_by_key(store)
    assert set(rows) == {e.key for e in health}
    assert all(len(copies) == 1 for copies in rows.values())


def test_a_transient_error_is_retried(tmp_path: Path, store: PostgresStore) -> None:
    ws = log_snapshot(tmp_path, events("health", "system.health", 12))
    flaky = FailingStore(store, ok_batches=1, failures=2)
    sleeps: list[float] = []

    result = bf.backfill(
        ws,
        flaky,
        partition=PARTITION,
        timeline=CRITICAL_ON,
        options=bf.BackfillOptions(batch_size=5, backoff_s=0.25, sleep=sleeps.append),
    )

    assert (result.written, result.batches, result.retries) == (12, 3, 2)
    assert sleeps == [0.25, 0.5]
    assert len(rows_by_key(store)) == 12


@pytest.mark.parametrize("unique_key", [True, False], ids=["unique", "no-unique-key"])
def test_two_backfills_at_once_write_each_event_once(
    tmp_path: Path, store: PostgresStore, pg_url: str, pg_table: TableName, unique_key: bool
) -> None:
    if not unique_key:
        drop_unique_key(pg_url, pg_table)
    health = events("health", "system.health", 300)
    ws = log_snapshot(tmp_path, health)
    barrier = threading.Barrier(2)
    results: list[bf.BackfillResult] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait(10)
            results.append(
                bf.backfill(
                    ws,
                    store,
                    partition=PARTITION,
                    timeline=CRITICAL_ON,
                    options=bf.BackfillOptions(batch_size=50),
                )
            )
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    assert errors == []
    assert sum(r.written for r in results) == 300
    assert all(r.complete for r in results)
    rows = rows_by_key(store)
    assert len(rows) == 300 and all(len(copies) == 1 for copies in rows.values())


# -- pure parts ----------------------------------------------------------------------------


def test_plan_on_an_empty_hour_and_keys_the_log_lacks(tmp_path: Path) -> None:
    ws = log_snapshot(tmp_path, [])
    plan = backfill_plan.plan_backfill(
        ws, STORE_SCHEMA.empty_table(), timeline=CRITICAL_ON, keys=[["ghost", 1]]
    )
    assert (plan.rows.num_rows, plan.candidates, plan.not_in_log) == (0, 0, 1)


def test_options_validate_and_back_off_exponentially() -> None:
    sleeps: list[float] = []
    options = bf.BackfillOptions(backoff_s=1.0, max_backoff_s=5.0, sleep=sleeps.append)
    with pytest.raises(StoreConnectionError):
        for attempt in options.retrying():
            with attempt:
                raise StoreConnectionError("down")
    assert sleeps == [1.0, 2.0, 4.0, 5.0]  # five attempts, capped backoff between them
    sleeps.clear()
    with pytest.raises(CredentialsRefusedError):
        for attempt in options.retrying():
            with attempt:
                raise CredentialsRefusedError("password refused")
    assert sleeps == []  # waiting does not correct a password: no retry
    with pytest.raises(Exception, match="batch size"):
        bf.BackfillOptions(batch_size=0)


# -- through the REST transport ------------------------------------------------------------


@pytest.mark.integration
def test_the_scenario_through_postgrest(
    tmp_path: Path, pg_url: str, pg_table: TableName, store: PostgresStore
) -> None:
    from parity.io.store_rest import RestStore
    from tests.restharness import start_supabase_rest

    workdir = tmp_path / "postgrest"
    with start_supabase_rest(pg_url, workdir=workdir, schemas=(pg_table.schema,)) as api:
        api.reload_schema(wait_for=[(pg_table.schema, pg_table.name)])
        with RestStore(api.url, api.service_role_key, pg_table, timeout_s=30.0) as rest:
            ws, health = faulty_partition(tmp_path, rest)
            check_faulty_partition(ws, rest, health)

            # Interrupted after the first batch, then completed: no duplicates.
            more = [
                make_event("errors", s, "error.raised", H + dt.timedelta(seconds=s), {"s": s})
                for s in range(1, 8)
            ]
            ws2 = log_snapshot(tmp_path / "second", more)
            options = bf.BackfillOptions(batch_size=3, max_attempts=1)
            with pytest.raises(bf.BackfillInterruptedError):
                bf.backfill(
                    ws2,
                    FailingStore(rest, ok_batches=1),
                    partition=PARTITION,
                    timeline=CRITICAL_ON,
                    options=options,
                )
            rerun = bf.backfill(
                ws2, rest, partition=PARTITION, timeline=CRITICAL_ON, options=options
            )
            assert (rerun.written, rerun.already_present) == (4, 3)
    rows = rows_by_key(store)  # read back over SQL, independent of PostgREST
    assert {s for (st, s) in rows if st == "errors"} == set(range(1, 8))
    assert all(len(copies) == 1 for copies in rows.values())


def test_only_the_missing_keys_are_read_part_by_part(
    tmp_path: Path, store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a report's keys, the log snapshot is read part by part and only those keys'
    rows are kept (duplicates included); the store is read in batches, reduced to the
    keys the log has."""
    from parity.core.schema import WS_SNAPSHOT_SCHEMA
    from parity.io import snapshot
    from parity.io.wslog import SORT_KEYS

    health, errors = events("health", "system.health", 20), events("errors", "error.raised", 20)
    ws = log_snapshot(tmp_path, [*health, *errors, health[4]])  # health 5 logged twice
    snaps = tmp_path / "snapshots" / "ws_log_snapshot"
    with snapshot.SnapshotWriter(
        WS_SNAPSHOT_SCHEMA, SORT_KEYS, spill_dir=tmp_path / "spill", part_rows=10
    ) as writer:
        writer.write(ws)
        writer.finish(snaps / f"{PARTITION}.parquet")

    def never() -> pa.Table:
        raise AssertionError("the stored snapshot exists: the log is not read again")

    wanted = [["health", 5], ["errors", 20], ["nowhere", 1]]
    stored = SnapshotFile(snaps / f"{PARTITION}.parquet")
    got = bf.load_log_snapshot(stored, never, wanted)
    keys = sorted(zip(got.column("stream").to_pylist(), got.column("seq").to_pylist(), strict=True))
    assert keys == [("errors", 20), ("health", 5), ("health", 5)]
    assert got.schema == ws.schema
    whole = bf.load_log_snapshot(stored, never)
    assert whole.num_rows == ws.num_rows
    # No stored snapshot: the log read afresh, filtered the same way.
    fresh = bf.load_log_snapshot(None, lambda: ws, wanted)
    assert fresh.num_rows == 3

    store.insert_events(to_rows([*health, *errors[:10]]))
    keyed = bf.store_keys(store, H, END, got)
    assert keyed.column_names == ["stream", "seq", "checksum"]
    assert sorted(
        zip(keyed.column("stream").to_pylist(), keyed.column("seq").to_pylist(), strict=True)
    ) == [("health", 5)]
    assert bf.store_keys(store, H, END, ws).num_rows == 30

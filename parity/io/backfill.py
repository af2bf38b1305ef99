"""Backfill of missed events: re-send to Supabase what the WebSocket log has and Supabase
should have but does not, without ever overwriting a row.

The work is split in two so the decision is testable without a database:

- :func:`plan_backfill` (pure): the hour's log snapshot (``WS_SNAPSHOT_SCHEMA``) against a
  fresh snapshot of the store, key by key. A key the store has with a log copy's checksum
  is *already present*; with other checksums only it is a *conflict* (the store's row is
  left as it is). An absent key is written only when it is in scope (expected in Supabase
  by the cohort rules of contract §5 at its ``emitted_at``, or any key with ``all_missing``),
  has a log copy whose checksum is valid (otherwise *invalid*), and its valid copies agree
  (otherwise a conflict too: the log cannot say which one is true).
- :func:`backfill`: snapshots the window again right before writing (the report that named
  the missing keys may be stale), plans, and inserts in batches through
  :meth:`EventStore.insert_events`, which skips keys that exist (``on conflict (stream,
  seq) do nothing`` on PostgreSQL, or ``not exists`` under an advisory lock on a table
  without the unique key; an ``ignore_duplicates`` upsert over REST). Re-running writes
  nothing; two backfills at once write each key once. A connection error is retried with
  exponential backoff; when retries run out, :class:`BackfillInterruptedError` carries what
  was written, and a re-run completes the rest.

Refused rows. A store can refuse a row for what it holds (PostgreSQL's jsonb has no
``\u0000``, a constraint of the user's table, a value over a column's limit): the store raises
:class:`StoreRefusedError` for the batch, and the same batch would fail on every run, taking
the hour's other missing events with it. So a refused batch is split in halves and each half
written again, down to single rows: the rows the store accepts are written, the ones it
refuses are reported (``refused``, with the store's reason per key) and left for a person.
Halving rather than going row by row keeps a batch with one bad row to about 2·log2(batch)
inserts instead of one per row. A refusal is never retried within a run (it is not
transient); a re-run tries the refused keys once more, writes nothing else twice and ends.

Latency. Backfilled rows take ``received_at = now()`` (the column default): they did reach
Supabase only now, so a reconciliation after the backfill shows their latency as the time
since emission. :func:`write_ledger` keeps, per partition, the keys a backfill sent and
when, so latency figures can leave them out (see :func:`write_ledger`).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from parity.core import partitions
from parity.core.errors import (
    ConfigurationError,
    ReportNotFoundError,
    StoreConnectionError,
    StoreError,
    StoreRefusedError,
)
from parity.core.layout import Layout
from parity.core.routing import FlagTimeline, expected_in_supabase
from parity.io.files import write_json_atomic
from parity.io.reports import load_report
from parity.io.snapshot import SnapshotFile
from parity.io.store import EventStore

KEY = ["stream", "seq"]
#: Columns a backfilled row carries; ``received_at`` is left to the store's default, now().
INSERT_COLUMNS = ("stream", "seq", "event_type", "category", "emitted_at", "payload", "checksum")
#: Why a key was not written although the store lacks it or holds something else.
STORE_DIFFERS = "store_differs"
LOG_COPIES_DIFFER = "log_copies_differ"
_KEYS_SCHEMA = pa.schema([pa.field("stream", pa.string()), pa.field("seq", pa.int64())])


class BackfillInterruptedError(StoreError):
    """A batch could not be written (retries exhausted, or a non-transient error). The
    batches before it stay written; running the backfill again completes the rest."""

    def __init__(self, message: str, result: BackfillResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class BackfillOptions:
    dry_run: bool = False
    #: Write every missing log event, not only those the cohort expected in Supabase.
    all_missing: bool = False
    batch_size: int = 1000
    #: Attempts per batch on StoreConnectionError (1 = no retry).
    max_attempts: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    sample_limit: int = 50
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigurationError(f"batch size must be at least 1, got {self.batch_size}")
        if self.max_attempts < 1:
            raise ConfigurationError(f"max_attempts must be at least 1, got {self.max_attempts}")

    def retrying(self) -> Retrying:
        """The retry policy of one batch: StoreConnectionError only, ``max_attempts`` in
        all, waiting ``backoff_s`` doubling up to ``max_backoff_s`` between them."""
        return Retrying(
            retry=retry_if_exception_type(StoreConnectionError),
            stop=stop_after_attempt(self.max_attempts),
            wait=wait_exponential(multiplier=self.backoff_s, max=self.max_backoff_s),
            sleep=self.sleep,
            reraise=True,
        )


@dataclass(frozen=True)
class Conflict:
    """A key not written: the store holds other content, or the log's valid copies
    disagree. Checksums are the distinct ones on each side."""

    stream: str
    seq: int
    reason: str
    log_checksums: tuple[str, ...]
    store_checksums: tuple[str, ...]


@dataclass(frozen=True)
class Refused:
    """A key the store refused to hold, with the store's reason (credentials redacted)."""

    stream: str
    seq: int
    reason: str
    code: str | None = None


@dataclass(frozen=True)
class BackfillPlan:
    """What a backfill of one window would do (see the module docstring for the rules)."""

    rows: pa.Table  # INSERT_COLUMNS, one row per key to write, in (stream, seq) order
    candidates: int  # distinct log keys considered
    already_present: int
    conflicts: int
    conflict_sample: tuple[Conflict, ...]
    invalid: int
    invalid_sample: tuple[tuple[str, int], ...]
    skipped_outside_cohort: int
    not_in_log: int  # keys asked for that the log does not have


@dataclass(frozen=True)
class BackfillResult:
    """The outcome of a backfill of one partition.

    ``planned`` rows were selected for writing; ``written`` were inserted (0 in a dry run).
    ``skipped_existing`` were sent but the store already had the key at write time (a
    concurrent writer, or a row with that key outside the hour): the store kept its row.
    Backfilled rows have ``received_at = now()``, so they show a large latency.
    """

    partition: str
    dry_run: bool
    all_missing: bool
    candidates: int
    planned: int
    written: int
    skipped_existing: int
    already_present: int
    conflicts: int
    conflict_sample: tuple[Conflict, ...]
    invalid: int
    invalid_sample: tuple[tuple[str, int], ...]
    skipped_outside_cohort: int
    not_in_log: int
    batches: int
    retries: int
    duration_s: float
    started_at: dt.datetime
    sent_keys: pa.Table = field(repr=False)  # keys of the batches that went through
    #: Rows the store refused (see the module docstring); a sample of them with reasons.
    refused: int = 0
    refused_sample: tuple[Refused, ...] = ()

    @property
    def complete(self) -> bool:
        """Every planned row reached the store (written now or found there)."""
        return not self.dry_run and self.written + self.skipped_existing == self.planned

    def to_dict(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "dry_run": self.dry_run,
            "all_missing": self.all_missing,
            "candidates": self.candidates,
            "planned": self.planned,
            "written": self.written,
            "skipped_existing": self.skipped_existing,
            "already_present": self.already_present,
            "conflicts": self.conflicts,
            "conflict_sample": [
                {
                    "stream": c.stream,
                    "seq": c.seq,
                    "reason": c.reason,
                    "log_checksums": list(c.log_checksums),
                    "store_checksums": list(c.store_checksums),
                }
                for c in self.conflict_sample
            ],
            "invalid": self.invalid,
            "invalid_sample": [list(k) for k in self.invalid_sample],
            "skipped_outside_cohort": self.skipped_outside_cohort,
            "not_in_log": self.not_in_log,
            "refused": self.refused,
            "refused_sample": [
                {"stream": r.stream, "seq": r.seq, "reason": r.reason, "code": r.code}
                for r in self.refused_sample
            ],
            "batches": self.batches,
            "retries": self.retries,
            "duration_s": self.duration_s,
            "started_at": self.started_at.isoformat(),
        }


# -- planning ------------------------------------------------------------------------------


def keys_table(keys: Iterable[Sequence[Any]]) -> pa.Table:
    """``[stream, seq]`` pairs (a report's ``missing_keys``) as a distinct keys table."""
    pairs = [(str(k[0]), int(k[1])) for k in keys]
    table = pa.table(
        {"stream": [p[0] for p in pairs], "seq": [p[1] for p in pairs]}, schema=_KEYS_SCHEMA
    )
    return table.group_by(KEY).aggregate([]) if table.num_rows else table


def _flag(keys: pa.Table, name: str) -> pa.Table:
    return keys.append_column(name, pa.array(np.ones(keys.num_rows, bool), pa.bool_()))


def _mark(left: pa.Table, right: pa.Table, name: str) -> pa.Table:
    """``left`` with a boolean column: whether its key is among ``right``'s keys."""
    right = _flag(right.select(KEY), name)
    joined = left.join(right, KEY, join_type="left outer")
    return joined.set_column(
        joined.schema.get_field_index(name), name, pc.fill_null(joined.column(name), False)
    )


def plan_backfill(
    ws: pa.Table,
    store_rows: pa.Table,
    *,
    timeline: FlagTimeline,
    keys: Iterable[Sequence[Any]] | None = None,
    all_missing: bool = False,
    sample_limit: int = 50,
) -> BackfillPlan:
    """Decide, key by key, what a backfill writes (pure; see the module docstring).

    ``ws`` is the hour's log snapshot, ``store_rows`` the store's rows of the same hour
    (``stream``, ``seq``, ``checksum`` are read). ``keys`` limits the backfill to those
    keys (a report's ``missing_keys``); None considers every key of the log.
    """
    n = ws.num_rows
    log = pa.table(
        {
            "stream": ws.column("stream"),
            "seq": pc.cast(ws.column("seq"), pa.int64()),
            "checksum": ws.column("checksum"),
            "valid": pc.fill_null(ws.column("checksum_valid"), False),
            "expected": expected_in_supabase(ws, timeline) if n else pa.array([], pa.bool_()),
            "row": pa.array(np.arange(n, dtype=np.int64)),
        }
    )
    not_in_log = 0
    if keys is not None:
        wanted = keys_table(keys)
        log = log.join(wanted, KEY, join_type="left semi")
        not_in_log = wanted.join(log.select(KEY), KEY, join_type="left anti").num_rows

    per_key = log.group_by(KEY).aggregate([("expected", "any"), ("valid", "any")])
    valid_log = log.filter(log.column("valid"))
    per_valid = valid_log.group_by(KEY).aggregate([("checksum", "count_distinct"), ("row", "min")])
    per_key = per_key.join(per_valid, KEY, join_type="left outer")

    store = store_rows.select(["stream", "seq", "checksum"])
    store = store.set_column(1, "seq", pc.cast(store.column("seq"), pa.int64()))
    matched = log.select(["stream", "seq", "checksum"]).join(
        store, ["stream", "seq", "checksum"], join_type="left semi"
    )
    per_key = _mark(per_key, store.group_by(KEY).aggregate([]), "present")
    per_key = _mark(per_key, matched.group_by(KEY).aggregate([]), "matched")
    per_key = per_key.sort_by([("stream", "ascending"), ("seq", "ascending")])

    def col(name: str, fill: Any) -> np.ndarray:
        return pc.fill_null(per_key.column(name), fill).to_numpy(zero_copy_only=False)

    present, matched_k = col("present", False), col("matched", False)
    expected, has_valid = col("expected_any", False), col("valid_any", False)
    distinct_valid, first_valid = col("checksum_count_distinct", 0), col("row_min", -1)

    already = present & matched_k
    store_conflict = present & ~matched_k
    absent = ~present
    outside = absent & ~expected & (not all_missing)
    in_scope = absent & ~outside
    invalid = in_scope & ~has_valid
    log_conflict = in_scope & has_valid & (distinct_valid > 1)
    write = in_scope & has_valid & (distinct_valid == 1)

    rows = ws.take(pa.array(first_valid[write], pa.int64())).select(list(INSERT_COLUMNS))
    streams, seqs = per_key.column("stream"), per_key.column("seq")

    def sample(mask: np.ndarray) -> list[tuple[str, int]]:
        at = np.flatnonzero(mask)[:sample_limit]
        return list(zip(streams.take(at).to_pylist(), seqs.take(at).to_pylist(), strict=True))

    conflict_keys = sample(store_conflict | log_conflict)
    reasons = dict.fromkeys(sample(log_conflict), LOG_COPIES_DIFFER)
    return BackfillPlan(
        rows=rows,
        candidates=per_key.num_rows,
        already_present=int(already.sum()),
        conflicts=int(store_conflict.sum() + log_conflict.sum()),
        conflict_sample=_conflicts(conflict_keys, reasons, log, store),
        invalid=int(invalid.sum()),
        invalid_sample=tuple(sample(invalid)),
        skipped_outside_cohort=int(outside.sum()),
        not_in_log=not_in_log,
    )


def _conflicts(
    keys: list[tuple[str, int]], reasons: dict[tuple[str, int], str], log: pa.Table, store: pa.Table
) -> tuple[Conflict, ...]:
    if not keys:
        return ()
    wanted = keys_table(keys)

    def checksums(table: pa.Table) -> dict[tuple[str, int], list[str]]:
        out: dict[tuple[str, int], list[str]] = {}
        rows = table.select(["stream", "seq", "checksum"]).join(wanted, KEY, join_type="left semi")
        for row in rows.to_pylist():
            values = out.setdefault((row["stream"], row["seq"]), [])
            if row["checksum"] not in values:
                values.append(row["checksum"])
        return out

    on_log, on_store = checksums(log.filter(log.column("valid"))), checksums(store)
    return tuple(
        Conflict(
            key[0],
            key[1],
            reasons.get(key, STORE_DIFFERS),
            tuple(sorted(str(c) for c in on_log.get(key, []))),
            tuple(sorted(str(c) for c in on_store.get(key, []))),
        )
        for key in keys
    )


# -- writing -------------------------------------------------------------------------------


def _insert_with_retries(
    store: EventStore, batch: pa.Table, options: BackfillOptions
) -> tuple[int, int]:
    """Rows written and retries used. Re-sending a batch is safe: inserts skip keys that
    exist, so a batch committed before its acknowledgement was lost writes 0 the second
    time (``written`` then under-counts; ``skipped_existing`` holds the rest)."""
    for attempt in options.retrying():
        with attempt:
            written = store.insert_events(batch)
    return written, attempt.retry_state.attempt_number - 1


def _insert_isolating(
    store: EventStore, batch: pa.Table, options: BackfillOptions, refused: list[Refused]
) -> tuple[int, int]:
    """:func:`_insert_with_retries`, halving a batch the store refuses until the refused
    rows stand alone; those are appended to ``refused``. Rows written and retries used."""
    try:
        return _insert_with_retries(store, batch, options)
    except StoreRefusedError as exc:
        if batch.num_rows == 1:
            row = batch.select(KEY).to_pylist()[0]
            refused.append(Refused(str(row["stream"]), int(row["seq"]), exc.reason, exc.code))
            return 0, 0
    half = batch.num_rows // 2
    written_a, retries_a = _insert_isolating(store, batch.slice(0, half), options, refused)
    written_b, retries_b = _insert_isolating(store, batch.slice(half), options, refused)
    return written_a + written_b, retries_a + retries_b


def backfill(
    ws: pa.Table,
    store: EventStore,
    *,
    partition: str,
    timeline: FlagTimeline,
    keys: Iterable[Sequence[Any]] | None = None,
    options: BackfillOptions | None = None,
    window: tuple[dt.datetime, dt.datetime] | None = None,
    now: Callable[[], dt.datetime] | None = None,
) -> BackfillResult:
    """Write the partition's missed events (see the module docstring).

    ``ws`` is the partition's log snapshot; ``keys`` the keys to consider (a report's
    ``missing_keys``) or None for every log key; ``window`` defaults to the partition's
    hour. Raises :class:`BackfillInterruptedError` when a batch cannot be written.
    """
    options = options or BackfillOptions()
    start, end = window or partitions.window(partition)
    started_at = (now or (lambda: dt.datetime.now(dt.UTC)))()
    began = time.perf_counter()
    # Re-check against the store now, not against the report: it may be stale.
    plan = plan_backfill(
        ws,
        store_keys(store, start, end, ws),
        timeline=timeline,
        keys=keys,
        all_missing=options.all_missing,
        sample_limit=options.sample_limit,
    )
    written = skipped = batches = retries = 0
    sent: list[pa.Table] = []
    refused: list[Refused] = []

    def result() -> BackfillResult:
        keys_sent = pa.concat_tables(sent) if sent else _KEYS_SCHEMA.empty_table()
        return BackfillResult(
            partition=partition,
            dry_run=options.dry_run,
            all_missing=options.all_missing,
            candidates=plan.candidates,
            planned=plan.rows.num_rows,
            written=written,
            skipped_existing=skipped,
            already_present=plan.already_present,
            conflicts=plan.conflicts,
            conflict_sample=plan.conflict_sample,
            invalid=plan.invalid,
            invalid_sample=plan.invalid_sample,
            skipped_outside_cohort=plan.skipped_outside_cohort,
            not_in_log=plan.not_in_log,
            batches=batches,
            retries=retries,
            duration_s=round(time.perf_counter() - began, 3),
            started_at=started_at,
            sent_keys=keys_sent,
            refused=len(refused),
            refused_sample=tuple(refused[: options.sample_limit]),
        )

    if options.dry_run:
        return result()
    for offset in range(0, plan.rows.num_rows, options.batch_size):
        batch = plan.rows.slice(offset, options.batch_size)
        refused_before = len(refused)
        try:
            n, used = _insert_isolating(store, batch, options, refused)
        except StoreError as exc:
            done = result()
            raise BackfillInterruptedError(
                f"backfill of {partition} into {store.table} stopped at batch {batches + 1} "
                f"after writing {written} of {plan.rows.num_rows} rows: {exc}. What was "
                "written stays; run the backfill again to complete the rest.",
                done,
            ) from exc
        refused_now = refused[refused_before:]
        written += n
        skipped += batch.num_rows - n - len(refused_now)
        retries += used
        batches += 1
        went = batch.select(KEY).cast(_KEYS_SCHEMA)
        if refused_now:
            refused_keys = keys_table((r.stream, r.seq) for r in refused_now)
            went = went.join(refused_keys, KEY, join_type="left anti")
        sent.append(went)
    return result()


# -- one partition from Parity's files -------------------------------------------------------


def load_log_snapshot(
    snapshot: SnapshotFile | None,
    read_log: Callable[[], pa.Table],
    keys: Iterable[Sequence[Any]] | None = None,
) -> pa.Table:
    """The partition's stored ``ws_log_snapshot`` (as the IO manager loads it), else the log
    read afresh. With ``keys`` (a report's missing keys), only the rows of those keys, read
    part by part: memory follows what is missing, not the hour."""
    if snapshot is None:
        table = read_log()
        return table if keys is None else _rows_of(table, keys_table(keys))
    if keys is None:
        return pq.read_table(snapshot.path)
    wanted = keys_table(keys)
    parts = [_rows_of(part, wanted) for part in snapshot.parts()]
    return pa.concat_tables(parts) if parts else pq.read_schema(snapshot.path).empty_table()


def store_keys(store: EventStore, start: dt.datetime, end: dt.datetime, ws: pa.Table) -> pa.Table:
    """The store's ``stream``, ``seq``, ``checksum`` in the window, batch by batch, only for
    keys the log snapshot ``ws`` has: all a plan reads of the store."""
    wanted = ws.select(KEY).group_by(KEY).aggregate([]) if ws.num_rows else None
    tables = []
    for rows in store.snapshot_batches(start, end):
        keyed = rows.select(["stream", "seq", "checksum"])
        tables.append(keyed if wanted is None else _rows_of(keyed, wanted))
    return pa.concat_tables(tables)


def _rows_of(table: pa.Table, wanted: pa.Table) -> pa.Table:
    """The rows of ``table`` whose (stream, seq) is in ``wanted``, in their order."""
    if not table.num_rows or not wanted.num_rows:
        return table.slice(0, 0)
    mask = pc.is_in(_key_text(table), value_set=_key_text(wanted))
    return table.filter(mask)


def _key_text(table: pa.Table) -> pa.Array:
    """(stream, seq) as one string (seq first: a stream may hold any character)."""
    seq = pc.cast(pc.cast(table.column("seq"), pa.int64()), pa.string())
    return pc.binary_join_element_wise(seq, table.column("stream"), "\x00").combine_chunks()


def report_keys(layout: Layout, partition: str, *, all_missing: bool) -> list[Any] | None:
    """The report's ``missing_keys`` (the backfill's input, contract §6); None (recompute)
    with ``all_missing`` — the report lists only keys the cohort expected — or when the
    hour has no report yet."""
    if all_missing:
        return None
    try:
        return list(load_report(layout, partition)["missing_keys"])
    except ReportNotFoundError:
        return None


def write_ledger(layout: Layout, result: BackfillResult) -> Path | None:
    """Append the backfill to the partition's ledger: when it ran and the keys it sent.
    Backfilled rows carry ``received_at = now()``; the ledger lets latency figures tell
    them from live deliveries. Nothing is kept for a dry run or when nothing was sent."""
    if result.dry_run or result.sent_keys.num_rows == 0:
        return None
    path = layout.ledger(result.partition)
    runs = json.loads(path.read_text("utf-8")) if path.exists() else []
    keys = result.sent_keys
    runs.append(
        {
            **result.to_dict(),
            "sent_keys": [
                [s, q]
                for s, q in zip(
                    keys.column("stream").to_pylist(), keys.column("seq").to_pylist(), strict=True
                )
            ],
        }
    )
    write_json_atomic(path, runs)
    return path


def backfilled_keys(layout: Layout, partition: str) -> pa.Table:
    """Every (stream, seq) a backfill has sent for the partition, from its ledger."""
    path = layout.ledger(partition)
    runs = json.loads(path.read_text("utf-8")) if path.exists() else []
    pairs = {(s, q) for run in runs for s, q in run.get("sent_keys", [])}
    ordered = sorted(pairs)
    return pa.table(
        {"stream": [s for s, _ in ordered], "seq": [q for _, q in ordered]},
        schema=pa.schema([("stream", pa.string()), ("seq", pa.int64())]),
    )

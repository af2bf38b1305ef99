"""Backfill of missed events: re-send to Supabase what the WebSocket log has and Supabase
should have but does not, without ever overwriting a row.

The work is split in two so the decision is testable without a database:

- :func:`parity.core.backfill_plan.plan_backfill` (pure): what to write, key by key, and
  why the rest is not written.
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
since emission. The partition's ledger (:mod:`parity.io.backfill_ledger`) keeps the keys a
backfill sent and when, so latency figures can leave them out.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tenacity import (
    Retrying,
    retry_if_exception_type,
    retry_if_not_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from parity.core import partitions
from parity.core.backfill_plan import (
    KEY,
    KEYS_SCHEMA,
    BackfillPlan,
    Conflict,
    keys_table,
    plan_backfill,
)
from parity.core.errors import (
    ConfigurationError,
    CredentialsRefusedError,
    StoreConnectionError,
    StoreError,
    StoreRefusedError,
)
from parity.core.routing import FlagTimeline
from parity.io.snapshot import SnapshotFile
from parity.io.store import EventStore


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
        """The retry policy of one batch: StoreConnectionError only (not refused
        credentials: waiting does not correct a password), ``max_attempts`` in all, waiting
        ``backoff_s`` doubling up to ``max_backoff_s`` between them."""
        return Retrying(
            retry=retry_if_exception_type(StoreConnectionError)
            & retry_if_not_exception_type(CredentialsRefusedError),
            stop=stop_after_attempt(self.max_attempts),
            wait=wait_exponential(multiplier=self.backoff_s, max=self.max_backoff_s),
            sleep=self.sleep,
            reraise=True,
        )


@dataclass(frozen=True)
class Refused:
    """A key the store refused to hold, with the store's reason (credentials redacted)."""

    stream: str
    seq: int
    reason: str
    code: str | None = None


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
    progress = _Progress(partition, options, plan, started_at, began)
    if options.dry_run:
        return progress.result()
    for offset in range(0, plan.rows.num_rows, options.batch_size):
        batch = plan.rows.slice(offset, options.batch_size)
        refused_before = len(progress.refused)
        try:
            n, used = _insert_isolating(store, batch, options, progress.refused)
        except StoreError as exc:
            raise BackfillInterruptedError(
                f"backfill of {partition} into {store.table} stopped at batch "
                f"{progress.batches + 1} after writing {progress.written} of "
                f"{plan.rows.num_rows} rows: {exc}. What was written stays; run the backfill "
                "again to complete the rest.",
                progress.result(),
            ) from exc
        progress.add(batch, n, used, progress.refused[refused_before:])
    return progress.result()


@dataclass
class _Progress:
    """What the batches of one backfill did so far, and the result it makes."""

    partition: str
    options: BackfillOptions
    plan: BackfillPlan
    started_at: dt.datetime
    began: float
    written: int = 0
    skipped: int = 0
    batches: int = 0
    retries: int = 0
    sent: list[pa.Table] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)

    def add(self, batch: pa.Table, written: int, retries: int, refused: list[Refused]) -> None:
        """A batch went through: ``written`` rows new, the refused ones left out."""
        self.written += written
        self.skipped += batch.num_rows - written - len(refused)
        self.retries += retries
        self.batches += 1
        went = batch.select(KEY).cast(KEYS_SCHEMA)
        if refused:
            refused_keys = keys_table((r.stream, r.seq) for r in refused)
            went = went.join(refused_keys, KEY, join_type="left anti")
        self.sent.append(went)

    def result(self) -> BackfillResult:
        plan, options = self.plan, self.options
        return BackfillResult(
            partition=self.partition,
            dry_run=options.dry_run,
            all_missing=options.all_missing,
            candidates=plan.candidates,
            planned=plan.rows.num_rows,
            written=self.written,
            skipped_existing=self.skipped,
            already_present=plan.already_present,
            conflicts=plan.conflicts,
            conflict_sample=plan.conflict_sample,
            invalid=plan.invalid,
            invalid_sample=plan.invalid_sample,
            skipped_outside_cohort=plan.skipped_outside_cohort,
            not_in_log=plan.not_in_log,
            batches=self.batches,
            retries=self.retries,
            duration_s=round(time.perf_counter() - self.began, 3),
            started_at=self.started_at,
            sent_keys=pa.concat_tables(self.sent) if self.sent else KEYS_SCHEMA.empty_table(),
            refused=len(self.refused),
            refused_sample=tuple(self.refused[: options.sample_limit]),
        )


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

"""The checks of the snapshot assets: sequence continuity, valid checksums and unique
keys, each a small frame of facts for GE.

Per-stream sequence gaps and duplicate keys are not GE built-ins, and GE on a
million-row frame would cost more than the reconciliation itself. So the heavy part is
columnar (pyarrow + numpy: encode streams, sort by (stream, seq) once, diff) and GE
validates only what that yields: one row per gap, per duplicated key or per invalid row.
Empty frames are the clean case.

A snapshot can hold more events than fit in memory, so it is read part by part (see
:class:`SnapshotParts`: every part holds whole streams) and only in the columns the
selected checks need. Each check derives its facts from one part at a time, which is exact
because gaps, a stream's non-CRITICAL span and duplicate keys are per stream and invalid
checksums per row; GE then validates once, on the facts of all parts combined, so the
result does not depend on how the snapshot was split.

Supabase continuity has no cohort information here (the snapshot is all this asset has),
so it relies on contract §5: streams move into the rollout cohort whole, hence a stream in
the cohort is gapless in Supabase. A non-CRITICAL row proves its stream was in the cohort
(only the rollout percentage routes non-CRITICAL events); a CRITICAL row does not, since
``MONITORING_CRITICAL_EVENTS_SUPABASE`` routes CRITICAL events of any stream and skips the
stream's other events. So each stream is judged between its first and last non-CRITICAL
seq of the hour: a stream's own entry into or exit from the cohort mid-hour (a promotion,
a rollback) never reads as a gap, and a CRITICAL-only stream is left to the
reconciliation, which knows the cohort.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from checks import specs
from checks.adapter import ExpectationSpec
from checks.criteria import SAMPLE_LIMIT
from checks.suites import CRITICAL, GE_SEVERITY, Prepared, level
from parity.core.keys import gap_starts

_GAPS_SCHEMA = pa.schema(
    [
        ("stream", pa.string()),
        ("first_missing", pa.int64()),
        ("last_missing", pa.int64()),
        ("missing_events", pa.int64()),
    ]
)
_KEYS_SCHEMA = pa.schema([("stream", pa.string()), ("seq", pa.int64())])
_DUPLICATES_SCHEMA = pa.schema(
    [
        ("stream", pa.string()),
        ("seq", pa.int64()),
        ("copies", pa.int64()),
        ("distinct_checksums", pa.int64()),
        ("conflicting", pa.bool_()),
    ]
)


@runtime_checkable
class SnapshotParts(Protocol):
    """A snapshot read one part at a time: each part holds whole streams (no stream is in
    two parts), its rows in any order; only ``columns`` are read."""

    def parts(self, columns: list[str] | None = None) -> Iterator[pa.Table]: ...


class WholeTable:
    """A snapshot already in memory, as its one part."""

    def __init__(self, table: pa.Table):
        self.table = table

    def parts(self, columns: list[str] | None = None) -> Iterator[pa.Table]:
        yield self.table if columns is None else self.table.select(columns)


class SnapshotKeys:
    """One part's (stream, seq) keys sorted once, shared by the checks of one asset."""

    def __init__(self, table: pa.Table):
        self.table = table

    @cached_property
    def _sorted(self) -> tuple[pa.Array, np.ndarray, np.ndarray, np.ndarray | None]:
        streams = self.table.column("stream")
        encoded = pc.dictionary_encode(
            streams.combine_chunks() if isinstance(streams, pa.ChunkedArray) else streams
        )
        code = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        seq = self.table.column("seq").to_numpy()
        order: np.ndarray | None = None
        if seq.size:
            low, span = int(seq.min()), int(seq.max()) - int(seq.min()) + 1
            if len(encoded.dictionary) * span < 2**62:
                key = code * span + (seq - low)
                if not bool(np.all(key[1:] >= key[:-1])):
                    order = np.argsort(key)
            else:
                order = np.lexsort((seq, code))
        if order is not None:
            code, seq = code[order], seq[order]
        return encoded.dictionary, code, seq, order

    @property
    def streams(self) -> pa.Array:
        return self._sorted[0]

    @property
    def code(self) -> np.ndarray:
        """Stream code of each row, in sorted order."""
        return self._sorted[1]

    @property
    def seq(self) -> np.ndarray:
        return self._sorted[2]

    def rows(self, positions: np.ndarray) -> np.ndarray:
        """Original row numbers of sorted positions."""
        order = self._sorted[3]
        return positions if order is None else order[positions]

    def in_sorted_order(self, values: np.ndarray) -> np.ndarray:
        order = self._sorted[3]
        return values if order is None else values[order]


@dataclass(frozen=True)
class Facts:
    """What a snapshot check derives from one part, or from all parts combined: the
    offending rows (one per gap, invalid row or duplicated key; small, however big the
    snapshot) and counts that add up across parts."""

    frame: pa.Table
    rows: int = 0
    streams: int = 0  # distinct; parts hold whole streams, so the sum over parts is exact


@dataclass(frozen=True)
class SnapshotCheck:
    """A snapshot check in two steps, so that a snapshot is judged one part at a time:
    ``facts`` of one part (exact per part, since every check here is per stream or per
    row), then ``prepare`` from the facts of all parts combined. ``columns``: the snapshot
    columns ``facts`` reads; ``schema``: that of its frame."""

    columns: tuple[str, ...]
    schema: pa.Schema
    facts: Callable[[SnapshotKeys], Facts]
    prepare: Callable[[Facts], Prepared]

    def combine(self, facts: Sequence[Facts]) -> Facts:
        frames = [f.frame for f in facts if f.frame.num_rows]
        combined = pa.concat_tables(frames).combine_chunks() if frames else None
        return Facts(
            frame=self.schema.empty_table() if combined is None else combined,
            rows=sum(f.rows for f in facts),
            streams=sum(f.streams for f in facts),
        )


def prepare_snapshot(names: Sequence[str], snapshot: pa.Table | SnapshotParts) -> list[Prepared]:
    """The Prepared of each named snapshot check, reading the snapshot once, part by part.

    Only the columns the checks need are read. Memory is one part (with its sort order)
    plus the facts kept so far, which grow with the faults found, not with the events.
    """
    parts = WholeTable(snapshot) if isinstance(snapshot, pa.Table) else snapshot
    checks = [SNAPSHOT_CHECKS[name] for name in names]
    columns = list(dict.fromkeys(column for check in checks for column in check.columns))
    facts: list[list[Facts]] = [[] for _ in checks]
    for part in parts.parts(columns):
        keys = SnapshotKeys(part)
        for check, found in zip(checks, facts, strict=True):
            found.append(check.facts(keys))
        del part, keys  # before the next part is read, not after
    return [check.prepare(check.combine(found)) for check, found in zip(checks, facts, strict=True)]


def gap_facts(keys: SnapshotKeys, *, non_critical_span: bool) -> Facts:
    """One row per run of missing seqs strictly inside a stream's judged span."""
    code, seq = keys.code, keys.seq
    at = gap_starts(code, seq)
    if non_critical_span and at.size:
        at = at[_inside_non_critical_span(keys, at)]
    first, last = seq[at] + 1, seq[at + 1] - 1
    gaps = pa.table(
        {
            "stream": keys.streams.take(pa.array(code[at])),
            "first_missing": first,
            "last_missing": last,
            "missing_events": last - first + 1,
        },
        schema=_GAPS_SCHEMA,
    )
    return Facts(gaps, rows=keys.table.num_rows, streams=len(keys.streams))


def sequence_gaps(facts: Facts, level: str) -> Prepared:
    """Fails on any gap; the sample is the first gaps by stream and seq."""
    gaps = _sorted_by(facts.frame, ["stream", "first_missing"])
    missing = int(pc.sum(gaps.column("missing_events")).as_py() or 0)
    return Prepared(
        frame=gaps.select(["missing_events"]),
        expectations=(
            ExpectationSpec("ExpectTableRowCountToEqual", {"value": 0}, level),
            ExpectationSpec(
                "ExpectColumnSumToBeBetween",
                {"column": "missing_events", "min_value": 0, "max_value": 0},
                level,
            ),
        ),
        observed=missing,
        threshold=0,
        sample=gaps.slice(0, SAMPLE_LIMIT).select(list(_GAPS_SCHEMA.names[:3])).to_pylist(),
        details={
            "gaps": gaps.num_rows,
            "streams_with_gaps": len(pc.unique(gaps.column("stream"))),
            "streams": facts.streams,
        },
    )


def _inside_non_critical_span(keys: SnapshotKeys, at: np.ndarray) -> np.ndarray:
    """Which gaps (between sorted positions ``at`` and ``at + 1``) lie between their
    stream's first and last non-CRITICAL row."""
    non_critical = pc.fill_null(pc.not_equal(keys.table.column("category"), CRITICAL), True)
    positions = np.flatnonzero(keys.in_sorted_order(non_critical.to_numpy(zero_copy_only=False)))
    first = np.full(len(keys.streams), np.iinfo(np.int64).max)
    last = np.full(len(keys.streams), -1)
    if positions.size:
        stream = keys.code[positions]  # non-decreasing: rows are sorted by stream
        change = np.flatnonzero(np.r_[True, stream[1:] != stream[:-1]])
        first[stream[change]] = positions[change]
        last[stream[change]] = positions[np.append(change[1:], positions.size) - 1]
    stream_of_gap = keys.code[at]
    return (first[stream_of_gap] <= at) & (last[stream_of_gap] >= at + 1)


def invalid_key_facts(keys: SnapshotKeys) -> Facts:
    """The (stream, seq) of each row whose stored checksum does not recompute."""
    table = keys.table
    invalid = pc.invert(pc.fill_null(table.column("checksum_valid"), False))
    keys_of_invalid = table.filter(invalid).select(["stream", "seq"])
    return Facts(keys_of_invalid.cast(_KEYS_SCHEMA), rows=table.num_rows)


def invalid_checksums(facts: Facts, level: str) -> Prepared:
    """Fails on any row whose checksum does not recompute."""
    frame = _sorted_by(facts.frame, ["stream", "seq"])
    return Prepared(
        frame=frame.select(["seq"]),
        expectations=(ExpectationSpec("ExpectTableRowCountToEqual", {"value": 0}, level),),
        observed=frame.num_rows,
        threshold=0,
        sample=_key_sample(frame),
        details={"rows": facts.rows},
    )


def duplicate_facts(keys: SnapshotKeys) -> Facts:
    """One row per (stream, seq) with more than one row: its copies and their distinct
    checksums."""
    code, seq = keys.code, keys.seq
    same = np.flatnonzero((code[1:] == code[:-1]) & (seq[1:] == seq[:-1]))
    if not same.size:
        return Facts(_DUPLICATES_SCHEMA.empty_table(), rows=keys.table.num_rows)
    positions = np.unique(np.concatenate([same, same + 1]))
    copies = pa.table(
        {
            "stream": keys.streams.take(pa.array(code[positions])),
            "seq": seq[positions],
            "checksum": keys.table.column("checksum").take(pa.array(keys.rows(positions))),
        }
    )
    grouped = copies.group_by(["stream", "seq"]).aggregate(
        [("checksum", "count", pc.CountOptions(mode="all")), ("checksum", "count_distinct")]
    )
    count = grouped.column("checksum_count")
    distinct = grouped.column("checksum_count_distinct")
    frame = pa.table(
        {
            "stream": grouped.column("stream"),
            "seq": grouped.column("seq"),
            "copies": pc.cast(count, pa.int64()),
            "distinct_checksums": pc.cast(distinct, pa.int64()),
            "conflicting": pc.greater(distinct, 1),
        },
        schema=_DUPLICATES_SCHEMA,
    )
    return Facts(frame, rows=keys.table.num_rows)


def duplicate_keys(facts: Facts, level: str, *, retries_level: str | None) -> Prepared:
    """Fails on a key whose copies carry different checksums (``conflicting``) and, unless
    ``retries_level`` is None, with that level on identical retry copies too."""
    frame = _sorted_by(facts.frame, ["stream", "seq"])
    conflicting = frame.filter(frame.column("conflicting"))
    surplus = int(pc.sum(frame.column("copies")).as_py() or 0) - frame.num_rows
    conflicting_copies = (
        int(pc.sum(frame.column("distinct_checksums")).as_py() or 0) - frame.num_rows
    )
    expectations = [
        ExpectationSpec(
            "ExpectColumnValuesToBeInSet", {"column": "conflicting", "value_set": [False]}, level
        )
    ]
    if retries_level is not None:
        expectations.append(
            ExpectationSpec("ExpectTableRowCountToEqual", {"value": 0}, retries_level)
        )
    offending = frame if retries_level is not None else conflicting
    return Prepared(
        frame=frame.select(["copies", "distinct_checksums", "conflicting"]),
        expectations=tuple(expectations),
        observed=conflicting.num_rows if retries_level is None else frame.num_rows,
        threshold=0,
        sample=_key_sample(offending),
        details={
            "duplicated_keys": frame.num_rows,
            "conflicting_keys": conflicting.num_rows,
            "surplus_copies": surplus,
            "retry_copies": surplus - conflicting_copies,
            "conflicting_copies": conflicting_copies,
        },
    )


def _continuity(name: str, *, non_critical_span: bool) -> SnapshotCheck:
    return SnapshotCheck(
        columns=("stream", "seq", "category") if non_critical_span else ("stream", "seq"),
        schema=_GAPS_SCHEMA,
        facts=lambda keys: gap_facts(keys, non_critical_span=non_critical_span),
        prepare=lambda facts: sequence_gaps(facts, level(name)),
    )


def _checksums(name: str) -> SnapshotCheck:
    return SnapshotCheck(
        columns=("stream", "seq", "checksum_valid"),
        schema=_KEYS_SCHEMA,
        facts=invalid_key_facts,
        prepare=lambda facts: invalid_checksums(facts, level(name)),
    )


def _uniqueness(name: str, *, retries_level: str | None) -> SnapshotCheck:
    return SnapshotCheck(
        columns=("stream", "seq", "checksum"),
        schema=_DUPLICATES_SCHEMA,
        facts=duplicate_facts,
        prepare=lambda facts: duplicate_keys(facts, level(name), retries_level=retries_level),
    )


#: Check name -> the check of a snapshot asset, in its two steps (see prepare_snapshot).
SNAPSHOT_CHECKS: dict[str, SnapshotCheck] = {
    specs.WS_SEQUENCE_IS_CONTINUOUS: _continuity(
        specs.WS_SEQUENCE_IS_CONTINUOUS, non_critical_span=False
    ),
    specs.WS_CHECKSUMS_ARE_VALID: _checksums(specs.WS_CHECKSUMS_ARE_VALID),
    specs.WS_KEYS_ARE_UNIQUE: _uniqueness(specs.WS_KEYS_ARE_UNIQUE, retries_level=None),
    specs.SUPABASE_SEQUENCE_IS_CONTINUOUS: _continuity(
        specs.SUPABASE_SEQUENCE_IS_CONTINUOUS, non_critical_span=True
    ),
    specs.SUPABASE_CHECKSUMS_ARE_VALID: _checksums(specs.SUPABASE_CHECKSUMS_ARE_VALID),
    specs.SUPABASE_KEYS_ARE_UNIQUE: _uniqueness(
        specs.SUPABASE_KEYS_ARE_UNIQUE, retries_level=GE_SEVERITY[specs.WARN]
    ),
}


def _sorted_by(table: pa.Table, columns: list[str]) -> pa.Table:
    if table.num_rows < 2:
        return table
    return table.take(pc.sort_indices(table, sort_keys=[(c, "ascending") for c in columns]))


def _key_sample(frame: pa.Table) -> list[list[Any]]:
    head = frame.slice(0, SAMPLE_LIMIT)
    return [
        list(pair)
        for pair in zip(
            head.column("stream").to_pylist(), head.column("seq").to_pylist(), strict=True
        )
    ]

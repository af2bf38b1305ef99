"""The plan of a backfill (pure): which of the hour's log events to write to the
store, key by key, and why the others are not written.

:func:`plan_backfill` takes the hour's log snapshot (``WS_SNAPSHOT_SCHEMA``) against a fresh
snapshot of the store, key by key. A key the store has with a log copy's checksum is
*already present*; with other checksums only it is a *conflict* (the store's row is left as
it is). An absent key is written only when it is in scope (expected in Supabase by the
cohort rules of contract §5 at its ``emitted_at``, or any key with ``all_missing``), has a
log copy whose checksum is valid (otherwise *invalid*), and its valid copies agree
(otherwise a conflict too: the log cannot say which one is true).

:mod:`parity.io.backfill` snapshots the store again right before writing and carries
the plan out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from parity.core.routing import FlagTimeline, expected_in_supabase

KEY = ["stream", "seq"]
#: Columns a backfilled row carries; ``received_at`` is left to the store's default, now().
INSERT_COLUMNS = ("stream", "seq", "event_type", "category", "emitted_at", "payload", "checksum")
#: Why a key was not written although the store lacks it or holds something else.
STORE_DIFFERS = "store_differs"
LOG_COPIES_DIFFER = "log_copies_differ"
KEYS_SCHEMA = pa.schema([pa.field("stream", pa.string()), pa.field("seq", pa.int64())])


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


# -- planning ------------------------------------------------------------------------------


def keys_table(keys: Iterable[Sequence[Any]]) -> pa.Table:
    """``[stream, seq]`` pairs (a report's ``missing_keys``) as a distinct keys table."""
    pairs = [(str(k[0]), int(k[1])) for k in keys]
    table = pa.table(
        {"stream": [p[0] for p in pairs], "seq": [p[1] for p in pairs]}, schema=KEYS_SCHEMA
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
    log, not_in_log = _log_copies(ws, timeline, keys)
    store = store_rows.select(["stream", "seq", "checksum"])
    store = store.set_column(1, "seq", pc.cast(store.column("seq"), pa.int64()))
    per_key = _per_key(log, store)

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


def _log_copies(
    ws: pa.Table, timeline: FlagTimeline, keys: Iterable[Sequence[Any]] | None
) -> tuple[pa.Table, int]:
    """The log's copies of the keys considered (all with ``keys`` None): key, checksum,
    whether it is valid and was expected in Supabase, its row in ``ws``; and how many of
    ``keys`` the log does not have."""
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
    if keys is None:
        return log, 0
    wanted = keys_table(keys)
    log = log.join(wanted, KEY, join_type="left semi")
    return log, wanted.join(log.select(KEY), KEY, join_type="left anti").num_rows


def _per_key(log: pa.Table, store: pa.Table) -> pa.Table:
    """One row per log key, in (stream, seq) order: whether any copy was expected or is
    valid, the valid copies' distinct checksums and first row, and whether the store has
    the key (``present``) with a log copy's checksum (``matched``)."""
    per_key = log.group_by(KEY).aggregate([("expected", "any"), ("valid", "any")])
    valid_log = log.filter(log.column("valid"))
    per_valid = valid_log.group_by(KEY).aggregate([("checksum", "count_distinct"), ("row", "min")])
    per_key = per_key.join(per_valid, KEY, join_type="left outer")
    matched = log.select(["stream", "seq", "checksum"]).join(
        store, ["stream", "seq", "checksum"], join_type="left semi"
    )
    per_key = _mark(per_key, store.group_by(KEY).aggregate([]), "present")
    per_key = _mark(per_key, matched.group_by(KEY).aggregate([]), "matched")
    return per_key.sort_by([("stream", "ascending"), ("seq", "ascending")])


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

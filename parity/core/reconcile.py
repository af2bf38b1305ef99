"""Reconciliation of one hour: the WebSocket log (truth) against the Supabase snapshot.

Inputs are the two snapshot tables (``WS_SNAPSHOT_SCHEMA`` and
``SUPABASE_SNAPSHOT_SCHEMA``; only the event columns, ``received_at`` and the derived
columns are read) and the cohort: either a :class:`~parity.routing.FlagTimeline` or a
precomputed per-row ``expected`` mask over the log. Both sides may hold several rows
for one log key (stream, seq). Semantics, as reported (contract §6):

- ``ws_events`` / ``supabase_events``: rows, duplicates included.
- ``expected_in_supabase``: distinct log keys the cohort routes to Supabase (a key is
  expected when any of its log copies is, judged at that copy's ``emitted_at``).
- ``matched``: expected keys with a Supabase copy whose checksum equals a log copy's.
- ``missing_in_supabase``: expected keys with no Supabase row at all. An expected key
  whose Supabase rows all have other checksums is a checksum mismatch (also reported as
  ``expected_checksum_mismatches``), neither matched nor missing, so
  ``matched + missing_in_supabase + expected_checksum_mismatches == expected_in_supabase``.
  An event outside the cohort is never missing.
- ``unexpected_in_supabase``: distinct Supabase keys the log does not have.
  ``present_outside_cohort``: keys on both sides the cohort did not expect (not an error).
- ``duplicates_ws`` / ``duplicates_supabase``: surplus copies (count - 1 per key), split
  into ``_retry`` (a copy whose checksum an earlier copy of the key already had) and
  ``_conflicting`` (a copy with a new checksum): retry = copies - distinct checksums.
- ``checksum_mismatches``: distinct keys on both sides, expected or not, with no equal
  checksum pair. ``invalid_checksums_*``: rows whose ``checksum_valid`` is false.
- ``sequence_gaps_ws``: per stream, the seq ranges missing strictly between the stream's
  lowest and highest seq in the log, as ``{stream, first_missing, last_missing}``.
- ``sequence_gaps_supabase``: runs of consecutive expected log keys absent from Supabase
  strictly inside the range of expected keys Supabase has for the stream; losses at the
  edges of the hour are missing but not gaps, and seqs the log itself lacks are not
  Supabase's gaps.
- ``out_of_order_supabase``: Supabase rows (with a ``received_at``) whose seq is below
  the highest seq received before them in their stream, ordering by (received_at, seq).
- ``latency_ms``: ``received_at - emitted_at`` of the matching Supabase copy (the
  earliest received one when several match), over matched keys; nulls when none.
- ``delivery_rate``: matched / expected_in_supabase, 1.0 when nothing was expected.
- ``by_category``: the counts per CRITICAL / INFORMATIONAL / LEGACY, each key attributed
  to the category of its first log copy (Supabase's category for unexpected keys).
  An unrecognised category value counts as INFORMATIONAL, the classifier's default.

Everything is columnar. Streams are dictionary-encoded over both sides (dictionary in
sorted order), a key is ``stream_code << b | (seq - min_seq)`` in one int64 when it fits
(else a dense rank from a lexsort), and the set operations are numpy sorts, searchsorted
and reductions; Python objects appear only for the report's lists and samples.

Streams partition an hour cleanly, so an hour can be reconciled in pieces by stream
(:func:`split_by_stream`, :func:`reconcile_in_parts`) and the pieces merged with
:meth:`Reconciliation.merge`: counts add, key lists concatenate in (stream, seq) order,
samples keep the first ``sample_limit`` keys, and the latency percentiles stay exact
because each piece keeps its raw latencies (int64 microseconds, 8 bytes per matched event).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from parity.core.events import CATEGORIES
from parity.core.keys import (
    NULL_TIME,
    Groups,
    combined,
    duplicate_copies,
    encode_streams,
    invalid_rows,
    key_list,
    keys_table,
    log_gaps,
    match_checksums,
    out_of_order,
    packed_keys,
    require_columns,
    rows_with_keys,
    seq_numbers,
    supabase_gaps,
)
from parity.core.latency import latency_histogram, latency_summary
from parity.core.report import REPORT_KEYS, discrepancy_counts
from parity.core.routing import (
    FlagTimeline,
    buckets_of,
    expected_mask,
    stream_part,
    timestamps_us,
    to_numpy,
)
from parity.core.schema import SUPABASE_SNAPSHOT_SCHEMA, WS_SNAPSHOT_SCHEMA

#: Detail keys Parity adds after the contract's (contract §6).
DETAIL_KEYS = (
    "clean",
    "sequence_gaps_supabase",
    "duplicates_ws_retry",
    "duplicates_ws_conflicting",
    "duplicates_supabase_retry",
    "duplicates_supabase_conflicting",
    "expected_checksum_mismatches",
    "present_outside_cohort",
    "unexpected_keys",
    "checksum_mismatch_keys",
    "out_of_order_keys",
    "sample_limit",
    "unclassified_types",
    "latency_histogram",
    "missing_critical_keys",
    "backfilled_rows",
)
#: The additive counts reported per category (``by_category`` adds ``delivery_rate``).
CATEGORY_COUNTS = REPORT_KEYS[3:14] + ("out_of_order_supabase",)

_COMMON_COLUMNS = (
    "stream",
    "seq",
    "event_type",
    "category",
    "unclassified",
    "emitted_at",
    "checksum",
    "checksum_valid",
)
_SB_COLUMNS = (*_COMMON_COLUMNS, "received_at")
#: The snapshot columns reconciliation reads (never the payloads).
LOG_COLUMNS = list(_COMMON_COLUMNS)
SUPABASE_COLUMNS = list(_SB_COLUMNS)
_DEFAULT_CATEGORY = CATEGORIES.index("INFORMATIONAL")
_CRITICAL = CATEGORIES.index("CRITICAL")


@dataclass(frozen=True, eq=False)
class Reconciliation:
    """The outcome of reconciling one hour (or one stream piece of it).

    Compare reports (:meth:`to_report`), not objects: key lists are Arrow tables and the
    latencies a numpy array.
    """

    partition: str
    window_start: dt.datetime
    window_end: dt.datetime
    counts: Mapping[str, int]  # CATEGORY_COUNTS plus the split and cohort details
    by_category: Mapping[str, Mapping[str, int]]
    missing_keys: pa.Table  # stream, seq; sorted
    missing_critical_keys: pa.Table  # the CRITICAL ones among them
    sequence_gaps_ws: pa.Table  # stream, first_missing, last_missing; sorted
    sequence_gaps_supabase: pa.Table
    unexpected_keys: pa.Table  # samples: the first sample_limit keys in (stream, seq) order
    checksum_mismatch_keys: pa.Table
    out_of_order_keys: pa.Table
    unclassified_types: Mapping[str, Mapping[str, int]]  # side -> event_type -> rows
    latencies_us: np.ndarray = field(repr=False)
    quarantined_lines: int = 0
    sample_limit: int = 100

    @property
    def delivery_rate(self) -> float:
        return _rate(self.counts["matched"], self.counts["expected_in_supabase"])

    @property
    def latency_ms(self) -> dict[str, float | None]:
        return latency_summary(self.latencies_us)

    @property
    def clean(self) -> bool:
        """No discrepancy of any kind, by the report's rule
        (:func:`parity.core.report.discrepancy_counts`)."""
        gaps = self.sequence_gaps_ws
        missing = pc.sum(pc.subtract(gaps["last_missing"], gaps["first_missing"])).as_py()
        log_gap_events = gaps.num_rows + int(missing or 0)
        counts = {**self.counts, "quarantined_lines": self.quarantined_lines}
        return not discrepancy_counts(counts, log_gap_events)

    def to_report(self) -> dict[str, Any]:
        """The report (contract §6 keys, then DETAIL_KEYS); JSON-serialisable."""
        c = self.counts
        by_category = {
            category: {
                **{k: int(v) for k, v in counts.items()},
                "delivery_rate": _rate(counts["matched"], counts["expected_in_supabase"]),
            }
            for category, counts in self.by_category.items()
        }
        report: dict[str, Any] = {
            "partition": self.partition,
            "window_start": _rfc3339(self.window_start),
            "window_end": _rfc3339(self.window_end),
            **{k: int(c[k]) for k in REPORT_KEYS[3:14]},
            "sequence_gaps_ws": self.sequence_gaps_ws.to_pylist(),
            "out_of_order_supabase": int(c["out_of_order_supabase"]),
            "quarantined_lines": int(self.quarantined_lines),
            "latency_ms": self.latency_ms,
            "delivery_rate": self.delivery_rate,
            "by_category": by_category,
            "missing_keys": key_list(self.missing_keys),
            "clean": self.clean,
            "sequence_gaps_supabase": self.sequence_gaps_supabase.to_pylist(),
            **{k: int(c[k]) for k in DETAIL_KEYS[2:8]},
            "unexpected_keys": key_list(self.unexpected_keys),
            "checksum_mismatch_keys": key_list(self.checksum_mismatch_keys),
            "out_of_order_keys": key_list(self.out_of_order_keys),
            "sample_limit": self.sample_limit,
            "unclassified_types": {s: dict(t) for s, t in self.unclassified_types.items()},
            "latency_histogram": latency_histogram(self.latencies_us),
            "missing_critical_keys": key_list(self.missing_critical_keys),
            "backfilled_rows": int(c.get("backfilled_rows", 0)),
        }
        return report

    def merge(self, other: Reconciliation) -> Reconciliation:
        """Combine the reconciliations of two disjoint sets of streams of the same hour."""
        if (self.partition, self.window_start, self.window_end) != (
            other.partition,
            other.window_start,
            other.window_end,
        ):
            raise ValueError(
                f"cannot merge reconciliations of different hours: {self.partition} "
                f"and {other.partition}"
            )
        limit = max(self.sample_limit, other.sample_limit)
        return Reconciliation(
            partition=self.partition,
            window_start=self.window_start,
            window_end=self.window_end,
            counts={k: self.counts[k] + other.counts[k] for k in self.counts},
            by_category={
                cat: {k: v + other.by_category[cat][k] for k, v in counts.items()}
                for cat, counts in self.by_category.items()
            },
            missing_keys=_concat_sorted(self.missing_keys, other.missing_keys),
            missing_critical_keys=_concat_sorted(
                self.missing_critical_keys, other.missing_critical_keys
            ),
            sequence_gaps_ws=_concat_sorted(self.sequence_gaps_ws, other.sequence_gaps_ws),
            sequence_gaps_supabase=_concat_sorted(
                self.sequence_gaps_supabase, other.sequence_gaps_supabase
            ),
            unexpected_keys=_concat_sorted(self.unexpected_keys, other.unexpected_keys, limit),
            checksum_mismatch_keys=_concat_sorted(
                self.checksum_mismatch_keys, other.checksum_mismatch_keys, limit
            ),
            out_of_order_keys=_concat_sorted(
                self.out_of_order_keys, other.out_of_order_keys, limit
            ),
            unclassified_types={
                side: _add_counts(types, other.unclassified_types[side])
                for side, types in self.unclassified_types.items()
            },
            latencies_us=np.concatenate([self.latencies_us, other.latencies_us]),
            quarantined_lines=self.quarantined_lines + other.quarantined_lines,
            sample_limit=limit,
        )


def reconcile(
    ws: pa.Table,
    sb: pa.Table,
    *,
    expected: pa.BooleanArray | pa.ChunkedArray | None = None,
    timeline: FlagTimeline | None = None,
    window_start: dt.datetime,
    window_end: dt.datetime,
    partition: str,
    quarantined_lines: int = 0,
    sample_limit: int = 100,
    backfilled: pa.Table | None = None,
) -> Reconciliation:
    """Reconcile the hour's log snapshot ``ws`` against the Supabase snapshot ``sb``.

    Pass the cohort as ``timeline`` (a :class:`~parity.routing.FlagTimeline`) or as
    ``expected``, one boolean per log row (null counts as not expected).

    ``backfilled`` lists (stream, seq) keys a backfill wrote: they count as delivered, but
    their ``received_at`` is the backfill's time, not an arrival, so their rows are left
    out of latency and out-of-order (and counted as ``backfilled_rows``).
    """
    require_columns(ws, _COMMON_COLUMNS, "log snapshot")
    require_columns(sb, _SB_COLUMNS, "Supabase snapshot")
    if (expected is None) == (timeline is None):
        raise ValueError("pass the cohort as exactly one of expected= or timeline=")
    if expected is not None and len(expected) != ws.num_rows:
        raise ValueError(f"expected has {len(expected)} values for {ws.num_rows} log rows")

    streams, ws_code, sb_code = encode_streams(ws.column("stream"), sb.column("stream"))
    ws_seq, sb_seq = seq_numbers(ws, "log snapshot"), seq_numbers(sb, "Supabase snapshot")
    ws_key, sb_key = packed_keys(ws_code, ws_seq, sb_code, sb_seq, len(streams))
    w, s = Groups.of(ws_key), Groups.of(sb_key)
    ws_cat, sb_cat = _category_codes(ws.column("category")), _category_codes(sb.column("category"))
    ws_ck, sb_ck = combined(ws.column("checksum")), combined(sb.column("checksum"))

    if timeline is not None:
        exp_rows = expected_mask(
            buckets_of(streams.to_pylist())[ws_code],
            ws_cat == _CRITICAL,
            timestamps_us(ws.column("emitted_at")),
            timeline,
        )
    else:
        exp_rows = to_numpy(pc.fill_null(expected, False)).astype(bool, copy=False)
    exp_g = w.any(exp_rows)

    # Join the distinct keys: found[g] when log key g is in Supabase, at group pos[g].
    pos = np.searchsorted(s.keys, w.keys)
    found = np.zeros(w.m, bool)
    if s.m:
        found = s.keys[np.minimum(pos, s.m - 1)] == w.keys
    common = np.flatnonzero(found)
    sb_of_common = pos[common]
    sb_in_log = np.zeros(s.m, bool)
    sb_in_log[sb_of_common] = True

    sb_received = timestamps_us(sb.column("received_at"))
    backfilled_rows = rows_with_keys(sb, backfilled)
    if backfilled_rows.size:
        sb_received = sb_received.copy()
        sb_received[backfilled_rows] = NULL_TIME
    ck_match, chosen = match_checksums(w, s, common, sb_of_common, ws_ck, sb_ck, sb_received)

    # Per-key categories: the first log copy's; Supabase's own for keys the log lacks.
    ws_gcat = ws_cat[w.first_rows]
    sb_gcat = sb_cat[s.first_rows]
    sb_gcat[sb_of_common] = ws_gcat[common]

    matched_g = exp_g & ck_match
    missing_g = exp_g & ~found
    missing_critical_g = missing_g & (ws_gcat == _CRITICAL)
    mismatch_g = found & ~ck_match
    unexpected_g = ~sb_in_log
    ws_retry, ws_conflict = duplicate_copies(w, ws_ck)
    sb_retry, sb_conflict = duplicate_copies(s, sb_ck)
    ws_invalid = w.group_of(ws_key, invalid_rows(ws))
    sb_invalid = s.group_of(sb_key, invalid_rows(sb))
    ooo_rows = out_of_order(s, sb_code, sb_received)

    def per_cat(cats: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(cats, weights=weights, minlength=3).astype(np.int64)

    table = {
        "ws_events": per_cat(ws_gcat) + per_cat(ws_gcat[w.dup], w.counts[w.dup] - 1),
        "supabase_events": per_cat(sb_gcat) + per_cat(sb_gcat[s.dup], s.counts[s.dup] - 1),
        "expected_in_supabase": per_cat(ws_gcat[exp_g]),
        "matched": per_cat(ws_gcat[matched_g]),
        "missing_in_supabase": per_cat(ws_gcat[missing_g]),
        "unexpected_in_supabase": per_cat(sb_gcat[unexpected_g]),
        "duplicates_ws": per_cat(ws_gcat[w.dup], w.counts[w.dup] - 1),
        "duplicates_supabase": per_cat(sb_gcat[s.dup], s.counts[s.dup] - 1),
        "checksum_mismatches": per_cat(ws_gcat[mismatch_g]),
        "invalid_checksums_ws": per_cat(ws_gcat[ws_invalid]),
        "invalid_checksums_supabase": per_cat(sb_gcat[sb_invalid]),
        "out_of_order_supabase": per_cat(sb_gcat[s.group_of(sb_key, ooo_rows)]),
    }
    counts = {k: int(v.sum()) for k, v in table.items()}
    counts.update(
        duplicates_ws_retry=int(ws_retry.sum()),
        duplicates_ws_conflicting=int(ws_conflict.sum()),
        duplicates_supabase_retry=int(sb_retry.sum()),
        duplicates_supabase_conflicting=int(sb_conflict.sum()),
        expected_checksum_mismatches=int((exp_g & mismatch_g).sum()),
        present_outside_cohort=int((found & ~exp_g).sum()),
        backfilled_rows=int(backfilled_rows.size),
    )
    by_category = {
        cat: {k: int(v[i]) for k, v in table.items()} for i, cat in enumerate(CATEGORIES)
    }

    # Keys, gaps and samples, all in (stream, seq) order.
    w_code, w_seq = ws_code[w.first_rows], ws_seq[w.first_rows]
    s_code, s_seq = sb_code[s.first_rows], sb_seq[s.first_rows]
    ooo_keys, ooo_first = np.unique(sb_key[ooo_rows], return_index=True)
    ooo_pick = ooo_rows[ooo_first[:sample_limit]]
    latency_rows = chosen[matched_g]
    latency_rows = latency_rows[latency_rows >= 0]
    sb_emitted = timestamps_us(sb.column("emitted_at"))
    lat_received, lat_emitted = sb_received[latency_rows], sb_emitted[latency_rows]
    ok = (lat_received != NULL_TIME) & (lat_emitted != NULL_TIME)

    return Reconciliation(
        partition=partition,
        window_start=window_start,
        window_end=window_end,
        counts=counts,
        by_category=by_category,
        missing_keys=keys_table(streams, w_code[missing_g], w_seq[missing_g]),
        missing_critical_keys=keys_table(
            streams, w_code[missing_critical_g], w_seq[missing_critical_g]
        ),
        sequence_gaps_ws=log_gaps(streams, w_code, w_seq),
        sequence_gaps_supabase=supabase_gaps(streams, w_code, w_seq, exp_g, found),
        unexpected_keys=keys_table(
            streams, s_code[unexpected_g][:sample_limit], s_seq[unexpected_g][:sample_limit]
        ),
        checksum_mismatch_keys=keys_table(
            streams, w_code[mismatch_g][:sample_limit], w_seq[mismatch_g][:sample_limit]
        ),
        out_of_order_keys=keys_table(streams, sb_code[ooo_pick], sb_seq[ooo_pick]),
        unclassified_types={"ws": _unclassified(ws), "supabase": _unclassified(sb)},
        latencies_us=(lat_received[ok] - lat_emitted[ok]).astype(np.int64),
        quarantined_lines=quarantined_lines,
        sample_limit=sample_limit,
    )


def split_by_stream(ws: pa.Table, sb: pa.Table, parts: int) -> Iterator[tuple[pa.Table, pa.Table]]:
    """The two snapshots cut into ``parts`` pieces by stream bucket (whole streams per
    piece), one piece at a time."""
    ws_part, sb_part = (
        stream_part(ws.column("stream"), parts),
        stream_part(sb.column("stream"), parts),
    )
    for p in range(parts):
        yield ws.filter(pa.array(ws_part == p)), sb.filter(pa.array(sb_part == p))


def reconcile_in_parts(
    pieces: Iterable[tuple[pa.Table, pa.Table]],
    *,
    timeline: FlagTimeline,
    window_start: dt.datetime,
    window_end: dt.datetime,
    partition: str,
    quarantined_lines: int = 0,
    sample_limit: int = 100,
    backfilled: pa.Table | None = None,
) -> Reconciliation:
    """Reconcile an hour piece by piece and merge. ``pieces`` yields (log, Supabase)
    snapshot pairs over disjoint sets of streams, e.g. :func:`split_by_stream` or
    :func:`parity.snapshot.aligned_parts`, so only one piece needs to be in memory at a
    time. The columns a piece needs: ``LOG_COLUMNS`` and ``SUPABASE_COLUMNS``."""
    result: Reconciliation | None = None
    for ws, sb in pieces:
        part = reconcile(
            ws,
            sb,
            timeline=timeline,
            window_start=window_start,
            window_end=window_end,
            partition=partition,
            quarantined_lines=quarantined_lines if result is None else 0,
            sample_limit=sample_limit,
            backfilled=backfilled,
        )
        result = part if result is None else result.merge(part)
    if result is None:
        return reconcile(
            WS_SNAPSHOT_SCHEMA.empty_table(),
            SUPABASE_SNAPSHOT_SCHEMA.empty_table(),
            timeline=timeline,
            window_start=window_start,
            window_end=window_end,
            partition=partition,
            quarantined_lines=quarantined_lines,
            sample_limit=sample_limit,
        )
    return result


# --- columns to numpy --------------------------------------------------------------------


def _category_codes(column: pa.ChunkedArray) -> np.ndarray:
    index = pc.fill_null(pc.index_in(column, value_set=pa.array(CATEGORIES)), _DEFAULT_CATEGORY)
    return to_numpy(index).astype(np.intp)


def _unclassified(table: pa.Table) -> dict[str, int]:
    mask = pc.fill_null(table.column("unclassified"), False)
    types = table.column("event_type").filter(mask)
    if len(types) == 0:
        return {}
    counts = pc.value_counts(types).to_pylist()
    return {row["values"]: row["counts"] for row in sorted(counts, key=lambda r: r["values"])}


# --- merging and report helpers ----------------------------------------------------------


def _concat_sorted(a: pa.Table, b: pa.Table, limit: int | None = None) -> pa.Table:
    both = pa.concat_tables([a, b])
    keys = [(name, "ascending") for name in both.column_names]
    out = both.take(pc.sort_indices(both, sort_keys=keys))
    return out if limit is None else out.slice(0, limit)


def _add_counts(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + v
    return dict(sorted(out.items()))


def _rate(matched: int, expected: int) -> float:
    return 1.0 if expected == 0 else matched / expected


def _rfc3339(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")

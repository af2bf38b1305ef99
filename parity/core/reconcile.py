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
:meth:`parity.core.reconciliation.Reconciliation.merge`, exactly.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator

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
from parity.core.reconciliation import Reconciliation
from parity.core.routing import (
    FlagTimeline,
    buckets_of,
    expected_mask,
    stream_part,
    timestamps_us,
    to_numpy,
)
from parity.core.schema import SUPABASE_SNAPSHOT_SCHEMA, WS_SNAPSHOT_SCHEMA

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
    _check_inputs(ws, sb, expected, timeline)
    streams, ws_code, sb_code = encode_streams(ws.column("stream"), sb.column("stream"))
    ws_seq, sb_seq = seq_numbers(ws, "log snapshot"), seq_numbers(sb, "Supabase snapshot")
    ws_key, sb_key = packed_keys(ws_code, ws_seq, sb_code, sb_seq, len(streams))
    w, s = Groups.of(ws_key), Groups.of(sb_key)
    ws_cat, sb_cat = _category_codes(ws.column("category")), _category_codes(sb.column("category"))
    ws_ck, sb_ck = combined(ws.column("checksum")), combined(sb.column("checksum"))

    exp_g = w.any(_expected_rows(ws, streams, ws_code, ws_cat, expected, timeline))
    found, common, sb_of_common = _join(w, s)
    sb_in_log = np.zeros(s.m, bool)
    sb_in_log[sb_of_common] = True
    sb_received, backfilled_rows = _arrivals(sb, backfilled)
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

    table = {
        "ws_events": _per_category(ws_gcat) + _per_category(ws_gcat[w.dup], w.counts[w.dup] - 1),
        "supabase_events": _per_category(sb_gcat)
        + _per_category(sb_gcat[s.dup], s.counts[s.dup] - 1),
        "expected_in_supabase": _per_category(ws_gcat[exp_g]),
        "matched": _per_category(ws_gcat[matched_g]),
        "missing_in_supabase": _per_category(ws_gcat[missing_g]),
        "unexpected_in_supabase": _per_category(sb_gcat[unexpected_g]),
        "duplicates_ws": _per_category(ws_gcat[w.dup], w.counts[w.dup] - 1),
        "duplicates_supabase": _per_category(sb_gcat[s.dup], s.counts[s.dup] - 1),
        "checksum_mismatches": _per_category(ws_gcat[mismatch_g]),
        "invalid_checksums_ws": _per_category(ws_gcat[ws_invalid]),
        "invalid_checksums_supabase": _per_category(sb_gcat[sb_invalid]),
        "out_of_order_supabase": _per_category(sb_gcat[s.group_of(sb_key, ooo_rows)]),
    }
    counts = {k: int(v.sum()) for k, v in table.items()} | dict(
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
        latencies_us=_latencies(sb, sb_received, chosen[matched_g]),
        quarantined_lines=quarantined_lines,
        sample_limit=sample_limit,
    )


def _check_inputs(
    ws: pa.Table,
    sb: pa.Table,
    expected: pa.BooleanArray | pa.ChunkedArray | None,
    timeline: FlagTimeline | None,
) -> None:
    require_columns(ws, _COMMON_COLUMNS, "log snapshot")
    require_columns(sb, _SB_COLUMNS, "Supabase snapshot")
    if (expected is None) == (timeline is None):
        raise ValueError("pass the cohort as exactly one of expected= or timeline=")
    if expected is not None and len(expected) != ws.num_rows:
        raise ValueError(f"expected has {len(expected)} values for {ws.num_rows} log rows")


def _expected_rows(
    ws: pa.Table,
    streams: pa.Array,
    ws_code: np.ndarray,
    ws_cat: np.ndarray,
    expected: pa.BooleanArray | pa.ChunkedArray | None,
    timeline: FlagTimeline | None,
) -> np.ndarray:
    """Per log row, whether the cohort sent it to Supabase: by the flag timeline at its
    ``emitted_at``, or as given."""
    if timeline is None:
        return to_numpy(pc.fill_null(expected, False)).astype(bool, copy=False)
    buckets = buckets_of(streams.to_pylist())[ws_code]
    return expected_mask(
        buckets, ws_cat == _CRITICAL, timestamps_us(ws.column("emitted_at")), timeline
    )


def _join(w: Groups, s: Groups) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct log keys against Supabase's: whether each log key is there, the log
    keys that are, and the Supabase group of each of those."""
    pos = np.searchsorted(s.keys, w.keys)
    found = np.zeros(w.m, bool)
    if s.m:
        found = s.keys[np.minimum(pos, s.m - 1)] == w.keys
    common = np.flatnonzero(found)
    return found, common, pos[common]


def _arrivals(sb: pa.Table, backfilled: pa.Table | None) -> tuple[np.ndarray, np.ndarray]:
    """Supabase's ``received_at`` per row, null for the rows a backfill wrote (their time is
    the backfill's, not an arrival), and those rows."""
    received = timestamps_us(sb.column("received_at"))
    backfilled_rows = rows_with_keys(sb, backfilled)
    if backfilled_rows.size:
        received = received.copy()
        received[backfilled_rows] = NULL_TIME
    return received, backfilled_rows


def _per_category(cats: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Counts per category code (weighted when ``weights`` is given)."""
    return np.bincount(cats, weights=weights, minlength=len(CATEGORIES)).astype(np.int64)


def _latencies(sb: pa.Table, received: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """``received_at - emitted_at`` in microseconds of the chosen Supabase rows (-1: none)
    that have both times."""
    rows = chosen[chosen >= 0]
    arrived, emitted = received[rows], timestamps_us(sb.column("emitted_at"))[rows]
    ok = (arrived != NULL_TIME) & (emitted != NULL_TIME)
    return (arrived[ok] - emitted[ok]).astype(np.int64)


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

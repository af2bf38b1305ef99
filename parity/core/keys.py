"""Rows keyed by (stream, seq), columnar: stream codes, packed keys, groups of copies,
sequence gaps and key lists. The reconciliation and the checks build on these."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from parity.core.routing import to_numpy

#: A received_at that is null, as int64 microseconds.
NULL_TIME = np.iinfo(np.int64).min


KEYS_SCHEMA = pa.schema([("stream", pa.string()), ("seq", pa.int64())])


GAPS_SCHEMA = pa.schema(
    [("stream", pa.string()), ("first_missing", pa.int64()), ("last_missing", pa.int64())]
)


def require_columns(table: pa.Table, columns: tuple[str, ...], what: str) -> None:
    absent = [c for c in columns if c not in table.column_names]
    if absent:
        raise ValueError(f"{what} lacks column(s) {', '.join(absent)}")


def seq_numbers(table: pa.Table, what: str) -> np.ndarray:
    seq = table.column("seq")
    if seq.null_count:
        raise ValueError(f"{what} has {seq.null_count} rows without seq")
    return to_numpy(pc.cast(seq, pa.int64())).astype(np.int64, copy=False)


def combined(column: pa.ChunkedArray) -> pa.Array:
    return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)


def encode_streams(
    ws: pa.ChunkedArray, sb: pa.ChunkedArray
) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Stream codes for both sides over one sorted dictionary (so code order is
    stream order), hashing each row once."""
    encoded = [pc.dictionary_encode(side).chunks for side in (ws, sb)]
    dictionaries = [c.dictionary for chunks in encoded for c in chunks]
    union = pc.unique(pa.concat_arrays(dictionaries)) if dictionaries else pa.array([], pa.string())
    streams = union.take(pc.sort_indices(union))
    codes = []
    for chunks in encoded:
        parts = [
            to_numpy(pc.index_in(c.dictionary, value_set=streams)).astype(np.int64)[
                to_numpy(c.indices)
            ]
            for c in chunks
        ]
        codes.append(np.concatenate(parts) if parts else np.zeros(0, np.int64))
    return streams, codes[0], codes[1]


def packed_keys(
    ws_code: np.ndarray,
    ws_seq: np.ndarray,
    sb_code: np.ndarray,
    sb_seq: np.ndarray,
    n_streams: int,
) -> tuple[np.ndarray, np.ndarray]:
    """One int64 per row, ordered like (stream, seq): packed bits when the ranges allow
    (always for realistic data), else a dense rank over both sides."""
    if ws_seq.size + sb_seq.size == 0:
        return ws_seq.copy(), sb_seq.copy()
    low = min(int(a.min()) for a in (ws_seq, sb_seq) if a.size)
    high = max(int(a.max()) for a in (ws_seq, sb_seq) if a.size)
    seq_bits = 63 - max(1, (n_streams - 1).bit_length())
    if high - low < (1 << seq_bits):
        return (ws_code << seq_bits) | (ws_seq - low), (sb_code << seq_bits) | (sb_seq - low)
    codes, seqs = np.concatenate([ws_code, sb_code]), np.concatenate([ws_seq, sb_seq])
    order = np.lexsort((seqs, codes))
    new = np.ones(order.size, bool)
    new[1:] = (codes[order][1:] != codes[order][:-1]) | (seqs[order][1:] != seqs[order][:-1])
    rank = np.empty(order.size, np.int64)
    rank[order] = np.cumsum(new)
    return rank[: ws_code.size], rank[ws_code.size :]


def ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(start, start + length)`` for each pair."""
    offsets = np.cumsum(lengths) - lengths
    return np.repeat(starts - offsets, lengths) + np.arange(int(lengths.sum()))


@dataclass(frozen=True)
class Groups:
    """Rows grouped by key: ``order`` sorts rows by key (ties in row order), group g is
    ``order[starts[g]:starts[g] + counts[g]]`` and has key ``keys[g]``."""

    order: np.ndarray
    starts: np.ndarray
    counts: np.ndarray
    keys: np.ndarray
    first_rows: np.ndarray  # order[starts]: each group's first row
    dup: np.ndarray  # the groups with more than one row (few)

    @property
    def m(self) -> int:
        return int(self.keys.size)

    def any(self, row_mask: np.ndarray) -> np.ndarray:
        """Per group: whether any of its rows is set."""
        out = row_mask[self.first_rows]
        if self.dup.size:
            rows, gid = self.rows_of(self.dup)
            out[self.dup] = np.bincount(gid, weights=row_mask[rows], minlength=self.dup.size) > 0
        return out

    def group_of(self, keys: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The groups of a few rows, given every row's key."""
        return np.searchsorted(self.keys, keys[rows])

    def rows_of(self, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows of the given groups, and for each row its index into ``groups``."""
        lengths = self.counts[groups]
        rows = self.order[ranges(self.starts[groups], lengths)]
        return rows, np.repeat(np.arange(groups.size), lengths)

    @classmethod
    def of(cls, keys: np.ndarray) -> Groups:
        n = keys.size
        # A snapshot part is written sorted by (stream, seq), which is key order: proven here
        # in one pass, the sort is skipped (and ties are already in row order).
        presorted = n < 2 or bool(np.all(keys[1:] >= keys[:-1]))
        order = np.arange(n) if presorted else np.argsort(keys)  # introsort: fastest
        ordered = keys if presorted else keys[order]
        new = np.ones(n, bool)
        new[1:] = ordered[1:] != ordered[:-1]
        starts = np.flatnonzero(new)
        counts = np.diff(starts, append=n)
        dup = np.flatnonzero(counts > 1)
        if dup.size and not presorted:  # restore row order inside the (few) duplicate groups
            positions = ranges(starts[dup], counts[dup])
            rows = order[positions]
            order[positions] = rows[np.lexsort((rows, np.repeat(np.arange(dup.size), counts[dup])))]
        return cls(order, starts, counts, ordered[starts], order[starts], dup)


def checksum_codes(*columns: pa.Array) -> list[np.ndarray]:
    """Equal codes for equal checksums across the columns; a null equals nothing on
    another column (code 0 on the first, 1 on the others) and is one value within it."""
    joint = pc.dictionary_encode(pa.concat_arrays([c.cast(pa.string()) for c in columns]))
    codes = to_numpy(pc.fill_null(joint.indices, -2)).astype(np.int64) + 2
    out, at = [], 0
    for i, c in enumerate(columns):
        part = codes[at : at + len(c)]
        part[part == 0] = min(i, 1)
        out.append(part)
        at += len(c)
    return out


def duplicate_copies(g: Groups, checksums: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Per duplicated group (``g.dup``): surplus copies repeating a checksum an earlier
    copy had (retry), and copies bringing a new one (conflicting)."""
    if g.dup.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    rows, gid = g.rows_of(g.dup)
    (codes,) = checksum_codes(checksums.take(rows))
    distinct = np.bincount(np.unique((gid << 32) | codes) >> 32, minlength=g.dup.size)
    return g.counts[g.dup] - distinct, distinct - 1


def out_of_order(s: Groups, code: np.ndarray, received: np.ndarray) -> np.ndarray:
    """Rows (with a received_at) for which a higher seq of their stream was received
    strictly earlier: in (received_at, seq) order, exactly the rows whose seq is below
    the highest seq before them. One pass over the key order, no sort by time."""
    if s.m < 2:
        return np.zeros(0, np.int64)
    r = received[s.order]  # key order: (stream, seq)
    valid = r != NULL_TIME
    if not valid.any():
        return np.zeros(0, np.int64)
    bits = 63 - max(1, int(code.max()).bit_length())
    low, high = int(r[valid].min()), int(r[valid].max())
    if high - low >= 1 << bits:  # a span of centuries: rank the instants instead
        rank = np.unique(r[valid], return_inverse=True)[1]
        r = r.copy()
        r[valid] = rank
        low, bits = 0, min(bits, 62)
    # Stream code in the high bits, so a minimum over later keys never leaves the stream.
    arrival = (code[s.order] << bits) | np.where(valid, r - low, (1 << bits) - 1)
    first = arrival[s.starts] if s.dup.size == 0 else np.minimum.reduceat(arrival, s.starts)
    later = np.empty_like(first)
    later[:-1] = np.minimum.accumulate(first[::-1])[::-1][1:]  # over the groups after g
    later[-1] = np.iinfo(np.int64).max
    late = valid & (np.repeat(later, s.counts) < arrival)
    return s.order[late]


def gap_starts(code: np.ndarray, seq: np.ndarray) -> np.ndarray:
    """Positions ``i`` of rows sorted by (stream, seq) where a run of missing seqs follows:
    row ``i + 1`` is of the same stream and more than one seq further."""
    return np.flatnonzero((code[1:] == code[:-1]) & (seq[1:] - seq[:-1] > 1))


def log_gaps(streams: pa.Array, code: np.ndarray, seq: np.ndarray) -> pa.Table:
    at = gap_starts(code, seq)
    return pa.table(
        {
            "stream": streams.take(code[at]),
            "first_missing": seq[at] + 1,
            "last_missing": seq[at + 1] - 1,
        },
        schema=GAPS_SCHEMA,
    )


def supabase_gaps(
    streams: pa.Array,
    code: np.ndarray,
    seq: np.ndarray,
    expected: np.ndarray,
    present: np.ndarray,
) -> pa.Table:
    """Runs of expected log keys absent from Supabase with an expected key present
    before and after them in the same stream (inputs: per log key, in key order)."""
    absent = np.flatnonzero(expected & ~present)
    there = np.flatnonzero(expected & present)
    if absent.size == 0 or there.size == 0:
        return GAPS_SCHEMA.empty_table()
    nxt = np.searchsorted(there, absent)
    inside = (nxt > 0) & (nxt < there.size)
    absent, nxt = absent[inside], nxt[inside]
    c = code[absent]
    inside = (code[there[nxt - 1]] == c) & (code[there[nxt]] == c)
    c, q = c[inside], seq[absent[inside]]
    if c.size == 0:
        return GAPS_SCHEMA.empty_table()
    run = np.flatnonzero(np.r_[True, (c[1:] != c[:-1]) | (q[1:] != q[:-1] + 1)])
    last = np.append(run[1:], c.size) - 1
    return pa.table(
        {"stream": streams.take(c[run]), "first_missing": q[run], "last_missing": q[last]},
        schema=GAPS_SCHEMA,
    )


def keys_table(streams: pa.Array, code: np.ndarray, seq: np.ndarray) -> pa.Table:
    return pa.table({"stream": streams.take(code), "seq": seq}, schema=KEYS_SCHEMA)


def key_list(keys: pa.Table) -> list[list[Any]]:
    return [
        list(pair)
        for pair in zip(
            keys.column("stream").to_pylist(), keys.column("seq").to_pylist(), strict=True
        )
    ]


def match_checksums(
    w: Groups,
    s: Groups,
    common: np.ndarray,
    sb_of_common: np.ndarray,
    ws_ck: pa.Array,
    sb_ck: pa.Array,
    sb_received: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """For each log key: whether a Supabase copy has a log copy's checksum, and the
    Supabase row that matched (earliest received), -1 when none."""
    ck_match = np.zeros(w.m, bool)
    chosen = np.full(w.m, -1, np.int64)
    single = (w.counts[common] == 1) & (s.counts[sb_of_common] == 1)
    # Keys with one copy a side (nearly all): compare the two checksums directly.
    groups = common[single]
    ws_rows, sb_rows = w.first_rows[groups], s.first_rows[sb_of_common[single]]
    equal = to_numpy(pc.fill_null(pc.equal(ws_ck.take(ws_rows), sb_ck.take(sb_rows)), False))
    equal = equal.astype(bool, copy=False)
    ck_match[groups] = equal
    chosen[groups[equal]] = sb_rows[equal]
    # Keys with copies: match (key, checksum) pairs, no cross product.
    groups = common[~single]
    if groups.size:
        ws_rows, ws_gid = w.rows_of(groups)
        sb_rows, sb_gid = s.rows_of(sb_of_common[~single])
        ws_code, sb_code = checksum_codes(ws_ck.take(ws_rows), sb_ck.take(sb_rows))
        hit = np.isin((sb_gid << 32) | sb_code, (ws_gid << 32) | ws_code)
        ck_match[groups[np.unique(sb_gid[hit])]] = True
        hit_rows, hit_gid = sb_rows[hit], sb_gid[hit]
        received = sb_received[hit_rows]
        # Earliest received first (nulls, int64 min, go last), then one per key.
        first = np.lexsort(
            (np.where(received == NULL_TIME, np.iinfo(np.int64).max, received), hit_gid)
        )
        keep = np.ones(first.size, bool)
        keep[1:] = hit_gid[first][1:] != hit_gid[first][:-1]
        chosen[groups[hit_gid[first][keep]]] = hit_rows[first][keep]
    return ck_match, chosen


def rows_with_keys(sb: pa.Table, backfilled: pa.Table | None) -> np.ndarray:
    """Indices of Supabase rows whose key a backfill wrote. The key list is small, so
    filter candidates by stream and seq first, then match exactly."""
    if backfilled is None or backfilled.num_rows == 0 or sb.num_rows == 0:
        return np.zeros(0, np.int64)
    maybe = pc.and_(
        pc.is_in(sb.column("stream"), value_set=backfilled.column("stream").combine_chunks()),
        pc.is_in(sb.column("seq"), value_set=backfilled.column("seq").combine_chunks()),
    )
    rows = np.flatnonzero(to_numpy(pc.fill_null(maybe, False)))
    if rows.size == 0:
        return rows
    wanted = set(
        zip(
            backfilled.column("stream").to_pylist(),
            backfilled.column("seq").to_pylist(),
            strict=True,
        )
    )
    streams = sb.column("stream").take(rows).to_pylist()
    seqs = sb.column("seq").take(rows).to_pylist()
    keep = [i for i, key in enumerate(zip(streams, seqs, strict=True)) if key in wanted]
    return rows[np.asarray(keep, np.int64)] if keep else np.zeros(0, np.int64)


def invalid_rows(table: pa.Table) -> np.ndarray:
    valid = table.column("checksum_valid")
    if valid.null_count == 0 and pc.all(valid).as_py() is not False:
        return np.zeros(0, np.int64)
    return np.flatnonzero(~to_numpy(pc.fill_null(valid, True)).astype(bool))

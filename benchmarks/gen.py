"""A seeded, in-memory hour of monitoring events: the log snapshot and the Supabase
snapshot (``WS_SNAPSHOT_SCHEMA`` / ``SUPABASE_SNAPSHOT_SCHEMA``), with a known share of
every discrepancy kind. Vectorised, so a million events take a few seconds.

Checksums are random 64-hex strings, not the JCS checksum of the row: reconciliation
compares stored checksums and reads ``checksum_valid``; it never recomputes them
(``parity.events.verify_checksums`` has its own benchmark).

    from benchmarks.gen import generate
    hour = generate(1_000_000, seed=7)
    reconcile(hour.ws, hour.sb, timeline=hour.timeline, **hour.window)
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from benchmarks.common import NAMED_STREAMS, TYPES
from parity.core.routing import (
    CRITICAL_EVENTS_SUPABASE,
    SUPABASE_ROLLOUT_PERCENTAGE,
    FlagChange,
    FlagTimeline,
    expected_in_supabase,
)
from parity.core.schema import SUPABASE_SNAPSHOT_SCHEMA, WS_SNAPSHOT_SCHEMA

HOUR = dt.datetime(2026, 11, 28, 10, tzinfo=dt.UTC)
_US_PER_HOUR = 3_600_000_000


@dataclass(frozen=True)
class Hour:
    ws: pa.Table
    sb: pa.Table
    timeline: FlagTimeline
    quarantined_lines: int
    #: How many of each discrepancy were injected (before they overlap one another).
    injected: dict[str, int] = field(default_factory=dict)

    @property
    def window(self) -> dict[str, Any]:
        return {
            "window_start": HOUR,
            "window_end": HOUR + dt.timedelta(hours=1),
            "partition": HOUR.strftime("%Y-%m-%d-%H:%M"),
        }


def _hex_checksums(rng: np.random.Generator, n: int) -> pa.Array:
    digits = np.frombuffer(b"0123456789abcdef", np.uint8)
    raw = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    text = np.empty((n, 64), np.uint8)
    text[:, 0::2], text[:, 1::2] = digits[raw >> 4], digits[raw & 15]
    offsets = np.arange(0, 64 * n + 1, 64, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(text.tobytes()))


def _payloads(rng: np.random.Generator, n: int, stream: pa.Array) -> pa.Array:
    """JSON text of about 150 bytes."""
    fillers = pa.array([
        "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz "), 96)) for _ in range(32)
    ])  # fmt: skip
    value = pc.cast(pa.array(rng.integers(0, 10**6, n)), pa.string())
    message = fillers.take(pa.array(rng.integers(0, 32, n)))
    parts = ['{"host":"', stream, '","value":', value, ',"ok":true,"message":"', message, '"}']
    return pc.binary_join_element_wise(*parts, "")


def generate(
    n_events: int = 1_000_000, *, streams: int = 60, seed: int = 0, rate: float = 0.01
) -> Hour:
    """An hour of ``n_events`` log events over ``streams`` streams; ``rate`` of the events
    get each kind of discrepancy. The cohort: CRITICAL on, rollout 50% until half past,
    then 100%."""
    rng = np.random.default_rng(seed)
    names = list(NAMED_STREAMS[:streams]) + [
        f"session-{rng.integers(0, 2**32):08x}" for _ in range(streams - len(NAMED_STREAMS))
    ]
    weights = rng.uniform(0.2, 1.0, streams)
    code = rng.choice(streams, n_events, p=weights / weights.sum())
    hour_us = (HOUR - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)
    emitted = np.sort(rng.integers(0, _US_PER_HOUR, n_events)) + hour_us
    by_stream = np.argsort(code, kind="stable")
    first = np.searchsorted(code[by_stream], np.arange(streams))
    seq = np.empty(n_events, np.int64)
    seq[by_stream] = np.arange(n_events) - first[code[by_stream]]
    seq += rng.integers(1, 10**6, streams)[code]  # streams continue from earlier hours
    shares = np.array([t[2] for t in TYPES])
    kind = rng.choice(len(TYPES), n_events, p=shares / shares.sum())
    stream = pa.array(names).take(pa.array(code))
    emitted_at = pa.array(emitted, pa.timestamp("us", tz="UTC"))
    base = {
        "stream": stream,
        "seq": pa.array(seq),
        "event_type": pa.array([t[0] for t in TYPES]).take(pa.array(kind)),
        "category": pa.array([t[1] for t in TYPES]).take(pa.array(kind)),
        "declared_category": pa.nulls(n_events, pa.string()),
        "unclassified": pa.array(kind == len(TYPES) - 1),
        "emitted_at": emitted_at,
        "payload": _payloads(rng, n_events, stream),
        "checksum": _hex_checksums(rng, n_events),
    }
    timeline = FlagTimeline(
        (
            FlagChange(CRITICAL_EVENTS_SUPABASE, True, HOUR - dt.timedelta(days=1)),
            FlagChange(SUPABASE_ROLLOUT_PERCENTAGE, 50, HOUR - dt.timedelta(days=1)),
            FlagChange(SUPABASE_ROLLOUT_PERCENTAGE, 100, HOUR + dt.timedelta(minutes=30)),
        )
    )
    expected = np.asarray(expected_in_supabase(pa.table(base), timeline))
    k = max(1, int(n_events * rate))

    def pick(pool: np.ndarray, count: int) -> np.ndarray:
        return np.sort(rng.choice(pool, min(count, pool.size), replace=False))

    # Supabase: the expected events, minus losses, plus every other kind.
    kept = np.flatnonzero(expected)
    missing = pick(kept, k)
    sb_rows = np.setdiff1d(kept, missing)
    sb = {name: col.take(pa.array(sb_rows)) for name, col in base.items()}
    m = sb_rows.size
    latency = np.round(rng.lognormal(np.log(20_000), 0.6, m)).astype(np.int64)
    late = pick(np.arange(m), k)
    latency[late] += rng.integers(2_000_000, 20_000_000, late.size)  # arrives out of order
    sb["received_at"] = pa.array(emitted[sb_rows] + latency, pa.timestamp("us", tz="UTC"))
    tampered = pick(np.arange(m), k)
    is_tampered = np.zeros(m, bool)
    is_tampered[tampered] = True
    sb["checksum"] = pc.replace_with_mask(
        sb["checksum"], pa.array(is_tampered), _hex_checksums(rng, tampered.size)
    )
    sb_valid = np.ones(m, bool)
    sb_valid[pick(np.arange(m), k)] = False
    sb["checksum_valid"] = pa.array(sb_valid)
    sb_table = pa.table(sb)
    sb_table = _with_duplicates(rng, sb_table, pick(np.arange(m), k))
    extra = pick(np.arange(m), k)  # unexpected: the same streams, seqs past the log's end
    ghosts = sb_table.take(pa.array(extra))
    ghosts = ghosts.set_column(
        ghosts.schema.get_field_index("seq"), "seq", pc.add(ghosts.column("seq"), 10**7)
    )
    # Received after the hour, in seq order within each stream: unexpected, not late.
    after = hour_us + _US_PER_HOUR + 1_000 * np.arange(extra.size)
    ghosts = ghosts.set_column(
        ghosts.schema.get_field_index("received_at"), "received_at",
        pa.array(after, pa.timestamp("us", tz="UTC")),
    )  # fmt: skip
    sb_table = pa.concat_tables([sb_table, ghosts])
    sb_table = sb_table.take(pc.sort_indices(sb_table, [("received_at", "ascending")]))
    sb_table = sb_table.select(SUPABASE_SNAPSHOT_SCHEMA.names).cast(SUPABASE_SNAPSHOT_SCHEMA)

    # The log: the base events, with gaps (lost lines), duplicates and invalid checksums.
    lost = pick(np.arange(n_events), k)
    ws_rows = np.setdiff1d(np.arange(n_events), lost)
    ws = pa.table({name: col.take(pa.array(ws_rows)) for name, col in base.items()})
    ws_valid = np.ones(ws.num_rows, bool)
    ws_valid[pick(np.arange(ws.num_rows), k)] = False
    ws = ws.append_column("checksum_valid", pa.array(ws_valid))
    ws = _with_duplicates(rng, ws, pick(np.arange(ws.num_rows), k))
    ws = ws.take(pc.sort_indices(ws, [("emitted_at", "ascending")]))
    n = ws.num_rows
    ws = ws.append_column(
        "logged_at", pc.add(ws.column("emitted_at"), pa.scalar(1_000, pa.duration("us")))
    )
    ws = ws.append_column(
        "source_file", pa.array(["2026-11-28/10.jsonl"] * n).dictionary_encode().cast(pa.string())
    )
    ws = ws.append_column("source_line", pa.array(np.arange(1, n + 1)))
    ws = ws.select(WS_SNAPSHOT_SCHEMA.names).cast(WS_SNAPSHOT_SCHEMA)
    injected = {
        "missing": missing.size, "out_of_order": late.size, "checksum_mismatch": tampered.size,
        "invalid_supabase": k, "duplicates_supabase": k, "unexpected": extra.size,
        "ws_gaps": lost.size, "invalid_ws": k, "duplicates_ws": k,
    }  # fmt: skip
    return Hour(ws.combine_chunks(), sb_table.combine_chunks(), timeline, k // 10, injected)


def _with_duplicates(rng: np.random.Generator, table: pa.Table, rows: np.ndarray) -> pa.Table:
    """Append copies of ``rows``: half retries (same checksum), half conflicting."""
    copies = table.take(pa.array(rows))
    conflicting = np.zeros(rows.size, bool)
    conflicting[: rows.size // 2] = True
    fresh = _hex_checksums(rng, rows.size)
    checksum = pc.if_else(pa.array(conflicting), fresh, copies.column("checksum"))
    copies = copies.set_column(copies.schema.get_field_index("checksum"), "checksum", checksum)
    return pa.concat_tables([table, copies])

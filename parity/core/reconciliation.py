"""The outcome of reconciling an hour (:class:`Reconciliation`): counts per category, the
key lists, the raw latencies; its report (contract §6) and the merge of the pieces of an
hour reconciled stream by stream (:func:`parity.core.reconcile.reconcile_in_parts`).

Merging is exact: counts add, key lists concatenate in (stream, seq) order, samples keep the
first ``sample_limit`` keys, and the latency percentiles stay exact because each piece keeps
its raw latencies (int64 microseconds, 8 bytes per matched event).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from parity.core.keys import key_list
from parity.core.latency import latency_histogram, latency_summary
from parity.core.report import REPORT_KEYS, discrepancy_counts

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

"""Time every asset check of one hour at scale: two 1,000,000-row snapshots (WS log and
Supabase) with about 1% faults (lost rows, invalid checksums, duplicates half of which
conflict), and the hour's report.

    python benchmarks/bench_checks.py [--events 1000000] [--streams 1000] [--repeat 7]

Prints JSON: the first call (GE import and context creation included), then the warm
calls, per asset and in total (wall and CPU seconds), next to the reconciliation of the
same tables. The target: all checks together take less than that reconciliation.
Tables are synthetic and built columnar (checksums are random hex and ``checksum_valid``
is set directly: this measures the checks, not checksum recomputation, which the snapshot
assets do). The report is the real reconciliation of the two tables.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from parity.core.schema import SUPABASE_SNAPSHOT_SCHEMA, WS_SNAPSHOT_SCHEMA

PARTITION = "2026-11-28-10:00"
HOUR_US = 1_795_860_000_000_000  # 2026-11-28T10:00:00Z in microseconds


def snapshots(events: int, streams: int, fault_rate: float, seed: int = 7):
    """(ws, supabase) tables: every stream gapless, then ~fault_rate of rows faulted."""
    rng = np.random.default_rng(seed)
    per_stream = events // streams
    code = np.repeat(np.arange(streams), per_stream)
    seq = np.tile(np.arange(1, per_stream + 1, dtype=np.int64), streams)
    n = code.size
    names = np.array([f"stream-{i:05d}" for i in range(streams)], dtype=object)
    checksum = np.array([f"{x:064x}" for x in rng.integers(0, 2**62, n)], dtype=object)
    categories = np.array(["CRITICAL", "INFORMATIONAL", "LEGACY"], dtype=object)
    category = categories[rng.integers(0, 3, n)]
    emitted = HOUR_US + (seq * 1_000)

    def faulted(drop: float, invalid: float, dup: float):
        keep = rng.random(n) >= drop
        valid = rng.random(n) >= invalid
        dups = np.flatnonzero(rng.random(n) < dup)
        rows = np.concatenate([np.flatnonzero(keep), dups])
        rng.shuffle(rows)  # arrival order, not sorted
        dup_checksum = checksum.copy()
        conflicting = dups[: dups.size // 2]
        dup_checksum[conflicting] = "f" * 64
        cs = np.concatenate([checksum[np.flatnonzero(keep)], dup_checksum[dups]])
        return rows, valid[rows], cs

    def base(rows, valid, cs):
        return {
            "stream": pa.array(names[code[rows]], pa.string()),
            "seq": pa.array(seq[rows]),
            "event_type": pa.array(np.full(rows.size, "user.action", dtype=object), pa.string()),
            "category": pa.array(category[rows], pa.string()),
            "declared_category": pa.nulls(rows.size, pa.string()),
            "unclassified": pa.array(np.zeros(rows.size, dtype=bool)),
            "emitted_at": pa.array(emitted[rows], WS_SNAPSHOT_SCHEMA.field("emitted_at").type),
            "payload": pa.array(np.full(rows.size, "{}", dtype=object), pa.string()),
            "checksum": pa.array(cs, pa.string()),
            "checksum_valid": pa.array(valid),
        }

    rows, valid, cs = faulted(drop=fault_rate / 3, invalid=fault_rate / 3, dup=fault_rate / 3)
    ws_cols = base(rows, valid, cs)
    ws_cols["logged_at"] = ws_cols["emitted_at"]
    ws_cols["source_file"] = pa.array(np.full(rows.size, "2026-11-28/10.jsonl", dtype=object))
    ws_cols["source_line"] = pa.array(np.arange(1, rows.size + 1))
    ws = pa.table({f.name: ws_cols[f.name] for f in WS_SNAPSHOT_SCHEMA}, schema=WS_SNAPSHOT_SCHEMA)

    rows, valid, cs = faulted(drop=fault_rate / 3, invalid=fault_rate / 3, dup=fault_rate / 3)
    sb_cols = base(rows, valid, cs)
    sb_cols["received_at"] = pa.array(emitted[rows] + 40_000, sb_cols["emitted_at"].type)
    sb = pa.table(
        {f.name: sb_cols[f.name] for f in SUPABASE_SNAPSHOT_SCHEMA}, schema=SUPABASE_SNAPSHOT_SCHEMA
    )
    return ws, sb


def reconciliation(ws: pa.Table, sb: pa.Table) -> dict:
    """The hour's real report (every log event expected in Supabase)."""
    from parity.core.reconcile import reconcile

    start = dt.datetime(2026, 11, 28, 10, tzinfo=dt.UTC)
    return reconcile(
        ws,
        sb,
        expected=pa.array(np.ones(ws.num_rows, dtype=bool)),
        window_start=start,
        window_end=start + dt.timedelta(hours=1),
        partition=PARTITION,
        quarantined_lines=12,
    ).to_report()


def run_all(inputs: dict, reports_dir: Path | None) -> dict[str, float]:
    """Wall seconds per asset's checks, their total, and the total's CPU seconds."""
    from checks import specs
    from checks.evaluate import evaluate_checks

    timings = {}
    cpu = time.process_time()
    for asset, data in inputs.items():
        selected = {c.name for c in specs.checks_for(asset)}
        began = time.perf_counter()
        results = list(evaluate_checks(asset, data, selected, PARTITION, reports_dir))
        timings[asset] = round(time.perf_counter() - began, 4)
        assert len(results) == len(selected)
    timings["total"] = round(sum(timings.values()), 4)
    timings["total_cpu"] = round(time.process_time() - cpu, 4)
    return timings


def time_reconciliation(ws: pa.Table, sb: pa.Table, repeat: int) -> tuple[dict, dict]:
    """The report, and the median wall and CPU seconds of producing it."""
    walls, cpus = [], []
    for _ in range(repeat):
        began, cpu = time.perf_counter(), time.process_time()
        doc = reconciliation(ws, sb)
        walls.append(time.perf_counter() - began)
        cpus.append(time.process_time() - cpu)
    timing = {"wall": round(statistics.median(walls), 4), "cpu": round(statistics.median(cpus), 4)}
    return doc, timing


def import_cost() -> float:
    """Seconds to import great_expectations in a fresh interpreter."""
    code = (
        "import time; t = time.perf_counter(); import great_expectations; "
        "print(time.perf_counter() - t)"
    )
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, check=True
    )
    return round(float(out.stdout.strip()), 3)


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(statistics.median(r[k] for r in runs), 4) for k in runs[0]}


def _best(runs: list[dict[str, float]]) -> dict[str, float]:
    """The fastest run (whole runs, so its parts add up to its total)."""
    return min(runs, key=lambda r: r["total"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--streams", type=int, default=1_000)
    parser.add_argument("--fault-rate", type=float, default=0.01)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    began = time.perf_counter()
    ws, sb = snapshots(args.events, args.streams, args.fault_rate)
    build_s = time.perf_counter() - began
    doc, reconcile_s = time_reconciliation(ws, sb, args.repeat)
    inputs = {"ws_log_snapshot": ws, "supabase_events_snapshot": sb, "event_reconciliation": doc}
    with tempfile.TemporaryDirectory() as tmp:
        first = run_all(inputs, Path(tmp))
        warm = [run_all(inputs, Path(tmp)) for _ in range(args.repeat)]
    unwritten = [run_all(inputs, None) for _ in range(args.repeat)]
    print(
        json.dumps(
            {
                "events": args.events,
                "streams": args.streams,
                "fault_rate": args.fault_rate,
                "ws_rows": ws.num_rows,
                "supabase_rows": sb.num_rows,
                "build_tables_s": round(build_s, 2),
                "ge_import_fresh_interpreter_s": import_cost(),
                "reconciliation_median_s": reconcile_s,
                "first_call_s": first,
                "warm_median_s": _median(warm),
                "warm_best_s": _best(warm),
                "warm_median_without_ge_file_s": _median(unwritten),
                "warm_totals_s": [w["total"] for w in warm],
                "python": platform.python_version(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

"""Parity's reconcile against its peers on the same in-memory hour.

    python benchmarks/bench_reconcile.py [--events 1000000] [--seed 0]

Each approach runs in a fresh process that generates the same seeded hour
(``benchmarks.gen.generate``), builds its inputs (Arrow tables for Parity; pandas frames, converted
from those tables, for the others; conversion is not timed), resets the kernel's peak-RSS
counter and then times only the comparison:

- ``parity``: ``parity.reconcile.reconcile`` (report building timed separately),
- ``parity_parts``: ``reconcile_in_parts`` over 8 stream pieces of the same tables,
- ``pandas_merge``: ``pandas.merge(ws, sb, on=["stream", "seq"], how="outer",
  indicator=True)`` alone, none of the classification that would follow it,
- ``datacompy``: ``datacompy.PandasCompare(ws, sb, join_columns=["stream", "seq"])``
  (datacompy 1.x; the comparison runs in the constructor), once.

Prints one JSON document: wall and CPU seconds (best and all runs), peak RSS of the
process (data included) and its growth over the RSS before the run, and the ratios.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Run as a script (the parent and its --child processes): the repository root on the path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import reset_peak, status_kb  # noqa: E402

APPROACHES = {"parity": 5, "parity_parts": 3, "pandas_merge": 3, "datacompy": 1}
SHOWN = ("ws_events", "supabase_events", "expected_in_supabase", "matched",
         "missing_in_supabase", "unexpected_in_supabase", "checksum_mismatches",
         "out_of_order_supabase")  # fmt: skip


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _job(approach: str, n: int, seed: int) -> tuple[Callable[[], Any], Callable[[Any], Any]]:
    from benchmarks.gen import generate

    hour = generate(n, seed=seed)
    if approach.startswith("parity"):
        from parity.core.reconcile import reconcile, reconcile_in_parts, split_by_stream

        kw = dict(timeline=hour.timeline, quarantined_lines=hour.quarantined_lines, **hour.window)
        if approach == "parity":
            return lambda: reconcile(hour.ws, hour.sb, **kw), lambda r: r.to_report()
        return (
            lambda: reconcile_in_parts(split_by_stream(hour.ws, hour.sb, 8), **kw),
            lambda r: r.to_report(),
        )
    ws, sb = hour.ws.to_pandas(), hour.sb.to_pandas()
    if approach == "pandas_merge":
        import pandas as pd

        def merge() -> Any:
            return pd.merge(ws, sb, on=["stream", "seq"], how="outer", indicator=True)

        return merge, lambda r: r["_merge"].value_counts().to_dict()
    import datacompy

    def compare() -> Any:
        return datacompy.PandasCompare(ws, sb, join_columns=["stream", "seq"])

    return compare, lambda r: {"rows_in_common": r.count_matching_rows()}


def child(approach: str, n: int, seed: int, repeat: int) -> dict[str, Any]:
    import pyarrow as pa

    run, summarise = _job(approach, n, seed)
    gc.collect()
    pa.default_memory_pool().release_unused()  # the generator's scratch, not the data
    resettable = reset_peak()
    rss_before = status_kb("VmRSS")
    walls, cpus, summary, after_s = [], [], None, None
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        result = run()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        start = time.perf_counter()
        summary = summarise(result)
        after_s = time.perf_counter() - start
        del result
        gc.collect()
    peak = status_kb("VmHWM")
    return {
        "approach": approach,
        "wall_s": round(min(walls), 3),
        "wall_s_runs": [round(w, 3) for w in walls],
        "cpu_s": round(min(cpus), 3),
        "peak_rss_mb": round(peak / 1024, 1),
        "rss_before_mb": round(rss_before / 1024, 1),
        "rss_growth_mb": round((peak - rss_before) / 1024, 1),
        "peak_reset": resettable,
        "summary_s": round(after_s or 0.0, 3),
        "summary": {
            str(k): _plain(v)
            for k, v in (summary or {}).items()
            if k in SHOWN or not approach.startswith("parity")
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=list(APPROACHES), action="append")
    parser.add_argument("--child", choices=list(APPROACHES), help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.events, args.seed, args.repeat)))
        return
    results: dict[str, Any] = {}
    for approach in args.only or list(APPROACHES):
        proc = subprocess.run(
            [sys.executable, __file__, "--child", approach, "--events", str(args.events),
             "--seed", str(args.seed), "--repeat", str(APPROACHES[approach])],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode:
            results[approach] = {"error": proc.stderr.strip().splitlines()[-1:]}
            continue
        results[approach] = json.loads(proc.stdout.strip().splitlines()[-1])
    base = results.get("parity", {}).get("wall_s")
    ratios = {
        f"{name}_over_parity": round(r["wall_s"] / base, 1)
        for name, r in results.items()
        if base and "wall_s" in r and name != "parity"
    }
    print(json.dumps({
        "events": args.events,
        "seed": args.seed,
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "results": results,
        "speedup": ratios,
    }, indent=2, default=str))  # fmt: skip


if __name__ == "__main__":
    main()

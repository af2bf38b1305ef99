"""Memory and speed of the WebSocket log reader (``parity.wslog.read_window``).

Generates a log of about ``--size-mb`` MB (default 200) under a temporary directory, spread
over the hour files 09, 10 and 11 of one day (15 % / 70 % / 15 %, with some events logged
late into the next hour's file), with realistic ~150-byte nested payloads and valid
checksums. Then it reads two windows, each in a fresh subprocess so that ``ru_maxrss`` is
the reader's own peak:

- ``in_window``: partition 10:00. All three files are scanned and most lines are kept, so
  the output table grows with the data.
- ``neighbour``: partition 09:00. Files 09 and 10 are scanned; the big file 10 belongs to
  another partition, so almost all of its lines are read and dropped. Peak memory here
  shows that reading itself is bounded (one line plus I/O buffers and one Arrow batch of
  Python objects), whatever the scanned size.

Prints one JSON line with the figures. Run: ``python benchmarks/bench_wslog_memory.py``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DAY = dt.datetime(2026, 11, 28, tzinfo=dt.UTC)
HOURS = {9: 0.15, 10: 0.70, 11: 0.15}
EVENT_TYPES = [
    "system.health", "error.raised", "perf.alert", "connection.status", "debug.log",
    "metrics.verbose", "session.started", "user.action", "deprecated.x",
]  # fmt: skip
REGIONS = ["eu-west-1", "us-east-1", "ap-south-1", "sa-east-1"]


def _payload(rng: random.Random, i: int) -> dict:
    return {
        "host": f"web-{rng.randrange(100):02d}",
        "region": rng.choice(REGIONS),
        "metrics": {
            "cpu": (2 * rng.randrange(10000) + 1) / 200,  # never integral: 1.0 vs 1
            "mem_mb": rng.randrange(256, 16384),
            "latency_ms": [rng.randrange(1, 500) for _ in range(3)],
        },
        "tags": ["canary", f"v{i % 7}"],
        "ok": rng.random() > 0.05,
    }


def generate(log_dir: Path, size_bytes: int, seed: int = 7) -> dict:
    """Write the log; returns per-file sizes and line counts."""
    import orjson

    from parity.core.checksum import compute_checksum
    from parity.core.timestamps import format_timestamp

    def checksum(stream: str, seq: int, event_type: str, emitted: str, payload: dict) -> str:
        # For these payloads (ASCII text, small ints, non-integral short floats) the sorted
        # compact orjson text is the RFC 8785 text; it is ~30x faster than ``rfc8785``.
        # Checked against compute_checksum below, and the reader re-verifies every event.
        covered = {"stream": stream, "seq": seq, "event_type": event_type,
                   "emitted_at": emitted, "payload": payload}  # fmt: skip
        return hashlib.sha256(orjson.dumps(covered, option=orjson.OPT_SORT_KEYS)).hexdigest()

    rng = random.Random(seed)
    seqs: dict[str, int] = {}
    handles = {}
    lines = 0
    try:
        for hour, share in HOURS.items():
            start = DAY + dt.timedelta(hours=hour)
            budget = int(size_bytes * share)
            written = 0
            while written < budget:
                now = start + dt.timedelta(seconds=3599.999 * written / budget)
                stream = f"session-{rng.randrange(500):03d}"
                seq = seqs[stream] = seqs.get(stream, 0) + 1
                event_type = rng.choice(EVENT_TYPES)
                payload = _payload(rng, seq)
                emitted = format_timestamp(now)
                line = orjson.dumps({
                    "stream": stream, "seq": seq, "event_type": event_type,
                    "emitted_at": emitted, "payload": payload,
                    "checksum": checksum(stream, seq, event_type, emitted, payload),
                }) + b"\n"  # fmt: skip
                if lines < 1000:
                    assert checksum(stream, seq, event_type, emitted, payload) == compute_checksum(
                        stream, seq, event_type, emitted, payload
                    )
                # 2 % are logged up to 3 minutes late (into the next hour's file near the end).
                logged = now + dt.timedelta(
                    seconds=rng.randrange(180) if rng.random() < 0.02 else 0
                )
                logged_hour = min(logged.hour, max(HOURS))
                fh = handles.get(logged_hour)
                if fh is None:
                    path = log_dir / f"{DAY:%Y-%m-%d}" / f"{logged_hour:02d}.jsonl"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    fh = handles[logged_hour] = open(path, "wb", buffering=1 << 20)  # noqa: SIM115
                fh.write(line)
                written += len(line)
                lines += 1
    finally:
        for fh in handles.values():
            fh.close()
    files = {p.name: p.stat().st_size for p in sorted(log_dir.rglob("*.jsonl"))}
    return {"lines": lines, "files": files, "bytes": sum(files.values())}


def read_in_subprocess(log_dir: Path, hour: int) -> dict:
    """Run :func:`_read_child` in a fresh interpreter and return its figures."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(log_dir), str(hour)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(out.stdout)


def _read_child(log_dir: Path, hour: int) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc

    from parity.core.classify import load_rules
    from parity.io.wslog import list_hour_files, read_window

    classifier = load_rules()
    # Arrow's first table and sort set up its allocator and kernels (~40 MB, once per
    # process): do that before the baseline so the growth measured is the read's own.
    pa.table({"a": ["y", "x"], "b": [2, 1]}).sort_by([("a", "ascending"), ("b", "ascending")])
    start = DAY + dt.timedelta(hours=hour)
    end = start + dt.timedelta(hours=1)
    before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0, c0 = time.perf_counter(), time.process_time()
    result = read_window(log_dir, start, end, classifier=classifier)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scanned = list_hour_files(log_dir, start - dt.timedelta(hours=1), end + dt.timedelta(hours=1))
    scanned_bytes = sum(f.path.stat().st_size for f in scanned)
    print(json.dumps({
        "window": start.isoformat(),
        "files_read": result.files_read,
        "scanned_mb": round(scanned_bytes / 2**20, 1),
        "lines_read": result.lines_read,
        "events": result.events.num_rows,
        "checksums_valid": pc.sum(result.events["checksum_valid"]).as_py() or 0,
        "quarantined": result.quarantined_lines,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "lines_per_s": round(result.lines_read / wall),
        "lines_per_cpu_s": round(result.lines_read / cpu),
        "mb_per_s": round(scanned_bytes / 2**20 / wall, 1),
        "rss_before_read_mb": round(before_kb / 1024, 1),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "peak_growth_mb": round((peak_kb - before_kb) / 1024, 1),
        "table_mb": round(result.events.nbytes / 2**20, 1),
    }))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=200)
    parser.add_argument("--child", nargs=2, metavar=("LOG_DIR", "HOUR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _read_child(Path(args.child[0]), int(args.child[1]))
        return
    with tempfile.TemporaryDirectory(prefix="parity-bench-wslog-") as tmp:
        log_dir = Path(tmp) / "ws-log"
        t0 = time.perf_counter()
        data = generate(log_dir, int(args.size_mb * 2**20))
        generate_s = time.perf_counter() - t0
        runs = {name: read_in_subprocess(log_dir, hour) for name, hour in
                (("in_window", 10), ("neighbour", 9))}  # fmt: skip
    print(json.dumps({
        "benchmark": "wslog_memory",
        "data_mb": round(data["bytes"] / 2**20, 1),
        "data_lines": data["lines"],
        "file_mb": {k: round(v / 2**20, 1) for k, v in data["files"].items()},
        "generate_s": round(generate_s, 1),
        **runs,
    }))  # fmt: skip


if __name__ == "__main__":
    main()

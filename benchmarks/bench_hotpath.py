"""The hot path of ``parity reconcile``, stage by stage, at a million events.

    python benchmarks/bench_hotpath.py [--events 1000000] [--cache /tmp/parity-hotpath-bench]
        [--stages read_window,snapshot,verify_checksums,with_derived_columns] [--repeat 1]

Generates once (cached under ``--cache``, keyed by the event count) an hour of events with
valid RFC 8785 checksums: the WebSocket log (hour files 10 and, for events logged late, 11
of one day, as Parity's producer writes them) and the same events in an embedded
PostgreSQL (``parity.embedded.ensure_embedded`` under ``<cache>/home``, migrated, filled
with ``PostgresStore.insert_events``). The payloads are nested (strings, integers,
non-integral floats, lists, booleans); a few percent carry what the fast paths must hand
to the real canonicaliser: integral and exponent floats, non-ASCII and escaped text,
integers near and beyond 2^53; one in a thousand has a wrong checksum.

Then each stage runs alone, in a fresh process (so peak RSS is the stage's own):

- ``read_window``: ``parity.wslog.read_window`` of the hour (files 09..12 are scanned),
- ``snapshot``: ``PostgresStore.snapshot`` of the hour,
- ``verify_checksums``: ``parity.events.verify_checksums`` on that snapshot,
- ``with_derived_columns``: ``parity.store.with_derived_columns`` on it (classification
  plus checksum verification: what the Supabase snapshot asset does after the snapshot),
- ``io_floor``: reading the log files' bytes, and ``COPY (SELECT …) TO STDOUT`` of the
  window's rows through psycopg into nothing: what no reader can beat.

Prints one JSON document: per stage wall and CPU seconds (user + system, of the process
and its children), lines or rows per wall and per CPU second, peak RSS, and the load
average before and after (the machine may be shared: CPU time is the steadier figure).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HOUR = dt.datetime(2026, 11, 28, 10, tzinfo=dt.UTC)
STAGES = ("io_floor", "read_window", "snapshot", "verify_checksums", "with_derived_columns")
EVENT_TYPES = [
    "system.health", "error.raised", "perf.alert", "connection.status", "debug.log",
    "metrics.verbose", "session.started", "user.action", "deprecated.x", "custom.unmapped",
]  # fmt: skip
REGIONS = ["eu-west-1", "us-east-1", "ap-south-1", "sa-east-1"]


def _payload(rng: random.Random, i: int) -> tuple[dict, bool]:
    """A payload, and whether it needs the real canonicaliser for its checksum."""
    payload: dict[str, Any] = {
        "host": f"web-{rng.randrange(100):02d}",
        "region": rng.choice(REGIONS),
        "metrics": {
            "cpu": (2 * rng.randrange(10000) + 1) / 200,
            "mem_mb": rng.randrange(256, 16384),
            "latency_ms": [rng.randrange(1, 500) for _ in range(3)],
        },
        "tags": ["canary", f"v{i % 7}"],
        "ok": rng.random() > 0.05,
    }
    odd = rng.random()
    if odd < 0.01:
        payload["ratio"] = float(rng.randrange(100))  # integral float: 1.0 vs 1
    elif odd < 0.02:
        payload["user"] = rng.choice(["Zoë", "Łukasz", "日本語", "emoji 😀", 'quote "q"', "tab\t"])
    elif odd < 0.025:
        payload["tiny"] = rng.choice([1e-7, 1.5e300, -2.5e-12, 1e21])
    elif odd < 0.03:
        payload["big"] = rng.choice([2**53 - 1, -(2**53) + 1, 2**53 + 1, 2**64 + 3])
    return payload, odd < 0.03


def generate(cache: Path, n: int, seed: int = 7) -> dict[str, Any]:
    """Write the log and fill the database once; returns the settings' paths."""
    marker = cache / f"ready-{n}.json"
    if marker.exists():
        return json.loads(marker.read_text())
    import orjson
    import pyarrow as pa

    from parity.core.checksum import compute_checksum
    from parity.core.config import Settings, TableName
    from parity.core.errors import InvalidEventError
    from parity.core.timestamps import format_timestamp
    from parity.io.embedded import ensure_embedded
    from parity.io.store_pg import PostgresStore

    root = cache / str(n)
    log_dir, home = root / "ws-log", root / "home"
    settings = Settings(home=home, ws_log_dir=log_dir, events_table=TableName("public", "events"))
    rng = random.Random(seed)
    streams = ["health", "errors", "perf", "connection", "metrics", "debug"] + [
        f"session-{rng.getrandbits(32):08x}" for _ in range(54)
    ]
    seqs = dict.fromkeys(streams, 0)
    us_per_event = 3_600_000_000 / n
    rows: dict[str, list] = {k: [] for k in ("stream", "seq", "event_type", "emitted_at",
                                             "received_at", "payload", "checksum")}  # fmt: skip
    url = ensure_embedded(settings)
    store = PostgresStore(url, settings.events_table, statement_timeout_s=0)
    day = log_dir / f"{HOUR:%Y-%m-%d}"
    day.mkdir(parents=True, exist_ok=True)
    files = {h: open(day / f"{h:02d}.jsonl", "wb") for h in (10, 11)}
    inserted = 0
    try:
        for i in range(n):
            stream = streams[min(int(rng.expovariate(1 / 12)), 59)]
            seqs[stream] += 1
            seq = seqs[stream]
            event_type = rng.choice(EVENT_TYPES)
            emitted = HOUR + dt.timedelta(microseconds=int(i * us_per_event))
            text = format_timestamp(emitted)
            payload, odd = _payload(rng, i)
            if odd:
                try:
                    checksum = compute_checksum(stream, seq, event_type, text, payload)
                except InvalidEventError:  # beyond 2^53: never valid, whatever it says
                    checksum = f"{rng.getrandbits(256):064x}"
            else:
                covered = {"stream": stream, "seq": seq, "event_type": event_type,
                           "emitted_at": text, "payload": payload}  # fmt: skip
                checksum = hashlib.sha256(
                    orjson.dumps(covered, option=orjson.OPT_SORT_KEYS)
                ).hexdigest()
            if rng.random() < 0.001:
                checksum = hashlib.sha256(checksum.encode()).hexdigest()  # tampered
            line = {"stream": stream, "seq": seq, "event_type": event_type, "emitted_at": text,
                    "payload": payload, "checksum": checksum}  # fmt: skip
            late = rng.random() < 0.02 and emitted.minute == 59
            if late:
                line["logged_at"] = format_timestamp(emitted + dt.timedelta(minutes=2))
            try:
                encoded = orjson.dumps(line)
            except orjson.JSONEncodeError:  # beyond 64 bits
                encoded = json.dumps(line, separators=(",", ":"), ensure_ascii=False).encode()
            files[11 if late else 10].write(encoded + b"\n")
            for key, value in (("stream", stream), ("seq", seq), ("event_type", event_type),
                               ("emitted_at", emitted), ("checksum", checksum)):  # fmt: skip
                rows[key].append(value)
            rows["received_at"].append(emitted + dt.timedelta(milliseconds=rng.randrange(5, 80)))
            rows["payload"].append(json.dumps(payload))  # any JSON text: jsonb re-renders it
            if len(rows["seq"]) >= 100_000 or i == n - 1:
                inserted += store.insert_events(pa.table(rows))
                for column in rows.values():
                    column.clear()
    finally:
        for fh in files.values():
            fh.close()
    with store.connection() as conn:
        conn.execute("VACUUM ANALYZE public.events")
    info = {"home": str(home), "log_dir": str(log_dir), "table": "public.events",
            "events": n, "inserted": inserted}  # fmt: skip
    marker.write_text(json.dumps(info))
    return info


def _cpu() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _settings(info: dict[str, Any]) -> Any:
    from parity.core.config import Settings, TableName

    return Settings(
        home=Path(info["home"]),
        ws_log_dir=Path(info["log_dir"]),
        events_table=TableName.parse(info["table"]),
    )


def _store(info: dict[str, Any]) -> Any:
    from parity.io.embedded import ensure_embedded
    from parity.io.store_pg import PostgresStore

    settings = _settings(info)
    return PostgresStore(ensure_embedded(settings), settings.events_table, statement_timeout_s=0)


def run_stage(stage: str, info: dict[str, Any]) -> dict[str, Any]:
    """Time one stage in this process (its set-up, e.g. the snapshot for verification, is
    not timed)."""
    end = HOUR + dt.timedelta(hours=1)
    out: dict[str, Any] = {}
    if stage == "read_window":
        from parity.core.classify import load_rules
        from parity.io.wslog import read_window

        classifier = load_rules()

        def job() -> Any:
            read = read_window(Path(info["log_dir"]), HOUR, end, classifier=classifier)
            out.update(rows=read.events.num_rows, lines=read.lines_read,
                       invalid=read.events.num_rows - sum(read.events.column("checksum_valid")
                                                          .to_pylist()))  # fmt: skip
            return read
    elif stage == "io_floor":
        store = _store(info)

        def job() -> Any:
            total = 0
            began = time.perf_counter()
            for path in sorted(Path(info["log_dir"]).rglob("*.jsonl")):
                with open(path, "rb", buffering=0) as fh:
                    while chunk := fh.read(1 << 20):
                        total += len(chunk)
            out["log_bytes"], out["log_read_s"] = total, round(time.perf_counter() - began, 3)
            began = time.perf_counter()
            copied = 0
            with store.connection() as conn, conn.cursor() as cur:
                query = (
                    "COPY (SELECT stream, seq, event_type, category, emitted_at, received_at,"
                    " payload::text, checksum FROM public.events"
                    " WHERE emitted_at >= %s AND emitted_at < %s) TO STDOUT (FORMAT binary)"
                )
                with cur.copy(query, [HOUR, end]) as copy:
                    for block in copy:
                        copied += len(block)
            out["copy_bytes"], out["copy_s"] = copied, round(time.perf_counter() - began, 3)
            out["rows"] = info["events"]
    else:
        store = _store(info)
        if stage == "snapshot":

            def job() -> Any:
                table = store.snapshot(HOUR, end)
                out["rows"] = table.num_rows
                return table
        else:
            snap = store.snapshot(HOUR, end)
            out["rows"] = snap.num_rows
            if stage == "verify_checksums":
                from parity.io.verify import verify_checksums

                def job() -> Any:
                    valid = verify_checksums(snap)
                    out["invalid"] = len(valid) - sum(valid.to_pylist())
                    return valid
            else:
                from parity.core.classify import load_rules
                from parity.io.store import with_derived_columns

                classifier = load_rules()

                def job() -> Any:
                    table = with_derived_columns(snap, classifier)
                    out["invalid"] = table.num_rows - sum(
                        table.column("checksum_valid").to_pylist()
                    )
                    return table

    cpu, wall = _cpu(), time.perf_counter()
    result = job()
    wall, cpu = time.perf_counter() - wall, _cpu() - cpu
    del result
    count = out.get("lines") or out.get("rows") or 0
    out.update(
        wall_s=round(wall, 3),
        cpu_s=round(cpu, 3),
        per_wall_s=round(count / wall) if wall else None,
        per_cpu_s=round(count / cpu) if cpu else None,
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/parity-hotpath-bench"))
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--stage", help=argparse.SUPPRESS)  # child process: one stage
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    info = generate(args.cache, args.events)
    if args.stage:
        print(json.dumps(run_stage(args.stage, info)))
        return
    doc: dict[str, Any] = {"events": args.events, "load_before": os.getloadavg(), "stages": {}}
    for stage in args.stages.split(","):
        runs = []
        for _ in range(args.repeat):
            child = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--events",
                    str(args.events),
                    "--cache",
                    str(args.cache),
                    "--stage",
                    stage,
                ],  # fmt: skip
                check=True,
                capture_output=True,
                text=True,
            )
            runs.append(json.loads(child.stdout.strip().splitlines()[-1]))
        doc["stages"][stage] = min(runs, key=lambda r: r["wall_s"]) | {
            "runs_wall_s": [r["wall_s"] for r in runs],
            "runs_cpu_s": [r["cpu_s"] for r in runs],
        }
    doc["load_after"] = os.getloadavg()
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()

"""What each measured subprocess of :mod:`benchmarks.run` does. Each prints one JSON line.

    python -m benchmarks.children MODE DATASET_DIR HOME

``DATASET_DIR`` holds ``meta.json`` and ``ws-log/``; ``HOME`` is the run's PARITY_HOME. The
database URL comes from ``PARITY_DATABASE_URL``.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import reset_peak, status_kb

_T0 = time.perf_counter()


class Phases:
    """Wall seconds of consecutive named phases, and this process's peak RSS during each
    (MB; the peak is reset before each phase where Linux allows it)."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self.peak_rss_mb: dict[str, int] = {}

    def __call__(self, name: str, fn: Callable[[], Any]) -> Any:
        reset_peak()
        began = time.perf_counter()
        out = fn()
        self.times[name] = round(self.times.get(name, 0.0) + time.perf_counter() - began, 3)
        self.peak_rss_mb[name] = max(self.peak_rss_mb.get(name, 0), status_kb("VmHWM") // 1024)
        return out


def _apply_runtime() -> None:
    """``PARITY_WORKERS`` and ``PARITY_NO_NATIVE`` of the run, as every entry point applies
    them (after the measured imports)."""
    from parity.core.config import Runtime
    from parity.io.runtime import apply_runtime

    apply_runtime(Runtime.from_env(os.environ))


def _window(meta: dict) -> tuple[Any, Any]:
    from parity.core.partitions import window

    return window(meta["partition"])


# -- (1) the I/O floor --------------------------------------------------------------------------


def io_floor(root: Path, meta: dict, home: Path) -> dict:
    """Read the log files' bytes, and COPY the hour's rows out of PostgreSQL, both discarded."""
    import psycopg
    from psycopg import sql

    start, end = _window(meta)
    began = time.perf_counter()
    log_bytes = 0
    for path in sorted((root / "ws-log").rglob("*.jsonl")):
        with open(path, "rb", buffering=0) as fh:
            while chunk := fh.read(8 << 20):
                log_bytes += len(chunk)
    log_s = time.perf_counter() - began
    began = time.perf_counter()
    query = sql.SQL(
        "COPY (SELECT stream, seq, event_type, category, emitted_at, received_at,"
        " payload::text, checksum FROM {} WHERE emitted_at >= {} AND emitted_at < {})"
        " TO STDOUT (FORMAT binary)"
    ).format(
        sql.Identifier(meta["schema"], "monitoring_events"), sql.Literal(start), sql.Literal(end)
    )
    copy_bytes = 0
    with psycopg.connect(os.environ["PARITY_DATABASE_URL"]) as conn, conn.cursor() as cur:
        with cur.copy(query) as copy:
            for block in copy:
                copy_bytes += len(block)
    copy_s = time.perf_counter() - began
    return {
        "log_read_s": round(log_s, 3),
        "log_bytes": log_bytes,
        "copy_out_s": round(copy_s, 3),
        "copy_bytes": copy_bytes,
    }


# -- (2) Parity end to end, plain function calls ---------------------------------------------


def parity_plain(root: Path, meta: dict, home: Path) -> dict:
    """What ``parity reconcile`` does for the hour, as plain calls, phase by phase: read the
    log into a parted snapshot, the same for Supabase (checksums recomputed, batch by
    batch), every asset check through Great Expectations part by part, reconcile part by
    part, the report. ``dagster`` is imported (the checks build ``AssetCheckResult``
    objects) but no run, instance, step or IO manager is involved."""
    from checks import ge_process

    ge_process.start()  # as `parity reconcile` does: GE's import overlaps the work below
    p = Phases()
    p("imports", _parity_imports)
    _apply_runtime()
    import datetime as dt

    import pyarrow.parquet as pq

    from checks import specs
    from checks.evaluate import evaluate_checks
    from parity.core.classify import load_rules
    from parity.core.config import Settings, TableName
    from parity.core.reconcile import LOG_COLUMNS, SUPABASE_COLUMNS, reconcile_in_parts
    from parity.core.schema import SUPABASE_SNAPSHOT_SCHEMA, WS_SNAPSHOT_SCHEMA
    from parity.io.control import load_timeline
    from parity.io.control_pg import PostgresControlPlane
    from parity.io.reports import write_report
    from parity.io.snapshot import SnapshotWriter, aligned_parts
    from parity.io.store import derived_batches
    from parity.io.store_pg import SORT_KEYS as STORE_SORT_KEYS
    from parity.io.store_pg import PostgresStore
    from parity.io.wslog import SORT_KEYS as LOG_SORT_KEYS
    from parity.io.wslog import read_window

    env = {
        "PARITY_HOME": str(home),
        "PARITY_WS_LOG_DIR": str(root / "ws-log"),
        "PARITY_DATABASE_URL": os.environ["PARITY_DATABASE_URL"],
        "PARITY_EVENTS_TABLE": f"{meta['schema']}.monitoring_events",
    }
    settings = Settings.from_env(env)
    partition = meta["partition"]
    start, end = _window(meta)
    classifier = load_rules(None)
    quarantine = settings.layout.quarantine(partition)
    snapshots = settings.layout.snapshots_dir

    def path(asset: str) -> Path:
        out = settings.layout.snapshot(asset, partition)
        out.parent.mkdir(parents=True, exist_ok=True)
        return out

    def checks(asset: str, data: Any) -> list:
        names = {c.name for c in specs.checks_for(asset)}
        return list(evaluate_checks(asset, data, names, partition, layout=settings.layout))

    def log_snapshot() -> Any:
        with SnapshotWriter(
            WS_SNAPSHOT_SCHEMA, LOG_SORT_KEYS, spill_dir=snapshots / ".staging"
        ) as sink:
            read_window(
                settings.ws_log_dir, start, end, classifier=classifier,
                grace=dt.timedelta(hours=1), quarantine_path=quarantine, sink=sink,
            )  # fmt: skip
            return sink.finish(path(specs.WS_LOG_SNAPSHOT))

    store = PostgresStore(settings.database_url, TableName.parse(env["PARITY_EVENTS_TABLE"]))
    plane = PostgresControlPlane(settings.database_url, store.table.schema)

    def supabase_snapshot() -> Any:
        with SnapshotWriter(
            SUPABASE_SNAPSHOT_SCHEMA, STORE_SORT_KEYS, spill_dir=snapshots / ".staging"
        ) as sink:
            for rows in derived_batches(store, start, end, classifier):
                sink.write(rows)
            return sink.finish(path(specs.SUPABASE_EVENTS_SNAPSHOT))

    ws = p("log_snapshot", log_snapshot)
    results = p("checks_ws", lambda: checks(specs.WS_LOG_SNAPSHOT, ws))
    sb = p("supabase_snapshot", supabase_snapshot)
    results += p("checks_supabase", lambda: checks(specs.SUPABASE_EVENTS_SNAPSHOT, sb))
    timeline = p("flag_timeline", lambda: load_timeline(plane))
    result = p("reconcile", lambda: reconcile_in_parts(
        aligned_parts(ws, sb, LOG_COLUMNS, SUPABASE_COLUMNS), timeline=timeline,
        window_start=start, window_end=end, partition=partition,
        quarantined_lines=pq.read_metadata(quarantine).num_rows, sample_limit=50))  # fmt: skip
    doc = p("report", lambda: result.to_report())
    p("report_write", lambda: write_report(settings.layout, doc))
    results += p("checks_reconciliation", lambda: checks(specs.EVENT_RECONCILIATION, doc))
    total = time.perf_counter() - _T0
    out = {
        "in_process_s": round(total, 3),
        "phases_s": p.times,
        "phases_peak_rss_mb": p.peak_rss_mb,
        "checks_failed": sorted(r.check_name for r in results if not r.passed),
        "checks_evaluated": len(results),
        "report": _counts(doc),
    }
    return out


def _parity_imports() -> None:
    import pyarrow.parquet  # noqa: F401

    import checks.evaluate  # noqa: F401
    import parity.core.reconcile  # noqa: F401
    import parity.io.store_pg  # noqa: F401
    import parity.io.wslog  # noqa: F401


REPORT_COUNTS = (
    "ws_events", "supabase_events", "expected_in_supabase", "matched", "missing_in_supabase",
    "unexpected_in_supabase", "duplicates_ws", "duplicates_supabase", "checksum_mismatches",
    "invalid_checksums_ws", "invalid_checksums_supabase", "out_of_order_supabase",
    "quarantined_lines",
)  # fmt: skip


def _counts(doc: dict) -> dict:
    out = {k: doc[k] for k in REPORT_COUNTS}
    out["sequence_gaps_ws"] = len(doc["sequence_gaps_ws"])
    return out


# -- (2b) the per-event verification cost, either side ---------------------------------------


class _Discard:
    """A snapshot sink that keeps only counts: the log reader's own work, without spilling."""

    def __init__(self) -> None:
        self.rows = self.valid = 0

    def write(self, batch: Any) -> None:
        self.rows += batch.num_rows
        self.valid += batch.column("checksum_valid").true_count

    def sibling(self) -> _Discard:
        return _Discard()

    def close_spill(self) -> tuple[int, int]:
        return self.rows, self.valid

    def adopt(self, counts: tuple[int, int]) -> None:
        self.rows += counts[0]
        self.valid += counts[1]


def _cpu_s() -> float:
    """CPU seconds of this process and of the (forked, reaped) workers it waited for."""
    import resource

    own, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


#: The Supabase side's per-row cost is measured on at most this many rows of the hour.
VERIFY_SAMPLE_ROWS = 1_000_000
#: Lines of the hour's log the machine's speed is measured on (:func:`machine_floors`).
FLOOR_LINES = 200_000


def machine_floors(log: Path) -> dict[str, float]:
    """Two single-core floors per line of the log, in CPU microseconds: ``hashlib.sha256``
    of the line with its hex digest, and ``orjson.loads`` of it. They say how fast this
    machine is today: the targets' figures were set on a day when the same floors measured
    0.39 and 0.95 us on this kind of line (the kernel prototype's measurements)."""
    import hashlib

    import orjson

    with open(log, "rb") as fh:
        lines = [fh.readline() for _ in range(FLOOR_LINES)]
    lines = [line for line in lines if line]

    def loads(line: bytes) -> None:
        try:
            orjson.loads(line)
        except orjson.JSONDecodeError:
            pass

    best: dict[str, float] = {}
    for _ in range(3):
        for name, fn in (("sha256", lambda line: hashlib.sha256(line).hexdigest()),
                         ("orjson_loads", loads)):  # fmt: skip
            began = _cpu_s()
            for line in lines:
                fn(line)
            us = (_cpu_s() - began) / len(lines) * 1e6
            best[name] = round(min(best.get(name, us), us), 3)
    return best


def verify_cost(root: Path, meta: dict, home: Path) -> dict:
    """CPU microseconds per event of verification on each side, with the kernel or without
    it (``PARITY_NO_NATIVE=1`` in the environment): the log side is the reader's whole
    per-line work (scan, parse, validate, canonicalise, hash, Arrow rows) into a sink that
    discards; the Supabase side is :func:`parity.io.verify.verify_checksums` over the
    hour's rows, timed batch by batch as they arrive (the COPY itself is not counted)."""
    import datetime as dt

    from parity.core.classify import load_rules
    from parity.core.config import TableName
    from parity.io import native
    from parity.io.store_pg import PostgresStore
    from parity.io.verify import verify_checksums
    from parity.io.wslog import read_window

    _apply_runtime()
    start, end = _window(meta)
    classifier = load_rules(None)
    sink = _Discard()
    began = _cpu_s()
    read = read_window(root / "ws-log", start, end, classifier=classifier,
                       grace=dt.timedelta(hours=1), sink=sink)  # type: ignore[arg-type]  # fmt: skip
    log_cpu = _cpu_s() - began
    lines = sink.rows + read.quarantined.num_rows
    store = PostgresStore(os.environ["PARITY_DATABASE_URL"],
                          TableName.parse(f"{meta['schema']}.monitoring_events"))  # fmt: skip
    # The rows are fetched first (up to VERIFY_SAMPLE_ROWS), so the driver's own work is
    # not counted; then verified batch by batch, as the snapshot does.
    # At most VERIFY_SAMPLE_ROWS rows. A sample is not the same rows in every run: the COPY
    # has no ORDER BY, and PostgreSQL starts a large table's sequential scan where the last
    # one left off (synchronize_seqscans), so only whole hours' verdicts are compared.
    batches, fetched, sampled = [], 0, False
    for batch in store.snapshot_batches(start, end):
        batch = batch.slice(0, VERIFY_SAMPLE_ROWS - fetched)
        batches.append(batch)
        fetched += batch.num_rows
        if fetched >= VERIFY_SAMPLE_ROWS:
            sampled = True
            break
    began = _cpu_s()
    valid = sum(verify_checksums(batch).true_count for batch in batches)
    sb_cpu = _cpu_s() - began
    rows = fetched
    return {
        "kernel": native.kernel is not None,
        "log_lines": lines,
        "log_cpu_s": round(log_cpu, 3),
        "log_us_per_event": round(log_cpu / lines * 1e6, 3) if lines else None,
        "log_verdicts": {
            "events": sink.rows,
            "valid": sink.valid,
            "quarantined": read.quarantined.num_rows,
        },  # fmt: skip
        "supabase_rows": rows,
        "supabase_cpu_s": round(sb_cpu, 3),
        "supabase_us_per_event": round(sb_cpu / rows * 1e6, 3) if rows else None,
        "supabase_verdicts": {"rows": rows, "valid": valid},
        "supabase_sampled": sampled,
        "machine_floors_us": machine_floors(next((root / "ws-log").rglob("*.jsonl"))),
    }


# -- (3) the peer pipeline -------------------------------------------------------------------


def peer(root: Path, meta: dict, home: Path) -> dict:
    """The same comparison with the tools people reach for: pandas.read_json(lines=True),
    pandas.read_sql, datacompy on (stream, seq), per-stream gaps in pandas, then checksum
    verification with rfc8785 row by row (timed as its own phase)."""
    p = Phases()
    pd, datacompy, sqlalchemy, psycopg, orjson, rfc8785 = p("imports", _peer_imports)
    import io

    start, end = _window(meta)
    url = os.environ["PARITY_DATABASE_URL"]
    table = f'"{meta["schema"]}".monitoring_events'

    def read_log() -> tuple[Any, int]:
        # read_json fails the whole file on one torn line: keep the lines that parse.
        good, bad = [], 0
        for path in sorted((root / "ws-log").rglob("*.jsonl")):
            with open(path, "rb") as fh:
                for line in fh:
                    try:
                        orjson.loads(line)
                        good.append(line)
                    except orjson.JSONDecodeError:
                        bad += 1
        # precise_float: the default float parser is off by an ulp now and then, which
        # would turn valid checksums invalid.
        frame = pd.read_json(io.BytesIO(b"".join(good)), lines=True, convert_dates=False,
                             dtype=False, precise_float=True)  # fmt: skip
        return frame, bad

    ws, unreadable = p("log_read_json", read_log)

    def clean_log() -> Any:
        nonlocal unreadable
        unreadable += int(ws[["checksum", "payload"]].isna().any(axis=1).sum())  # missing fields
        frame = ws.dropna(
            subset=["stream", "seq", "event_type", "emitted_at", "checksum", "payload"]
        )
        frame = frame.assign(
            seq=frame["seq"].astype("int64"),
            emitted_text=frame["emitted_at"],
            emitted_at=pd.to_datetime(frame["emitted_at"], utc=True, format="ISO8601"),
        )
        return frame[(frame["emitted_at"] >= start) & (frame["emitted_at"] < end)]

    ws = p("log_clean_and_window", clean_log)
    engine = sqlalchemy.create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(url))
    rows_sql = sqlalchemy.text(
        "SELECT stream, seq, event_type, category, emitted_at, received_at,"  # noqa: S608
        f" payload::text AS payload, checksum FROM {table}"
        " WHERE emitted_at >= :s AND emitted_at < :e"
    )
    sb = p(
        "supabase_read_sql", lambda: pd.read_sql(rows_sql, engine, params={"s": start, "e": end})
    )
    audit_sql = sqlalchemy.text(
        "SELECT flag, new_value::text AS value, changed_at"  # noqa: S608
        f' FROM "{meta["schema"]}".feature_flag_audit ORDER BY changed_at'
    )
    audit = pd.read_sql(audit_sql, engine)

    def cohort() -> Any:
        from parity.core.classify import load_rules

        classifier = load_rules(None)
        types = ws["event_type"].unique()
        category = ws["event_type"].map({t: classifier.classify(t) for t in types})
        frame = ws.assign(category=category).sort_values("emitted_at")
        for flag, col, default in (
            ("MONITORING_CRITICAL_EVENTS_SUPABASE", "critical_on", "false"),
            ("MONITORING_SUPABASE_ROLLOUT_PERCENTAGE", "rollout", "0"),
        ):
            changes = audit[audit["flag"] == flag][["changed_at", "value"]].rename(
                columns={"value": col}
            )
            frame = pd.merge_asof(frame, changes, left_on="emitted_at", right_on="changed_at")
            frame[col] = frame[col].fillna(default)
            frame = frame.drop(columns="changed_at")
        buckets = {s: int(hashlib.sha256(s.encode()).hexdigest()[:8], 16) % 100
                   for s in frame["stream"].unique()}  # fmt: skip
        bucket = frame["stream"].map(buckets)
        frame["expected"] = (
            (frame["critical_on"] == "true") & (frame["category"] == "CRITICAL")
        ) | (bucket < frame["rollout"].astype(int))
        return frame

    ws = p("cohort", cohort)
    columns = ["stream", "seq", "event_type", "emitted_at", "checksum"]
    cmp = p(
        "datacompy_compare",
        lambda: datacompy.PandasCompare(
            ws[[*columns, "expected"]],
            sb[[*columns, "received_at"]],
            join_columns=["stream", "seq"],
        ),
    )

    def classify() -> dict:
        ws_only, sb_only, both = cmp.df1_unq_rows, cmp.df2_unq_rows, cmp.intersect_rows
        ws_keys = ws.set_index(["stream", "seq"]).index
        sb_keys = sb.set_index(["stream", "seq"]).index
        lost = ws_only[ws_only["expected"]].drop_duplicates(["stream", "seq"])
        missing = lost[~lost.set_index(["stream", "seq"]).index.isin(sb_keys)]
        extra = sb_only.drop_duplicates(["stream", "seq"])
        unexpected = extra[~extra.set_index(["stream", "seq"]).index.isin(ws_keys)]
        keys = both[both["expected"]] if "expected" in both else both
        matched = keys[keys["checksum_match"]].drop_duplicates(["stream", "seq"])
        lat = sb.merge(matched[["stream", "seq"]], on=["stream", "seq"])
        latency_ms = (lat["received_at"] - lat["emitted_at"]).dt.total_seconds() * 1000
        uniq = ws.drop_duplicates(["stream", "seq"]).sort_values(["stream", "seq"])
        step = uniq.groupby("stream")["seq"].diff()
        order = sb.sort_values(["stream", "received_at"])
        back = order.groupby("stream")["seq"].diff() < 0
        return {
            "ws_events": len(ws),
            "supabase_events": len(sb),
            "expected_in_supabase": int(ws.drop_duplicates(["stream", "seq"])["expected"].sum()),
            "matched": len(matched),
            "missing_in_supabase": len(missing),
            "unexpected_in_supabase": len(unexpected),
            "duplicates_ws": int(ws.duplicated(["stream", "seq"]).sum()),
            "duplicates_supabase": int(sb.duplicated(["stream", "seq"]).sum()),
            "checksum_mismatches": int((~both["checksum_match"]).sum()),
            "out_of_order_supabase": int(back.sum()),
            "sequence_gaps_ws": int((step > 1).sum()),
            "quarantined_lines": unreadable,
            "latency_p95_ms": float(latency_ms.quantile(0.95)) if len(latency_ms) else None,
        }

    summary = p("classify_gaps_latency", classify)

    def verify() -> dict:
        def ok(stream, seq, event_type, emitted, payload, stored) -> bool:  # noqa: ANN001
            covered = {"stream": stream, "seq": seq, "event_type": event_type,
                       "emitted_at": emitted, "payload": payload}  # fmt: skip
            try:
                return hashlib.sha256(rfc8785.dumps(covered)).hexdigest() == stored
            except Exception:  # noqa: BLE001 - unrepresentable values are invalid, not fatal
                return False

        ws_ok = [ok(*r) for r in zip(ws["stream"], ws["seq"], ws["event_type"], ws["emitted_text"],
                                      ws["payload"], ws["checksum"], strict=True)]  # fmt: skip
        emitted = sb["emitted_at"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        payloads = [json.loads(t) for t in sb["payload"]]
        sb_ok = [ok(*r) for r in zip(sb["stream"], sb["seq"], sb["event_type"], emitted,
                                      payloads, sb["checksum"], strict=True)]  # fmt: skip
        return {
            "invalid_checksums_ws": ws_ok.count(False),
            "invalid_checksums_supabase": sb_ok.count(False),
        }

    summary.update(p("checksums_rfc8785", verify))
    total = time.perf_counter() - _T0
    return {
        "in_process_s": round(total, 3),
        "phases_s": p.times,
        "phases_peak_rss_mb": p.peak_rss_mb,
        "without_checksums_s": round(total - p.times["checksums_rfc8785"], 3),
        "report": summary,
    }


def _peer_imports() -> tuple:
    import datacompy
    import orjson
    import pandas as pd
    import psycopg
    import rfc8785
    import sqlalchemy

    return pd, datacompy, sqlalchemy, psycopg, orjson, rfc8785


# -- (4) the comparison alone, on the same in-memory frames ---------------------------------


def _snapshots(home: Path, meta: dict) -> tuple[Any, Any]:
    import pyarrow.parquet as pq

    from checks import specs

    # Both snapshots sorted by (stream, seq), as each part of a snapshot file is (the file
    # itself is in part order): every contender gets these same frames.
    base = home / "snapshots"
    name = f"{meta['partition']}.parquet"
    keys = [("stream", "ascending"), ("seq", "ascending")]
    return (pq.read_table(base / specs.WS_LOG_SNAPSHOT / name).sort_by(keys),
            pq.read_table(base / specs.SUPABASE_EVENTS_SNAPSHOT / name).sort_by(keys))  # fmt: skip


def _component(home: Path, meta: dict, approach: str) -> dict:
    import pyarrow as pa

    ws, sb = _snapshots(home, meta)
    if approach == "reconcile":
        from benchmarks.dataset import timeline
        from parity.core.reconcile import reconcile

        start, end = _window(meta)
        line = timeline()

        def run() -> Any:
            return reconcile(ws, sb, timeline=line, window_start=start, window_end=end,
                             partition=meta["partition"], sample_limit=50).to_report()  # fmt: skip

        repeat = 3
    else:
        import pandas as pd

        wsf, sbf = ws.to_pandas(), sb.to_pandas()
        del ws, sb
        if approach == "pandas_merge":

            def run() -> Any:
                return pd.merge(wsf, sbf, on=["stream", "seq"], how="outer", indicator=True)

            repeat = 3
        else:
            import datacompy

            def run() -> Any:
                return datacompy.PandasCompare(wsf, sbf, join_columns=["stream", "seq"])

            repeat = 1
    gc.collect()
    pa.default_memory_pool().release_unused()
    resettable = reset_peak()
    before = status_kb("VmRSS")
    walls = []
    for _ in range(repeat):
        began = time.perf_counter()
        result = run()
        walls.append(time.perf_counter() - began)
        del result
        gc.collect()
    peak = status_kb("VmHWM")
    return {
        "wall_s": round(min(walls), 3),
        "wall_s_runs": [round(w, 3) for w in walls],
        "rss_before_mb": round(before / 1024, 1),
        "rss_growth_mb": round((peak - before) / 1024, 1) if resettable else None,
    }


def checksums_ws(root: Path, meta: dict, home: Path) -> dict:
    """Profile, not part of any run: ``verify_checksums`` over the stored log snapshot, i.e.
    what the checksum share of the log read costs (the reader verifies line by line)."""
    from parity.io.verify import verify_checksums

    _apply_runtime()
    ws, _ = _snapshots(home, meta)
    began = time.perf_counter()
    valid = verify_checksums(ws)
    return {"wall_s": round(time.perf_counter() - began, 3), "rows": len(valid)}


MODES: dict[str, Callable[[Path, dict, Path], dict]] = {
    "io_floor": io_floor,
    "parity_plain": parity_plain,
    "verify_cost": verify_cost,
    "peer": peer,
    "checksums_ws": checksums_ws,
    "reconcile": lambda r, m, h: _component(h, m, "reconcile"),
    "pandas_merge": lambda r, m, h: _component(h, m, "pandas_merge"),
    "datacompy": lambda r, m, h: _component(h, m, "datacompy"),
}


def main(argv: list[str]) -> None:
    mode, root, home = argv[0], Path(argv[1]), Path(argv[2])
    meta = json.loads((root / "meta.json").read_text())
    out = MODES[mode](root, meta, home)
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main(sys.argv[1:])

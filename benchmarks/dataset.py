"""A seeded hour of monitoring events on disk and in PostgreSQL, for the end-to-end benchmark.

``ensure_dataset(n, seed)`` builds (or finds cached) under ``$PARITY_BENCH_DIR`` (default
``/tmp/parity-bench``), keyed by size and seed:

- the WebSocket log, ``data/n<N>-s<seed>/ws-log/2026-11-28/10.jsonl``: one line per event,
  byte for byte what ``parity.wslog.write_events`` writes (``orjson.dumps(event.to_json_dict())``
  and a newline), events in ``emitted_at`` order;
- the Supabase side, ``bench_n<N>_s<seed>.monitoring_events`` on an embedded PostgreSQL
  under ``$PARITY_BENCH_DIR/pg`` (migrated by Parity, loaded by ``COPY``), with the flag
  history that defines the cohort (CRITICAL events on; rollout 50 % until half past, then
  100 %) in the same schema's audit table.

Events are spread over 60 streams (6 named, 54 sessions) and ten event types of the three
categories. Payloads are about 150 bytes, nested, with unicode text, integers, booleans, a
list and, in a fifth of them, a float (some integral, ``3.0``, where RFC 8785 and orjson
write different text). Every checksum is the real contract §2 checksum: payloads without
floats hash orjson's sorted compact text (canonical for ASCII keys, integers below 2^53
and no floats; the first rows of every chunk are cross-checked against ``rfc8785``), the
others go through ``rfc8785`` itself. Chunks are built by a process pool.

Discrepancies, each ``rate`` (default 1 %) of the events, picked independently:
log lines lost (sequence gaps), log lines written twice, log lines whose payload no longer
matches their checksum, unreadable lines (torn JSON, a missing field: quarantined); rows
missing from Supabase (among the expected), Supabase rows with another valid checksum
(mismatch), Supabase rows whose payload no longer matches their checksum, rows received
2-20 s late (out of order), duplicated rows (half identical retries, half a second version
with its own checksum; the table's unique key is dropped so they can exist), and rows of
five streams the log never saw (unexpected).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import rfc8785

from benchmarks.common import NAMED_STREAMS, TYPES

#: Bump when the data generated for a given (size, seed) changes: cached datasets are rebuilt.
GENERATOR_VERSION = 1
HOUR = dt.datetime(2026, 11, 28, 10, tzinfo=dt.UTC)
PARTITION = "2026-11-28-10:00"
_US_PER_HOUR = 3_600_000_000
_HOUR_US = (HOUR - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)
CHUNK_ROWS = 50_000
GHOST_STREAMS = 5  # streams only Supabase has (unexpected rows)
_HOSTS = [f"web-{i:02d}" for i in range(24)]
_REGIONS = ["eu-west-1", "us-east-1", "ap-south-1", "sa-east-1"]
_USERS = ["Zoë", "José", "Łukasz", "Ана", "山田", "Ngozi", "François ✓", "Søren", "Ayşe", "anon"]
_TAGS = [["api", "v2"], ["ws"], ["db", "retry"], [], ["cache", "miss", "eu"]]
_MESSAGES = [
    "request served within budget",
    "heartbeat ok — all replicas healthy",
    "slow query detected on orders",
    "client reconnected after timeout",
    "cache warmed for tenant",
    "Verbindung wiederhergestellt",
    "rate limit near threshold",
    "session handed over to new node",
]
COPY_COLUMNS = (
    "stream",
    "seq",
    "event_type",
    "category",
    "emitted_at",
    "received_at",
    "payload",
    "checksum",
)


def bench_dir() -> Path:
    return Path(os.environ.get("PARITY_BENCH_DIR") or "/tmp/parity-bench").absolute()


@dataclass(frozen=True)
class Dataset:
    events: int
    seed: int
    root: Path
    url: str
    meta: dict[str, Any]

    @property
    def ws_log_dir(self) -> Path:
        return self.root / "ws-log"

    @property
    def log_files(self) -> list[Path]:
        return sorted(self.ws_log_dir.rglob("*.jsonl"))

    @property
    def schema(self) -> str:
        return self.meta["schema"]

    @property
    def table(self) -> str:
        return f"{self.schema}.monitoring_events"

    def env(self, home: Path) -> dict[str, str]:
        """The environment ``parity reconcile`` runs with against this dataset."""
        return {
            "PARITY_HOME": str(home),
            "PARITY_WS_LOG_DIR": str(self.ws_log_dir),
            "PARITY_DATABASE_URL": self.url,
            "PARITY_EVENTS_TABLE": self.table,
            "PARITY_PARTITIONS_START": "2026-11-27",
        }


# -- the database ----------------------------------------------------------------------------


def server_settings():  # noqa: ANN201
    from parity.core.config import Settings

    home = bench_dir() / "pg"
    return Settings(home=home, ws_log_dir=home / "ws-log")


def ensure_server() -> str:
    """Start (or reuse) the benchmark's embedded PostgreSQL; its URL."""
    from parity.io.embedded import ensure_embedded

    return ensure_embedded(server_settings())


def stop_server() -> None:
    from parity.io.embedded import stop_embedded

    stop_embedded(server_settings())


# -- generation ------------------------------------------------------------------------------


def _pick(rng: np.random.Generator, pool: np.ndarray, count: int) -> np.ndarray:
    return rng.choice(pool, min(count, pool.size), replace=False)


def _plan(n: int, seed: int, rate: float, streams: int = 60) -> tuple[list[dict], dict]:
    """Per-event columns (numpy) and the discrepancies, split into chunk tasks."""
    from parity.core.routing import expected_in_supabase

    rng = np.random.default_rng(seed)
    names = list(NAMED_STREAMS) + [
        f"session-{rng.integers(0, 2**32):08x}" for _ in range(streams - len(NAMED_STREAMS))
    ]
    names += [f"ghost-{i}" for i in range(GHOST_STREAMS)]
    weights = rng.uniform(0.2, 1.0, streams)
    code = rng.choice(streams, n, p=weights / weights.sum())
    emitted = np.sort(rng.integers(0, _US_PER_HOUR, n)) + _HOUR_US
    by_stream = np.argsort(code, kind="stable")
    first = np.searchsorted(code[by_stream], np.arange(streams))
    seq = np.empty(n, np.int64)
    seq[by_stream] = np.arange(n) - first[code[by_stream]]
    seq += rng.integers(1, 10**6, streams)[code]  # streams continue from earlier hours
    shares = np.array([t[2] for t in TYPES])
    kind = rng.choice(len(TYPES), n, p=shares / shares.sum())
    expected = np.asarray(
        expected_in_supabase(
            pa.table(
                {
                    "stream": pa.array(names).take(pa.array(code)),
                    "category": pa.array([t[1] for t in TYPES]).take(pa.array(kind)),
                    "emitted_at": pa.array(emitted, pa.timestamp("us", tz="UTC")),
                }
            ),
            timeline(),
        )
    )
    k = max(1, int(n * rate))
    every = np.arange(n)

    def flag(pool: np.ndarray, count: int = k) -> np.ndarray:
        out = np.zeros(n, bool)
        out[_pick(rng, pool, count)] = True
        return out

    in_log = ~flag(every)
    log_dup = flag(every) & in_log
    log_invalid = flag(every) & in_log
    bad_after = flag(every)
    missing = flag(np.flatnonzero(expected))
    in_sb = expected & ~missing
    sb_rows = np.flatnonzero(in_sb)
    sb_mismatch = flag(sb_rows)
    sb_invalid = flag(sb_rows)
    sb_late = flag(sb_rows)
    sb_dup = np.zeros(n, np.int8)
    dups = _pick(rng, sb_rows, k)
    sb_dup[dups[: dups.size // 2]] = 1  # identical retry
    sb_dup[dups[dups.size // 2 :]] = 2  # a second version, its own valid checksum
    latency = np.round(rng.lognormal(np.log(20_000), 0.6, n)).astype(np.int64)
    latency[sb_late] += rng.integers(2_000_000, 20_000_000, int(sb_late.sum()))
    columns = {
        "code": code.astype(np.int32),
        "seq": seq,
        "kind": kind.astype(np.int8),
        "emitted": emitted,
        "received": emitted + latency,
        "in_log": in_log,
        "log_dup": log_dup,
        "log_invalid": log_invalid,
        "bad_after": bad_after,
        "in_sb": in_sb,
        "sb_mismatch": sb_mismatch,
        "sb_invalid": sb_invalid,
        "sb_dup": sb_dup,
    }
    tasks = []
    for index, lo in enumerate(range(0, n, CHUNK_ROWS)):
        hi = min(n, lo + CHUNK_ROWS)
        tasks.append(
            {
                "index": index,
                "seed": seed,
                "names": names,
                **{c: v[lo:hi] for c, v in columns.items()},
            }
        )
    # Unexpected: rows of streams the log never saw, gapless, spread over the hour.
    g_code = np.repeat(np.arange(streams, streams + GHOST_STREAMS), -(-k // GHOST_STREAMS))[:k]
    g_seq = np.empty(k, np.int64)
    for c in np.unique(g_code):
        where = np.flatnonzero(g_code == c)
        g_seq[where] = np.arange(1, where.size + 1)
    g_emitted = _HOUR_US + np.sort(rng.integers(0, _US_PER_HOUR, k))
    zeros = np.zeros(k, bool)
    tasks.append(
        {
            "index": len(tasks),
            "seed": seed,
            "names": names,
            "code": g_code.astype(np.int32),
            "seq": g_seq,
            "kind": np.zeros(k, np.int8),
            "emitted": g_emitted,
            "received": g_emitted + 30_000,
            "in_log": zeros,
            "log_dup": zeros,
            "log_invalid": zeros,
            "bad_after": zeros,
            "in_sb": ~zeros,
            "sb_mismatch": zeros,
            "sb_invalid": zeros,
            "sb_dup": np.zeros(k, np.int8),
        }
    )
    injected = {
        "log_lines_lost": int((~in_log).sum()),
        "log_lines_duplicated": int(log_dup.sum()),
        "log_checksums_invalid": int(log_invalid.sum()),
        "log_lines_unreadable": int(bad_after.sum()),
        "missing_in_supabase": int(missing.sum()),
        "checksum_mismatches": int(sb_mismatch.sum()),
        "supabase_checksums_invalid": int(sb_invalid.sum()),
        "out_of_order_candidates": int(sb_late.sum()),
        "supabase_duplicates": int((sb_dup > 0).sum()),
        "unexpected_in_supabase": k + int((expected & ~in_log & ~missing).sum()),
        "expected_in_supabase": int(expected.sum()),
    }
    return tasks, injected


def timeline():  # noqa: ANN201
    from parity.core.routing import (
        CRITICAL_EVENTS_SUPABASE,
        SUPABASE_ROLLOUT_PERCENTAGE,
        FlagChange,
        FlagTimeline,
    )

    return FlagTimeline(
        (
            FlagChange(CRITICAL_EVENTS_SUPABASE, True, HOUR - dt.timedelta(days=1)),
            FlagChange(SUPABASE_ROLLOUT_PERCENTAGE, 50, HOUR - dt.timedelta(days=1)),
            FlagChange(SUPABASE_ROLLOUT_PERCENTAGE, 100, HOUR + dt.timedelta(minutes=30)),
        )
    )


def _timestamps(us: np.ndarray) -> list[str]:
    arr = pa.array(us, pa.timestamp("us", tz="UTC"))
    return pc.strftime(arr, format="%Y-%m-%dT%H:%M:%SZ").to_pylist()  # %S carries 6 digits


def _canonical_fast(stream: str, seq: int, event_type: str, emitted: str, payload: dict) -> bytes:
    # RFC 8785 text for ASCII keys, no floats and integers below 2^53: orjson sorted, compact.
    return b"".join(
        (
            b'{"emitted_at":"',
            emitted.encode(),
            b'","event_type":"',
            event_type.encode(),
            b'","payload":',
            orjson.dumps(payload, option=orjson.OPT_SORT_KEYS),
            b',"seq":',
            str(seq).encode(),
            b',"stream":"',
            stream.encode(),
            b'"}',
        )
    )


def _canonical_jcs(stream: str, seq: int, event_type: str, emitted: str, payload: dict) -> bytes:
    return rfc8785.dumps(
        {
            "stream": stream,
            "seq": seq,
            "event_type": event_type,
            "emitted_at": emitted,
            "payload": payload,
        }
    )


def _build_chunk(task: dict) -> tuple[bytes, bytes, int, int, int]:
    """(log bytes, COPY text bytes, log lines, bad lines, Supabase rows) of one chunk."""
    rng = np.random.default_rng([task["seed"], task["index"], 17])
    n = task["seq"].size
    names = task["names"]
    emitted_text = _timestamps(task["emitted"])
    received_text = _timestamps(task["received"])
    dup_received_text = _timestamps(task["received"] + 1_000_000)
    host = rng.integers(0, len(_HOSTS), n).tolist()
    value = rng.integers(0, 10**7, n).tolist()
    ok = (rng.random(n) < 0.97).tolist()
    tags = rng.integers(0, len(_TAGS), n).tolist()
    region = rng.integers(0, len(_REGIONS), n).tolist()
    attempt = rng.integers(1, 6, n).tolist()
    user = rng.integers(0, len(_USERS), n).tolist()
    msg = rng.integers(0, len(_MESSAGES), n).tolist()
    draw = rng.random(n)
    has_float = (draw < 0.2).tolist()
    integral = (draw < 0.05).tolist()  # 3.0: orjson and RFC 8785 disagree on its text
    lat = np.round(rng.lognormal(3, 1, n), 3).tolist()
    cols = [task[c].tolist() for c in ("code", "seq", "kind", "in_log", "log_dup", "log_invalid")]
    cols += [task[c].tolist() for c in ("bad_after", "in_sb", "sb_mismatch", "sb_invalid")]
    cols += [task["sb_dup"].tolist()]
    log: list[bytes] = []
    rows: list[bytes] = []
    bad = sb = checked = 0
    dumps, sha = orjson.dumps, hashlib.sha256

    def checksum(stream: str, seq: int, et: str, em: str, payload: dict, floats: bool) -> str:
        nonlocal checked
        if floats:
            return sha(_canonical_jcs(stream, seq, et, em, payload)).hexdigest()
        text = _canonical_fast(stream, seq, et, em, payload)
        if checked < 64:  # the fast path's premise, verified on every chunk
            checked += 1
            if text != _canonical_jcs(stream, seq, et, em, payload):
                raise AssertionError(f"orjson text is not RFC 8785 for {stream} {seq}")
        return sha(text).hexdigest()

    def copy_row(stream: str, seq: int, et: str, em: str, rc: str, payload: dict, cs: str) -> bytes:
        text = dumps(payload).replace(b"\\", b"\\\\")
        return b"%s\t%d\t%s\t\\N\t%s\t%s\t%s\t%s\n" % (
            stream.encode(), seq, et.encode(), em.encode(), rc.encode(), text, cs.encode()
        )  # fmt: skip

    for i, (c, seq, kd, in_log, l_dup, l_inv, bad_i, in_sb, s_mis, s_inv, s_dup) in enumerate(
        zip(*cols, strict=True)
    ):
        stream, et, em = names[c], TYPES[kd][0], emitted_text[i]
        payload: dict[str, Any] = {
            "host": _HOSTS[host[i]],
            "value": value[i],
            "ok": ok[i],
            "tags": _TAGS[tags[i]],
            "ctx": {"region": _REGIONS[region[i]], "attempt": attempt[i], "user": _USERS[user[i]]},
            "msg": _MESSAGES[msg[i]],
        }
        if has_float[i]:
            payload["latency_ms"] = float(attempt[i]) if integral[i] else lat[i]
        cs = checksum(stream, seq, et, em, payload, has_float[i])
        if in_log:
            shown = {**payload, "value": value[i] + 1} if l_inv else payload
            line = dumps(
                {"stream": stream, "seq": seq, "event_type": et, "emitted_at": em,
                 "payload": shown, "checksum": cs}
            ) + b"\n"  # fmt: skip
            log.append(line)
            if l_dup:
                log.append(line)
        if bad_i:
            bad += 1
            if bad % 2:
                log.append(b'{"stream": "%s", "seq": %d, "event_ty\n' % (stream.encode(), seq))
            else:
                log.append(dumps({"stream": stream, "seq": seq, "event_type": et}) + b"\n")
        if in_sb:
            sb_payload, sb_cs = payload, cs
            if s_mis:
                sb_payload = {**payload, "msg": payload["msg"] + " (v2)"}
                sb_cs = checksum(stream, seq, et, em, sb_payload, has_float[i])
            if s_inv:
                sb_payload = {**sb_payload, "value": value[i] + 7}
            rows.append(copy_row(stream, seq, et, em, received_text[i], sb_payload, sb_cs))
            sb += 1
            if s_dup == 1:
                rows.append(copy_row(stream, seq, et, em, dup_received_text[i], sb_payload, sb_cs))
                sb += 1
            elif s_dup == 2:
                other = {**payload, "ok": not payload["ok"]}
                o_cs = checksum(stream, seq, et, em, other, has_float[i])
                rows.append(copy_row(stream, seq, et, em, dup_received_text[i], other, o_cs))
                sb += 1
    return b"".join(log), b"".join(rows), len(log), bad, sb


def _load_database(url: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    from parity.core.config import TableName
    from parity.core.routing import CRITICAL_EVENTS_SUPABASE, SUPABASE_ROLLOUT_PERCENTAGE
    from parity.io.control_pg import set_flags
    from parity.io.migrate import migrate

    table = TableName(schema, "monitoring_events")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    migrate(url, table)
    ident = sql.Identifier(schema, "monitoring_events")
    with psycopg.connect(url, autocommit=True) as conn:
        # Duplicates must be able to exist (contract §4: the table may lack the unique key).
        for (name,) in conn.execute(
            "select conname from pg_constraint where conrelid = %s::regclass and contype = 'u'",
            (f'"{schema}"."monitoring_events"',),
        ).fetchall():
            conn.execute(
                sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(ident, sql.Identifier(name))
            )
        set_flags(
            conn, schema, {CRITICAL_EVENTS_SUPABASE: True, SUPABASE_ROLLOUT_PERCENTAGE: 50},
            actor="benchmark", reason="cohort of the benchmark hour",
            now=HOUR - dt.timedelta(days=1),
        )  # fmt: skip
        set_flags(
            conn, schema, {SUPABASE_ROLLOUT_PERCENTAGE: 100},
            actor="benchmark", reason="cohort of the benchmark hour",
            now=HOUR + dt.timedelta(minutes=30),
        )  # fmt: skip


def _copy_statement(schema: str) -> Any:
    from psycopg import sql

    return sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(schema, "monitoring_events"),
        sql.SQL(", ").join(map(sql.Identifier, COPY_COLUMNS)),
    )


def generate(
    n: int, seed: int, root: Path, url: str, schema: str, rate: float, workers: int
) -> dict:
    import psycopg
    from psycopg import sql

    began = time.perf_counter()
    tasks, injected = _plan(n, seed, rate)
    planned = time.perf_counter()
    _load_database(url, schema)
    log_path = root / "ws-log" / f"{HOUR:%Y-%m-%d}" / f"{HOUR:%H}.jsonl"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    lines = bad = sb_rows = 0
    ctx = mp.get_context("fork")
    with (
        ctx.Pool(workers) as pool,
        open(log_path, "wb") as log,
        psycopg.connect(url, autocommit=True) as conn,
        conn.cursor().copy(_copy_statement(schema)) as copy,
    ):
        for log_bytes, copy_bytes, n_lines, n_bad, n_rows in pool.imap(_build_chunk, tasks):
            log.write(log_bytes)
            copy.write(copy_bytes)
            lines, bad, sb_rows = lines + n_lines, bad + n_bad, sb_rows + n_rows
    written = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(schema, "monitoring_events"))
        )
    return {
        "generator_version": GENERATOR_VERSION,
        "events": n,
        "seed": seed,
        "rate": rate,
        "schema": schema,
        "partition": PARTITION,
        "streams": 60,
        "log_lines": lines,
        "log_lines_unreadable": bad,
        "log_bytes": log_path.stat().st_size,
        "supabase_rows": sb_rows,
        "injected": injected,
        "generation_s": {
            "plan": round(planned - began, 1),
            "build_and_load": round(written - planned, 1),
            "vacuum_analyze": round(time.perf_counter() - written, 1),
        },
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def _table_rows(url: str, schema: str) -> int | None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute("select to_regclass(%s)", (f'"{schema}"."monitoring_events"',))
        if exists.fetchone()[0] is None:
            return None
        query = sql.SQL("select count(*) from {}").format(
            sql.Identifier(schema, "monitoring_events")
        )
        return int(conn.execute(query).fetchone()[0])


def ensure_dataset(
    n: int,
    seed: int = 0,
    *,
    rate: float = 0.01,
    workers: int | None = None,
    log=print,  # noqa: ANN001
) -> Dataset:
    """The cached dataset for (n, seed), generated when missing or stale."""
    root = bench_dir() / "data" / f"n{n}-s{seed}"
    schema = f"bench_n{n}_s{seed}"
    url = ensure_server()
    meta_path = root / "meta.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if (
            meta.get("generator_version") == GENERATOR_VERSION
            and meta.get("rate") == rate
            and _table_rows(url, schema) == meta.get("supabase_rows")
        ):
            return Dataset(n, seed, root, url, meta)
        log(f"dataset {root} is stale or incomplete: regenerating")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    log(f"generating {n:,} events (seed {seed}) into {root} and {schema} ...")
    meta = generate(n, seed, root, url, schema, rate, workers or os.cpu_count() or 2)
    meta_path.write_text(json.dumps(meta, indent=2))
    log(f"  done in {sum(meta['generation_s'].values()):.1f} s: {meta['log_lines']:,} log lines, "
        f"{meta['supabase_rows']:,} Supabase rows")  # fmt: skip
    return Dataset(n, seed, root, url, meta)

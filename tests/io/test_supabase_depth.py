"""A Supabase row nested deeper than a log line may be is an invalid checksum, decided
before any parser sees it, as the log side quarantines the same event's line: with and
without the native kernel, never a RecursionError."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import orjson
import pyarrow as pa
import pytest

from parity.core.classify import load_rules
from parity.core.config import TableName
from parity.core.events import MAX_DEPTH, make_event
from parity.core.schema import UTC_US
from parity.io import wslog
from parity.io.store import with_derived_columns
from parity.io.store_pg import PostgresStore
from parity.io.verify import too_deep, verify_checksums, verify_checksums_python

pytestmark = pytest.mark.integration

H = dt.datetime(2026, 11, 28, 10, tzinfo=dt.UTC)
RULES = load_rules(None)


def nested(depth: int) -> dict:
    """A payload whose own object is level 1 and whose innermost object is level ``depth``."""
    payload: dict = {"leaf": 1}
    for _ in range(depth - 1):
        payload = {"a": payload}
    return payload


def nested_text(depth: int, leaf: str = "1") -> str:
    return '{"a":' * (depth - 1) + '{"leaf":' + leaf + "}" + "}" * (depth - 1)


def rows() -> tuple[pa.Table, list[bool]]:
    """Rows with correct checksums where a checksum can be computed, and the verdicts."""
    # The event object around the payload is level 1: MAX_DEPTH - 1 payload levels is the
    # deepest a log line may carry.
    fine = make_event("deep", 1, "system.health", H, nested(MAX_DEPTH - 1))
    over = make_event("deep", 2, "system.health", H, nested(MAX_DEPTH))
    plain = make_event("deep", 3, "system.health", H, {"v": 1.5})
    texts = [
        orjson.dumps(fine.payload).decode(),
        orjson.dumps(over.payload).decode(),
        orjson.dumps(plain.payload).decode(),
        nested_text(5000),  # far beyond any recursive parser's reach
        nested_text(3000, leaf="1" * 40),  # a long number: the exact parser's path
    ]
    n = len(texts)
    table = pa.table(
        {
            "stream": pa.array(["deep"] * n),
            "seq": pa.array(range(1, n + 1), pa.int64()),
            "event_type": pa.array(["system.health"] * n),
            "category": pa.array([None] * n, pa.string()),
            "emitted_at": pa.array([H] * n, UTC_US),
            "payload": pa.array(texts),
            "checksum": pa.array([fine.checksum, over.checksum, plain.checksum] + ["0" * 64] * 2),
        }
    )
    return table, [True, False, True, False, False]


def test_a_deep_payload_row_is_invalid_not_a_crash(pg_url: str, pg_table: TableName) -> None:
    table, verdicts = rows()
    store = PostgresStore(pg_url, pg_table)
    assert store.insert_events(table) == table.num_rows
    read = pa.concat_tables(list(store.snapshot_batches(H, H + dt.timedelta(hours=1))))
    read = read.sort_by([("seq", "ascending")])
    assert read.column("payload")[4].as_py().count("{") == 3000  # stored as written

    snapshot = with_derived_columns(read, RULES)
    assert snapshot.column("checksum_valid").to_pylist() == verdicts
    assert verify_checksums_python(read).to_pylist() == verdicts  # the same without the kernel
    assert verify_checksums(read.slice(0, 3)).to_pylist() == verdicts[:3]
    assert too_deep(read.column("payload")).tolist() == [False, True, False, True, True]


def test_the_log_side_quarantines_the_same_event(tmp_path: Path) -> None:
    fine = make_event("deep", 1, "system.health", H, nested(MAX_DEPTH - 1))
    over = make_event("deep", 2, "system.health", H, nested(MAX_DEPTH))
    hour = tmp_path / "2026-11-28" / "10.jsonl"
    hour.parent.mkdir(parents=True)
    hour.write_bytes(b"\n".join(orjson.dumps(e.to_json_dict()) for e in (fine, over)) + b"\n")
    read = wslog.read_window(tmp_path, H, H + dt.timedelta(hours=1), classifier=RULES)
    assert read.events.column("seq").to_pylist() == [1]
    assert read.events.column("checksum_valid").to_pylist() == [True]
    assert read.quarantined.column("reason").to_pylist() == [wslog.TOO_DEEP]

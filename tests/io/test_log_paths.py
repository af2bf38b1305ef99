"""The log reader with and without the native kernel: the same events, verdicts, quarantine
reasons and line numbers; and what no line can do to a read (stop it, hide in it)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import orjson
import pytest

from parity.core.classify import load_rules
from parity.core.events import make_event
from parity.core.schema import WS_SNAPSHOT_SCHEMA
from parity.io import native, wslog
from tests.io.native.jsongen import JsonGen

H = dt.datetime(2026, 11, 28, 10, tzinfo=dt.UTC)
RULES = load_rules()


@pytest.fixture(params=["native", "python"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "native" and native.kernel is None:
        pytest.skip("the native kernel is not built")
    if request.param == "python":
        monkeypatch.setattr(native, "kernel", None)
    return request.param


def _write(log_dir: Path, hour: int, data: bytes) -> Path:
    file = log_dir / "2026-11-28" / f"{hour:02d}.jsonl"
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_bytes(data)
    return file


def _event_line(seq: int, at: dt.datetime, **payload: object) -> bytes:
    event = make_event("s", seq, "system.health", at, dict(payload) or {"v": 1.5})
    return orjson.dumps(event.to_json_dict())


def _read(log_dir: Path) -> wslog.LogRead:
    return wslog.read_window(log_dir, H, H + dt.timedelta(hours=1), classifier=RULES)


def _comparable(read: wslog.LogRead) -> tuple:
    events = read.events.drop_columns(["payload"])  # the same value, written either way
    payloads = [orjson.loads(p) for p in read.events.column("payload").to_pylist()]
    counts = (
        read.lines_read,
        read.blank_lines,
        read.events_outside_window,
        read.bad_lines_elsewhere,
        read.stray_events,
    )
    return events, payloads, read.quarantined, counts


def test_kernel_and_python_read_alike(tmp_path: Path) -> None:
    gen = JsonGen(5)
    lines = [gen.line(i) for i in range(2000)]
    lines += [gen.mutate(gen.rng.choice(lines), lines) for _ in range(500)]
    gen.rng.shuffle(lines)
    _write(tmp_path, 10, b"\n".join(lines) + b"\n\n  \n" + lines[0])
    _write(tmp_path, 11, b"\n".join(lines[:300]) + b"\n")
    assert native.kernel is not None or pytest.skip("the native kernel is not built")
    with_kernel = _read(tmp_path)
    saved = native.kernel
    try:
        native.kernel = None
        without = _read(tmp_path)
    finally:
        native.kernel = saved
    a, b = _comparable(with_kernel), _comparable(without)
    assert a[0].equals(b[0])
    assert a[1] == b[1]
    assert a[2].equals(b[2])
    assert a[3] == b[3]
    assert with_kernel.events.num_rows > 300 and with_kernel.quarantined.num_rows > 300


@pytest.mark.parametrize(
    "shape",
    [
        b'{"a":' * 10_000 + b"12345678901234567" + b"}" * 10_000,
        b"[" * 10_000 + b"12345678901234567" + b"]" * 10_000,
        b'{"payload":' + b"[" * 129 + b"]" * 129 + b"}",
        b'{"n":' + b"9" * 5000 + b"}",
        b'{"n":1' + b"0" * 400 + b".5e99999}",
        b'{"s":"' + b"\\ud800" * 1000 + b'"}',
        b'{"s":"' + "\U0001f600\ue000\u2028".encode() * 10_000 + b'"}',
        b'{"k":' + b'"' + b"x" * 900_000 + b'"}',
        b"\xff\xfe{}",
    ],
    ids=[
        "deep-objects",
        "deep-arrays",
        "deep-payload",
        "huge-int",
        "huge-float",
        "lone-surrogates",
        "odd-unicode",
        "long-string",
        "bad-bytes",
    ],
)
def test_no_line_stops_an_hour_or_its_neighbours(tmp_path: Path, path: str, shape: bytes) -> None:
    for hour in (9, 10, 11):
        at = H + dt.timedelta(hours=hour - 10, minutes=5)
        _write(
            tmp_path, hour, _event_line(1, at) + b"\n" + shape + b"\n" + _event_line(2, at) + b"\n"
        )
    for start in (H - dt.timedelta(hours=1), H, H + dt.timedelta(hours=1)):
        read = wslog.read_window(tmp_path, start, start + dt.timedelta(hours=1), classifier=RULES)
        assert read.events.column("seq").to_pylist() == [1, 2]
        assert read.quarantined.column("source_line").to_pylist() == [2]
    reasons = _read(tmp_path).quarantined.column("reason").to_pylist()
    assert reasons[0] in wslog.QUARANTINE_REASONS


def test_a_deep_line_is_quarantined_as_too_deep(tmp_path: Path, path: str) -> None:
    _write(tmp_path, 10, b"[" * 200 + b"]" * 200 + b"\n")
    assert _read(tmp_path).quarantined.column("reason").to_pylist() == [wslog.TOO_DEEP]


def test_a_stray_event_is_quarantined_not_lost(tmp_path: Path, path: str) -> None:
    far = dt.datetime(9999, 12, 31, 23, tzinfo=dt.UTC)
    _write(tmp_path, 10, _event_line(1, H) + b"\n" + _event_line(2, far) + b"\n")
    read = _read(tmp_path)
    assert read.events.column("seq").to_pylist() == [1]
    assert read.stray_events == 1
    rows = read.quarantined.to_pylist()
    assert [(r["source_line"], r["reason"]) for r in rows] == [(2, wslog.STRAY_EVENT)]
    assert "9999-12-31T23:00:00.000000Z" in rows[0]["detail"]


def test_an_hour_path_that_is_no_regular_file_is_reported(tmp_path: Path, path: str) -> None:
    (tmp_path / "2026-11-28" / "10.jsonl").mkdir(parents=True)
    os.mkfifo(tmp_path / "2026-11-28" / "10.jsonl.gz")  # never opened: a read would block
    read = _read(tmp_path)
    assert read.unreadable_paths == ["2026-11-28/10.jsonl", "2026-11-28/10.jsonl.gz"]
    assert read.quarantined.column("reason").to_pylist() == [wslog.UNREADABLE_PATH] * 2


def test_a_byte_order_mark_is_not_part_of_the_first_line(tmp_path: Path, path: str) -> None:
    _write(tmp_path, 10, b"\xef\xbb\xbf" + _event_line(1, H) + b"\n" + _event_line(2, H) + b"\n")
    read = _read(tmp_path)
    assert read.events.column("seq").to_pylist() == [1, 2]
    assert read.quarantined.num_rows == 0
    assert read.events.column("checksum_valid").to_pylist() == [True, True]


def test_kernel_rows_have_the_snapshot_schema(tmp_path: Path, path: str) -> None:
    at = H + dt.timedelta(minutes=1)
    declared = orjson.loads(_event_line(3, at))
    declared.update(category="LEGACY", logged_at="2026-11-28T10:02:00.000000Z")
    _write(tmp_path, 10, _event_line(1, at) + b"\n" + orjson.dumps(declared) + b"\n")
    events = _read(tmp_path).events
    assert events.schema.equals(WS_SNAPSHOT_SCHEMA)
    rows = events.to_pylist()
    assert [(r["category"], r["declared_category"], r["unclassified"]) for r in rows] == [
        ("CRITICAL", None, False),
        ("LEGACY", "LEGACY", False),
    ]
    assert rows[1]["logged_at"] == dt.datetime(2026, 11, 28, 10, 2, tzinfo=dt.UTC)
    assert [r["source_file"] for r in rows] == ["2026-11-28/10.jsonl"] * 2

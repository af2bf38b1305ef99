"""The WebSocket log reader (contract §3): windows, late lines, quarantine, gzip, memory."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from parity.core.classify import load_rules
from parity.core.errors import (
    EXIT_CONFIGURATION,
    EXIT_INFRASTRUCTURE,
    LogDirectoryMissingError,
    LogReadError,
)
from parity.core.events import Event, make_event
from parity.core.schema import QUARANTINE_SCHEMA, WS_SNAPSHOT_SCHEMA
from parity.io import loglines, logwindow, wslog
from parity.io.wslog import (
    MAX_LINE_BYTES,
    RAW_KEEP_BYTES,
    LogRead,
    list_hour_files,
    read_window,
    write_events,
)

H = dt.datetime(2026, 11, 28, 10, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
US = dt.timedelta(microseconds=1)
RULES = load_rules()
DAY = "2026-11-28"


def ev(
    seq: int, at: dt.datetime, stream: str = "s", event_type: str = "system.health", **kw: Any
) -> Event:
    return make_event(stream, seq, event_type, at, {"n": seq, "nested": {"k": [1, "two"]}}, **kw)


def line(event: Event) -> bytes:
    return orjson.dumps(event.to_json_dict()) + b"\n"


def write_lines(log_dir: Path, hour: int, lines: list[bytes], name: str = "jsonl") -> Path:
    path = log_dir / DAY / f"{hour:02d}.{name}"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = b"".join(lines)
    if name.endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def read(log_dir: Path, hour: int = 10, **kw: Any) -> LogRead:
    start = H.replace(hour=hour)
    return read_window(log_dir, start, start + HOUR, classifier=RULES, **kw)


def keys(result: LogRead) -> list[tuple[str, int]]:
    return list(
        zip(result.events["stream"].to_pylist(), result.events["seq"].to_pylist(), strict=True)
    )


def where(result: LogRead) -> list[tuple[str, int]]:
    return list(
        zip(
            result.events["source_file"].to_pylist(),
            result.events["source_line"].to_pylist(),
            strict=True,
        )
    )


def hashes(root: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# -- windows ------------------------------------------------------------------------------


def test_reads_the_window_from_its_own_and_neighbouring_files(tmp_path: Path) -> None:
    events = [
        ev(1, H - 30 * 60 * dt.timedelta(seconds=1), stream="a"),  # hour 09
        ev(2, H + dt.timedelta(minutes=5), stream="a", event_type="foo.bar"),
        ev(1, H + dt.timedelta(minutes=10), stream="b", event_type="deprecated.x"),
        ev(
            3,
            H + dt.timedelta(minutes=59),
            stream="a",
            event_type="user.action",
            category="CRITICAL",
        ),
        ev(4, H + dt.timedelta(minutes=70), stream="a"),  # hour 11
    ]
    write_events(tmp_path, events)
    result = read(tmp_path)
    assert result.events.schema == WS_SNAPSHOT_SCHEMA
    assert result.quarantined.schema == QUARANTINE_SCHEMA
    assert keys(result) == [("a", 2), ("a", 3), ("b", 1)]
    assert result.files_read == [f"{DAY}/09.jsonl", f"{DAY}/10.jsonl", f"{DAY}/11.jsonl"]
    assert result.lines_read == 5
    assert result.events_outside_window == 2
    rows = result.events.to_pylist()
    assert [(r["category"], r["declared_category"], r["unclassified"]) for r in rows] == [
        ("INFORMATIONAL", None, True),  # foo.bar: no rule, nothing declared
        ("CRITICAL", "CRITICAL", False),  # declared wins over the rules (user.action)
        ("LEGACY", None, False),
    ]
    assert all(r["checksum_valid"] for r in rows)
    assert [r["source_line"] for r in rows] == [1, 3, 2]
    assert rows[0]["payload"] == '{"n":2,"nested":{"k":[1,"two"]}}'
    assert rows[0]["emitted_at"] == H + dt.timedelta(minutes=5)


def test_event_at_the_top_of_the_hour_belongs_to_the_hour_it_starts(tmp_path: Path) -> None:
    write_events(tmp_path, [ev(1, H - US), ev(2, H), ev(3, H + HOUR - US), ev(4, H + HOUR)])
    assert keys(read(tmp_path, 9)) == [("s", 1)]
    assert keys(read(tmp_path, 10)) == [("s", 2), ("s", 3)]
    assert keys(read(tmp_path, 11)) == [("s", 4)]


def test_late_and_early_lines_are_found_in_neighbouring_files(tmp_path: Path) -> None:
    late = ev(1, H + HOUR - dt.timedelta(seconds=1))  # logged in the next hour's file
    early = ev(2, H + dt.timedelta(seconds=1))  # producer clock ahead: logged in 09
    write_events(tmp_path, [late], logged_at=lambda e: e.emitted_at + dt.timedelta(minutes=30))
    write_events(tmp_path, [early], logged_at=lambda e: e.emitted_at - dt.timedelta(minutes=2))
    result = read(tmp_path)
    assert where(result) == [(f"{DAY}/11.jsonl", 1), (f"{DAY}/09.jsonl", 1)]
    assert keys(result) == [("s", 1), ("s", 2)]


def test_grace_bounds_how_late_a_line_may_be_logged(tmp_path: Path) -> None:
    very_late = ev(1, H + dt.timedelta(minutes=50))
    write_events(tmp_path, [very_late], logged_at=lambda e: H + 2 * HOUR + dt.timedelta(minutes=1))
    assert keys(read(tmp_path)) == []
    assert keys(read(tmp_path, grace=2 * HOUR)) == [("s", 1)]
    # Its own file's window sees it was logged too late for any read to find it.
    assert read(tmp_path, 12).stray_events == 1


def test_duplicates_are_kept_and_ordered_by_source(tmp_path: Path) -> None:
    event = ev(1, H + dt.timedelta(minutes=59))
    write_lines(tmp_path, 11, [line(event)])
    write_lines(tmp_path, 10, [line(ev(2, H)), line(event)])
    result = read(tmp_path)
    assert keys(result) == [("s", 1), ("s", 1), ("s", 2)]
    assert where(result) == [(f"{DAY}/10.jsonl", 2), (f"{DAY}/11.jsonl", 1), (f"{DAY}/10.jsonl", 1)]


def test_gzip_hour_files_are_read_alongside_plain_ones(tmp_path: Path) -> None:
    written = write_events(tmp_path, [ev(1, H), ev(2, H + dt.timedelta(minutes=1))], gzip=True)
    write_events(tmp_path, [ev(3, H + dt.timedelta(minutes=2))], gzip=True)  # a second member
    write_events(tmp_path, [ev(4, H + dt.timedelta(minutes=3))])
    assert written == [tmp_path / DAY / "10.jsonl.gz"]
    result = read(tmp_path)
    assert result.files_read == [f"{DAY}/10.jsonl", f"{DAY}/10.jsonl.gz"]
    assert keys(result) == [("s", 1), ("s", 2), ("s", 3), ("s", 4)]
    assert pc.all(result.events["checksum_valid"]).as_py()


def test_empty_window_is_an_empty_table(tmp_path: Path) -> None:
    write_events(tmp_path, [ev(1, H + 5 * HOUR)])
    result = read(tmp_path, quarantine_path=tmp_path / "q" / "10.parquet")
    assert result.events.num_rows == 0
    assert result.events.schema == WS_SNAPSHOT_SCHEMA
    assert (result.files_read, result.lines_read, result.quarantined_lines) == ([], 0, 0)
    assert pq.read_table(tmp_path / "q" / "10.parquet").num_rows == 0


@pytest.mark.parametrize("shape", ["absent", "a file"])
def test_missing_log_directory_is_a_configuration_error_naming_it(
    tmp_path: Path, shape: str
) -> None:
    missing = tmp_path / "no-such-log"
    if shape == "a file":
        missing.write_text("not a directory\n")
    with pytest.raises(LogDirectoryMissingError, match="no-such-log") as err:
        read(missing)
    assert err.value.exit_code == EXIT_CONFIGURATION
    assert "PARITY_WS_LOG_DIR" in str(err.value)


def test_unreadable_file_is_an_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_lines(tmp_path, 10, [line(ev(1, H))])

    def refuse(file: Any, *args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied", str(file))

    monkeypatch.setattr(logwindow, "open", refuse, raising=False)  # shadows the builtin
    with pytest.raises(LogReadError, match=str(path)) as err:
        read(tmp_path)
    assert err.value.exit_code == EXIT_INFRASTRUCTURE  # the directory is there: not a setting


def test_list_hour_files_ignores_other_names(tmp_path: Path) -> None:
    write_lines(tmp_path, 10, [b""])
    write_lines(tmp_path, 10, [b""], name="jsonl.gz")
    write_lines(tmp_path, 11, [b""], name="jsonl.tmp")
    write_lines(tmp_path, 12, [b""])
    (tmp_path / DAY / "notes.txt").write_text("x")
    found = list_hour_files(tmp_path, H, H + 2 * HOUR)
    assert [(f.hour, f.relpath, f.compressed) for f in found] == [
        (H, f"{DAY}/10.jsonl", False),
        (H, f"{DAY}/10.jsonl.gz", True),
    ]


def test_naive_or_empty_window_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        read_window(
            tmp_path, H.replace(tzinfo=None), H.replace(tzinfo=None) + HOUR, classifier=RULES
        )
    with pytest.raises(ValueError, match="empty window"):
        read_window(tmp_path, H, H, classifier=RULES)


# -- quarantine ---------------------------------------------------------------------------

GOOD = ev(1, H + dt.timedelta(minutes=1))
GOOD_OBJ = GOOD.to_json_dict()


def _with(**changes: Any) -> bytes:
    obj = {**GOOD_OBJ, "seq": 2, **changes}
    return json.dumps({k: v for k, v in obj.items() if v is not ...}).encode()


BAD_LINES = [
    ("not_utf8", b"\xff\xfe{}"),
    ("not_utf8", _with(stream="x").replace(b'"x"', b'"\xc3\x28"')),
    ("not_utf8", b'{"x": "\xed\xa0\x80", "n": 12345678901234567890}'),  # encoded surrogate
    ("invalid_json", b'{"stream": "s", "seq":'),
    ("invalid_json", _with().replace(b'"n": 1', b'"n": NaN')),
    ("invalid_json", b'{"a": 1} trailing'),
    ("invalid_json", b'{"x": "\\ud800", "n": 12345678901234567890}'),  # lone surrogate escape
    ("invalid_json", b"\xef\xbb\xbf" + _with()),  # byte order mark
    ("not_an_object", b"[1, 2]"),
    ("not_an_object", b'"text"'),
    ("not_an_object", b"null"),
    ("missing_field", _with(checksum=...)),
    ("missing_field", _with(payload=...)),
    ("invalid_field", _with(seq=0)),
    ("invalid_field", _with(emitted_at="2026-11-28T10:01:00")),
    ("invalid_field", _with(payload=[1])),
    ("invalid_field", _with(category="urgent")),
    ("line_too_long", b'{"pad": "' + b"x" * MAX_LINE_BYTES + b'"}'),
]


@pytest.mark.parametrize(
    ("reason", "bad"), BAD_LINES, ids=[f"{r}-{i}" for i, (r, _) in enumerate(BAD_LINES)]
)
def test_bad_line_is_quarantined_and_neighbours_survive(
    tmp_path: Path, reason: str, bad: bytes
) -> None:
    after = ev(3, H + dt.timedelta(minutes=2))
    write_lines(tmp_path, 10, [line(GOOD), bad + b"\n", line(after)])
    result = read(tmp_path)
    assert keys(result) == [("s", 1), ("s", 3)]
    assert [r["source_line"] for r in result.events.to_pylist()] == [1, 3]
    rows = result.quarantined.to_pylist()
    assert [(r["source_file"], r["source_line"], r["reason"]) for r in rows] == [
        (f"{DAY}/10.jsonl", 2, reason)
    ]
    assert rows[0]["detail"]
    if reason == "line_too_long":
        assert rows[0]["raw"] == bad[:RAW_KEEP_BYTES]
        assert str(len(bad)) in rows[0]["detail"]
    else:
        assert rows[0]["raw"] == bad
    assert result.quarantine_counts == {reason: 1}
    assert result.lines_read == 3


def test_line_of_exactly_the_limit_is_read(tmp_path: Path) -> None:
    obj = GOOD.to_json_dict()
    text = orjson.dumps(obj)
    obj["payload"] = {**obj["payload"]}
    padded = text[:-1] + b" " * (MAX_LINE_BYTES - len(text)) + b"}"
    assert len(padded) == MAX_LINE_BYTES
    write_lines(tmp_path, 10, [padded + b"\n", padded])  # the second has no newline at EOF
    result = read(tmp_path)
    assert result.quarantined_lines == 0
    assert where(result) == [(f"{DAY}/10.jsonl", 1), (f"{DAY}/10.jsonl", 2)]


def test_overlong_last_line_without_newline_is_quarantined(tmp_path: Path) -> None:
    write_lines(tmp_path, 10, [line(GOOD), b"x" * (MAX_LINE_BYTES + 1)])
    result = read(tmp_path)
    assert keys(result) == [("s", 1)]
    assert result.quarantine_counts == {"line_too_long": 1}
    assert result.quarantined["raw"][0].as_py() == b"x" * RAW_KEEP_BYTES


def test_blank_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    write_lines(tmp_path, 10, [b"\n", line(GOOD), b"   \n", b"\t\r\n", line(ev(2, H)), b"  "])
    result = read(tmp_path)
    assert keys(result) == [("s", 1), ("s", 2)]
    assert (result.blank_lines, result.lines_read, result.quarantined_lines) == (4, 6, 0)
    assert where(result) == [(f"{DAY}/10.jsonl", 2), (f"{DAY}/10.jsonl", 5)]


def test_crlf_and_unterminated_last_line_are_ordinary_lines(tmp_path: Path) -> None:
    write_lines(tmp_path, 10, [line(GOOD)[:-1] + b"\r\n", line(ev(2, H))[:-1]])
    result = read(tmp_path)
    assert keys(result) == [("s", 1), ("s", 2)]
    assert result.quarantined_lines == 0


def test_partial_last_line_is_quarantined_with_a_hint(tmp_path: Path) -> None:
    write_lines(tmp_path, 10, [line(GOOD), line(ev(2, H))[:40]])
    result = read(tmp_path)
    assert keys(result) == [("s", 1)]
    row = result.quarantined.to_pylist()[0]
    assert (row["source_line"], row["reason"]) == (2, "invalid_json")
    assert "no newline" in row["detail"]


def test_bad_lines_are_quarantined_by_the_window_of_their_file(tmp_path: Path) -> None:
    write_lines(tmp_path, 9, [b"garbage\n", line(ev(1, H))])
    write_lines(tmp_path, 10, [b"[]\n"])
    write_lines(tmp_path, 11, [b'{"seq": 1}\n', b"\xff\n"])
    result = read(tmp_path)
    assert keys(result) == [("s", 1)]
    assert result.quarantine_counts == {"not_an_object": 1}
    assert result.bad_lines_elsewhere == 3
    assert read(tmp_path, 9).quarantine_counts == {"invalid_json": 1}
    assert read(tmp_path, 11).quarantine_counts == {"missing_field": 1, "not_utf8": 1}


def test_wrong_checksum_and_huge_integers_are_kept_as_invalid(tmp_path: Path) -> None:
    wrong = {**GOOD_OBJ, "checksum": "0" * 64}
    huge = {**GOOD_OBJ, "seq": 2}
    huge_line = orjson.dumps(huge).replace(b'"n":1,', b'"n":123456789012345678901234567890,')
    write_lines(tmp_path, 10, [orjson.dumps(wrong) + b"\n", huge_line + b"\n"])
    result = read(tmp_path)
    rows = result.events.to_pylist()
    assert [(r["seq"], r["checksum_valid"]) for r in rows] == [(1, False), (2, False)]
    assert '"n":123456789012345678901234567890' in rows[1]["payload"]
    assert result.quarantined_lines == 0


def test_truncated_gzip_keeps_the_lines_before_the_cut(tmp_path: Path) -> None:
    events = [ev(i, H + i * dt.timedelta(milliseconds=100)) for i in range(1, 3001)]
    path = write_lines(tmp_path, 10, [line(e) for e in events], name="jsonl.gz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    result = read(tmp_path)
    kept = result.events["seq"].to_pylist()
    assert 0 < len(kept) < len(events)
    assert kept == list(range(1, len(kept) + 1))
    rows = result.quarantined.to_pylist()
    assert [(r["source_file"], r["source_line"], r["reason"]) for r in rows] == [
        (f"{DAY}/10.jsonl.gz", len(kept) + 1, "truncated_gzip")
    ]
    assert result.lines_read == len(kept)


def test_damaged_gzip_is_quarantined_not_raised(tmp_path: Path) -> None:
    write_lines(tmp_path, 10, [b"this is not gzip at all\n"])
    (tmp_path / DAY / "10.jsonl").rename(tmp_path / DAY / "10.jsonl.gz")
    result = read(tmp_path)
    assert result.quarantine_counts == {"corrupt_gzip": 1}
    assert result.quarantined["source_line"].to_pylist() == [1]


def test_inputs_are_unchanged_and_quarantine_parquet_keeps_raw_bytes(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    write_events(log_dir, [ev(1, H), ev(2, H + HOUR)])
    write_events(log_dir, [ev(3, H + dt.timedelta(minutes=3))], gzip=True)
    with (log_dir / DAY / "10.jsonl").open("ab") as fh:
        fh.write(b"\xff\xfebad\n{\n")
    before = hashes(log_dir)
    target = tmp_path / "quarantine" / "2026-11-28-10:00.parquet"
    target.parent.mkdir()
    target.write_bytes(b"stale")
    result = read(log_dir, quarantine_path=target)
    assert hashes(log_dir) == before
    stored = pq.read_table(target)
    assert stored.schema == QUARANTINE_SCHEMA
    assert stored.equals(result.quarantined)
    assert stored["raw"].to_pylist() == [b"\xff\xfebad", b"{"]
    assert stored["reason"].to_pylist() == ["not_utf8", "invalid_json"]
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]  # no temp left


# -- write_events ---------------------------------------------------------------------------


def test_write_events_appends_exact_lines_to_the_logged_hour(tmp_path: Path) -> None:
    first, second = ev(1, H), ev(2, H + dt.timedelta(minutes=1))
    write_events(tmp_path, [first])
    write_events(tmp_path, [second], logged_at=lambda e: H + HOUR)
    write_events(tmp_path, [ev(3, H)])
    assert (tmp_path / DAY / "10.jsonl").read_bytes() == line(first) + line(ev(3, H))
    assert (tmp_path / DAY / "11.jsonl").read_bytes() == line(second)


# -- memory -----------------------------------------------------------------------------------

MEMORY_CHILD = textwrap.dedent(
    """
    import datetime as dt, json, re, sys
    from pathlib import Path
    import pyarrow as pa
    from parity.core.classify import load_rules
    from parity.io.wslog import read_window

    def status_kb(key):
        return int(re.search(key + r":\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1))

    rules = load_rules()
    # Arrow's first table sets up its allocator and kernels (~40 MB once): not the reader's.
    pa.table({"a": ["y", "x"], "b": [2, 1]}).sort_by([("a", "ascending"), ("b", "ascending")])
    start = dt.datetime(2026, 11, 28, 10, tzinfo=dt.UTC)
    # A first read sets up what every later read shares (kernels, caches): measure the second.
    read_window(Path(sys.argv[1]), start, start + dt.timedelta(hours=1), classifier=rules)
    before = status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    result = read_window(Path(sys.argv[1]), start, start + dt.timedelta(hours=1), classifier=rules)
    print(json.dumps({"growth_kb": status_kb("VmHWM") - before, "lines": result.lines_read,
                      "events": result.events.num_rows, "quarantined": result.quarantine_counts}))
    """
)
CAN_RESET_PEAK = sys.platform == "linux" and os.access("/proc/self/clear_refs", os.W_OK)


@pytest.mark.skipif(
    not CAN_RESET_PEAK, reason="needs Linux /proc/self/clear_refs to reset peak RSS"
)
def test_reading_a_large_log_keeps_memory_bounded(tmp_path: Path) -> None:
    """~38 MB scanned: 30 MB of the next hour's lines (read and dropped) and an 8 MB line
    (quarantined). Peak memory must not follow the data size."""
    template = (
        '{"stream":"s%d","seq":%d,"event_type":"user.action","emitted_at":"2026-11-28T11:%02d:%02d.000000Z",'
        '"payload":{"host":"web-%02d","metrics":{"cpu":12.5,"mem_mb":2048,"latency_ms":[12,15,19]},'
        '"tags":["canary","v2"],"ok":true},"checksum":"' + "0" * 64 + '"}\n'
    )
    lines = [
        (template % (i % 97, i, i // 60 % 60, i % 60, i % 100)).encode() for i in range(100_000)
    ]
    write_lines(tmp_path, 11, lines)
    write_lines(
        tmp_path, 10, [line(GOOD), b'{"pad":"' + b"x" * (8 << 20) + b'"}\n', line(ev(2, H))]
    )
    data_kb = sum(p.stat().st_size for p in tmp_path.rglob("*.jsonl")) // 1024
    assert data_kb > 35_000
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, str(tmp_path)],
        check=True,
        capture_output=True,
        text=True,
    )
    figures = json.loads(out.stdout)
    assert (figures["lines"], figures["events"]) == (100_003, 2)
    assert figures["quarantined"] == {"line_too_long": 1}
    # Generous: one line, I/O buffers, Arrow's first table and allocator slack are a few
    # MB; holding the files (or the long line) whole would exceed it.
    assert 0 < figures["growth_kb"] < data_kb // 4, figures


# -- reading into a parted snapshot -------------------------------------------------------


@pytest.mark.parametrize("shares", [1, 2])
def test_a_sink_receives_exactly_the_rows_of_an_in_memory_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shares: int
) -> None:
    from parity.core.schema import WS_SNAPSHOT_SCHEMA
    from parity.io import parallel
    from parity.io.snapshot import SnapshotWriter

    monkeypatch.setattr(parallel, "MIN_ITEMS_PER_SHARE", 1)
    monkeypatch.setattr(parallel, "_limit", shares)
    monkeypatch.setattr(logwindow, "SPLIT_MIN_BYTES", 1 << 10)  # split the file between forks
    monkeypatch.setattr(loglines, "BATCH_ROWS", 7)
    events = [
        ev(seq, H + dt.timedelta(seconds=seq), stream=f"s{seq % 13}") for seq in range(1, 400)
    ]
    lines = [line(e) for e in events]
    lines[5] = b'{"torn": \n'
    lines.append(line(events[9]))  # a duplicate
    write_lines(tmp_path / "log", 10, lines)
    whole = read(tmp_path / "log")

    spill = tmp_path / "spill"
    with SnapshotWriter(WS_SNAPSHOT_SCHEMA, wslog.SORT_KEYS, spill_dir=spill, part_rows=50) as w:
        streamed = read(tmp_path / "log", sink=w)
        snap = w.finish(tmp_path / "snap.parquet")

    assert streamed.events.num_rows == 0
    assert streamed.quarantined.equals(whole.quarantined)
    assert streamed.lines_read == whole.lines_read == len(lines)
    parts = list(snap.parts())
    assert len(parts) > 1
    assert pa.concat_tables(parts).sort_by(wslog.SORT_KEYS).equals(whole.events)
    assert list(spill.iterdir()) == []

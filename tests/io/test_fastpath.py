"""The fast paths agree with the slow ones: checksum verification (orjson + sha256 against
``rfc8785``) and the log reader split over processes (against one sequential read)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parity.core.checksum import checksum_matches, compute_checksum
from parity.core.classify import load_rules
from parity.core.errors import InvalidEventError
from parity.core.events import make_event
from parity.io import logwindow, parallel, wslog
from parity.io.verify import verify_checksums

H = dt.datetime(2026, 11, 28, 10, tzinfo=dt.UTC)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1.0, -0.0, 1e16, 1e21, 1e-7, 1e-6, 0.1, 2**53 + 1.0, 1.5e300]),
    # Speed paths: integral floats rewritten as ints, exponents and long fractions proven.
    st.sampled_from([3.0, 100.0, -7.0, 5e-324, 1.5e-6, 1e20, 58.2, 0.30000000000000004]),
    st.floats(min_value=-1e6, max_value=1e6).map(round).map(float),
    st.text(max_size=12),
    st.sampled_from(["v1.0", "3e5", "1234567890123456789", "\ue000", "😀", 'q"\\', "\x1f"]),
    st.sampled_from(["x.0]", "a1234567890123456789", "0b7b4dd6700cece8b6e41234567890123456"]),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
payloads = st.dictionaries(
    st.one_of(st.text(max_size=6), st.sampled_from(["\ue000", "😀", "a"])), values, max_size=6
)


def slow_valid(
    stream: str, seq: int, event_type: str, emitted: str, payload: Any, stored: str
) -> bool:
    try:
        return compute_checksum(stream, seq, event_type, emitted, payload) == stored
    except InvalidEventError:
        return False


def orjson_checksum(stream: str, seq: int, event_type: str, emitted: str, payload: Any) -> str:
    """What a producer that took orjson for a canonicaliser would store."""
    covered = {"stream": stream, "seq": seq, "event_type": event_type, "emitted_at": emitted,
               "payload": payload}  # fmt: skip
    try:
        return hashlib.sha256(orjson.dumps(covered, option=orjson.OPT_SORT_KEYS)).hexdigest()
    except orjson.JSONEncodeError:
        return "0" * 64


# is_jcs_text's soundness property: tests/parity/test_events_speed_paths.py


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(payloads, st.sampled_from(["jcs", "orjson", "wrong"]), st.integers(1, 2**53 - 1)),
        min_size=1,
        max_size=8,
    )
)
def test_verify_checksums_agrees_with_rfc8785(rows: list) -> None:
    emitted = "2026-11-28T10:00:01.123000Z"
    table: dict[str, list] = {k: [] for k in ("stream", "seq", "event_type", "emitted_at",
                                              "payload", "checksum")}  # fmt: skip
    expected = []
    for payload, kind, seq in rows:
        if kind == "jcs":
            try:
                stored = compute_checksum("s", seq, "t.x", emitted, payload)
            except InvalidEventError:
                stored = "1" * 64
        elif kind == "orjson":
            stored = orjson_checksum("s", seq, "t.x", emitted, payload)
        else:
            stored = "f" * 64
        # What the table holds is JSON text; the slow path judges what parsing it gives.
        text = json.dumps(payload, ensure_ascii=False)
        parsed = json.loads(text)
        table["stream"].append("s")
        table["seq"].append(seq)
        table["event_type"].append("t.x")
        table["emitted_at"].append(dt.datetime.fromisoformat(emitted))
        table["payload"].append(text)
        table["checksum"].append(stored)
        expected.append(slow_valid("s", seq, "t.x", emitted, parsed, stored))
        assert checksum_matches("s", seq, "t.x", emitted, parsed, stored) == expected[-1]
    got = verify_checksums(pa.table(table)).to_pylist()
    assert got == expected


def test_verify_checksums_split_over_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [make_event("s", i, "t.x", H, {"i": i, "f": i / 3, "one": 1.0}) for i in range(1, 301)]
    table = pa.table({
        "stream": [e.stream for e in rows], "seq": [e.seq for e in rows],
        "event_type": [e.event_type for e in rows], "emitted_at": [e.emitted_at for e in rows],
        "payload": [json.dumps(e.payload) for e in rows],
        "checksum": [e.checksum if e.seq % 7 else "0" * 64 for e in rows],
    })  # fmt: skip
    whole = verify_checksums(table).to_pylist()
    monkeypatch.setattr(parallel, "MIN_ITEMS_PER_SHARE", 10)
    assert parallel.workers(300) >= 1
    assert verify_checksums(table).to_pylist() == whole
    assert whole == [bool(i % 7) for i in range(1, 301)]


def _log_lines() -> bytes:
    out = []
    for i in range(1, 400):
        at = H + dt.timedelta(seconds=i)
        event = make_event(f"s{i % 5}", i, "system.health", at, {"n": i, "x": i / 7})
        line = orjson.dumps(event.to_json_dict())
        if i % 50 == 0:
            line = line.replace(b'"seq"', b'"sek"')
        elif i % 61 == 0:
            line = b"{not json"
        elif i % 67 == 0:
            line = b"   "
        elif i % 71 == 0:
            line = b"x" * (wslog.MAX_LINE_BYTES + 10)
        elif i % 73 == 0:
            line = line.replace(b"2026-11-28T10", b"2026-11-28T12")  # outside the window
        elif i % 79 == 0:
            line = line.replace(b'"checksum":"', b'"checksum":"0').replace(b'"}', b'"}', 1)
        out.append(line)
    return b"\n".join(out) + b"\n" + b'{"partial": '


def test_log_reader_split_over_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "2026-11-28" / "10.jsonl"
    path.parent.mkdir(parents=True)
    path.write_bytes(_log_lines())
    rules = load_rules()

    def read() -> wslog.LogRead:
        return wslog.read_window(tmp_path, H, H + dt.timedelta(hours=1), classifier=rules)

    monkeypatch.setattr(parallel, "MIN_ITEMS_PER_SHARE", 1)
    monkeypatch.setattr(parallel, "_limit", 1)
    one = read()
    monkeypatch.setattr(parallel, "_limit", 4)
    monkeypatch.setattr(logwindow, "SPLIT_MIN_BYTES", 1 << 10)
    if parallel.workers(10**6) < 2:
        pytest.skip("one core, or no fork: nothing is split")
    split = read()
    assert split.events.equals(one.events)
    assert split.quarantined.equals(one.quarantined)
    assert (split.lines_read, split.blank_lines, split.events_outside_window) == (
        one.lines_read, one.blank_lines, one.events_outside_window)  # fmt: skip
    assert one.quarantined.num_rows >= 5
    assert one.lines_read == 400


def test_a_stuck_child_is_killed_and_its_share_redone(monkeypatch):
    """A child that never finishes (as if stuck on a lock inherited at fork) must not hang
    the caller: it is killed at the deadline and its share computed in the parent."""
    import os
    import time

    from parity.io import parallel

    monkeypatch.setattr(parallel, "CHILD_GRACE_S", 0.5)
    parent = os.getpid()

    def work(share: int) -> int:
        if share == 1 and os.getpid() != parent:
            time.sleep(60)
        return share * 10

    began = time.monotonic()
    assert parallel.run_shares(work, 2) == [0, 10]
    assert time.monotonic() - began < 10


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(payloads, st.sampled_from(["jcs", "orjson"])), min_size=1, max_size=12))
def test_log_reader_verdicts_agree_with_rfc8785(rows: list) -> None:
    """The log side (``wslog``'s loop over ``is_jcs_text``, then ``checksum_matches``)
    judges each line as ``rfc8785`` does, integral floats and ``1.0`` hashers included."""
    import tempfile

    lines, expected = [], {}
    for seq, (payload, kind) in enumerate(rows, start=1):
        at = H + dt.timedelta(seconds=seq)
        emitted = at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        try:
            good = compute_checksum("s", seq, "t.x", emitted, payload)
        except InvalidEventError:
            continue  # not representable: the producer could not have hashed it
        stored = good if kind == "jcs" else orjson_checksum("s", seq, "t.x", emitted, payload)
        text = json.dumps({"stream": "s", "seq": seq, "event_type": "t.x", "emitted_at": emitted,
                           "payload": payload, "checksum": stored}, ensure_ascii=False)  # fmt: skip
        parsed = json.loads(text)["payload"]
        expected[seq] = slow_valid("s", seq, "t.x", emitted, parsed, stored)
        lines.append(text.encode())
    if not lines:
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "2026-11-28" / "10.jsonl"
        path.parent.mkdir(parents=True)
        path.write_bytes(b"\n".join(lines) + b"\n")
        read = wslog.read_window(Path(tmp), H, H + dt.timedelta(hours=1), classifier=load_rules())
    got = dict(zip(read.events.column("seq").to_pylist(),
                   read.events.column("checksum_valid").to_pylist(), strict=True))  # fmt: skip
    assert got == expected

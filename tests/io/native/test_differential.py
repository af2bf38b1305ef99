"""The kernel against Parity's Python definition (parity.events, rfc8785) on random and
adversarial input: identical RFC 8785 bytes where the kernel writes any, and a decided
verdict only where Python reaches the same one."""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from collections import Counter

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import rfc8785

from parity.core.errors import InvalidEventError
from parity.core.events import (
    checksum_matches,
    loads_exact,
    make_event,
    parse_event,
)
from parity.io import native
from parity.io.verify import verify_checksums, verify_checksums_python
from tests.io.native.jsongen import JsonGen

pytestmark = pytest.mark.skipif(native.kernel is None, reason="the native kernel is not built")

WINDOW = (
    dt.datetime(2026, 11, 28, 10, tzinfo=dt.UTC),
    dt.datetime(2026, 11, 28, 11, tzinfo=dt.UTC),
)
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _us(value: dt.datetime) -> int:
    return (value - EPOCH) // dt.timedelta(microseconds=1)


def reference(text: bytes) -> bytes | None:
    """RFC 8785 text by the Python definition, None when it refuses the text."""
    try:
        return rfc8785.dumps(loads_exact(text))
    except (ValueError, RecursionError, rfc8785.CanonicalizationError):
        return None


@pytest.mark.parametrize("seed", range(4))
def test_canonical_text_is_rfc8785s(seed: int) -> None:
    gen, outcomes = JsonGen(seed), Counter[str]()
    for _ in range(4000):
        text = gen.json_text()
        expected = reference(text)
        try:
            got = native.canonicalize(text)
        except ValueError as exc:
            outcomes[f"undecided: {exc}"] += 1
            # Only reasons of caution: text Python reads must never be called bad JSON.
            assert expected is None or str(exc) != "invalid JSON", text
            continue
        assert got == expected, text
        outcomes["same"] += 1
    assert outcomes["same"] > 1500, outcomes


@pytest.mark.parametrize(
    "text",
    [
        b"1e21",
        b"1e20",
        b"1E-7",
        b"0.000001",
        b"1e-6",
        b"-0",
        b"-0.0",
        b"0e10",
        b"3.0",
        b"9007199254740991",
        b"-9007199254740991",
        b"5e-324",
        b"1.7976931348623157e308",
        b"123456789012345.6",
        b"0.1000000000000000055511151231257827",
        b'"\\ud83d\\ude00"',
        b'"\\u00e9\\/\\u0007\\u001f\\"\\\\"',
        '{"\ue000":1,"\U0001f600":2,"a":3}'.encode(),
        b'{"b":[],"a":{},"":null}',
        b" \t\r\n[true , false,null ] ",
    ],
)
def test_awkward_values(text: bytes) -> None:
    assert native.canonicalize(text) == reference(text)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b"9007199254740992", "integer beyond 2^53"),
        (b'{"a":1,"a":2}', "duplicate key"),
        (b'{"\\n":1}', "key needing an escape"),
        (b"1e400", "unusual number"),
        (b"[" * 129 + b"]" * 129, "nested too deep"),
        (b'"\\ud800"', "invalid JSON"),
        (b'"\xed\xa0\x80"', "invalid JSON"),
        (b"NaN", "invalid JSON"),
        (b"01", "invalid JSON"),
        (b'"a\x01"', "invalid JSON"),
    ],
)
def test_what_it_leaves_to_python(text: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason.replace("^", r"\^")):
        native.canonicalize(text)


def python_line(line: bytes) -> tuple[str, int | None, bool | None]:
    """("event", emitted_us, checksum valid) when Python reads the line as an event whose
    emitted_at is in the normalised form, else ("other", None, None)."""
    try:
        event = parse_event(loads_exact(line))
    except (ValueError, RecursionError, InvalidEventError):
        return "other", None, None
    valid = checksum_matches(
        event.stream,
        event.seq,
        event.event_type,
        event.emitted_at_text,
        event.payload,
        event.checksum,
    )
    return "event", _us(event.emitted_at), valid


@pytest.mark.parametrize("seed", range(3))
def test_log_lines_agree_with_python(seed: int) -> None:
    gen = JsonGen(100 + seed)
    lines = [gen.line(i) for i in range(3000)]
    start, end = (_us(t) for t in WINDOW)
    scan = native.scan_log(b"\n".join(lines), start, end, 1 << 20)
    assert len(scan.flags) == len(lines)
    decided = Counter[str]()
    rows = iter(range(len(scan.line_index)))
    for i, (line, flag) in enumerate(zip(lines, scan.flags, strict=True)):
        if flag == native.UNDECIDED:
            decided["undecided"] += 1
            continue
        kind, emitted, valid = python_line(line)
        assert kind == "event", line
        assert scan.emitted_us[i] == emitted, line
        if flag == native.OUTSIDE:
            assert not start <= emitted < end
            decided["outside"] += 1
            continue
        row = next(rows)
        assert scan.line_index[row] == i
        assert bool(scan.checksum_valid[row]) is valid, line
        assert bool(flag == native.VALID) is valid
        event = parse_event(loads_exact(line))
        assert scan.stream[row].as_py() == event.stream
        assert scan.event_type[row].as_py() == event.event_type
        assert scan.seq[row] == event.seq
        assert scan.checksum[row].as_py() == event.checksum
        assert loads_exact(scan.payload[row].as_py().encode()) == event.payload
        decided["valid" if valid else "invalid"] += 1
    assert next(rows, None) is None
    assert decided["valid"] > 300 and decided["invalid"] > 15, decided


def test_blank_long_and_unterminated_lines() -> None:
    event = make_event("health", 1, "system.health", WINDOW[0], {"a": 1.5})
    good = orjson.dumps(event.to_json_dict())
    block = b"\n".join([b"", b"   ", good, b"x" * 50, good]) + b"\n" + good
    scan = native.scan_log(block, 0, 2**62, len(good) - 1)
    assert list(scan.flags) == [native.UNDECIDED] * 6
    scan = native.scan_log(block, 0, 2**62, len(good))
    assert (
        list(scan.flags)
        == [native.UNDECIDED] * 2 + [native.VALID, native.UNDECIDED] + [native.VALID] * 2
    )  # noqa: E501
    assert list(scan.line_index) == [2, 4, 5]


@pytest.mark.parametrize("seed", range(3))
def test_line_starts_cut_the_block_as_split_does(seed: int) -> None:
    gen, rng = JsonGen(300 + seed), random.Random(seed)
    lines = [
        gen.line(i) if rng.random() < 0.8 else rng.randbytes(rng.randrange(40)).replace(b"\n", b"")
        for i in range(500)
    ]
    for block in (b"\n".join(lines), b"\n".join(lines) + b"\n"):
        scan = native.scan_log(block, 0, 2**62, 1 << 20)
        expected = block.split(b"\n")
        if block.endswith(b"\n"):
            expected.pop()
        assert len(scan.line_starts) == len(expected) + 1 == len(scan.flags) + 1
        assert scan.line_starts[-1] == len(block)
        assert [
            native.line_of(block, scan.line_starts, i) for i in range(len(expected))
        ] == expected


@pytest.mark.parametrize("size", [0, 1, 7, 64, 4096, 1 << 20])
def test_newlines_are_counted_as_bytes_count_does(size: int) -> None:
    rng = random.Random(size)
    data = bytes(rng.choice(b"ab\n\r") for _ in range(size))
    assert native.count_newlines(data) == data.count(b"\n")
    assert native.count_newlines(memoryview(data)[1:]) == data[1:].count(b"\n")


def test_threads_verify_at_once_as_one_does() -> None:
    """The kernel's loops run without the GIL and take it back only for CPython's number
    routines (long or unusual floats): threads doing that at the same time get what one
    thread gets."""
    from concurrent.futures import ThreadPoolExecutor

    table = _snapshot_rows(7, 4000)
    gen = JsonGen(77)
    start, end = (_us(t) for t in WINDOW)
    # Floats with 17 significant digits or an exponent take CPython's routines.
    floats = [
        orjson.dumps(make_event("m", i + 1, "metrics.verbose", WINDOW[0], {"x": x}).to_json_dict())
        for i, x in enumerate([0.30000000000000004, 1e300, 5e-324, 123456.78901234567] * 50)
    ]
    block = b"\n".join([*(gen.line(i) for i in range(4000)), *floats])
    columns = (
        *(table.column(c).combine_chunks() for c in ("stream", "seq", "event_type")),
        table.column("emitted_at").combine_chunks().cast(pa.int64()),
        *(table.column(c).combine_chunks() for c in ("payload", "checksum")),
    )
    rows_alone = native.verify_columns(*columns)
    lines_alone = native.scan_log(block, start, end, 1 << 20)
    with ThreadPoolExecutor(4) as pool:
        rows = list(pool.map(lambda _: native.verify_columns(*columns), range(8)))
        scans = list(pool.map(lambda _: native.scan_log(block, start, end, 1 << 20), range(8)))
    assert all(np.array_equal(r, rows_alone) for r in rows)
    assert all(np.array_equal(s.flags, lines_alone.flags) for s in scans)
    assert all(s.payload.equals(lines_alone.payload) for s in scans)
    assert list(lines_alone.flags[-len(floats) :]) == [native.VALID] * len(floats)


def _snapshot_rows(seed: int, n: int) -> pa.Table:
    gen, rng = JsonGen(seed), random.Random(seed)
    rows: dict[str, list] = {
        k: [] for k in ("stream", "seq", "event_type", "emitted_at", "payload", "checksum")
    }
    for i in range(n):
        gen.tame = rng.random() < 0.7
        members = ",".join(f"{key}:{gen.ws()}{gen.value(2)}" for key in gen.keys())
        payload = gen.value(1) if rng.random() < 0.1 else "{" + members + "}"
        stream = rng.choice(["health", "s-é", 'q"uote', "tab\t", "\U0001f600", ""])
        event_type = rng.choice(["error.raised", "x\\y", "\ue000"])
        emitted = WINDOW[0] + dt.timedelta(microseconds=rng.randrange(3_600_000_000))
        if rng.random() < 0.02:
            emitted = rng.choice(
                [dt.datetime(1, 1, 1, tzinfo=dt.UTC), dt.datetime(999, 12, 31, 23, tzinfo=dt.UTC)]
            )
        seq = rng.choice([rng.randrange(1, 2**53), -5, 0, 2**53, 2**62])
        try:
            value = loads_exact(payload.encode("utf-8", "surrogatepass"))
            text = emitted.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            covered = {
                "stream": stream,
                "seq": seq,
                "event_type": event_type,
                "emitted_at": text,
                "payload": value,
            }
            checksum = hashlib.sha256(rfc8785.dumps(covered)).hexdigest()
        except Exception:
            checksum = hashlib.sha256(b"%d" % i).hexdigest()
        if rng.random() < 0.1:
            checksum = checksum[:-1] + ("0" if checksum[-1] != "0" else "1")
        for key, value in zip(
            rows, (stream, seq, event_type, emitted, payload, checksum), strict=True
        ):
            rows[key].append(value if rng.random() > 0.01 else None)
    return pa.table(
        {
            **{
                k: pa.array(v, pa.string())
                for k, v in rows.items()
                if k not in ("seq", "emitted_at")
            },
            "seq": pa.array(rows["seq"], pa.int64()),
            "emitted_at": pa.array(rows["emitted_at"], pa.timestamp("us", tz="UTC")),
        }
    )


@pytest.mark.parametrize("seed", range(2))
def test_snapshot_rows_agree_with_python(seed: int) -> None:
    table = _snapshot_rows(seed, 3000)
    expected = verify_checksums_python(table).to_numpy(zero_copy_only=False)
    flags = native.verify_columns(
        *(table.column(c).combine_chunks() for c in ("stream", "seq", "event_type")),
        table.column("emitted_at").combine_chunks().cast(pa.int64()),
        *(table.column(c).combine_chunks() for c in ("payload", "checksum")),
    )
    assert verify_checksums(table).equals(verify_checksums_python(table))
    decided = flags != native.UNDECIDED
    assert np.array_equal(flags[decided] == native.VALID, expected[decided])
    assert decided.sum() > 800 and expected[decided].sum() > 400


def test_slices_are_verified_where_they_start() -> None:
    # A slice shares its parent's buffers from an offset: batches cut by to_batches'
    # max_chunksize, chunks of a concatenated table, a table sliced by its caller.
    table = _snapshot_rows(7, 3000)
    expected = verify_checksums_python(table).to_pylist()
    cut = pa.Table.from_batches(table.to_batches(max_chunksize=701))
    assert {c.offset for b in cut.to_batches() for c in b.columns} > {0}
    assert verify_checksums(cut).to_pylist() == expected
    for start, length in [(1, 999), (7, 64), (1234, 1766), (2999, 1)]:
        part = table.slice(start, length)
        assert verify_checksums(part).to_pylist() == expected[start : start + length]
    assert sum(expected) > 1000  # mostly valid rows: a misread column would show


@pytest.mark.parametrize(
    "layout",
    [
        {"payload": pa.large_string(), "stream": pa.large_string()},  # the kernel reads these
        {"seq": pa.int32(), "emitted_at": pa.timestamp("ns", tz="UTC")},  # cast on the way in
        {"payload": pa.string_view()},  # left to Python, whole
        {"event_type": pa.dictionary(pa.int32(), pa.string())},
    ],
    ids=["large-strings", "narrow-ints-ns-time", "string-view", "dictionary"],
)
def test_other_arrow_layouts_get_the_same_verdicts(layout: dict[str, pa.DataType]) -> None:
    table = _snapshot_rows(11, 2000)
    if "seq" in layout:  # only the rows an int32 seq and a nanosecond time can hold
        seq, year = table["seq"], pc.year(table["emitted_at"])
        seq_fits = pc.and_(pc.greater_equal(seq, -(2**31)), pc.less(seq, 2**31))
        time_fits = pc.and_(pc.greater(year, 1677), pc.less(year, 2262))
        table = table.filter(pc.and_(pc.fill_null(seq_fits, True), pc.fill_null(time_fits, True)))
    expected = verify_checksums_python(table).to_pylist()
    cast = table.cast(
        pa.schema([pa.field(f.name, layout.get(f.name, f.type)) for f in table.schema])
    )
    assert verify_checksums(cast).to_pylist() == expected
    assert verify_checksums(cast.slice(3, 700)).to_pylist() == expected[3:703]


@pytest.mark.parametrize("route", ["portable", "shani", "libcrypto"])
def test_sha256_routes_match_hashlib(route: str) -> None:
    if route not in native.sha256_routes():
        pytest.skip(f"SHA-256 route {route} is not available on this machine")
    kernel = native.kernel
    assert kernel is not None
    before = kernel.sha256_route()
    kernel.set_sha256_route(route)
    try:
        rng = random.Random(route)
        for size in [*range(0, 200), 1000, 4095, 65536, 1 << 20]:
            data = rng.randbytes(size)
            assert kernel.sha256_hex(data) == hashlib.sha256(data).hexdigest(), size
    finally:
        kernel.set_sha256_route(before)


def test_the_fastest_route_is_chosen() -> None:
    kernel = native.kernel
    assert kernel is not None
    routes = native.sha256_routes()
    assert "portable" in routes
    assert kernel.sha256_route() == next(
        r for r in ("shani", "libcrypto", "portable") if r in routes
    )

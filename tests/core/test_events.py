"""The event contract and its checksum (contract §2).

``data/checksum_vectors.json`` holds vectors whose RFC 8785 text was written by hand from the
spec, with its sha256 taken by hashlib over that text: the tests check Parity against them,
never against itself.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parity.core.checksum import canonical_bytes, checksum_matches, compute_checksum
from parity.core.errors import InvalidEventError
from parity.core.events import REQUIRED_FIELDS, Event, make_event, parse_event
from parity.core.jsontext import MAX_SAFE_INTEGER, loads_exact
from parity.core.timestamps import format_timestamp, parse_timestamp
from parity.io.verify import verify_checksums

VECTORS = json.loads((Path(__file__).parent / "data" / "checksum_vectors.json").read_text("utf-8"))
T0 = dt.datetime(2026, 11, 28, 10, 0, 1, 123000, tzinfo=dt.UTC)
#: No example database: tests never write to the working directory.
PROPERTY = settings(database=None, deadline=None, max_examples=60)


def _cases() -> list[Any]:
    return [
        pytest.param(v, text, id=f"{i}-{text}")
        for i, v in enumerate(VECTORS)
        for text in v["emitted_at"]
    ]


def test_vectors_are_self_consistent() -> None:
    for vector in VECTORS:
        digest = hashlib.sha256(vector["canonical"].encode("utf-8")).hexdigest()
        assert digest == vector["sha256"], vector["name"]


@pytest.mark.parametrize(("vector", "emitted_text"), _cases())
def test_checksum_matches_hand_computed_vector(vector: dict, emitted_text: str) -> None:
    emitted = parse_timestamp(emitted_text)
    args = (vector["stream"], vector["seq"], vector["event_type"], emitted, vector["payload"])
    assert canonical_bytes(*args).decode("utf-8") == vector["canonical"]
    assert compute_checksum(*args) == vector["sha256"]


@pytest.mark.parametrize(("vector", "emitted_text"), _cases())
def test_log_line_with_vector_checksum_is_valid(vector: dict, emitted_text: str) -> None:
    line = json.dumps({
        "checksum": vector["sha256"], "payload": vector["payload"], "seq": vector["seq"],
        "emitted_at": emitted_text, "event_type": vector["event_type"],
        "stream": vector["stream"],
    })  # fmt: skip
    event = parse_event(loads_exact(line))
    assert event.emitted_at_text == json.loads(vector["canonical"])["emitted_at"]
    assert event.checksum_is_valid()


def test_one_point_zero_and_one_share_a_checksum() -> None:
    a = compute_checksum("s", 1, "t", T0, {"v": 1.0, "z": -0.0})
    b = compute_checksum("s", 1, "t", T0, {"v": 1, "z": 0})
    assert a == b


@pytest.mark.parametrize(
    "payload",
    [
        {"n": MAX_SAFE_INTEGER + 2},
        {"n": -(2**63)},
        {"n": 10**20},
        {"x": float("nan")},
        {"x": [float("inf")]},
    ],  # fmt: skip
    ids=["2^53+1", "-2^63", "1e20-int", "nan", "inf"],
)
def test_values_jcs_cannot_represent_are_invalid_not_crashes(payload: dict) -> None:
    with pytest.raises(InvalidEventError) as info:
        compute_checksum("s", 1, "t", T0, payload)
    assert info.value.reason == "not_canonicalizable"
    assert not checksum_matches("s", 1, "t", format_timestamp(T0), payload, "0" * 64)


def test_twenty_digit_integer_survives_parsing_exactly() -> None:
    assert loads_exact('{"n": 12345678901234567890123}') == {"n": 12345678901234567890123}
    with pytest.raises(ValueError):
        loads_exact('{"n": 12345678901234567890, "x": NaN}')
    with pytest.raises(ValueError):
        loads_exact('{"x": NaN}')


# -- hypothesis properties ----------------------------------------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=10,
)
payloads = st.dictionaries(st.text(max_size=6), _json, max_size=5)
events = st.builds(
    make_event,
    stream=st.text(min_size=1, max_size=20),
    seq=st.integers(1, MAX_SAFE_INTEGER),
    event_type=st.sampled_from(["system.health", "user.action", "debug.log", "x.ü.😀"]),
    emitted_at=st.datetimes(
        min_value=dt.datetime(2000, 1, 1),
        max_value=dt.datetime(2100, 1, 1),
        timezones=st.sampled_from(
            [
                dt.UTC,
                dt.timezone(dt.timedelta(hours=5, minutes=30)),
                dt.timezone(dt.timedelta(hours=-8)),
            ]
        ),
    ),  # fmt: skip
    payload=payloads,
)


def _shuffle(value: Any, rnd: Any) -> Any:
    if isinstance(value, dict):
        items = [(k, _shuffle(v, rnd)) for k, v in value.items()]
        rnd.shuffle(items)
        return dict(items)
    if isinstance(value, list):
        return [_shuffle(v, rnd) for v in value]
    return value


@PROPERTY
@given(
    event=events,
    rnd=st.randoms(use_true_random=False),
    indent=st.sampled_from([None, 0, 2, "\t"]),
    separators=st.sampled_from([(",", ":"), (", ", ": "), (" ,  ", " :\t")]),
    ascii_only=st.booleans(),
    offset=st.sampled_from(["Z", "+05:30", "-08:00"]),
)
def test_key_order_whitespace_and_offset_never_change_the_checksum(
    event: Event, rnd: Any, indent: Any, separators: tuple[str, str], ascii_only: bool, offset: str
) -> None:
    obj = _shuffle(event.to_json_dict(), rnd)
    tz = dt.UTC if offset == "Z" else dt.datetime.strptime(offset, "%z").tzinfo
    obj["emitted_at"] = event.emitted_at.astimezone(tz).isoformat().replace("+00:00", "Z")
    text = json.dumps(obj, indent=indent, separators=separators, ensure_ascii=ascii_only)
    parsed = parse_event(loads_exact(text.encode("utf-8")))
    assert parsed.checksum_is_valid()
    assert (
        compute_checksum(
            parsed.stream, parsed.seq, parsed.event_type, parsed.emitted_at, parsed.payload
        )
        == event.checksum
    )


_MUTATIONS = {
    "stream": lambda e: dataclasses.replace(e, stream=e.stream + "x"),
    "seq": lambda e: dataclasses.replace(e, seq=e.seq + 1 if e.seq < MAX_SAFE_INTEGER else 1),
    "event_type": lambda e: dataclasses.replace(e, event_type=e.event_type + ".x"),
    "emitted_at": lambda e: dataclasses.replace(
        e, emitted_at=e.emitted_at + dt.timedelta(microseconds=1)
    ),
    "payload-added-key": lambda e: dataclasses.replace(e, payload={**e.payload, "__extra__": 0}),
    "payload-nested": lambda e: dataclasses.replace(e, payload={"wrapped": e.payload}),
}


@PROPERTY
@given(event=events, field=st.sampled_from(sorted(_MUTATIONS)))
def test_any_change_to_a_covered_field_changes_the_checksum(event: Event, field: str) -> None:
    changed = _MUTATIONS[field](event)
    recomputed = compute_checksum(
        changed.stream, changed.seq, changed.event_type, changed.emitted_at, changed.payload
    )
    assert recomputed != event.checksum
    assert not changed.checksum_is_valid()  # still carries the old checksum


@PROPERTY
@given(
    event=events,
    category=st.sampled_from([None, "CRITICAL", "INFORMATIONAL", "LEGACY"]),
    logged_at=st.none()
    | st.datetimes(dt.datetime(2000, 1, 1), dt.datetime(2100, 1, 1), timezones=st.just(dt.UTC)),
)
def test_category_and_logged_at_are_not_covered(
    event: Event, category: str | None, logged_at: dt.datetime | None
) -> None:
    tagged = dataclasses.replace(event, category=category, logged_at=logged_at)
    assert tagged.checksum_is_valid()
    reparsed = parse_event(orjson.loads(orjson.dumps(tagged.to_json_dict())))
    assert reparsed.category == category
    assert reparsed.checksum_is_valid()


# -- parse_event ----------------------------------------------------------------------------


def _good() -> dict[str, Any]:
    return make_event("s", 1, "system.health", T0, {"a": 1}).to_json_dict()


def test_good_event_parses() -> None:
    event = parse_event(_good(), where="f:1")
    assert (event.key, event.emitted_at, event.category, event.logged_at) == (
        ("s", 1), T0, None, None,
    )  # fmt: skip


@pytest.mark.parametrize("value", [[], "text", 1, None, [{"stream": "s"}]])
def test_non_object_is_rejected(value: Any) -> None:
    with pytest.raises(InvalidEventError) as info:
        parse_event(value, where="log:3")
    assert info.value.reason == "not_an_object"
    assert "log:3" in str(info.value)


@pytest.mark.parametrize("field", REQUIRED_FIELDS)
def test_missing_field_is_rejected(field: str) -> None:
    obj = _good()
    del obj[field]
    with pytest.raises(InvalidEventError) as info:
        parse_event(obj)
    assert (info.value.reason, info.value.field) == ("missing_field", field)


BAD_FIELDS = [
    ("stream", ""), ("stream", "s" * 129), ("stream", 5), ("stream", None),
    ("seq", 0), ("seq", -1), ("seq", True), ("seq", 1.5), ("seq", "1"), ("seq", 2**53),
    ("seq", None),
    ("event_type", ""), ("event_type", None), ("event_type", ["a"]),
    ("emitted_at", "2026-11-28T10:00:00"),  # no offset
    ("emitted_at", "2026-11-28T10:00:00.1234567Z"),  # beyond microseconds
    ("emitted_at", "2026-02-30T10:00:00Z"),  # no such day
    ("emitted_at", "2026-11-28T24:00:00Z"),
    ("emitted_at", "yesterday"), ("emitted_at", 1764324000), ("emitted_at", None),
    ("payload", []), ("payload", None), ("payload", "{}"), ("payload", 1),
    ("checksum", "A" * 64), ("checksum", "a" * 63), ("checksum", "g" * 64), ("checksum", None),
    ("category", "critical"), ("category", "OTHER"), ("category", 1),
    ("logged_at", "not a time"), ("logged_at", "2026-11-28T10:00:00"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("field", "value"), BAD_FIELDS, ids=[f"{f}={v!r:.20}" for f, v in BAD_FIELDS]
)
def test_invalid_field_is_rejected(field: str, value: Any) -> None:
    obj = _good()
    obj[field] = value
    with pytest.raises(InvalidEventError) as info:
        parse_event(obj)
    assert (info.value.reason, info.value.field) == ("invalid_field", field)


def test_max_stream_length_and_max_safe_seq_are_accepted() -> None:
    obj = make_event("s" * 128, MAX_SAFE_INTEGER, "t", T0, {}).to_json_dict()
    assert parse_event(obj).checksum_is_valid()


# -- verify_checksums -------------------------------------------------------------------------


def _table(rows: list[tuple]) -> pa.Table:
    names = ["stream", "seq", "event_type", "emitted_at", "payload", "checksum"]
    columns = list(zip(*rows, strict=True))
    types = [pa.string(), pa.int64(), pa.string(), pa.timestamp("us", tz="UTC"), pa.string(),
             pa.string()]  # fmt: skip
    return pa.table([pa.array(c, t) for c, t in zip(columns, types, strict=True)], names=names)


def test_verify_checksums_agrees_with_checksum_matches() -> None:
    good = compute_checksum("s", 1, "t", T0, {"a": [1, 2], "b": 1})
    big = compute_checksum("s", 4, "t", T0, {"n": 1})
    rows = [
        ("s", 1, "t", T0, '{"a":[1,2],"b":1}', good),  # compact, canonical order
        ("s", 1, "t", T0, '{"b": 1, "a": [1, 2]}', good),  # jsonb's text form
        ("s", 2, "t", T0, '{"b": 1, "a": [1, 2]}', good),  # seq differs from the checksum's
        ("s", 4, "t", T0, '{"n": 12345678901234567890}', big),  # 20 digits: beyond 2^53
        ("s", 5, "t", T0, None, good),  # null payload
        ("s", 6, "t", T0, "[1, 2]", good),  # not an object
        ("s", 7, "t", T0, "{not json", good),
        ("s", 8, "t", T0, '{"x": NaN}', good),
        ("s", 9, "t", None, "{}", good),  # null emitted_at
        ("s", 10, "t", T0, "{}", None),  # null checksum
    ]
    result = verify_checksums(_table(rows)).to_pylist()
    assert result == [True, True, False, False, False, False, False, False, False, False]
    for (stream, seq, event_type, emitted, payload_text, stored), verdict in zip(
        rows[:4], result, strict=False
    ):
        payload = loads_exact(payload_text)
        assert (
            checksum_matches(stream, seq, event_type, format_timestamp(emitted), payload, stored)
            is verdict
        )


def test_verify_checksums_of_empty_table() -> None:
    assert (
        verify_checksums(_table([("s", 1, "t", T0, "{}", "0" * 64)]).slice(0, 0)).to_pylist() == []
    )

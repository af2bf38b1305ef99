"""The cheaper paths of checksum verification decide exactly as ``rfc8785`` does.

Each speed path is held to the soundness rule of ``parity.core.checksum``: text counts as the RFC
8785 text only when it is byte for byte what ``rfc8785.dumps`` writes. The tests also make
sure the paths are taken (``rfc8785`` made to fail), so they cannot pass by falling back.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import rfc8785
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parity.core import checksum, jsontext
from parity.core.checksum import checksum_matches, compute_checksum, is_jcs_text
from parity.core.errors import InvalidEventError
from parity.core.jsontext import loads_exact
from parity.io.verify import verify_checksums

EMITTED = "2026-11-28T10:00:01.123000Z"
PROPERTY = settings(
    database=None, deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow]
)

#: Values where orjson and RFC 8785 part ways, or nearly do.
ADVERSARIAL = [
    3.0, -0.0, 0.0, 100.0, -7.0, 2.0**52, 2.0**53 - 1, 2.0**53, 2.0**53 + 2, 1e15, 1e16, 1e20,
    1e21, 1.5e300, 5e-324, 1e-5, 1e-6, 1.5e-6, 1e-7, -2.5e-12, 0.1, 58.2, 2.05, 1.05,
    0.30000000000000004, 1 / 3, 1234567890123456.8, 2**53 - 1, 2**53, 2**53 + 1, -(2**53) - 1,
    2**64 + 3, 10**30, True, False, None,
]  # fmt: skip
KEYS = ["a", "b", "\ue000", "\uffff", "😀", "\U0010ffff", "é", 'q"\\', "\x1f", "1.0", ""]
STRINGS = [
    "v1.0", "1.0,", "x.0]", "3e5", "2e+16", "1234567890123456789", "a.12345678901234567",
    '\\"1.0,', "\\\\", "tab\t", "\x7f", "\u2028", "\ue000", "😀", "0b7b4dd6700cece8b6e4",
    "f7418209256979219526f005b3374",
]  # fmt: skip

scalars = st.one_of(
    st.sampled_from(ADVERSARIAL),
    st.sampled_from(STRINGS),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-(2.0**60), max_value=2.0**60).map(float.__floor__).map(float),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=8),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=4)), inner, max_size=4)
    ),
    max_leaves=12,
)
payloads = st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), values)


def slow_valid(seq: int, payload: Any, stored: str, stream: str = "s") -> bool:
    try:
        return compute_checksum(stream, seq, "t.x", EMITTED, payload) == stored
    except InvalidEventError:
        return False


def orjson_digest(seq: int, payload: Any, stream: str = "s") -> str:
    """What a producer that took orjson for a canonicaliser stores (``1.0`` for ``1``)."""
    covered = {"stream": stream, "seq": seq, "event_type": "t.x", "emitted_at": EMITTED,
               "payload": payload}  # fmt: skip
    try:
        return hashlib.sha256(orjson.dumps(covered, option=orjson.OPT_SORT_KEYS)).hexdigest()
    except orjson.JSONEncodeError:
        return "0" * 64


def jcs_digest(seq: int, payload: Any, stream: str = "s") -> str:
    try:
        return compute_checksum(stream, seq, "t.x", EMITTED, payload)
    except InvalidEventError:
        return "1" * 64


def jsonb_text(value: Any) -> str:
    """PostgreSQL's ``jsonb::text``: keys by length then bytes, ``", "`` and ``": "``."""
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: (len(kv[0].encode()), kv[0].encode()))
        return "{" + ", ".join(f"{json.dumps(k)}: {jsonb_text(v)}" for k, v in items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(jsonb_text(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def no_rfc8785(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(value: Any) -> bytes:
        raise AssertionError("rfc8785 was called: the fast path was not taken")

    monkeypatch.setattr(rfc8785, "dumps", refuse)


# -- is_jcs_text -------------------------------------------------------------------------


@PROPERTY
@given(st.text())
def test_high_character_test_agrees_with_its_definition(text: str) -> None:
    """The lead-byte test finds exactly the characters at or above U+E000."""
    high = text != "" and max(text) >= "\ue000"
    marks = text.encode().translate(checksum._MARKS).decode()
    assert ("!" in marks) == high
    # A lone string has neither numbers nor keys: only the high characters are refused.
    assert is_jcs_text(orjson.dumps(text)) == (not high)
    assert is_jcs_text(orjson.dumps({"k": [text, 1.5]})) == (not high)


@PROPERTY
@given(payloads)
def test_is_jcs_text_is_only_claimed_when_true(payload: dict) -> None:
    try:
        text = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        return
    if is_jcs_text(text):
        assert text == rfc8785.dumps(payload)


@PROPERTY
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_float_verdict_is_only_claimed_when_true(value: float) -> None:
    for text in (orjson.dumps(value), orjson.dumps([value, -value]), orjson.dumps({"x": value})):
        if is_jcs_text(text):
            assert text == rfc8785.dumps(orjson.loads(text))


@pytest.mark.parametrize(
    ("value", "proven"),
    [
        (1.5, True),
        (58.2, True),  # was a false alarm: 58.2 looks like 00.0 in the digit image
        (2.05, True),
        (0.30000000000000004, True),  # a long fraction is not an integer beyond 2^53
        (1 / 3, True),
        (1e21, True),  # exponent form in both
        (1.5e300, True),
        (5e-324, True),
        (-2.5e-12, True),
        (1e-7, True),
        (1e-5, True),  # plain in both: 0.00001
        (3.0, False),  # orjson 3.0, RFC 8785 3
        (-0.0, False),
        (1e16, False),  # orjson 1e+16, RFC 8785 10000000000000000
        (1e20, False),
        (1.5e-6, False),  # orjson 1.5e-6, RFC 8785 0.0000015
        (1e-6, False),
        (2**53 + 1, False),  # beyond 2^53: RFC 8785 cannot represent it
        (1234567890123456, False),  # 16 digits: not proven (refused conservatively)
        (1234567890123456.8, False),  # 16 digits before the point
    ],
)
def test_number_verdicts(value: float, proven: bool) -> None:
    text = orjson.dumps({"k": [value], "s": "x"}, option=orjson.OPT_SORT_KEYS)
    assert is_jcs_text(text) == proven
    if proven:
        assert text == rfc8785.dumps({"k": [value], "s": "x"})


@pytest.mark.parametrize(
    "payload",
    [
        {"\ue000": 1, "😀": 2},  # U+E000 sorts before a surrogate pair in UTF-16 only
        {"a": "\uffff"},
        {"a": "😀 \U0010ffff"},
        {"e": [1.5, "\ue000"]},
    ],
)
def test_characters_at_or_above_e000_are_never_proven(payload: dict) -> None:
    assert not is_jcs_text(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS))


@pytest.mark.parametrize(
    "payload",
    [
        {"v": "v1.0", "w": "x.0]", "n": 2},  # integral-float look-alikes inside strings
        {"v": '\\"1.0,', "n": "2e+16"},  # behind escaped quotes and backslashes
        {"h": "0b7b4dd6700cece8b6e41234567890123456789", "n": 7},
        {"t": "tab\t", "c": "\x1f", "q": 'q"'},
    ],
)
def test_strings_do_not_hide_or_fake_numbers(payload: dict) -> None:
    text = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
    assert is_jcs_text(text)
    assert text == rfc8785.dumps(payload)


# -- integral floats: rewritten as ints, then proven --------------------------------------


@PROPERTY
@given(payloads)
def test_proven_body_is_the_rfc8785_text(payload: dict) -> None:
    try:
        body = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        return
    before = json.dumps(payload)
    proven = checksum._proven_body(payload, body)
    assert json.dumps(payload) == before  # the payload itself is never changed
    if proven is not None:
        assert proven == rfc8785.dumps(payload)


@pytest.mark.parametrize(
    "payload",
    [
        {"ratio": 3.0},
        {"z": -0.0, "ok": True, "no": False},  # -0.0 is written 0; booleans stay booleans
        {"m": {"latency_ms": [1.0, 2.5, 100.0]}, "user": "Zoë", "big": 10**15 - 1},
        {"edge": 999999999999999.0, "neg": -(2.0**40)},
    ],
)
def test_integral_floats_are_verified_without_rfc8785(
    payload: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    good, noncanonical = jcs_digest(5, payload), orjson_digest(5, payload)
    assert good != noncanonical
    parsed = orjson.loads(jsonb_text(payload))
    no_rfc8785(monkeypatch)
    assert checksum_matches("s", 5, "t.x", EMITTED, parsed, good)
    # A producer that hashed orjson's 1.0 instead of 1 is caught.
    assert not checksum_matches("s", 5, "t.x", EMITTED, parsed, noncanonical)
    table = _table([(5, jsonb_text(payload), good), (6, jsonb_text(payload), noncanonical)])
    assert verify_checksums(table).to_pylist() == [True, False]


@pytest.mark.parametrize(
    "payload",
    [
        {"big": 2.0**53},  # integral, but not below 2^53: left to rfc8785
        {"edge": 2.0**53 - 2.0},  # 16 digits: refused, conservatively
        {"r": 3.0, "e": 1e16},
        {"r": 3.0, "k\ue000": 1},
        {"r": 3.0, "n": 2**53 + 1},  # JCS cannot represent it: invalid
        {"r": 3.0, "n": 2**64 + 3},
    ],
)
def test_what_the_rewrite_cannot_prove_goes_to_rfc8785(payload: dict) -> None:
    good, noncanonical = jcs_digest(5, payload), orjson_digest(5, payload)
    if payload.get("n", 0) < 2**64:  # orjson cannot write larger integers at all
        body = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
        assert checksum._proven_body(payload, body) is None
    expected = slow_valid(5, payload, good)
    assert expected == (good != "1" * 64)
    assert checksum_matches("s", 5, "t.x", EMITTED, payload, good) == expected
    assert not checksum_matches("s", 5, "t.x", EMITTED, payload, noncanonical)
    table = _table([(5, jsonb_text(payload), good), (6, jsonb_text(payload), noncanonical)])
    assert verify_checksums(table).to_pylist() == [expected, False]


# -- verify_checksums over jsonb text ----------------------------------------------------


def _table(rows: list[tuple[int, str | None, str | None]], stream: str = "s") -> pa.Table:
    at = dt.datetime.fromisoformat(EMITTED)
    return pa.table({
        "stream": [stream] * len(rows), "seq": [r[0] for r in rows],
        "event_type": ["t.x"] * len(rows), "emitted_at": [at] * len(rows),
        "payload": [r[1] for r in rows], "checksum": [r[2] for r in rows],
    })  # fmt: skip


@PROPERTY
@given(
    st.lists(
        st.tuples(payloads, st.sampled_from(["jcs", "orjson", "wrong"]), st.integers(1, 2**53 - 1)),
        min_size=1,
        max_size=6,
    ),
    st.booleans(),
)
def test_verify_checksums_on_jsonb_text_agrees_with_rfc8785(rows: list, with_null: bool) -> None:
    table_rows: list[tuple[int, str | None, str | None]] = []
    expected = []
    for payload, kind, seq in rows:
        stored = {"jcs": jcs_digest, "orjson": orjson_digest}.get(kind, lambda *_: "f" * 64)(
            seq, payload
        )
        text = jsonb_text(payload)
        parsed = json.loads(text)
        table_rows.append((seq, text, stored))
        expected.append(slow_valid(seq, parsed, stored))
        assert checksum_matches("s", seq, "t.x", EMITTED, parsed, stored) == expected[-1]
    if with_null:  # a null anywhere makes the row invalid, never an exception
        table_rows.append((1, None, "f" * 64))
        table_rows.append((1, "{}", None))
        expected += [False, False]
    assert verify_checksums(_table(table_rows)).to_pylist() == expected


def test_long_fractions_and_big_integers_in_jsonb_text(monkeypatch: pytest.MonkeyPatch) -> None:
    fine = {"r": 0.30000000000000004, "t": 1 / 3, "id": "a1234567890123456789"}
    digest = {"id": "0b7b4dd6700cece8b6ea1234567890123456", "r": 2.5}
    big = {"n": 12345678901234567890123, "r": 0.1}
    rows = [(1, jsonb_text(fine), jcs_digest(1, fine)), (2, jsonb_text(big), jcs_digest(2, big))]
    rows.append((3, '{"n": 9007199254740993}', jcs_digest(3, {"n": 9007199254740993})))
    rows.append((4, jsonb_text(digest), jcs_digest(4, digest)))
    assert verify_checksums(_table(rows)).to_pylist() == [True, False, False, True]
    no_rfc8785(monkeypatch)  # long fractions are proven like any other
    assert verify_checksums(_table(rows[:1])).to_pylist() == [True]
    # Digits inside a hex digest need neither the exact parser nor rfc8785.
    monkeypatch.setattr(checksum, "loads_exact", None)
    assert verify_checksums(_table(rows[3:])).to_pylist() == [True]


# -- loads_exact: the standard library only where a long integer may be -------------------

run_texts = st.one_of(
    st.from_regex(
        r"[0-9]{0,3}[a-f0-9\"., :\[\]eE+-]{0,6}[0-9]{14,40}[a-z\"\]}, ]{0,3}", fullmatch=True
    ),
    st.text(alphabet='0123456789abcdefE-+.: ,"[]{}x', max_size=60),
)


@PROPERTY
@given(run_texts)
def test_long_number_test_agrees_with_its_column_form(text: str) -> None:
    column = pc.match_substring_regex(pa.array([text]), jsontext.LONG_NUMBER_REGEX)
    assert column[0].as_py() == jsontext.may_hold_long_number(text.encode())
    if jsontext.may_hold_long_number(text.encode()):
        assert jsontext.has_long_digit_run(text.encode())


json_values = st.recursive(
    st.one_of(
        st.integers(min_value=-(10**40), max_value=10**40),
        st.floats(allow_nan=False, allow_infinity=False),
        st.sampled_from([0.30000000000000004, 1e-300, 12345678901234567.0]),
        st.from_regex(r"[a-f0-9\"]{0,4}[0-9]{16,30}[a-f]?", fullmatch=True),
        st.text(max_size=6),
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=8,
)


@PROPERTY
@given(json_values, st.sampled_from([(",", ":"), (", ", ": ")]))
def test_loads_exact_agrees_with_the_standard_library(value: Any, separators: tuple) -> None:
    text = json.dumps(value, separators=separators, ensure_ascii=False)
    exact = loads_exact(text.encode())
    # json.dumps tells 1 from 1.0, and so tells an exact integer from a rounded one.
    assert json.dumps(exact) == json.dumps(json.loads(text))


@pytest.mark.parametrize(
    "text",
    [
        b"12345678901234567890123",
        b"-12345678901234567890123",
        b"[1,12345678901234567890123]",
        b'{"a":\n12345678901234567890123}',
        b'{"a":"x","b":12345678901234567890123}',
        b'{"h":"0b7b4dd6700cece8b6e4","n":12345678901234567890123}',
    ],
)
def test_loads_exact_keeps_long_integers(text: bytes) -> None:
    assert jsontext.may_hold_long_number(text)
    assert json.dumps(loads_exact(text)) == json.dumps(json.loads(text))
    assert "12345678901234567890123" in json.dumps(loads_exact(text))


def test_loads_exact_still_refuses_what_orjson_refuses() -> None:
    for text in (b'{"h":"0b7b4dd6700cece8b6e4","x":NaN}', b'["1234567890123456789\\ud800"]'):
        with pytest.raises(ValueError):
            loads_exact(text)

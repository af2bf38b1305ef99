"""The checksum of an event (contract §2).

The checksum is sha256 over the RFC 8785 (JCS) serialisation of the covered object
``{"stream", "seq", "event_type", "emitted_at", "payload"}`` with ``emitted_at`` normalised to
UTC, six fractional digits and ``Z``. :func:`compute_checksum` is the one definition every
other part of Parity uses; :func:`checksum_matches` verifies one event and
:func:`verify_rows` the rows of a column (``parity.io.verify.verify_checksums``).

Verification has a fast path that never weakens the check. The covered object is first
serialised with orjson (sorted keys, compact) and hashed. That text is *provably* the RFC
8785 text when :func:`is_jcs_text` accepts the payload part: orjson and RFC 8785 write
strings, integers up to 2^53 and the top-level keys alike, and differ only on floats that
are integral or in exponent form, on integers beyond 2^53 (JCS cannot represent them), and
on key order when a key holds a character at or above U+E000 (code point vs UTF-16 order).
For provable text the verdict is final either way: equal hashes mean valid, different
hashes mean invalid, without canonicalising. A payload whose only obstacle is an integral
float (``3.0``, which RFC 8785 writes ``3``) is serialised again with those floats as ints,
which RFC 8785 writes alike, and that text is proven the same way. Only text outside that
domain goes to ``rfc8785``; equal hashes alone never make such an event valid, so a producer
that hashed non-canonical text (``1.0`` for ``1``) is caught.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from typing import Any

import orjson
import rfc8785

from parity.core.errors import InvalidEventError
from parity.core.jsontext import LONG_DIGIT_RUN, MAX_SAFE_INTEGER, loads_exact
from parity.core.timestamps import format_timestamp


def _covered(stream: str, seq: int, event_type: str, emitted_at_text: str, payload: Any) -> dict:
    return {
        "stream": stream,
        "seq": seq,
        "event_type": event_type,
        "emitted_at": emitted_at_text,
        "payload": payload,
    }


def canonical_bytes(
    stream: str, seq: int, event_type: str, emitted_at: dt.datetime | str, payload: Any
) -> bytes:
    """RFC 8785 bytes of the covered object. Raises InvalidEventError when JCS cannot
    represent a value exactly (integers beyond 2^53, NaN, infinities)."""
    text = emitted_at if isinstance(emitted_at, str) else format_timestamp(emitted_at)
    try:
        return rfc8785.dumps(_covered(stream, seq, event_type, text, payload))
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise InvalidEventError(
            "not_canonicalizable",
            f"stream {stream!r} seq {seq}: RFC 8785 cannot represent it exactly ({exc})",
            field="payload",
        ) from None


def compute_checksum(
    stream: str, seq: int, event_type: str, emitted_at: dt.datetime | str, payload: Any
) -> str:
    """The checksum of contract §2, as lowercase hex."""
    return hashlib.sha256(canonical_bytes(stream, seq, event_type, emitted_at, payload)).hexdigest()


#: The covered object with its top-level keys in JCS order (plain ASCII, so byte order is
#: UTF-16 order): emitted_at (normalised text, nothing to escape), event_type and stream (as
#: JSON strings), payload (JSON text), seq.
CANDIDATE = b'{"emitted_at":"%s","event_type":%s,"payload":%s,"seq":%d,"stream":%s}'
#: The image of orjson text that :func:`is_jcs_text` searches: digits to ``0``, ``e``/``E`` to
#: ``e``, ``.`` kept, the lead bytes of characters at or above U+E000 (0xEE-0xF4 in valid
#: UTF-8) to ``!``, all else a space. A float orjson may write unlike RFC 8785 (``1.0``,
#: ``1e+16``) shows as ``.0 `` or ``0e``, a possible integer beyond 2^53 as 16 zeros. The
#: image is ASCII, searched as ``str``: in Python 3.11 ``bytes in bytes`` first tries the
#: needle as an integer and pays for the TypeError, four times slower than ``str in str``.
_MARKS = bytes(
    48 if 48 <= i <= 57
    else 101 if i in (69, 101)
    else 46 if i == 46
    else 33 if 0xEE <= i <= 0xF4
    else 32
    for i in range(256)
)  # fmt: skip
_LONG_RUN = "0" * LONG_DIGIT_RUN
#: Exponents orjson and RFC 8785 both write (``1e+21``, ``5e-324``): RFC 8785 (ECMAScript)
#: uses exponent form exactly below 1e-6 and from 1e21, orjson from 1e16 and below 1e-5.
_EXPONENT = re.compile(rb"[0-9][eE]([+-]?)([0-9]*)")


def _integral_float(text: bytes) -> bool:
    """True when compact JSON ``text`` has a number ending in ``.0`` (an integral float:
    orjson writes shortest digits, so ``.0`` is the whole fraction), or such text in a string.
    A number in compact JSON is followed by ``,``, ``]``, ``}`` or the end of the text."""
    return (
        text.find(b".0,") >= 0
        or text.find(b".0}") >= 0
        or text.find(b".0]") >= 0
        or text.endswith(b".0")
    )


def _numbers_alike(marks: str, text: bytes, outside_strings: bool) -> bool:
    """True when no number in ``text`` (``marks`` is its image) may be written differently
    by orjson and RFC 8785. Without ``outside_strings``, string contents count as numbers
    (a false alarm, never a miss), and exponents are left to the pass outside strings."""
    if ".0 " in marks or marks.endswith(".0"):  # also 2.5 -> 0.0: ask the text itself
        if _integral_float(text):
            return False
    if _LONG_RUN in marks and marks.count(_LONG_RUN) != marks.count("." + _LONG_RUN):
        return False  # a long run not right after a point: maybe an integer beyond 2^53
    if "0e" in marks:
        if not outside_strings:
            return False
        for sign, digits in _EXPONENT.findall(text):
            if not digits or not (
                (sign == b"+" and int(digits) >= 21) or (sign == b"-" and int(digits) >= 7)
            ):
                return False
    return True


def is_jcs_text(text: bytes) -> bool:
    """True when ``text``, orjson's sorted compact serialisation of a parsed JSON value, is
    exactly that value's RFC 8785 serialisation. False means "not proven", not "differs".

    Proof obligations: (1) strings: orjson escapes exactly what RFC 8785 escapes, the same
    way (quote, backslash, ``\\b\\t\\n\\f\\r``, other controls as lowercase ``\\u00xx``,
    everything else raw UTF-8); (2) key order: sorted by code point, which is UTF-16 order
    unless a character at or above U+E000 occurs; (3) numbers: an integer up to 15 digits is
    written alike; a float orjson writes in plain notation with a fractional part other than
    ``.0`` is non-integral and between 1e-5 and 1e16, where both write the same shortest
    round-trip digits in plain notation (a run of 16 or more digits right after the point is
    such a fraction, not an integer); a float with an exponent of at least +21 or at most -7
    is written alike by both, in exponent form with the same digits. Anything else is
    refused.

    The number test runs on the whole text first (a hit inside a string, ``"v1.0"``, is a
    false alarm), then, only after a hit, on the text outside strings.
    """
    marks = text.translate(_MARKS).decode()
    if "!" in marks:
        return False
    if "0e" not in marks and ".0 " not in marks and _LONG_RUN not in marks:
        return not marks.endswith(".0") or _numbers_alike(marks, text, False)
    if _numbers_alike(marks, text, False):
        return True
    if b"\\" in text:  # escapes hide quotes: drop escaped backslashes, then escaped quotes
        text = text.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside = b" ".join(text.split(b'"')[::2])
    return _numbers_alike(outside.translate(_MARKS).decode(), outside, True)


def _ints_for_integral_floats(value: Any) -> Any:
    """``value`` with every integral float below 2^53 in magnitude replaced by the equal
    int: RFC 8785 writes such a double as its integer digits (``-0.0`` as ``0``), exactly as
    it writes the int, so the replacement leaves the RFC 8785 text unchanged. Containers
    are copied, never changed in place."""
    kind = type(value)
    if kind is float:
        if value.is_integer() and -_TWO_53 < value < _TWO_53:
            return int(value)
        return value
    if kind is dict:
        return {key: _ints_for_integral_floats(item) for key, item in value.items()}
    if kind is list:
        return [_ints_for_integral_floats(item) for item in value]
    return value


_TWO_53 = float(2**53)


def _proven_body(payload: Any, body: bytes) -> bytes | None:
    """``body`` (orjson's sorted text of ``payload``), or orjson's text of an equivalent
    payload, when proven to be the RFC 8785 text of ``payload``; None when not proven.

    About one event in twenty carries an integral float (``3.0``, RFC 8785 ``3``); those are
    rewritten as ints (:func:`_ints_for_integral_floats`) and the new text is proven in turn,
    a tenth of the cost of ``rfc8785``.
    """
    if is_jcs_text(body):
        return body
    if not _integral_float(body):
        return None
    try:
        body = orjson.dumps(_ints_for_integral_floats(payload), option=orjson.OPT_SORT_KEYS)
    except (orjson.JSONEncodeError, TypeError):
        return None
    return body if is_jcs_text(body) else None


def proven_text(
    emitted_at: bytes, type_json: bytes, payload: Any, body: bytes, seq: int, stream_json: bytes
) -> bytes | None:
    """The RFC 8785 text of the covered object when the fast path proves it (see the module
    docstring), None when it does not: then only :func:`compute_checksum` decides.

    The one home of the fast path: ``emitted_at`` is plain normalised text (as bytes),
    ``type_json`` and ``stream_json`` are orjson's JSON strings of the two values, ``body``
    is ``orjson.dumps(payload, option=OPT_SORT_KEYS)`` and ``seq`` an int of at most 2^53 - 1
    in magnitude.
    """
    proven = _proven_body(payload, body)
    if proven is None:
        return None
    return CANDIDATE % (emitted_at, type_json, proven, seq, stream_json)


def checksum_matches(
    stream: str, seq: int, event_type: str, emitted_at_text: str, payload: Any, stored: str
) -> bool:
    """True when ``stored`` is the checksum of the event. Never raises on odd values."""
    text: bytes | None = None
    if (
        type(seq) is int
        and -MAX_SAFE_INTEGER <= seq <= MAX_SAFE_INTEGER
        and type(stream) is str
        and type(event_type) is str
        and _plain_timestamp(emitted_at_text)
    ):
        try:
            text = proven_text(
                emitted_at_text.encode(),
                orjson.dumps(event_type),
                payload,
                orjson.dumps(payload, option=orjson.OPT_SORT_KEYS),
                seq,
                orjson.dumps(stream),
            )
        except (orjson.JSONEncodeError, TypeError):
            text = None
    if text is not None:
        return hashlib.sha256(text).hexdigest() == stored
    try:
        return compute_checksum(stream, seq, event_type, emitted_at_text, payload) == stored
    except (InvalidEventError, RecursionError):
        return False


_PLAIN_TIMESTAMP = re.compile(r"[0-9T:.Z-]*")


def _plain_timestamp(text: object) -> bool:
    """Text that needs no JSON escaping and that RFC 8785 writes as is."""
    return type(text) is str and _PLAIN_TIMESTAMP.fullmatch(text) is not None


def verify_rows(
    streams: list,
    seqs: list,
    types: list,
    emitted: list,
    payloads: list,
    stored: list,
    long_runs: list,
    *,
    nulls: bool = True,
    plain_timestamps: bool = False,
) -> bytes:
    """One byte per row, 1 when valid: the hot loop of :func:`verify_checksums`.

    ``emitted`` and ``payloads`` are UTF-8 bytes. ``nulls=False`` promises no None in any
    list; ``plain_timestamps=True`` that every ``emitted`` text passes
    :func:`_plain_timestamp`.
    """
    out = bytearray(len(streams))
    loads, dumps, sha256 = orjson.loads, orjson.dumps, hashlib.sha256
    sort_keys = orjson.OPT_SORT_KEYS
    as_json: dict[str, bytes] = {}  # stream and event_type values repeat: dump each once
    rows = zip(streams, seqs, types, emitted, payloads, stored, long_runs, strict=True)
    for i, (stream, seq, event_type, emitted_at, text, checksum, long_run) in enumerate(rows):
        if nulls and None in (stream, seq, event_type, emitted_at, text, checksum):
            continue
        try:
            payload = loads_exact(text) if long_run else loads(text)
        except ValueError:
            continue
        if type(payload) is not dict:
            continue
        if -MAX_SAFE_INTEGER <= seq <= MAX_SAFE_INTEGER and (
            plain_timestamps or _plain_timestamp(emitted_at.decode())
        ):
            stream_json = as_json.get(stream)
            if stream_json is None:
                stream_json = as_json[stream] = dumps(stream)
            type_json = as_json.get(event_type)
            if type_json is None:
                type_json = as_json[event_type] = dumps(event_type)
            try:
                body = dumps(payload, option=sort_keys)
                text_bytes = proven_text(emitted_at, type_json, payload, body, seq, stream_json)
            except orjson.JSONEncodeError:
                text_bytes = None  # decided below
            if text_bytes is not None:
                out[i] = sha256(text_bytes).hexdigest() == checksum
                continue
        emitted_text = emitted_at.decode()
        try:
            out[i] = compute_checksum(stream, seq, event_type, emitted_text, payload) == checksum
        except (InvalidEventError, RecursionError):
            pass
    return bytes(out)

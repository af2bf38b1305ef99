"""Events and their checksum (contract §2).

The checksum is sha256 over the RFC 8785 (JCS) serialisation of the covered object
``{"stream", "seq", "event_type", "emitted_at", "payload"}`` with ``emitted_at`` normalised to
UTC, six fractional digits and ``Z``. :func:`compute_checksum` is the one definition every
other part of Parity uses; :func:`checksum_matches` verifies one event and
:func:`verify_checksums` a whole column of them.

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
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import rfc8785

from parity.core.errors import InvalidEventError

CATEGORIES = ("CRITICAL", "INFORMATIONAL", "LEGACY")
REQUIRED_FIELDS = ("stream", "seq", "event_type", "emitted_at", "payload", "checksum")
CHECKSUM_FIELDS = ("stream", "seq", "event_type", "emitted_at", "payload")
MAX_STREAM_LENGTH = 128
#: Largest integer RFC 8785 (IEEE 754 double) represents exactly.
MAX_SAFE_INTEGER = 2**53 - 1
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
#: Deepest nesting of arrays and objects read in a log line (the line's own object is
#: level 1): deeper lines are quarantined before any parser sees them, so the work per
#: line stays bounded whatever the parser (the recursive ones fail far deeper).
MAX_DEPTH = 128

_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.(?P<frac>\d+))?(?P<tz>[Zz]|[+-]\d{2}:\d{2})"
)
_HEX64 = re.compile(r"[0-9a-f]{64}")
#: A run of this many digits may be an integer beyond 2^53; such text bypasses the fast paths.
LONG_DIGIT_RUN = 16
_DIGIT_MAP = bytes(48 if 48 <= i <= 57 else 32 for i in range(256))
_DIGIT_RUN = b"0" * LONG_DIGIT_RUN


def has_long_digit_run(raw: bytes) -> bool:
    """True when ``raw`` has 16+ consecutive ASCII digits (bytes.translate: ~1 us a line)."""
    return _DIGIT_RUN in raw.translate(_DIGIT_MAP)


#: Digits to ``0``; a quote and the letters other than ``e``/``E`` (which precede exponent
#: digits) to ``x``; all else a space. In JSON text a digit right after a quote or a letter
#: is inside a string, never the start of a number.
_RUN_START_MAP = bytes(
    48 if 48 <= i <= 57
    else 120 if i == 34 or (chr(i).isascii() and chr(i).isalpha() and i not in (69, 101))
    else 32
    for i in range(256)
)  # fmt: skip
_NUMBER_RUN = " " + "0" * LONG_DIGIT_RUN
#: :func:`may_hold_long_number`, for Arrow's RE2 over a whole column.
_LONG_NUMBER_REGEX = '(^|[^0-9A-DF-Za-df-z"])[0-9]{16}'


def may_hold_long_number(raw: bytes) -> bool:
    """True when ``raw`` has a run of 16+ digits that may be part of a number (as
    :func:`has_long_digit_run`, less the runs inside strings that start right after a
    letter or a quote, as hex digests do: one log line in a hundred)."""
    marks = raw.translate(_RUN_START_MAP).decode()
    return _NUMBER_RUN in marks or marks.startswith(_NUMBER_RUN[1:])


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(rb"[\[\]{}]")


def exceeds_depth(raw: bytes, limit: int = MAX_DEPTH) -> bool:
    """True when the JSON text ``raw`` nests arrays and objects deeper than ``limit``.
    Counting brackets decides almost every line; only a line with more brackets than the
    limit is scanned, its strings removed first."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    depth = 0
    for bracket in _BRACKETS.findall(_STRING.sub(b"", raw)):
        if bracket in b"[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


@dataclass(frozen=True, slots=True)
class Event:
    """One monitoring event, validated against the contract."""

    stream: str
    seq: int
    event_type: str
    emitted_at: dt.datetime  # timezone-aware, UTC, microsecond precision
    payload: dict[str, Any]
    checksum: str
    category: str | None = None
    logged_at: dt.datetime | None = None

    @property
    def emitted_at_text(self) -> str:
        return format_timestamp(self.emitted_at)

    @property
    def key(self) -> tuple[str, int]:
        return (self.stream, self.seq)

    def checksum_is_valid(self) -> bool:
        return checksum_matches(
            self.stream,
            self.seq,
            self.event_type,
            self.emitted_at_text,
            self.payload,
            self.checksum,
        )

    def to_json_dict(self) -> dict[str, Any]:
        """The event as it travels (log line, WebSocket message)."""
        out: dict[str, Any] = {
            "stream": self.stream,
            "seq": self.seq,
            "event_type": self.event_type,
            "emitted_at": self.emitted_at_text,
            "payload": self.payload,
            "checksum": self.checksum,
        }
        if self.category is not None:
            out["category"] = self.category
        if self.logged_at is not None:
            out["logged_at"] = format_timestamp(self.logged_at)
        return out


def format_timestamp(value: dt.datetime) -> str:
    """The normalised form: UTC, exactly six fractional digits, ``Z``."""
    if value.tzinfo is None:
        raise ValueError("naive datetime: Parity's timestamps are timezone-aware")
    utc = value.astimezone(dt.UTC)
    # strftime("%Y") does not zero-pad years before 1000 on Linux.
    return f"{utc.year:04d}" + utc.strftime("-%m-%dT%H:%M:%S.%fZ")


def parse_timestamp(value: object, *, field: str = "emitted_at", where: str = "") -> dt.datetime:
    """Parse an RFC 3339 timestamp with any offset into an aware UTC datetime.

    More than six fractional digits are refused rather than rounded: PostgreSQL's
    ``timestamptz`` keeps microseconds, and a silently rounded instant would not match
    the producer's checksum.
    """
    if not isinstance(value, str):
        raise InvalidEventError(
            "invalid_field",
            f"{field} must be an RFC 3339 string, got {type(value).__name__}",
            field=field,
            where=where,
        )
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise InvalidEventError(
            "invalid_field",
            f"{field} {value[:64]!r} is not an RFC 3339 timestamp with offset",
            field=field,
            where=where,
        )
    frac = match.group("frac")
    if frac is not None and len(frac) > 6:
        raise InvalidEventError(
            "invalid_field",
            f"{field} {value!r} has more than microsecond precision",
            field=field,
            where=where,
        )
    text = value.replace("t", "T").replace("z", "Z")
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidEventError(
            "invalid_field", f"{field} {value!r}: {exc}", field=field, where=where
        ) from None
    return parsed.astimezone(dt.UTC)


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


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (math.inf, -math.inf):
        raise ValueError(f"number {text[:40]} is out of range for a double")
    return value


def loads_exact(data: bytes | str) -> Any:
    """Parse JSON without losing integers: orjson turns integers beyond 64 bits into
    floats, so text with long digit runs goes through the standard library instead, held to
    orjson's rules (strict UTF-8, no NaN or infinities, no lone surrogates)."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if not may_hold_long_number(raw):
        return orjson.loads(raw)
    text = raw.decode("utf-8")  # strict: a lone surrogate or bad byte raises ValueError
    value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    # \ud800-style escapes decode to lone surrogates, which UTF-8 cannot carry: encoding
    # raises UnicodeEncodeError (a ValueError).
    json.dumps(value, ensure_ascii=False).encode("utf-8")
    return value


def _check_str(obj: Mapping[str, Any], field: str, where: str, max_len: int | None = None) -> str:
    value = obj[field]
    if not isinstance(value, str) or not value:
        raise InvalidEventError(
            "invalid_field",
            f"{field} must be a non-empty string, got {value!r:.80}",
            field=field,
            where=where,
        )
    if max_len is not None and len(value) > max_len:
        raise InvalidEventError(
            "invalid_field",
            f"{field} is {len(value)} characters, at most {max_len} allowed",
            field=field,
            where=where,
        )
    return value


def parse_event(obj: Any, *, where: str = "") -> Event:
    """Validate a decoded JSON value as an event (contract §2). Raises InvalidEventError with
    ``reason`` ``not_an_object``, ``missing_field`` or ``invalid_field``."""
    if not isinstance(obj, dict):
        raise InvalidEventError(
            "not_an_object", f"expected a JSON object, got {type(obj).__name__}", where=where
        )
    for field in REQUIRED_FIELDS:
        if field not in obj:
            raise InvalidEventError(
                "missing_field", f"missing field {field!r}", field=field, where=where
            )
    stream = _check_str(obj, "stream", where, MAX_STREAM_LENGTH)
    seq = obj["seq"]
    if isinstance(seq, bool) or not isinstance(seq, int) or not 1 <= seq <= MAX_SAFE_INTEGER:
        raise InvalidEventError(
            "invalid_field",
            f"seq must be an integer from 1 to 2^53-1, got {seq!r:.40}",
            field="seq",
            where=where,
        )
    event_type = _check_str(obj, "event_type", where)
    emitted_at = parse_timestamp(obj["emitted_at"], field="emitted_at", where=where)
    payload = obj["payload"]
    if not isinstance(payload, dict):
        raise InvalidEventError(
            "invalid_field",
            f"payload must be a JSON object, got {type(payload).__name__}",
            field="payload",
            where=where,
        )
    checksum = obj["checksum"]
    if not isinstance(checksum, str) or not _HEX64.fullmatch(checksum):
        raise InvalidEventError(
            "invalid_field",
            "checksum must be 64 lowercase hex digits",
            field="checksum",
            where=where,
        )
    category = obj.get("category")
    if category is not None and category not in CATEGORIES:
        raise InvalidEventError(
            "invalid_field",
            f"category must be one of {', '.join(CATEGORIES)}, got {category!r:.40}",
            field="category",
            where=where,
        )
    logged_at = obj.get("logged_at")
    logged = parse_timestamp(logged_at, field="logged_at", where=where) if logged_at else None
    return Event(stream, seq, event_type, emitted_at, payload, checksum, category, logged)


def make_event(
    stream: str,
    seq: int,
    event_type: str,
    emitted_at: dt.datetime,
    payload: dict[str, Any],
    *,
    category: str | None = None,
) -> Event:
    """Build a valid event, computing its checksum (what a producer does)."""
    if emitted_at.tzinfo is None:
        raise ValueError("emitted_at must be timezone-aware")
    emitted = emitted_at.astimezone(dt.UTC)
    checksum = compute_checksum(stream, seq, event_type, emitted, payload)
    return Event(stream, seq, event_type, emitted, payload, checksum, category)


#: Years 1000..9999, where the naive cast and strftime write the same text.
_FOUR_DIGIT_YEARS = (
    dt.datetime(1000, 1, 1, tzinfo=dt.UTC),
    dt.datetime(9999, 12, 31, tzinfo=dt.UTC),
)


def timestamp_texts(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """The normalised text (``2026-11-28T10:00:01.123000Z``) of a UTC timestamp column.

    Arrow's strftime looks the time zone up for every value (1.6 s a million); the cast of
    the naive timestamp writes the same digits forty times faster. Outside four-digit years
    the two may differ, so strftime stays the definition there.
    """
    as_us = pc.cast(column, pa.timestamp("us", tz="UTC"))
    low, high = pc.min_max(as_us).values()
    lo, hi = _FOUR_DIGIT_YEARS
    if low.is_valid and (low.as_py() < lo or high.as_py() > hi):
        # For timestamp[us], Arrow's %S carries the six fractional digits.
        return pc.strftime(as_us, format="%Y-%m-%dT%H:%M:%SZ")
    naive = pc.cast(pc.cast(as_us, pa.timestamp("us")), pa.string())
    return pc.binary_join_element_wise(pc.replace_substring(naive, " ", "T"), pa.scalar("Z"), "")


def _verify_rows(
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

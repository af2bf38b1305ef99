"""Events and their checksum (DESIGN 2).

The checksum is sha256 over the RFC 8785 (JCS) serialisation of the covered object
``{"stream", "seq", "event_type", "emitted_at", "payload"}`` with ``emitted_at`` normalised to
UTC, six fractional digits and ``Z``. :func:`compute_checksum` is the one definition every
other part of Parity uses; :func:`checksum_matches` verifies one event and
:func:`verify_checksums` a whole column of them.

Verification has a fast path that never weakens the check: the covered object is first
serialised with orjson (sorted keys, compact) and hashed. If that hash equals the stored
checksum, the orjson text *is* the producer's canonical text (sha256 is collision
resistant), so the event is valid. Only when it differs do we canonicalise with ``rfc8785``
and compare again. Payloads with long digit runs skip the fast path, so integers beyond
2^53 are always judged by the real canonicaliser.
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

from parity.errors import InvalidEventError

CATEGORIES = ("CRITICAL", "INFORMATIONAL", "LEGACY")
REQUIRED_FIELDS = ("stream", "seq", "event_type", "emitted_at", "payload", "checksum")
CHECKSUM_FIELDS = ("stream", "seq", "event_type", "emitted_at", "payload")
MAX_STREAM_LENGTH = 128
#: Largest integer RFC 8785 (IEEE 754 double) represents exactly.
MAX_SAFE_INTEGER = 2**53 - 1
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

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
    """The checksum of DESIGN 2, as lowercase hex."""
    return hashlib.sha256(canonical_bytes(stream, seq, event_type, emitted_at, payload)).hexdigest()


def _fast_text(stream: str, seq: int, event_type: str, emitted_at_text: str, payload: Any) -> bytes:
    # Top-level keys in JCS order (plain ASCII, so byte order == UTF-16 order).
    return b"".join(
        (
            b'{"emitted_at":',
            orjson.dumps(emitted_at_text),
            b',"event_type":',
            orjson.dumps(event_type),
            b',"payload":',
            orjson.dumps(payload, option=orjson.OPT_SORT_KEYS),
            b',"seq":',
            str(seq).encode(),
            b',"stream":',
            orjson.dumps(stream),
            b"}",
        )
    )


def checksum_matches(
    stream: str, seq: int, event_type: str, emitted_at_text: str, payload: Any, stored: str
) -> bool:
    """True when ``stored`` is the checksum of the event. Never raises on odd values."""
    try:
        fast = _fast_text(stream, seq, event_type, emitted_at_text, payload)
    except (orjson.JSONEncodeError, TypeError):
        fast = b""
    if fast and not has_long_digit_run(fast) and hashlib.sha256(fast).hexdigest() == stored:
        return True
    try:
        return compute_checksum(stream, seq, event_type, emitted_at_text, payload) == stored
    except InvalidEventError:
        return False


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
    if not has_long_digit_run(raw):
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
    """Validate a decoded JSON value as an event (DESIGN 2). Raises InvalidEventError with
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


def verify_checksums(table: pa.Table) -> pa.BooleanArray:
    """Checksum validity of every row of a snapshot table.

    Needs the columns ``stream``, ``seq``, ``event_type``, ``emitted_at`` (timestamp, UTC),
    ``payload`` (JSON text) and ``checksum``. A row whose payload is not a JSON object,
    or whose values JCS cannot represent, is invalid (False), never an exception.
    """
    n = table.num_rows
    if n == 0:
        return pa.array([], pa.bool_())
    # For timestamp[us], Arrow's %S carries the six fractional digits.
    as_us = pc.cast(table.column("emitted_at"), pa.timestamp("us", tz="UTC"))
    emitted = pc.strftime(as_us, format="%Y-%m-%dT%H:%M:%SZ")
    columns = zip(
        table.column("stream").to_pylist(),
        table.column("seq").to_pylist(),
        table.column("event_type").to_pylist(),
        emitted.to_pylist(),
        table.column("payload").to_pylist(),
        table.column("checksum").to_pylist(),
        strict=True,
    )
    out = []
    for stream, seq, event_type, emitted_at, payload_text, stored in columns:
        if None in (stream, seq, event_type, emitted_at, payload_text, stored):
            out.append(False)
            continue
        try:
            payload = loads_exact(payload_text)
        except ValueError:
            out.append(False)
            continue
        out.append(
            isinstance(payload, dict)
            and checksum_matches(stream, seq, event_type, emitted_at, payload, stored)
        )
    return pa.array(out, pa.bool_())

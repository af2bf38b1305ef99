"""Events (contract §2): what one is, validated from decoded JSON or built with its
checksum (:mod:`parity.core.checksum`). Reading the text exactly is
:mod:`parity.core.jsontext`; the timestamp forms, :mod:`parity.core.timestamps`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from parity.core.checksum import checksum_matches, compute_checksum, proven_text
from parity.core.errors import InvalidEventError
from parity.core.jsontext import (
    MAX_DEPTH,
    MAX_SAFE_INTEGER,
    exceeds_depth,
    loads_exact,
    may_hold_long_number,
)
from parity.core.timestamps import TIMESTAMP_FORMAT, format_timestamp, parse_timestamp

__all__ = [
    # Defined here.
    "CATEGORIES",
    "MAX_STREAM_LENGTH",
    "REQUIRED_FIELDS",
    "Event",
    "make_event",
    "parse_event",
    # What a log line is checked against, in one import for the log reader.
    "MAX_DEPTH",
    "MAX_SAFE_INTEGER",
    "TIMESTAMP_FORMAT",
    "checksum_matches",
    "exceeds_depth",
    "format_timestamp",
    "loads_exact",
    "may_hold_long_number",
    "parse_timestamp",
    "proven_text",
]

CATEGORIES = ("CRITICAL", "INFORMATIONAL", "LEGACY")
REQUIRED_FIELDS = ("stream", "seq", "event_type", "emitted_at", "payload", "checksum")
MAX_STREAM_LENGTH = 128
_HEX64 = re.compile(r"[0-9a-f]{64}")


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

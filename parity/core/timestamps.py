"""Timestamps as events carry them (contract §2): RFC 3339 with any offset in, one
normalised text out (UTC, exactly six fractional digits, ``Z``), for one value or a column."""

from __future__ import annotations

import datetime as dt
import re

import pyarrow as pa
import pyarrow.compute as pc

from parity.core.errors import InvalidEventError

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.(?P<frac>\d+))?(?P<tz>[Zz]|[+-]\d{2}:\d{2})"
)


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

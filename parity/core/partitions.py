"""Hourly partitions as Parity sees them: keys as Dagster writes them, UTC windows."""

from __future__ import annotations

import datetime as dt

from parity.core.errors import ConfigurationError

#: Dagster's hourly partition key format (``2026-11-28-10:00``).
KEY_FORMAT = "%Y-%m-%d-%H:%M"
HOUR = dt.timedelta(hours=1)


def floor_hour(instant: dt.datetime) -> dt.datetime:
    return instant.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


def parse_key(key: str) -> dt.datetime:
    """The start of the hour a partition key names. Raises ConfigurationError on a bad key."""
    try:
        start = dt.datetime.strptime(key, KEY_FORMAT).replace(tzinfo=dt.UTC)
    except ValueError:
        raise ConfigurationError(
            f"partition {key!r}: expected an hourly partition key like 2026-11-28-10:00"
        ) from None
    if start.minute:
        raise ConfigurationError(f"partition {key!r}: hourly partitions start on the hour")
    return start


def format_key(start: dt.datetime) -> str:
    return floor_hour(start).strftime(KEY_FORMAT)


def window(key: str) -> tuple[dt.datetime, dt.datetime]:
    start = parse_key(key)
    return start, start + HOUR


def keys_between(first: str, last: str) -> list[str]:
    """Every hourly key from ``first`` to ``last``, both included."""
    start, end = parse_key(first), parse_key(last)
    if end < start:
        raise ConfigurationError(f"--from {first} is after --to {last}")
    out = []
    while start <= end:
        out.append(format_key(start))
        start += HOUR
    return out


def last_complete_hour(now: dt.datetime, lag: dt.timedelta) -> dt.datetime:
    """The latest hour H whose end plus ``lag`` has passed: H + 1h + lag <= now."""
    return floor_hour(now - lag) - HOUR


def aware_utc(value: dt.datetime, what: str) -> dt.datetime:
    """``value`` in UTC; a naive datetime is refused, naming ``what``."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (UTC), got naive {value.isoformat()}")
    return value.astimezone(dt.UTC)


def check_complete(key: str, first: dt.datetime, now: dt.datetime) -> dt.datetime:
    """The start of the hour ``key`` names, if that hour is one Parity can reconcile: a
    well-formed key, at or after the first partition, and over by ``now``. Otherwise a
    ConfigurationError saying which of these it is not and what the valid range is."""
    start = parse_key(key)
    last = floor_hour(now) - HOUR
    if start < first:
        raise ConfigurationError(
            f"partition {key} is before the first partition, {format_key(first)} "
            "(PARITY_PARTITIONS_START): set PARITY_PARTITIONS_START earlier to include it"
        )
    if start > last:
        when = "has not ended yet" if start == floor_hour(now) else "is in the future"
        raise ConfigurationError(
            f"partition {key} {when}: the last complete hour is {format_key(last)} "
            f"(now {now.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC)"
        )
    return start

import datetime as dt

import pytest

from parity.core import partitions
from parity.core.errors import ConfigurationError

UTC = dt.UTC


def test_key_round_trip_and_window():
    start, end = partitions.window("2026-11-28-10:00")
    assert start == dt.datetime(2026, 11, 28, 10, tzinfo=UTC)
    assert end - start == dt.timedelta(hours=1)
    assert partitions.format_key(start) == "2026-11-28-10:00"


@pytest.mark.parametrize("bad", ["2026-11-28", "2026-11-28-10:30", "2026-13-01-00:00", "x"])
def test_bad_keys_name_the_key(bad):
    with pytest.raises(ConfigurationError, match="partition"):
        partitions.parse_key(bad)


def test_keys_between_includes_both_ends_and_crosses_days():
    keys = partitions.keys_between("2026-11-28-22:00", "2026-11-29-01:00")
    assert keys == ["2026-11-28-22:00", "2026-11-28-23:00", "2026-11-29-00:00", "2026-11-29-01:00"]
    with pytest.raises(ConfigurationError, match="after"):
        partitions.keys_between("2026-11-29-01:00", "2026-11-28-22:00")


@pytest.mark.parametrize(
    ("now", "lag_min", "expected"),
    [
        ("2026-11-28T11:15:00", 15, "2026-11-28T10:00:00"),  # exactly at the lag
        ("2026-11-28T11:14:59", 15, "2026-11-28T09:00:00"),  # 10:00 is not due yet
        ("2026-11-28T11:59:00", 15, "2026-11-28T10:00:00"),
        ("2026-11-28T12:30:00", 90, "2026-11-28T10:00:00"),  # lag longer than an hour
        ("2026-11-28T00:15:00", 15, "2026-11-27T23:00:00"),  # across midnight
    ],
)
def test_last_complete_hour(now, lag_min, expected):
    got = partitions.last_complete_hour(
        dt.datetime.fromisoformat(now).replace(tzinfo=UTC), dt.timedelta(minutes=lag_min)
    )
    assert got == dt.datetime.fromisoformat(expected).replace(tzinfo=UTC)

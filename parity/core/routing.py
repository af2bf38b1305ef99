"""Who belongs in Supabase (contract §5): flag defaults, stream buckets, the flag timeline
and the cohort rule, each in a scalar form for one event and a columnar form for a table.

The cohort is a deterministic function of an event and of the flags in force at its
``emitted_at``: a CRITICAL event is expected when ``MONITORING_CRITICAL_EVENTS_SUPABASE``
is on; any event is expected when its stream's bucket is below
``MONITORING_SUPABASE_ROLLOUT_PERCENTAGE``. Flags in force at an instant come from the
audit history (:class:`FlagTimeline`), so a percentage raised mid-hour applies to each
event by its own ``emitted_at``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from parity.core.errors import FlagError

CRITICAL_EVENTS_SUPABASE = "MONITORING_CRITICAL_EVENTS_SUPABASE"
SUPABASE_ROLLOUT_PERCENTAGE = "MONITORING_SUPABASE_ROLLOUT_PERCENTAGE"
DUAL_WRITE_ENABLED = "MONITORING_DUAL_WRITE_ENABLED"
DATA_VALIDATION_ENABLED = "MONITORING_DATA_VALIDATION_ENABLED"
DASHBOARD_SUPABASE_ENABLED = "MONITORING_DASHBOARD_SUPABASE_ENABLED"
DASHBOARD_DUAL_MODE = "MONITORING_DASHBOARD_DUAL_MODE"
DASHBOARD_REALTIME_UPDATES = "MONITORING_DASHBOARD_REALTIME_UPDATES"
DASHBOARD_FALLBACK_MODE = "MONITORING_DASHBOARD_FALLBACK_MODE"

#: A flag's value: a switch, or the rollout percentage.
FlagValue = bool | int

#: Values from the migration plan, in force before a flag's first audited change.
FLAG_DEFAULTS: dict[str, FlagValue] = {
    CRITICAL_EVENTS_SUPABASE: False,
    SUPABASE_ROLLOUT_PERCENTAGE: 0,
    DUAL_WRITE_ENABLED: True,
    DATA_VALIDATION_ENABLED: True,
    DASHBOARD_SUPABASE_ENABLED: False,
    DASHBOARD_DUAL_MODE: False,
    DASHBOARD_REALTIME_UPDATES: False,
    DASHBOARD_FALLBACK_MODE: True,
}
#: The only non-boolean flag: an integer from 0 to 100.
PERCENTAGE_FLAGS = frozenset({SUPABASE_ROLLOUT_PERCENTAGE})
BUCKETS = 100
CRITICAL = "CRITICAL"

_UTC_US = pa.timestamp("us", tz="UTC")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def stream_bucket(stream: str) -> int:
    """The stream's rollout bucket, 0..99: ``int(sha256(stream)[:8], 16) % 100``."""
    return int(hashlib.sha256(stream.encode("utf-8")).hexdigest()[:8], 16) % BUCKETS


def stream_buckets(streams: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Vectorised :func:`stream_bucket` (int16 per row); hashes each distinct stream once."""
    if len(streams) == 0:
        return np.zeros(0, np.int16)
    if isinstance(streams, pa.ChunkedArray):
        streams = streams.combine_chunks()
    encoded = pc.dictionary_encode(streams)
    per_value = buckets_of(encoded.dictionary.to_pylist())
    return per_value[encoded.indices.to_numpy(zero_copy_only=False)]


def buckets_of(distinct: Iterable[str]) -> np.ndarray:
    """Buckets of a list of (distinct) stream names, in order, as int16."""
    return np.fromiter((stream_bucket(s) for s in distinct), np.int16)


def stream_part(streams: pa.Array | pa.ChunkedArray, parts: int) -> np.ndarray:
    """Which of ``parts`` pieces each row's stream falls in (``bucket % parts``).

    Whole streams land in one piece, so pieces can be reconciled separately and merged
    (see :func:`parity.reconcile.reconcile_in_parts`). At most 100 pieces.
    """
    if not 1 <= parts <= BUCKETS:
        raise ValueError(f"parts must be 1..{BUCKETS}, got {parts}")
    return stream_buckets(streams) % parts


def _to_us(instant: dt.datetime) -> int:
    if instant.tzinfo is None:
        raise ValueError("naive datetime: flag history instants must be timezone-aware")
    return (instant - _EPOCH) // dt.timedelta(microseconds=1)


def coerce_flag_value(flag: str, value: Any) -> bool | int:
    """A flag value as Parity uses it: bool for switches, int 0..100 for the percentage.

    Accepts what audit history may hold (JSON booleans and integers, and their text forms
    from an imported flag system); raises FlagError otherwise.
    """
    if isinstance(value, str):
        text = value.strip().strip('"').lower()
        if text in ("true", "false"):
            value = text == "true"
        elif text.lstrip("-").isdigit():
            value = int(text)
    if flag in PERCENTAGE_FLAGS:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
            raise FlagError(f"{flag} must be an integer from 0 to 100, got {value!r:.40}")
        return value
    if not isinstance(value, bool):
        raise FlagError(f"{flag} must be true or false, got {value!r:.40}")
    return value


def validate_flag(name: str, value: object) -> FlagValue:
    """The value of a flag being set, checked against the flag's type (strict: JSON
    booleans and integers only); FlagError names what is wrong."""
    if name not in FLAG_DEFAULTS:
        known = ", ".join(sorted(FLAG_DEFAULTS))
        raise FlagError(f"unknown flag {name!r}; known flags: {known}")
    if name not in PERCENTAGE_FLAGS:
        if not isinstance(value, bool):
            raise FlagError(f"{name} is a boolean flag: use true or false, not {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise FlagError(f"{name} is a percentage: an integer from 0 to 100, not {value!r}")
    return value


def parse_flag_value(name: str, text: str) -> FlagValue:
    """A value typed on a command line (``true``, ``off``, ``50``), validated."""
    lowered = text.strip().lower()
    words = {"true": True, "on": True, "yes": True, "false": False, "off": False, "no": False}
    if lowered in words:
        return validate_flag(name, words[lowered])
    # Only plain ASCII digits are a number: int() would also take "1_0" and "١٠".
    if lowered.isascii() and lowered.lstrip("-").isdigit():
        return validate_flag(name, int(lowered))
    return validate_flag(name, text)


@dataclass(frozen=True)
class FlagChange:
    """One audited change: ``flag`` took ``new_value`` at ``changed_at``."""

    flag: str
    new_value: bool | int
    changed_at: dt.datetime


@dataclass(frozen=True)
class FlagTimeline:
    """Flag values over time, from the audit history (contract §5).

    The value of a flag at an instant is the ``new_value`` of the latest change with
    ``changed_at`` at or before it, else the flag's default. Changes with the same
    ``changed_at`` apply in the order given (pass audit rows in ``id`` order).
    """

    changes: tuple[FlagChange, ...] = ()
    _index: dict[str, tuple[np.ndarray, np.ndarray]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        normalised = []
        for change in self.changes:
            value = coerce_flag_value(change.flag, change.new_value)
            if change.changed_at.tzinfo is None:
                raise FlagError(f"audit change of {change.flag}: changed_at is naive")
            normalised.append(FlagChange(change.flag, value, change.changed_at))
        # Stable sort: equal instants keep the given (audit id) order, so the later wins.
        normalised.sort(key=lambda c: c.changed_at)
        object.__setattr__(self, "changes", tuple(normalised))
        grouped: dict[str, list[FlagChange]] = {}
        for change in normalised:
            grouped.setdefault(change.flag, []).append(change)
        index = {
            flag: (
                np.array([_to_us(c.changed_at) for c in rows], np.int64),
                np.array([int(c.new_value) for c in rows], np.int64),
            )
            for flag, rows in grouped.items()
        }
        object.__setattr__(self, "_index", index)

    @classmethod
    def from_audit(cls, rows: Iterable[Mapping[str, Any] | tuple[str, Any, dt.datetime]]):
        """From ``feature_flag_audit`` rows: mappings with ``flag``, ``new_value`` and
        ``changed_at``, or ``(flag, new_value, changed_at)`` tuples, in ``id`` order."""
        changes = []
        for row in rows:
            if isinstance(row, Mapping):
                flag, value, changed_at = row["flag"], row["new_value"], row["changed_at"]
            else:
                flag, value, changed_at = row
            changes.append(FlagChange(flag, value, changed_at))
        return cls(tuple(changes))

    @classmethod
    def constant(cls, values: Mapping[str, bool | int]) -> FlagTimeline:
        """Flags holding ``values`` for all time (others at their defaults)."""
        since = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        return cls(tuple(FlagChange(flag, value, since) for flag, value in values.items()))

    def _default(self, flag: str) -> bool | int:
        if flag in FLAG_DEFAULTS:
            return FLAG_DEFAULTS[flag]
        raise FlagError(f"unknown flag {flag!r}; known: {', '.join(FLAG_DEFAULTS)}")

    def value_at(self, flag: str, instant: dt.datetime) -> bool | int:
        """The value in force at ``instant`` (timezone-aware)."""
        default = self._default(flag)
        if flag not in self._index:
            return default
        times, values = self._index[flag]
        i = int(np.searchsorted(times, _to_us(instant), side="right")) - 1
        if i < 0:
            return default
        return int(values[i]) if flag in PERCENTAGE_FLAGS else bool(values[i])

    def values_at(self, flag: str, instants: pa.Array | pa.ChunkedArray | np.ndarray) -> np.ndarray:
        """Vectorised :meth:`value_at`: ``instants`` is an Arrow timestamp array (any unit,
        UTC) or int64 microseconds since the epoch. Returns bool or int64 per instant."""
        default = self._default(flag)
        us = instants if isinstance(instants, np.ndarray) else timestamps_us(instants)
        dtype = np.int64 if flag in PERCENTAGE_FLAGS else np.bool_
        if flag not in self._index:
            return np.full(len(us), default, dtype)
        times, values = self._index[flag]
        i = np.searchsorted(times, us, side="right") - 1
        table = np.concatenate([np.array([int(default)], np.int64), values])
        return table[i + 1].astype(dtype, copy=False)


def timestamps_us(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Arrow timestamps as int64 microseconds since the epoch (nulls become int64 min)."""
    if values.type != _UTC_US:
        values = pc.cast(values, _UTC_US)
    ints = pc.cast(values, pa.int64())
    if ints.null_count:
        ints = pc.fill_null(ints, np.iinfo(np.int64).min)
    return to_numpy(ints).astype(np.int64, copy=False)


def to_numpy(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """An Arrow array (chunked or not) as numpy, copying only when it must."""
    if isinstance(values, pa.ChunkedArray):
        if values.num_chunks == 1:
            values = values.chunk(0)
        else:
            return values.to_numpy()
    return values.to_numpy(zero_copy_only=False)


def expected_mask(
    buckets: np.ndarray,
    critical: np.ndarray,
    emitted_at_us: np.ndarray,
    timeline: FlagTimeline,
) -> np.ndarray:
    """The cohort rule over columns: per-row stream bucket, CRITICAL flag and
    ``emitted_at`` (int64 microseconds). Returns a numpy bool array."""
    percentage = timeline.values_at(SUPABASE_ROLLOUT_PERCENTAGE, emitted_at_us)
    by_rollout = buckets < percentage
    critical_on = timeline.values_at(CRITICAL_EVENTS_SUPABASE, emitted_at_us)
    return by_rollout | (critical & critical_on)


def expected_in_supabase(events: pa.Table, timeline: FlagTimeline) -> pa.BooleanArray:
    """For each row of a snapshot (``stream``, ``category``, ``emitted_at``), whether the
    cohort rules in force at its ``emitted_at`` route it to Supabase."""
    if events.num_rows == 0:
        return pa.array([], pa.bool_())
    critical = pc.fill_null(pc.equal(events.column("category"), CRITICAL), False)
    mask = expected_mask(
        stream_buckets(events.column("stream")),
        to_numpy(critical).astype(bool, copy=False),
        timestamps_us(events.column("emitted_at")),
        timeline,
    )
    return pa.array(mask, pa.bool_())

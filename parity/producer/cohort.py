"""Which events go to Supabase: the flags, cached and refreshed, and the cohort rule."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from parity.core import routing
from parity.producer.base import Clock, FlagSource, utc_now

log = logging.getLogger(__name__)


class FlagCache:
    """Flag values from a :data:`FlagSource`, re-read when older than ``refresh_s``.

    A failing source keeps the last values (at first: the plan's defaults, which route
    nothing to Supabase), so a flag outage never stops the producer.
    """

    def __init__(self, source: FlagSource, refresh_s: float, clock: Clock = utc_now) -> None:
        self.source = source
        self.refresh_s = refresh_s
        self.clock = clock
        self.values: dict[str, bool | int] = dict(routing.FLAG_DEFAULTS)
        self._read_at: dt.datetime | None = None
        self.lock = asyncio.Lock()

    def _stale(self) -> bool:
        if self._read_at is None:
            return True
        age = (self.clock() - self._read_at).total_seconds()
        return age >= self.refresh_s or age < 0

    async def current(self) -> Mapping[str, bool | int]:
        if self._stale():
            async with self.lock:
                if self._stale():
                    await self._refresh()
        return self.values

    async def _refresh(self) -> None:
        self._read_at = self.clock()
        try:
            raw = await asyncio.to_thread(self.source)
            values = dict(routing.FLAG_DEFAULTS)
            for name, value in raw.items():
                if name in routing.FLAG_DEFAULTS:
                    values[name] = routing.coerce_flag_value(name, value)
        except Exception as exc:  # noqa: BLE001 - any source failure keeps the last values
            log.warning("reading feature flags failed, keeping the last values: %s", exc)
            return
        self.values = values


def postgres_flag_source(store: Any) -> FlagSource:
    """Flags from the ``feature_flags`` table of a :class:`~parity.store_pg.PostgresStore`."""
    from parity.io.control_pg import read_flags

    def read() -> Mapping[str, Any]:
        with store.connection() as conn:
            return read_flags(conn, store.table.schema)

    return read


def routes_to_supabase(category: str, stream: str, flags: Mapping[str, bool | int]) -> bool:
    """The cohort rule of contract §5 for one event under the given flag values."""
    if category == routing.CRITICAL and flags[routing.CRITICAL_EVENTS_SUPABASE]:
        return True
    return routing.stream_bucket(stream) < int(flags[routing.SUPABASE_ROLLOUT_PERCENTAGE])

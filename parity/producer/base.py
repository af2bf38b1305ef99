"""What every part of the producer shares: its configuration, clocks and flag source."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from parity.core.errors import (
    ConfigurationError,
)
from parity.core.schema import HEARTBEAT_EVENT_TYPE

__all__ = ["HEARTBEAT_EVENT_TYPE"]


Clock = Callable[[], dt.datetime]


Sleep = Callable[[float], Awaitable[None]]


#: Returns the current flag values (name -> value); missing flags take their defaults.
FlagSource = Callable[[], Mapping[str, Any]]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class ProducerConfig:
    """Tuning of a :class:`DualWriter`; the defaults follow the migration plan."""

    name: str = "parity-producer"
    state_path: Path | None = None  # seq counters; None: numbers restart at 1
    buffer_path: Path | None = None  # failed writes; None: ``<state_path>.buffer.jsonl``
    host: str = "127.0.0.1"
    port: int = 0  # 0: any free port (see ``DualWriter.url``)
    flag_refresh_s: float = 5.0
    batch_max_delay_s: float = 0.02
    batch_max_rows: int = 500
    replay_chunk_rows: int = 1000
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0
    breaker_failures: int = 5
    breaker_reset_s: float = 30.0
    heartbeat_s: float | None = 30.0
    metrics_window_s: float = 10.0
    stop_drain_s: float = 5.0  # how long stop() waits for the buffer to reach the store
    seq_reserve_block: int = 100

    def resolved_buffer_path(self) -> Path:
        if self.buffer_path is not None:
            return Path(self.buffer_path)
        if self.state_path is not None:
            return Path(str(self.state_path) + ".buffer.jsonl")
        raise ConfigurationError(
            "the producer needs a buffer file for failed writes: set buffer_path or state_path"
        )

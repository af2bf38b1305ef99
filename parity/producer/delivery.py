"""The ways out: the WebSocket broadcaster, the breaker around the store, delivery metrics."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

import numpy as np
import orjson
import psycopg
from psycopg import sql
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve

from parity.core.config import TableName
from parity.core.errors import (
    StoreError,
)
from parity.core.events import Event
from parity.core.redact import redact
from parity.core.samples import MetricSample
from parity.io.tables import METRICS_TABLE
from parity.producer.base import Clock, utc_now

log = logging.getLogger(__name__)


class CircuitBreaker:
    """Closed -> open after ``threshold`` consecutive failures -> half-open (one probe)
    after ``reset_s`` -> closed on success, open again on failure."""

    CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

    def __init__(self, threshold: int, reset_s: float, clock: Clock = utc_now) -> None:
        self.threshold = threshold
        self.reset_s = reset_s
        self.clock = clock
        self.state = self.CLOSED
        self.failures = 0  # consecutive
        self.opened_at: dt.datetime | None = None

    def seconds_until_probe(self) -> float:
        if self.state != self.OPEN or self.opened_at is None:
            return 0.0
        return max(0.0, self.reset_s - (self.clock() - self.opened_at).total_seconds())

    def allow(self) -> bool:
        if self.state == self.OPEN and self.seconds_until_probe() <= 0:
            self.state = self.HALF_OPEN  # this caller is the probe
            return True
        return self.state == self.CLOSED

    def record_success(self) -> None:
        self.state, self.failures, self.opened_at = self.CLOSED, 0, None

    def record_failure(self) -> None:
        self.failures += 1
        if self.state == self.HALF_OPEN or (
            self.state == self.CLOSED and self.failures >= self.threshold
        ):
            if self.state == self.CLOSED:
                log.warning("circuit breaker open after %d consecutive failures", self.failures)
            self.state, self.opened_at = self.OPEN, self.clock()


class MetricsSink(Protocol):
    def write_sample(self, sample: MetricSample) -> None: ...


class PostgresMetricsSink:
    """``delivery_metrics`` rows (contract §4) in the schema of the events table."""

    def __init__(
        self, connect: Callable[[], contextlib.AbstractContextManager[Any]], table: TableName
    ) -> None:
        self._connect = connect
        self._ident = sql.Identifier(table.schema, METRICS_TABLE)

    @classmethod
    def for_store(cls, store: Any) -> PostgresMetricsSink:
        """Use a :class:`~parity.store_pg.PostgresStore`'s connections and schema."""
        return cls(store.connection, store.table)

    def write_sample(self, sample: MetricSample) -> None:
        # MetricSample's fields are the table's columns, in order.
        names = [f.name for f in fields(MetricSample)]
        statement = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            self._ident,
            sql.SQL(", ").join(map(sql.Identifier, names)),
            sql.SQL(", ").join(sql.Placeholder() * len(names)),
        )
        try:
            with self._connect() as conn:
                conn.execute(statement, [getattr(sample, name) for name in names])
        except psycopg.Error as exc:
            # A driver's text may quote the conninfo it was given, password included.
            raise StoreError(f"writing delivery_metrics failed: {redact(exc)}") from None


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), None for no values."""
    return float(np.percentile(values, q)) if values else None


@dataclass
class DeliveryWindow:
    attempts: int = 0
    failures: int = 0
    connection_attempts: int = 0
    connection_failures: int = 0
    latencies_ms: list[float] = field(default_factory=list)


class Broadcaster:
    """A ``websockets`` server that sends every event, as JSON text, to every client."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self.clients: set[ServerConnection] = set()
        self._server: Server | None = None

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/"

    async def start(self) -> None:
        self._server = await serve(self._handle, self.host, self.port)
        self.port = next(iter(self._server.sockets)).getsockname()[1]

    async def _handle(self, connection: ServerConnection) -> None:
        self.clients.add(connection)
        try:
            await connection.wait_closed()
        finally:
            self.clients.discard(connection)

    def send(self, event: Event) -> None:
        broadcast(self.clients, orjson.dumps(event.to_json_dict()).decode())

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

"""The real event store behind a wrapper that counts its inserts, or makes them fail."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pyarrow as pa

from parity.core.errors import StoreConnectionError
from parity.io.store import EventStore


class CountingStore:
    """The real store, counting the insert calls a backfill makes."""

    def __init__(self, inner: EventStore) -> None:
        self.inner = inner
        self.transport = inner.transport
        self.table = inner.table
        self.inserts = 0

    def snapshot(self, start: dt.datetime, end: dt.datetime) -> pa.Table:
        return self.inner.snapshot(start, end)

    def snapshot_batches(self, start: dt.datetime, end: dt.datetime) -> Iterator[pa.Table]:
        return self.inner.snapshot_batches(start, end)

    def insert_events(self, rows: pa.Table) -> int:
        self.inserts += 1
        return self.inner.insert_events(rows)

    def close(self) -> None:
        self.inner.close()


class FailingStore(CountingStore):
    """Inserts fail with a connection error once ``ok_batches`` batches went through (for
    ``failures`` attempts, then recover). Closing it leaves the real store open."""

    def __init__(self, inner: EventStore, ok_batches: int, failures: int = 10**6) -> None:
        super().__init__(inner)
        self.ok_batches, self.failures = ok_batches, failures

    def insert_events(self, rows: pa.Table) -> int:
        if self.inserts >= self.ok_batches and self.failures > 0:
            self.inserts += 1
            self.failures -= 1
            raise StoreConnectionError("connection to the test server lost")
        return super().insert_events(rows)

    def close(self) -> None:
        pass

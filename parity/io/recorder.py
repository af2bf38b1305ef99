"""The WebSocket recorder: subscribe to a producer and write the log of DESIGN 3.

Each message that is a JSON object becomes one line of ``<out>/YYYY-MM-DD/HH.jsonl``, the
UTC hour in which it was received, with ``logged_at`` (that instant, normalised like
``emitted_at``) added. The recorder does not validate events beyond "a JSON object":
checksums and fields are the reader's business (:mod:`parity.wslog`), which quarantines
what fails. Anything else (not UTF-8, not JSON, not an object) goes to
``<out>/rejects/YYYY-MM-DD.jsonl`` with its receive time and raw text, never dropped.

Durability and partial lines:

- Every line is written with a single ``write`` of its full bytes, newline included, on an
  unbuffered descriptor opened for append; there is no user-space buffer that could flush
  half a line. The file is fsynced on rotation, on close and every ``fsync_interval_s``.
- A crash (or a full disk) can still leave a torn last line. When the recorder opens an hour
  file whose last byte is not a newline, it first writes a lone newline: the torn fragment
  becomes a line of its own, which the reader quarantines, and nothing already in the file
  is modified (the log is append-only).

The connection is re-opened after any failure with exponential backoff (1 s doubling to
30 s, reset once a connection opens). Progress (events/s, current file) is shown on stderr
only when it is a terminal.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import orjson
from websockets.asyncio.client import connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidURI,
    WebSocketException,
)

from parity.core.errors import ConfigurationError
from parity.core.events import format_timestamp, loads_exact
from parity.io.files import fsync_dir

log = logging.getLogger(__name__)

#: Messages above this are refused by the connection (the reader quarantines lines over 1 MiB
#: anyway; a larger limit keeps such an event visible as a quarantined line).
MAX_MESSAGE_BYTES = 16 << 20


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class RecorderConfig:
    url: str
    out: Path
    fsync_interval_s: float = 1.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0
    open_timeout_s: float = 10.0
    progress: bool | None = None  # None: only when stderr is a terminal


@dataclass
class RecorderStats:
    written: int = 0
    rejected: int = 0
    connections: int = 0
    connection_failures: int = 0
    files: list[Path] = field(default_factory=list)


def _write_all(fd: int, data: bytes) -> None:
    # One write() for the whole line; the loop only matters after a short write.
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class AppendFile:
    """An append-only file written line by line; opening isolates a torn last line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        created = not path.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.dirty = False
        if created:
            fsync_dir(path.parent)
            return
        size = os.fstat(self.fd).st_size
        if size:
            with open(path, "rb") as fh:
                fh.seek(size - 1)
                torn = fh.read(1) != b"\n"
            if torn:
                log.warning("%s ends in a torn line; isolating it with a newline", path)
                self.write(b"\n")

    def write(self, line: bytes) -> None:
        _write_all(self.fd, line)
        self.dirty = True

    def sync(self) -> None:
        if self.dirty:
            os.fsync(self.fd)
            self.dirty = False

    def close(self) -> None:
        try:
            self.sync()
        finally:
            os.close(self.fd)


class HourFiles:
    """Routes lines to ``<out>/YYYY-MM-DD/HH.jsonl`` by instant; one file open at a time."""

    def __init__(self, out: Path, stats: RecorderStats) -> None:
        self.out = out
        self.stats = stats
        self.current: AppendFile | None = None
        self._hour: dt.datetime | None = None

    def path_for(self, hour: dt.datetime) -> Path:
        return self.out / f"{hour:%Y-%m-%d}" / f"{hour:%H}.jsonl"

    def write(self, line: bytes, at: dt.datetime) -> None:
        hour = at.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
        if self.current is None or hour != self._hour:
            self.close()  # rotation: the finished hour is fsynced and closed
            self.current = AppendFile(self.path_for(hour))
            self._hour = hour
            if self.current.path not in self.stats.files:
                self.stats.files.append(self.current.path)
        self.current.write(line)

    def sync(self) -> None:
        if self.current is not None:
            self.current.sync()

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None


class Recorder:
    """Subscribe to ``config.url`` and log every message until :meth:`stop` or cancel."""

    def __init__(
        self,
        config: RecorderConfig,
        *,
        clock: Callable[[], dt.datetime] = utc_now,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        progress_stream: TextIO | None = None,
    ) -> None:
        if not config.url.startswith(("ws://", "wss://")):
            raise ConfigurationError(f"{config.url!r} is not a ws:// or wss:// URL")
        self.config = config
        self.clock = clock
        self._sleep = sleep
        self.stats = RecorderStats()
        self.files = HourFiles(Path(config.out), self.stats)
        self._progress_stream = progress_stream or sys.stderr
        show = config.progress
        self.show_progress = self._progress_stream.isatty() if show is None else show
        self._stop = asyncio.Event()
        self._last_sync = time.monotonic()

    def stop(self) -> None:
        self._stop.set()

    # -- messages --------------------------------------------------------------------------

    def handle(self, message: str | bytes) -> None:
        """Log one message (an event line or a reject). Never raises for bad input."""
        now = self.clock()
        try:
            text = message if isinstance(message, str) else message.decode("utf-8")
        except UnicodeDecodeError:
            self._reject(message, now, "not_utf8")
            return
        try:
            obj = loads_exact(text)
        except (ValueError, RecursionError):
            self._reject(message, now, "invalid_json")
            return
        if not isinstance(obj, dict):
            self._reject(message, now, "not_an_object")
            return
        obj["logged_at"] = format_timestamp(now)
        self.files.write(_dumps(obj) + b"\n", now)
        self.stats.written += 1
        self._maybe_sync()

    def _reject(self, raw: str | bytes, now: dt.datetime, reason: str) -> None:
        record: dict[str, Any] = {"received_at": format_timestamp(now), "reason": reason}
        if isinstance(raw, bytes):
            try:
                record["raw"] = raw.decode("utf-8")
            except UnicodeDecodeError:
                record["raw_base64"] = base64.b64encode(raw).decode("ascii")
        else:
            record["raw"] = raw
        path = Path(self.config.out) / "rejects" / f"{now.astimezone(dt.UTC):%Y-%m-%d}.jsonl"
        rejects = AppendFile(path)
        try:
            rejects.write(_dumps(record) + b"\n")
        finally:
            rejects.close()  # rare: fsync each one
        self.stats.rejected += 1
        log.warning("message rejected (%s), kept in %s", reason, path)

    def _maybe_sync(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_sync >= self.config.fsync_interval_s:
            self.files.sync()
            self._last_sync = now

    # -- connection ------------------------------------------------------------------------

    async def run(self) -> RecorderStats:
        """Record until :meth:`stop` is called (or the task is cancelled)."""
        ticker = asyncio.create_task(self._tick())
        try:
            await self._connect_loop()
        finally:
            ticker.cancel()
            try:
                await ticker
            except asyncio.CancelledError:
                pass
            self.files.close()
            if self.show_progress:
                self._progress_stream.write("\n")
        return self.stats

    async def _connect_loop(self) -> None:
        cfg = self.config
        delay = cfg.backoff_initial_s
        while not self._stop.is_set():
            try:
                async with connect(
                    cfg.url, open_timeout=cfg.open_timeout_s, max_size=MAX_MESSAGE_BYTES
                ) as ws:
                    self.stats.connections += 1
                    delay = cfg.backoff_initial_s
                    log.info("recording %s into %s", cfg.url, cfg.out)
                    if await self._receive(ws):
                        return
                reason = "the server closed the connection"
            except InvalidURI as exc:
                raise ConfigurationError(f"{cfg.url!r}: {exc}") from None
            except ConnectionClosed as exc:
                reason = f"connection closed ({exc})"
            except (OSError, TimeoutError, InvalidHandshake, WebSocketException) as exc:
                self.stats.connection_failures += 1
                reason = f"{type(exc).__name__}: {exc}"
            if self._stop.is_set():
                return
            log.warning("%s (%s); reconnecting in %.3g s", cfg.url, reason, delay)
            if await self._wait(self._sleep(delay)):
                return
            delay = min(delay * 2, cfg.backoff_max_s)

    async def _receive(self, ws: Any) -> bool:
        """Log messages until the connection ends (False) or stop is asked for (True)."""
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            while True:
                receiver = asyncio.ensure_future(ws.recv())
                await asyncio.wait({receiver, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if not receiver.done():
                    receiver.cancel()
                    return True
                self.handle(receiver.result())  # raises ConnectionClosed at the end
        finally:
            stopper.cancel()

    async def _wait(self, waiting: Awaitable[object]) -> bool:
        task = asyncio.ensure_future(waiting)
        stopper = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        task.cancel()
        stopper.cancel()
        return self._stop.is_set()

    async def _tick(self) -> None:
        """fsync on the interval when idle, and draw the progress line."""
        interval = min(self.config.fsync_interval_s, 1.0)
        last_count, last_time = 0, time.monotonic()
        while True:
            await asyncio.sleep(interval)
            self._maybe_sync()
            if self.show_progress:
                now = time.monotonic()
                rate = (self.stats.written - last_count) / max(now - last_time, 1e-9)
                last_count, last_time = self.stats.written, now
                current = self.files.current.path if self.files.current else "-"
                self._progress_stream.write(
                    f"\r{rate:8.1f} events/s  {self.stats.written} events  "
                    f"{self.stats.rejected} rejected  -> {current}\x1b[K"
                )
                self._progress_stream.flush()


def _dumps(obj: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(obj)
    except (orjson.JSONEncodeError, TypeError):
        # Integers beyond 64 bits or lone surrogates: the standard library keeps them
        # exactly (as ASCII escapes), for the reader to judge.
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode("ascii")

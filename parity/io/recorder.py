"""The WebSocket recorder: subscribe to a producer and write the log of contract §3.

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
- A write that fails (a full disk, a file-size limit, an I/O error) may have written part of
  the line. The file keeps the unwritten rest, and nothing else is appended until that rest
  is written: the line is completed exactly, never followed by the next one on the same line.
  Meanwhile the recorder stops reading from the socket and retries with backoff, so the
  messages that follow wait in the connection (the producer is slowed, not dropped); the
  connection stays open. Only if the recorder is stopped while the disk still refuses is a
  line left unsaved, counted in ``RecorderStats.unsaved`` and logged as an error.
- A crash can still leave a torn last line. When the recorder opens a file whose last byte
  is not a newline, it first writes a lone newline: the torn fragment becomes a line of its
  own, which the reader quarantines, and nothing already in the file is modified (the log
  is append-only).

Size. Messages are received as bytes (a text frame that is not UTF-8 is kept as a reject,
not a closed connection). A message over ``MAX_MESSAGE_BYTES`` goes to the rejects, its first
``REJECT_HEAD_BYTES`` kept with its full size, and the connection carries on. The transport
accepts messages up to ``MAX_TRANSPORT_BYTES`` (what is held in memory at once); one above
that ends the connection, leaving a rejects entry with its size, and the recorder reconnects.

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
from parity.core.jsontext import loads_exact
from parity.core.partitions import floor_hour
from parity.core.redact import redact, redact_url, secrets_of
from parity.core.timestamps import format_timestamp
from parity.io.files import fsync_dir

log = logging.getLogger(__name__)

#: Messages above this go to the rejects, truncated (the reader quarantines lines over 1 MiB
#: anyway; a larger limit keeps such an event visible as a quarantined line).
MAX_MESSAGE_BYTES = 16 << 20
#: How much of an oversized message its rejects entry keeps.
REJECT_HEAD_BYTES = 64 << 10
#: The largest message the connection accepts (a message is held whole in memory once).
MAX_TRANSPORT_BYTES = 1 << 30
#: Close code of a message over the transport limit (RFC 6455 "message too big").
MESSAGE_TOO_BIG = 1009


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
    #: Writes that failed (full disk, size limit, I/O error) and were retried.
    write_failures: int = 0
    #: Lines still unwritten when the recorder stopped while the disk refused them.
    unsaved: int = 0
    files: list[Path] = field(default_factory=list)


class AppendFile:
    """An append-only file written line by line; opening isolates a torn last line, and a
    line whose write failed part-way is completed before anything else is written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        created = not path.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.dirty = False
        #: The unwritten rest of a line whose write failed (None: nothing pending).
        self.unfinished: memoryview | None = None
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
        """Append ``line``. On OSError the file keeps what was not written, in order, and
        writes it first on :meth:`finish` or the next write: nothing taken is dropped."""
        if self.unfinished is None:
            self.unfinished = memoryview(line)
        else:
            self.unfinished = memoryview(bytes(self.unfinished) + line)
        self.finish()

    def finish(self) -> None:
        """Write the rest of a line whose write failed. Raises OSError while it still fails."""
        while self.unfinished:
            written = os.write(self.fd, self.unfinished)
            self.unfinished = self.unfinished[written:]
            self.dirty = True
        self.unfinished = None

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
    """Routes lines to ``<out>/YYYY-MM-DD/HH.jsonl`` by instant (or, with ``daily``, to
    ``<out>/YYYY-MM-DD.jsonl``); one file open at a time."""

    def __init__(self, out: Path, stats: RecorderStats, *, daily: bool = False) -> None:
        self.out = out
        self.stats = stats
        self.daily = daily
        self.current: AppendFile | None = None
        self._period: dt.datetime | None = None
        #: Files left at rotation with a line still unwritten, closed once it is written.
        self._draining: list[AppendFile] = []

    def path_for(self, period: dt.datetime) -> Path:
        if self.daily:
            return self.out / f"{period:%Y-%m-%d}.jsonl"
        return self.out / f"{period:%Y-%m-%d}" / f"{period:%H}.jsonl"

    @property
    def pending(self) -> bool:
        """Whether a line's write failed and its rest waits for :meth:`finish`."""
        current_pending = self.current is not None and self.current.unfinished is not None
        return current_pending or bool(self._draining)

    def write(self, line: bytes, at: dt.datetime) -> None:
        period = floor_hour(at)
        if self.daily:
            period = period.replace(hour=0)
        if self.current is None or period != self._period:
            if self.current is not None and self.current.unfinished is not None:
                # A pending line belongs to the file it was started in.
                self._draining.append(self.current)
                self.current = None
            self.close()  # rotation: the finished hour is fsynced and closed
            self.current = AppendFile(self.path_for(period))
            self._period = period
            if not self.daily and self.current.path not in self.stats.files:
                self.stats.files.append(self.current.path)
        self.current.write(line)

    def finish(self) -> None:
        while self._draining:
            self._draining[0].finish()
            self._draining.pop(0).close()
        if self.current is not None:
            self.current.finish()

    def sync(self) -> None:
        if self.current is not None and self.current.unfinished is None:
            self.current.sync()

    def close(self) -> None:
        """Close the current file (call :meth:`finish` first: what is pending is dropped)."""
        for draining in self._draining:
            os.close(draining.fd)
        self._draining.clear()
        if self.current is not None:
            current, self.current = self.current, None
            current.close()


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
        #: The URL as messages show it: producers often put a token in its query.
        self.where = redact_url(config.url)
        if not config.url.startswith(("ws://", "wss://")):
            raise ConfigurationError(f"{self.where} is not a ws:// or wss:// URL")
        self.config = config
        self.clock = clock
        self._sleep = sleep
        self.stats = RecorderStats()
        self.files = HourFiles(Path(config.out), self.stats)
        self.rejects = HourFiles(Path(config.out) / "rejects", self.stats, daily=True)
        self._progress_stream = progress_stream or sys.stderr
        show = config.progress
        self.show_progress = self._progress_stream.isatty() if show is None else show
        self._stop = asyncio.Event()
        self._last_sync = time.monotonic()

    def stop(self) -> None:
        self._stop.set()

    # -- messages --------------------------------------------------------------------------

    def handle(self, message: str | bytes) -> None:
        """Log one message (an event line or a reject). Never raises for bad input; raises
        OSError when the line could not be written (it is kept: see :meth:`finish`)."""
        now = self.clock()
        if isinstance(message, str):
            message = message.encode("utf-8", "surrogatepass")
        if len(message) > MAX_MESSAGE_BYTES:
            self._reject_oversized(message, now)
            return
        try:
            text = message.decode("utf-8")
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
        # Counted once taken: a line whose write fails is kept and completed later.
        self.stats.written += 1
        self.files.write(_dumps(obj) + b"\n", now)
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
        self._write_reject(record, now)

    def _reject_oversized(self, raw: bytes, now: dt.datetime) -> None:
        record = {
            "received_at": format_timestamp(now),
            "reason": "too_large",
            "size": len(raw),
            "limit": MAX_MESSAGE_BYTES,
            # Base64: the cut may fall inside a UTF-8 sequence.
            "head_base64": base64.b64encode(raw[:REJECT_HEAD_BYTES]).decode("ascii"),
        }
        self._write_reject(record, now)

    def _write_reject(self, record: dict[str, Any], now: dt.datetime) -> None:
        self.stats.rejected += 1
        self.rejects.write(_dumps(record) + b"\n", now)
        self.rejects.sync()  # rare: fsync each one
        log.warning("message rejected (%s), kept in %s", record["reason"], self.rejects.out)

    def finish(self) -> None:
        """Write what a failed write left pending (raises OSError while it still fails)."""
        self.rejects.finish()
        self.files.finish()

    @property
    def pending(self) -> bool:
        return self.files.pending or self.rejects.pending

    def _maybe_sync(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_sync >= self.config.fsync_interval_s:
            try:
                self.files.sync()
            except OSError as exc:
                # Retried on the next interval; the lines stay in the page cache meanwhile.
                self.stats.write_failures += 1
                log.error("fsync of %s failed: %s", self.files.out, exc)
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
            self._close_files()
            if self.show_progress:
                self._progress_stream.write("\n")
        return self.stats

    async def _connect_loop(self) -> None:
        cfg = self.config
        delay = cfg.backoff_initial_s
        while not self._stop.is_set():
            try:
                async with connect(
                    cfg.url, open_timeout=cfg.open_timeout_s, max_size=MAX_TRANSPORT_BYTES
                ) as ws:
                    self.stats.connections += 1
                    delay = cfg.backoff_initial_s
                    log.info("recording %s into %s", self.where, cfg.out)
                    if await self._receive(ws):
                        return
                reason = "the server closed the connection"
            except InvalidURI as exc:
                raise ConfigurationError(f"{self.where}: {self._redact(exc)}") from None
            except ConnectionClosed as exc:
                reason = f"connection closed ({exc})"
                if exc.sent is not None and exc.sent.code == MESSAGE_TOO_BIG:
                    self._record_dropped_message(exc.sent.reason)
            except (OSError, TimeoutError, InvalidHandshake, WebSocketException) as exc:
                self.stats.connection_failures += 1
                reason = f"{type(exc).__name__}: {exc}"
            if self._stop.is_set():
                return
            log.warning("%s (%s); reconnecting in %.3g s", self.where, self._redact(reason), delay)
            if await self._wait(self._sleep(delay)):
                return
            delay = min(delay * 2, cfg.backoff_max_s)

    def _redact(self, text: object) -> str:
        return redact(text, *secrets_of(self.config.url))

    async def _receive(self, ws: Any) -> bool:
        """Log messages until the connection ends (False) or stop is asked for (True)."""
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            while True:
                # Bytes: a text frame that is not UTF-8 becomes a reject, not a closed
                # connection.
                receiver = asyncio.ensure_future(ws.recv(decode=False))
                await asyncio.wait({receiver, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if not receiver.done():
                    receiver.cancel()
                    return True
                try:
                    self.handle(receiver.result())  # raises ConnectionClosed at the end
                except OSError as exc:
                    if await self._until_written(exc):
                        return True
        finally:
            stopper.cancel()

    async def _until_written(self, error: OSError) -> bool:
        """Retry a failed write with backoff, not reading from the socket meanwhile, until
        it succeeds (False) or stop is asked for (True)."""
        delay = self.config.backoff_initial_s
        while True:
            self.stats.write_failures += 1
            log.error(
                "cannot write to %s (%s): holding the line, not reading from the connection; "
                "retrying in %.3g s",
                self.config.out,
                error,
                delay,
            )
            if await self._wait(self._sleep(delay)):
                return True
            try:
                self.finish()
            except OSError as exc:
                error, delay = exc, min(delay * 2, self.config.backoff_max_s)
                continue
            log.warning("writing to %s again", self.config.out)
            return False

    def _record_dropped_message(self, close_reason: str) -> None:
        """A message over the transport limit ended the connection: say so in the rejects."""
        record = {
            "received_at": format_timestamp(self.clock()),
            "reason": "over_transport_limit",
            "limit": MAX_TRANSPORT_BYTES,
            "detail": close_reason,
        }
        try:
            self._write_reject(record, self.clock())
        except OSError as exc:
            log.error("could not record a message over the transport limit: %s", exc)

    def _close_files(self) -> None:
        """Close both files; a line the disk still refuses is counted and logged, not lost
        silently."""
        for files in (self.files, self.rejects):
            try:
                files.finish()
            except OSError as exc:
                self.stats.unsaved += 1
                log.error("stopping with a line unwritten to %s: %s", files.out, exc)
            try:
                files.close()
            except OSError as exc:
                log.error("closing %s failed: %s", files.out, exc)

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

"""What survives a crash: sequence numbers reserved in blocks, the buffer of failed writes."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from parity.core.errors import (
    ConfigurationError,
)
from parity.core.jsontext import loads_exact
from parity.io.files import write_bytes_atomic

log = logging.getLogger(__name__)


class SeqState:
    """Per-stream sequence numbers, reserved in blocks in a state file before use."""

    def __init__(self, path: Path | None, *, block: int = 100) -> None:
        if block < 1:
            raise ConfigurationError(f"seq_reserve_block must be >= 1, got {block}")
        self.path = Path(path) if path is not None else None
        self.block = block
        self._last: dict[str, int] = {}
        self._reserved: dict[str, int] = {}
        self._lock_fd: int | None = None
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(str(self.path) + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise ConfigurationError(
                f"sequence state {self.path} is in use by another producer; give each "
                "producer its own state file"
            ) from None
        if self.path.exists():
            try:
                data = orjson.loads(self.path.read_bytes())
                reserved = {str(k): int(v) for k, v in data["reserved"].items()}
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                self.close(persist=False)
                raise ConfigurationError(
                    f"sequence state {self.path} is unreadable ({exc}); refusing to restart "
                    "numbering (that could reuse sequence numbers): fix or move the file"
                ) from None
            self._reserved = reserved
            self._last = dict(reserved)

    def peek(self, stream: str) -> int:
        """The number the next event of ``stream`` gets (not yet used)."""
        return self._last.get(stream, 0) + 1

    def commit(self, stream: str, seq: int) -> None:
        """Mark ``seq`` used, reserving a new block first when it lies beyond the last one."""
        if seq > self._reserved.get(stream, 0):
            self._reserved[stream] = seq + self.block - 1
            self._persist(self._reserved)
        self._last[stream] = seq

    def last(self, stream: str) -> int:
        return self._last.get(stream, 0)

    def _persist(self, reserved: Mapping[str, int]) -> None:
        if self.path is not None:
            write_bytes_atomic(self.path, orjson.dumps({"version": 1, "reserved": dict(reserved)}))

    def close(self, *, persist: bool = True) -> None:
        """Record the exact last numbers (a clean restart continues gaplessly); unlock."""
        if self._lock_fd is None:
            return
        try:
            if persist and self._reserved != self._last:
                self._persist(self._last)
                self._reserved = dict(self._last)
        finally:
            os.close(self._lock_fd)
            self._lock_fd = None


class DurableBuffer:
    """Events waiting for the store: JSON lines, appended and fsynced, replayed oldest first.

    Replayed entries are skipped by an in-memory offset and removed by compaction (the
    rest rewritten to a temporary file, fsynced, renamed over). After a crash the offset is
    lost and everything in the file is replayed again: harmless, inserts are idempotent.
    """

    COMPACT_BYTES = 1 << 20

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._offset = 0
        data = self.path.read_bytes() if self.path.exists() else b""
        if data and not data.endswith(b"\n"):
            # A crash mid-append: that line was never acknowledged, so it is cut off.
            keep = data[: data.rfind(b"\n") + 1]
            log.warning("buffer %s: cutting off a torn, unacknowledged last line", self.path)
            write_bytes_atomic(self.path, keep)
            data = keep
        self.pending = data.count(b"\n")
        self._size = len(data)
        self._fh = open(self.path, "ab")

    def append(self, records: list[dict[str, Any]]) -> None:
        """Append and fsync; on failure the file is cut back so no torn line remains."""
        data = b"".join(orjson.dumps(r) + b"\n" for r in records)
        try:
            self._fh.write(data)
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fh.fileno(), self._size)
            raise
        self.pending += len(records)
        self._size += len(data)

    def peek(self, max_rows: int) -> tuple[list[dict[str, Any]], int, int]:
        """The oldest unreplayed entries, how many lines they took, and the offset after."""
        records: list[dict[str, Any]] = []
        lines, end = 0, self._offset
        with open(self.path, "rb") as fh:
            fh.seek(self._offset)
            for line in fh:
                if lines >= max_rows or not line.endswith(b"\n"):
                    break
                lines, end = lines + 1, end + len(line)
                try:
                    records.append(loads_exact(line))
                except ValueError:  # only a damaged disk gets here: nothing to replay
                    log.error("buffer %s: unreadable entry before byte %d skipped", self.path, end)
        return records, lines, end

    def consume(self, lines: int, end: int) -> None:
        self._offset = end
        self.pending -= lines
        if self.pending <= 0 or self._offset >= max(self.COMPACT_BYTES, self._size // 2):
            self.compact()

    def compact(self) -> None:
        with open(self.path, "rb") as fh:
            fh.seek(self._offset)
            rest = fh.read()
        self._fh.close()
        write_bytes_atomic(self.path, rest)
        self._fh = open(self.path, "ab")
        self._offset = 0
        self._size = len(rest)
        self.pending = rest.count(b"\n")

    def close(self) -> None:
        self._fh.close()

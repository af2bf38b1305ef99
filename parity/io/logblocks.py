"""The WebSocket log's files as blocks of whole lines (contract §3).

A reader of the log takes a file a block at a time, never a line at a time: a block is a
run of complete lines (each ending in a newline, but the file's last line may lack one),
about :data:`BLOCK_BYTES` long, which the native kernel or Python splits. What cannot be a
block is reported on its own: a line longer than :data:`MAX_LINE_BYTES` is never held
whole (only its first :data:`RAW_KEEP_BYTES`), and a damaged gzip stream stops the file at
the line where the damage is met. A UTF-8 byte order mark opening a file is not part of
its first line.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from parity.io import native

#: Longest line accepted, newline excluded (contract §3: "over 1 MiB" is quarantined).
MAX_LINE_BYTES = 1 << 20
#: How much of an overlong line the quarantine keeps.
RAW_KEEP_BYTES = 64 << 10
#: Bytes read at a time; a block is this plus the unfinished line before it, at most.
BLOCK_BYTES = 1 << 20
_SCAN_BYTES = 256 << 10
UTF8_BOM = b"\xef\xbb\xbf"

# Quarantine reasons (the ``reason`` column).
NOT_UTF8 = "not_utf8"
INVALID_JSON = "invalid_json"
LINE_TOO_LONG = "line_too_long"
TOO_DEEP = "too_deep"
NOT_AN_OBJECT = "not_an_object"
MISSING_FIELD = "missing_field"
INVALID_FIELD = "invalid_field"
UNPROCESSABLE = "unprocessable"
STRAY_EVENT = "stray_event"
UNREADABLE_PATH = "unreadable_path"
TRUNCATED_GZIP = "truncated_gzip"
CORRUPT_GZIP = "corrupt_gzip"
QUARANTINE_REASONS = (
    NOT_UTF8,
    INVALID_JSON,
    LINE_TOO_LONG,
    TOO_DEEP,
    NOT_AN_OBJECT,
    MISSING_FIELD,
    INVALID_FIELD,
    UNPROCESSABLE,
    STRAY_EVENT,
    UNREADABLE_PATH,
    TRUNCATED_GZIP,
    CORRUPT_GZIP,
)


@dataclass(frozen=True, slots=True)
class HourFile:
    """One hour file of the log."""

    hour: dt.datetime  # UTC start of the hour the lines were logged in
    path: Path
    relpath: str  # relative to the log directory, ``/``-separated

    @property
    def compressed(self) -> bool:
        return self.relpath.endswith(".gz")


@dataclass(frozen=True, slots=True)
class Lines:
    """Whole lines ``first`` (1-based) onwards; the last lacks its newline at the end of a
    file that does not end with one."""

    first: int
    data: bytes

    @property
    def count(self) -> int:
        return native.count_newlines(self.data) + (0 if self.data.endswith(b"\n") else 1)


@dataclass(frozen=True, slots=True)
class LongLine:
    """A line over :data:`MAX_LINE_BYTES`: its number, length and first bytes."""

    lineno: int
    length: int
    head: bytes


class StreamStopped(Exception):
    """A damaged gzip stream: nothing from line ``lineno`` on can be read."""

    def __init__(self, lineno: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.lineno, self.reason, self.detail = lineno, reason, detail


def read_blocks(
    fh: BinaryIO, *, first_line: int = 0, at_start: bool = True
) -> Iterator[Lines | LongLine]:  # noqa: E501
    """The lines of ``fh`` as :class:`Lines` blocks and :class:`LongLine` reports, in file
    order; ``first_line`` lines precede ``fh`` (a range of a file), ``at_start`` says
    whether ``fh`` starts the file. Raises StreamStopped on a damaged gzip stream."""
    read = getattr(fh, "read1", fh.read)  # one underlying read: no data lost to an error
    done = first_line  # lines finished
    carry = b""  # the start of an unfinished line
    long: LongLine | None = None  # an overlong line being skipped
    bom = at_start
    while True:
        try:
            data = read(BLOCK_BYTES)
        except EOFError:
            inside = " inside an overlong line" if long is not None else ""
            raise StreamStopped(
                done + 1,
                TRUNCATED_GZIP,
                f"compressed stream ends before its end marker{inside}; {done} lines before "
                "the cut were read, the rest of the file is lost",
            ) from None
        except (gzip.BadGzipFile, zlib.error) as exc:
            raise StreamStopped(
                done + 1,
                CORRUPT_GZIP,
                f"compressed stream is damaged ({exc}); {done} lines before it were read",
            ) from None
        if bom and data:
            if len(carry) + len(data) < len(UTF8_BOM) and UTF8_BOM.startswith(carry + data):
                carry += data
                continue
            data, carry, bom = carry + data, b"", False
            if data.startswith(UTF8_BOM):
                data = data[len(UTF8_BOM) :]
        if not data:
            if long is not None:
                yield long
            elif carry:
                yield Lines(done + 1, carry)
            return
        if long is not None:
            newline = data.find(b"\n")
            if newline < 0:
                long = LongLine(long.lineno, long.length + len(data), long.head)
                continue
            yield LongLine(long.lineno, long.length + newline, long.head)
            done += 1
            long, data = None, data[newline + 1 :]
        block = carry + data if carry else data
        cut = block.rfind(b"\n") + 1
        if cut:
            lines = Lines(done + 1, block[:cut])
            done += lines.count
            yield lines
        carry = block[cut:]
        if len(carry) > MAX_LINE_BYTES:
            long, carry = LongLine(done + 1, len(carry), carry[:RAW_KEEP_BYTES]), b""


def split_lines(block: Lines) -> list[bytes]:
    """The lines of a block without their newlines."""
    lines = block.data.split(b"\n")
    if block.data.endswith(b"\n"):
        lines.pop()
    return lines


def line_ranges(fh: BinaryIO, size: int, shares: int) -> tuple[list[int], list[int]]:
    """Byte bounds splitting a file into about ``shares`` ranges that each start a line,
    and the number of lines before each range."""
    bounds = [0]
    for i in range(1, shares):
        at = max(size * i // shares, bounds[-1])
        fh.seek(at)
        while True:  # forward to the next line start (in bounded reads: lines may be long)
            chunk = fh.read(_SCAN_BYTES)
            if not chunk:
                at = size
                break
            newline = chunk.find(b"\n")
            if newline >= 0:
                at += newline + 1
                break
            at += len(chunk)
        if at >= size:
            break
        bounds.append(at)
    bounds.append(size)
    first_lines = [0]
    fh.seek(0)
    position = lines = 0
    for bound in bounds[1:-1]:
        while position < bound:
            chunk = fh.read(min(4 << 20, bound - position))
            if not chunk:
                break
            lines += native.count_newlines(chunk)
            position += len(chunk)
        first_lines.append(lines)
    return bounds, first_lines


class _RangeRaw(io.RawIOBase):
    """The bytes ``[start, end)`` of a file, read with ``pread``."""

    def __init__(self, fd: int, start: int, end: int) -> None:
        self._fd, self._pos, self._end = fd, start, end

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self._end - self._pos)
        if want <= 0:
            return 0
        data = os.pread(self._fd, want, self._pos)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


def open_range(path: Path, start: int, end: int) -> BinaryIO:
    raw = _RangeRaw(os.open(path, os.O_RDONLY), start, end)
    return cast(BinaryIO, io.BufferedReader(raw, _SCAN_BYTES))


def undecodable(line: bytes, terminated: bool, exc: ValueError) -> tuple[str, str]:
    """Reason and detail for a line (without its newline) that did not parse."""
    unterminated = (
        ""
        if terminated
        else " (last line of the file has no newline: it may still be being written)"  # noqa: E501
    )
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as err:
        return NOT_UTF8, f"not UTF-8: {err.reason} at byte {err.start}{unterminated}"
    return INVALID_JSON, f"not valid JSON: {exc}{unterminated}"


def check_unicode(line: bytes, obj: object) -> None:
    """Refuse what orjson refuses but the standard library accepts: encoded or escaped
    lone surrogates, which no UTF-8 column can hold."""
    try:
        line.decode("utf-8")
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeError as exc:
        raise ValueError(f"lone surrogate in text ({exc})") from None

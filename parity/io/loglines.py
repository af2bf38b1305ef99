"""Log lines read by Python: the definition of what a line of the log is (contract §3).

Every line the native kernel does not decide, and every line when it is not built, is read
here. Line policy:

- blank or whitespace-only lines are skipped and counted (``blank_lines``);
- a line longer than ``MAX_LINE_BYTES`` is quarantined as ``line_too_long`` with its first
  ``RAW_KEEP_BYTES``; one nesting arrays and objects deeper than ``MAX_DEPTH`` as
  ``too_deep``, before any parser sees it; every other quarantined line keeps its bytes;
- an exception any line provokes while it is parsed or checked is a quarantine reason
  (``unprocessable``, with the exception in the detail), never a failed read;
- the last line of a file without a trailing newline is an ordinary line when it parses;
  when it does not, the detail says it may still be being written;
- a valid event in one of the window's own files whose ``emitted_at`` is so far from the
  file's hour that no hourly read scans the file for it is quarantined as ``stray_event``.

Most lines take the fast path: a line of the shape Parity's producer writes, whose fields
are plainly valid, skips ``parse_event`` (which it would pass with the same values) and is
verified through ``parity.core.events.proven_text``. Every other line takes the general
path.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterable
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from parity.core.classify import Classifier
from parity.core.errors import InvalidEventError
from parity.core.events import (
    CATEGORIES,
    MAX_DEPTH,
    MAX_SAFE_INTEGER,
    MAX_STREAM_LENGTH,
    TIMESTAMP_FORMAT,
    Event,
    checksum_matches,
    exceeds_depth,
    format_timestamp,
    loads_exact,
    may_hold_long_number,
    parse_event,
    parse_timestamp,
    proven_text,
)
from parity.core.schema import QUARANTINE_SCHEMA, UTC_US, WS_SNAPSHOT_SCHEMA
from parity.io.logblocks import (
    LINE_TOO_LONG,
    MAX_LINE_BYTES,
    RAW_KEEP_BYTES,
    STRAY_EVENT,
    TOO_DEEP,
    UNPROCESSABLE,
    HourFile,
    LongLine,
    check_unicode,
    undecodable,
)

HOUR = dt.timedelta(hours=1)
_HOUR_US = 3_600_000_000
#: Rows gathered as Python objects before they become an Arrow batch: Python objects take
#: several times the Arrow bytes, so the lists are kept short.
BATCH_ROWS = 8192
#: The normalised timestamp (``2026-11-28T10:00:01.123000Z``), ASCII digits only: text of
#: this shape that ``fromisoformat`` accepts is what ``parse_timestamp`` accepts, same instant.
_NORMALISED = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
#: The snapshot's columns as they are gathered: timestamps as their normalised text, which
#: Arrow casts a batch at a time (datetime objects cost about 2.4 us each).
_GATHERED_SCHEMA = pa.schema(
    [
        pa.field(f.name, pa.string(), f.nullable) if f.type == UTC_US else f
        for f in WS_SNAPSHOT_SCHEMA
    ]
)


def too_long(line: LongLine) -> tuple[int, str, str, bytes]:
    """Line number, reason, detail and kept bytes of an overlong line."""
    return (
        line.lineno,
        LINE_TOO_LONG,
        f"line is {line.length} bytes, over the {MAX_LINE_BYTES}-byte limit; "
        f"the first {RAW_KEEP_BYTES} bytes are kept",
        line.head,
    )


_BLANK = object()


class _Quarantined(Exception):
    def __init__(self, reason: str, detail: str, raw: bytes | None = None) -> None:
        super().__init__(detail)
        self.reason, self.detail, self.raw = reason, detail, raw


class LineReader:
    """The rows, quarantine and counts of a window, and Python's reading of lines."""

    #: Lines longer than this are not the kernel's to read.
    max_line = MAX_LINE_BYTES

    def __init__(
        self, start: dt.datetime, end: dt.datetime, grace: dt.timedelta, classifier: Classifier
    ) -> None:
        self.start, self.end, self.grace = start, end, grace
        self.classifier = classifier
        self.categories: dict[str, tuple[str, bool]] = {}
        self.cols: dict[str, list[Any]] = {name: [] for name in WS_SNAPSHOT_SCHEMA.names}
        self.q: dict[str, list[Any]] = {name: [] for name in QUARANTINE_SCHEMA.names}
        self.blank_lines = 0
        self.outside = 0
        self.bad_elsewhere = 0
        self.stray = 0
        self.as_json: dict[str, bytes] = {}  # stream and event_type values repeat

    def emit(self, batch: pa.RecordBatch) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Turn the gathered rows into an Arrow batch; the lists are emptied in place."""
        if not self.cols["source_line"]:
            return
        batch = pa.RecordBatch.from_pydict(self.cols, schema=_GATHERED_SCHEMA)
        self.emit(batch.cast(WS_SNAPSHOT_SCHEMA))
        for column in self.cols.values():
            column.clear()

    def quarantine(self, relpath: str, lineno: int, reason: str, detail: str, raw: bytes) -> None:
        q = self.q
        q["source_file"].append(relpath)
        q["source_line"].append(lineno)
        q["reason"].append(reason)
        q["detail"].append(detail)
        q["raw"].append(raw)

    def classify(self, event_type: str) -> tuple[str, bool]:
        """(category, unclassified) by the rules, each distinct type asked once."""
        found = self.categories.get(event_type)
        if found is None:
            ruled = self.classifier.match(event_type)
            found = (
                (self.classifier.classify(event_type), True) if ruled is None else (ruled, False)
            )
            self.categories[event_type] = found
        return found

    def unreachable_us(self, emitted_us: np.ndarray, file_hour: dt.datetime) -> np.ndarray:
        """Which events (emitted_at in microseconds) no hourly read scans ``file_hour``'s
        file for: it scans the hours from one before its partition to ``grace`` after."""
        partition = emitted_us // _HOUR_US * _HOUR_US
        hour = (file_hour - _EPOCH) // dt.timedelta(microseconds=1)
        grace = self.grace // dt.timedelta(microseconds=1)
        return ~((partition - _HOUR_US <= hour) & (hour < partition + _HOUR_US + grace))

    def _unreachable(self, emitted: dt.datetime, file_hour: dt.datetime) -> bool:
        partition = emitted.replace(minute=0, second=0, microsecond=0)
        return not partition - HOUR <= file_hour < partition + HOUR + self.grace

    def stray_detail(self, emitted_us: int, file_hour: dt.datetime) -> str:
        emitted = _EPOCH + dt.timedelta(microseconds=emitted_us)
        return (
            f"emitted_at {format_timestamp(emitted)} is outside every window that reads the "
            f"file of {file_hour:%Y-%m-%dT%H}:00Z (grace {self.grace})"
        )

    def read_lines(
        self,
        numbered: Iterable[tuple[int, bytes]],
        hour_file: HourFile,
        own: bool,
        unterminated: int,
    ) -> None:
        """Read lines (without their newlines) by number; line ``unterminated`` is the file's
        last and lacks its newline."""
        relpath, file_hour = hour_file.relpath, hour_file.hour
        for lineno, line in numbered:
            try:
                obj = self._parse(line, lineno != unterminated)
                if obj is _BLANK:
                    continue
                if type(obj) is dict and self._fast_row(obj, lineno, relpath, own, file_hour):
                    continue
                self._general_row(obj, lineno, relpath, own, file_hour)
            except _Quarantined as bad:
                if own:
                    raw = line if bad.raw is None else bad.raw
                    self.quarantine(relpath, lineno, bad.reason, bad.detail, raw)
                else:
                    self.bad_elsewhere += 1
            except Exception as exc:  # noqa: BLE001  any failure of one line is that line's
                if own:
                    detail = f"{type(exc).__name__} while reading the line: {exc}"[:500]
                    self.quarantine(relpath, lineno, UNPROCESSABLE, detail, line)
                else:
                    self.bad_elsewhere += 1
            if len(self.cols["source_line"]) >= BATCH_ROWS:
                self.flush()

    def _parse(self, line: bytes, terminated: bool) -> Any:
        """The line's JSON value; _BLANK for a blank line (counted). Raises _Quarantined."""
        if len(line) > MAX_LINE_BYTES:
            _, reason, detail, head = too_long(LongLine(0, len(line), line[:RAW_KEEP_BYTES]))
            raise _Quarantined(reason, detail, head)
        if exceeds_depth(line):
            raise _Quarantined(TOO_DEEP, f"arrays and objects nest deeper than {MAX_DEPTH}")
        try:
            if may_hold_long_number(line):  # loads_exact's own test, done once here
                obj = loads_exact(line)
                if b"\\u" in line or not line.isascii():
                    check_unicode(line, obj)  # the stdlib parser is laxer than orjson
                return obj
            return orjson.loads(line)
        except ValueError as exc:
            if not line.strip():
                self.blank_lines += 1
                return _BLANK
            raise _Quarantined(*undecodable(line, terminated, exc)) from None

    def _fast_row(
        self, obj: dict, lineno: int, relpath: str, own: bool, file_hour: dt.datetime
    ) -> bool:
        """Take a line of the producer's plain shape; False when it is not one."""
        get = obj.get
        # Any: the exact type tests below narrow them (mypy does not follow `type(x) is`).
        stream: Any = get("stream")
        seq: Any = get("seq")
        event_type: Any = get("event_type")
        emitted_text: Any = get("emitted_at")
        payload: Any = get("payload")
        stored: Any = get("checksum")
        declared, logged_text = get("category"), get("logged_at")
        if not (
            type(stream) is str
            and 0 < len(stream) <= MAX_STREAM_LENGTH
            and type(seq) is int
            and 1 <= seq <= MAX_SAFE_INTEGER
            and type(event_type) is str
            and event_type
            and type(emitted_text) is str
            and _NORMALISED.fullmatch(emitted_text)
            and type(payload) is dict
            and type(stored) is str
            and _HEX64.fullmatch(stored)
            and (declared is None or declared in CATEGORIES)
            and (
                not logged_text or (type(logged_text) is str and _NORMALISED.fullmatch(logged_text))
            )  # noqa: E501
        ):
            return False
        try:
            emitted = dt.datetime.fromisoformat(emitted_text)
            logged = dt.datetime.fromisoformat(logged_text) if logged_text else None
        except ValueError:
            return False
        if not self.start <= emitted < self.end:
            self._outside(emitted, own, file_hour)
            return True
        try:
            body = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
            payload_text = body.decode()
        except orjson.JSONEncodeError:
            body = b""
            payload_text = json.dumps(
                payload, separators=(",", ":"), ensure_ascii=False, sort_keys=True
            )
        text = None
        if body:
            text = proven_text(
                emitted_text.encode(),
                self._json(event_type),
                payload,
                body,
                seq,
                self._json(stream),
            )
        if text is not None:
            valid = hashlib.sha256(text).hexdigest() == stored
        else:
            valid = checksum_matches(stream, seq, event_type, emitted_text, payload, stored)
        self._append(
            stream,
            seq,
            event_type,
            declared,
            emitted_text,
            logged_text if logged else None,
            payload_text,
            stored,
            valid,
            relpath,
            lineno,
        )
        return True

    def _json(self, value: str) -> bytes:
        found = self.as_json.get(value)
        if found is None:
            found = self.as_json[value] = orjson.dumps(value)
        return found

    def _outside(self, emitted: dt.datetime, own: bool, file_hour: dt.datetime) -> None:
        self.outside += 1
        if own and self._unreachable(emitted, file_hour):
            self.stray += 1
            us = (emitted - _EPOCH) // dt.timedelta(microseconds=1)
            raise _Quarantined(STRAY_EVENT, self.stray_detail(us, file_hour))

    def _general_row(
        self, obj: Any, lineno: int, relpath: str, own: bool, file_hour: dt.datetime
    ) -> None:
        if not own:
            # Most lines of a neighbouring file belong to its own hour: skip them on the
            # timestamp alone; their bad lines are quarantined by their own window.
            try:
                emitted = parse_timestamp(obj.get("emitted_at") if type(obj) is dict else None)
            except InvalidEventError:
                self.bad_elsewhere += 1
                return
            if not self.start <= emitted < self.end:
                self.outside += 1
                return
        try:
            event = parse_event(obj)
        except InvalidEventError as exc:
            raise _Quarantined(exc.reason, exc.detail) from None
        if not self.start <= event.emitted_at < self.end:
            self._outside(event.emitted_at, own, file_hour)
            return
        self._append_event(event, obj["emitted_at"], relpath, lineno)

    def _append_event(self, event: Event, emitted_text: str, relpath: str, lineno: int) -> None:
        try:
            # Decoded to str: the bytes orjson returns keep its whole (kilobytes-large)
            # write buffer allocated, which would multiply the memory held per row.
            payload_text = orjson.dumps(event.payload, option=orjson.OPT_SORT_KEYS).decode()
        except orjson.JSONEncodeError:  # integers beyond 64 bits: orjson cannot write them
            payload_text = json.dumps(
                event.payload, separators=(",", ":"), ensure_ascii=False, sort_keys=True
            )
        # Text already in the normalised form is used as is (parse_event accepted it, and a
        # 27-character ``...THH:MM:SS.ffffffZ`` has no other reading).
        if len(emitted_text) != 27 or emitted_text[26] != "Z" or emitted_text[10] != "T":
            emitted_text = event.emitted_at.strftime(TIMESTAMP_FORMAT)
        valid = checksum_matches(
            event.stream, event.seq, event.event_type, emitted_text, event.payload, event.checksum
        )
        logged = None if event.logged_at is None else format_timestamp(event.logged_at)
        self._append(
            event.stream,
            event.seq,
            event.event_type,
            event.category,
            format_timestamp(event.emitted_at),
            logged,
            payload_text,
            event.checksum,
            valid,
            relpath,
            lineno,
        )

    def _append(
        self,
        stream: str,
        seq: int,
        event_type: str,
        declared: str | None,
        emitted_text: str,
        logged_text: str | None,
        payload_text: str,
        checksum: str,
        valid: bool,
        relpath: str,
        lineno: int,
    ) -> None:
        category, unclassified = self.classify(event_type)
        if declared is not None:
            category, unclassified = declared, False
        cols = self.cols
        cols["stream"].append(stream)
        cols["seq"].append(seq)
        cols["event_type"].append(event_type)
        cols["category"].append(category)
        cols["declared_category"].append(declared)
        cols["unclassified"].append(unclassified)
        cols["emitted_at"].append(emitted_text)
        cols["logged_at"].append(logged_text)
        cols["payload"].append(payload_text)
        cols["checksum"].append(checksum)
        cols["checksum_valid"].append(valid)
        cols["source_file"].append(relpath)
        cols["source_line"].append(lineno)

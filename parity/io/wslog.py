"""Reading the WebSocket log, the source of truth (DESIGN 3).

The log is a directory of hour files, ``<log_dir>/YYYY-MM-DD/HH.jsonl`` or ``HH.jsonl.gz``,
named for the UTC hour in which each line was *logged*. An event belongs to the partition
of its ``emitted_at``, so reading the window ``[start, end)`` scans the files for the hours
from ``start - 1h`` up to (not including) ``end + grace``: an event logged up to an hour
early, or up to ``grace`` late, is still found. An event at exactly ``HH:00:00.000000``
belongs to the hour it starts.

Bad lines are attributed to the partition of the *file* they sit in (a line that cannot be
parsed has no trustworthy ``emitted_at``), so each bad line is quarantined by exactly one
partition: the one whose ``[start, end)`` contains the file's hour. Bad lines met in the
neighbouring files are only counted here.

Line policy:

- blank or whitespace-only lines are skipped and counted (``blank_lines``);
- a line longer than :data:`MAX_LINE_BYTES` (newline excluded) is quarantined as
  ``line_too_long`` without ever being held whole: it is read in bounded chunks and only its
  first :data:`RAW_KEEP_BYTES` are kept;
- every other quarantined line keeps its raw bytes in full (newline excluded);
- the last line of a file without a trailing newline is an ordinary line when it parses
  (the file may still be being appended to); when it does not, it is quarantined and the
  detail says so;
- a gzip file cut short keeps the lines decompressed before the cut and records the cut
  once (``truncated_gzip``, at the line where reading stopped); a damaged one likewise
  (``corrupt_gzip``).

Input files are opened read-only and never modified. Memory is bounded by one line (at most
``MAX_LINE_BYTES``) plus I/O buffers, apart from the output table itself.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import json
import os
import re
import tempfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from parity.core.classify import Classifier
from parity.core.errors import InvalidEventError, LogReadError
from parity.core.events import (
    CANDIDATE,
    CATEGORIES,
    MAX_SAFE_INTEGER,
    MAX_STREAM_LENGTH,
    TIMESTAMP_FORMAT,
    Event,
    checksum_matches,
    format_timestamp,
    is_jcs_text,
    loads_exact,
    may_hold_long_number,
    parse_event,
    parse_timestamp,
)
from parity.core.schema import QUARANTINE_SCHEMA, UTC_US, WS_SNAPSHOT_SCHEMA
from parity.io import parallel
from parity.io.snapshot import SnapshotWriter, Spill

HOUR = dt.timedelta(hours=1)
DEFAULT_GRACE = dt.timedelta(hours=1)
#: Longest line accepted, newline excluded (DESIGN 3: "over 1 MiB" is quarantined).
MAX_LINE_BYTES = 1 << 20
#: How much of an overlong line the quarantine keeps.
RAW_KEEP_BYTES = 64 << 10
_READ_LIMIT = MAX_LINE_BYTES + 1  # one line's content plus its newline
_BUFFER_BYTES = 256 << 10
#: Rows gathered as Python objects before they become an Arrow batch: Python objects take
#: several times the Arrow bytes, so the lists are kept short.
BATCH_ROWS = 8192
_gzip_open = gzip.open  # ``write_events`` has a parameter named ``gzip``
#: A plain file at least this large is read by all cores, each a range of whole lines.
SPLIT_MIN_BYTES = 8 << 20
#: The normalised timestamp (``2026-11-28T10:00:01.123000Z``), ASCII digits only: text of
#: this shape that ``fromisoformat`` accepts is what ``parse_timestamp`` accepts, same instant.
_NORMALISED = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")
_HEX64 = re.compile(r"[0-9a-f]{64}")

# Quarantine reasons (the ``reason`` column).
NOT_UTF8 = "not_utf8"
INVALID_JSON = "invalid_json"
LINE_TOO_LONG = "line_too_long"
NOT_AN_OBJECT = "not_an_object"
MISSING_FIELD = "missing_field"
INVALID_FIELD = "invalid_field"
TRUNCATED_GZIP = "truncated_gzip"
CORRUPT_GZIP = "corrupt_gzip"
QUARANTINE_REASONS = (
    NOT_UTF8,
    INVALID_JSON,
    LINE_TOO_LONG,
    NOT_AN_OBJECT,
    MISSING_FIELD,
    INVALID_FIELD,
    TRUNCATED_GZIP,
    CORRUPT_GZIP,
)

SORT_KEYS = [
    ("stream", "ascending"),
    ("seq", "ascending"),
    ("source_file", "ascending"),
    ("source_line", "ascending"),
]


@dataclass(frozen=True, slots=True)
class HourFile:
    """One hour file of the log."""

    hour: dt.datetime  # UTC start of the hour the lines were logged in
    path: Path
    relpath: str  # relative to the log directory, ``/``-separated

    @property
    def compressed(self) -> bool:
        return self.relpath.endswith(".gz")


@dataclass(frozen=True)
class LogRead:
    """The result of reading one window of the log."""

    #: Valid lines whose ``emitted_at`` is in the window, duplicates included
    #: (``WS_SNAPSHOT_SCHEMA``, sorted by stream, seq, source_file, source_line).
    events: pa.Table
    #: Bad lines from the files whose hour is in the window (``QUARANTINE_SCHEMA``).
    quarantined: pa.Table
    #: Every file scanned, relative to the log directory, in reading order.
    files_read: list[str]
    #: Lines read from all scanned files, blank ones included.
    lines_read: int
    blank_lines: int = 0
    #: Valid events in the scanned files that belong to another window.
    events_outside_window: int = 0
    #: Bad lines in the neighbouring files; the window of their file quarantines them.
    bad_lines_elsewhere: int = 0
    #: Valid events in this window's own files logged so far from their ``emitted_at`` that
    #: no hourly read with the same ``grace`` scans their file: they would never be counted.
    stray_events: int = 0
    quarantine_counts: dict[str, int] = field(default_factory=dict)

    @property
    def quarantined_lines(self) -> int:
        return self.quarantined.num_rows


def floor_hour(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


def hour_file_paths(log_dir: Path, hour: dt.datetime) -> tuple[Path, Path]:
    """The two possible files of an hour: plain and gzip."""
    day = log_dir / f"{hour:%Y-%m-%d}"
    return day / f"{hour:%H}.jsonl", day / f"{hour:%H}.jsonl.gz"


def _check_log_dir(log_dir: Path) -> None:
    try:
        is_dir = log_dir.is_dir()
    except OSError as exc:
        raise LogReadError(f"WebSocket log directory {log_dir}: cannot read ({exc})") from None
    if not is_dir:
        raise LogReadError(
            f"WebSocket log directory {log_dir} does not exist or is not a directory: "
            "set PARITY_WS_LOG_DIR to the directory holding YYYY-MM-DD/HH.jsonl files"
        )


def list_hour_files(log_dir: Path, start: dt.datetime, end: dt.datetime) -> list[HourFile]:
    """The hour files that exist for the hours overlapping ``[start, end)``, in time order
    (an hour's ``.jsonl`` before its ``.jsonl.gz`` when both exist: both are read).

    Raises LogReadError when ``log_dir`` is missing; hours without files are skipped.
    """
    _require_aware(start, end)
    log_dir = Path(log_dir)
    _check_log_dir(log_dir)
    out = []
    hour = floor_hour(start)
    while hour < end:
        for path in hour_file_paths(log_dir, hour):
            try:
                exists = path.is_file()
            except OSError as exc:
                raise LogReadError(f"WebSocket log file {path}: cannot stat ({exc})") from None
            if exists:
                out.append(HourFile(hour, path, path.relative_to(log_dir).as_posix()))
        hour += HOUR
    return out


def _require_aware(start: dt.datetime, end: dt.datetime) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("window bounds must be timezone-aware datetimes")
    if end <= start:
        raise ValueError(f"empty window: end {end.isoformat()} is not after {start.isoformat()}")


def read_window(
    log_dir: Path,
    start: dt.datetime,
    end: dt.datetime,
    *,
    classifier: Classifier,
    grace: dt.timedelta = DEFAULT_GRACE,
    quarantine_path: Path | None = None,
    sink: SnapshotWriter | None = None,
) -> LogRead:
    """Read the events of ``[start, end)`` from the log (see the module docstring).

    ``sink``, when given, receives the events in batches (``LogRead.events`` is then
    empty): the hour is never held in memory whole (:mod:`parity.snapshot`).

    ``quarantine_path``, when given, receives the quarantined lines as Parquet (written to a
    temporary file beside it, then renamed, so a reader never sees half a file).
    Raises LogReadError when the directory or a whole file cannot be read.
    """
    _require_aware(start, end)
    if grace < dt.timedelta(0):
        raise ValueError("grace must not be negative")
    start, end = start.astimezone(dt.UTC), end.astimezone(dt.UTC)
    files = list_hour_files(Path(log_dir), floor_hour(start) - HOUR, end + grace)
    reader = _WindowReader(start, end, grace, classifier)
    reader.sink = sink
    for hour_file in files:
        reader.read_file(hour_file, own=start <= hour_file.hour < end)
    result = reader.result([f.relpath for f in files])
    if quarantine_path is not None:
        write_parquet_atomic(result.quarantined, Path(quarantine_path))
    return result


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` via a temporary file in the same directory and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _WindowReader:
    """Accumulates one window's columns across files (the hot path: keep it lean)."""

    def __init__(
        self, start: dt.datetime, end: dt.datetime, grace: dt.timedelta, classifier: Classifier
    ) -> None:
        self.start, self.end, self.grace = start, end, grace
        self.classifier = classifier
        self._categories: dict[str, tuple[str, bool]] = {}
        self.cols: dict[str, list[Any]] = {name: [] for name in WS_SNAPSHOT_SCHEMA.names}
        self.batches: list[pa.RecordBatch] = []
        self.q: dict[str, list[Any]] = {name: [] for name in QUARANTINE_SCHEMA.names}
        self.lines_read = 0
        self.blank_lines = 0
        self.outside = 0
        self.bad_elsewhere = 0
        self.stray = 0
        self.sink: SnapshotWriter | None = None
        self.spill: Spill | None = None  # a forked share's rows, for the parent's sink

    def _flush(self) -> None:
        """Turn the gathered rows into an Arrow batch; the lists are emptied in place."""
        batch = _to_batch(self.cols)
        if self.sink is not None:
            self.sink.write(batch)
        else:
            self.batches.append(batch)
        for column in self.cols.values():
            column.clear()

    def result(self, files_read: list[str]) -> LogRead:
        self._flush()
        events = pa.Table.from_batches(self.batches, schema=WS_SNAPSHOT_SCHEMA)
        self.batches = []
        if events.num_rows > 1:  # with a sink, the sink sorts each part
            events = events.sort_by(SORT_KEYS)
        quarantined = pa.table(self.q, schema=QUARANTINE_SCHEMA)
        return LogRead(
            events=events,
            quarantined=quarantined,
            files_read=files_read,
            lines_read=self.lines_read,
            blank_lines=self.blank_lines,
            events_outside_window=self.outside,
            bad_lines_elsewhere=self.bad_elsewhere,
            stray_events=self.stray,
            quarantine_counts=dict(Counter(self.q["reason"])),
        )

    def _quarantine(self, relpath: str, lineno: int, reason: str, detail: str, raw: bytes) -> None:
        q = self.q
        q["source_file"].append(relpath)
        q["source_line"].append(lineno)
        q["reason"].append(reason)
        q["detail"].append(detail)
        q["raw"].append(raw)

    def _classify(self, event_type: str) -> tuple[str, bool]:
        found = self._categories.get(event_type)
        if found is None:
            ruled = self.classifier.match(event_type)
            if ruled is None:
                found = (self.classifier.classify(event_type), True)
            else:
                found = (ruled, False)
            self._categories[event_type] = found
        return found

    def read_file(self, hour_file: HourFile, *, own: bool) -> None:
        """Read one file. ``own``: its hour is in the window, so its bad lines are ours."""
        path, relpath = hour_file.path, hour_file.relpath
        if not hour_file.compressed:
            try:
                size = path.stat().st_size
            except OSError:
                size = 0
            shares = parallel.workers(size // (SPLIT_MIN_BYTES // parallel.MIN_ITEMS_PER_SHARE))
            if size >= SPLIT_MIN_BYTES and shares > 1:
                self._read_shared(hour_file, own, size, shares)
                return
        try:
            fh = (
                cast(BinaryIO, gzip.open(path, "rb"))
                if hour_file.compressed
                else open(path, "rb", buffering=_BUFFER_BYTES)
            )
        except OSError as exc:
            raise _cannot_open(path, exc) from None
        lineno = 0
        with fh:
            try:
                lineno = self._read_lines(fh, relpath, own, hour_file.hour)
            except _StreamStopped as stop:
                if own:
                    self._quarantine(relpath, stop.lineno, stop.reason, stop.detail, b"")
                else:
                    self.bad_elsewhere += 1
                lineno = stop.lineno - 1
            except OSError as exc:
                raise _read_failed(path, exc) from None
        self.lines_read += lineno

    def _read_shared(self, hour_file: HourFile, own: bool, size: int, shares: int) -> None:
        """Read a plain file in ``shares`` ranges of whole lines, one per core
        (:mod:`parity.parallel`), and merge the ranges' results in file order: the outcome is
        that of reading the file from start to end."""
        path = hour_file.path
        try:
            with open(path, "rb", buffering=0) as fh:
                bounds, first_lines = _line_ranges(fh, size, shares)
        except OSError as exc:
            raise _cannot_open(path, exc) from None

        def share(i: int) -> _WindowReader:
            part = _WindowReader(self.start, self.end, self.grace, self.classifier)
            part._categories = self._categories
            part.sink = self.sink.sibling() if self.sink is not None else None
            try:
                with _open_range(path, bounds[i], bounds[i + 1]) as fh:
                    last = part._read_lines(
                        fh, hour_file.relpath, own, hour_file.hour, first_line=first_lines[i]
                    )
            except OSError as exc:
                raise _read_failed(path, exc) from None
            part.lines_read = last - first_lines[i]
            part._flush()
            if part.sink is not None:
                part.spill, part.sink = part.sink.close_spill(), None
            part.classifier = None  # type: ignore[assignment]  # not sent back
            return part

        for part in parallel.run_shares(share, len(bounds) - 1):
            self._merge(part)

    def _merge(self, part: _WindowReader) -> None:
        self._flush()
        self.batches.extend(part.batches)
        if part.spill is not None and self.sink is not None:
            self.sink.adopt(part.spill)
        for name, values in part.q.items():
            self.q[name].extend(values)
        self.lines_read += part.lines_read
        self.blank_lines += part.blank_lines
        self.outside += part.outside
        self.bad_elsewhere += part.bad_elsewhere
        self.stray += part.stray

    def _read_lines(
        self,
        fh: BinaryIO,
        relpath: str,
        own: bool,
        file_hour: dt.datetime,
        *,
        first_line: int = 0,
    ) -> int:
        """Returns the number of the last line read (lines before ``fh`` starts: ``first_line``).
        Raises _StreamStopped on a damaged gzip stream.

        Most lines take the fast path: a line of the shape Parity's producer writes, whose
        fields are plainly valid, skips ``parse_event`` (which it would pass with the same
        values) and is verified with one orjson serialisation and one sha256 (see
        ``parity.events``). Every other line takes the general path, unchanged.
        """
        start, end = self.start, self.end
        cols = self.cols
        c_stream, c_seq, c_type = cols["stream"], cols["seq"], cols["event_type"]
        c_cat, c_declared = cols["category"], cols["declared_category"]
        c_uncl = cols["unclassified"]
        c_emitted, c_logged, c_payload = cols["emitted_at"], cols["logged_at"], cols["payload"]
        c_checksum, c_valid = cols["checksum"], cols["checksum_valid"]
        c_file, c_line = cols["source_file"], cols["source_line"]
        classify, flush = self._classify, self._flush
        readline = fh.readline
        dumps, sha256, sort_keys = orjson.dumps, hashlib.sha256, orjson.OPT_SORT_KEYS
        loads = orjson.loads
        normalised, fromiso, hex64 = (
            _NORMALISED.fullmatch,
            dt.datetime.fromisoformat,
            _HEX64.fullmatch,
        )
        as_json: dict[str, bytes] = {}  # stream and event_type values repeat: dump each once
        lineno = first_line
        while True:
            lineno += 1
            try:
                line = readline(_READ_LIMIT)
            except EOFError:
                raise _StreamStopped(
                    lineno,
                    TRUNCATED_GZIP,
                    f"compressed stream ends before its end marker; {lineno - 1} lines before "
                    "the cut were read, the rest of the file is lost",
                ) from None
            except (gzip.BadGzipFile, zlib.error) as exc:
                raise _StreamStopped(
                    lineno,
                    CORRUPT_GZIP,
                    f"compressed stream is damaged ({exc}); {lineno - 1} lines before it were read",
                ) from None
            if not line:
                return lineno - 1
            if len(line) == _READ_LIMIT and line[-1] != 0x0A:
                total = self._drain(readline, lineno, len(line))
                if own:
                    self._quarantine(
                        relpath,
                        lineno,
                        LINE_TOO_LONG,
                        f"line is {total} bytes, over the {MAX_LINE_BYTES}-byte limit; "
                        f"the first {RAW_KEEP_BYTES} bytes are kept",
                        line[:RAW_KEEP_BYTES],
                    )
                else:
                    self.bad_elsewhere += 1
                continue
            try:
                if may_hold_long_number(line):  # loads_exact's own test, done once here
                    obj = loads_exact(line)
                    if b"\\u" in line or not line.isascii():
                        _check_unicode(line, obj)  # the stdlib parser is laxer than orjson
                else:
                    obj = loads(line)
            except ValueError as exc:
                if not line.strip():
                    self.blank_lines += 1
                elif own:
                    self._quarantine(relpath, lineno, *_undecodable(line, exc))
                else:
                    self.bad_elsewhere += 1
                continue

            if type(obj) is dict:
                get = obj.get
                # Any: the exact type tests below narrow them (mypy does not follow `type(x) is`).
                stream: Any = get("stream")
                seq: Any = get("seq")
                event_type: Any = get("event_type")
                emitted_text: Any = get("emitted_at")
                payload: Any = get("payload")
                stored: Any = get("checksum")
                declared, logged_text = get("category"), get("logged_at")
                emitted = logged = None
                if (
                    type(stream) is str
                    and 0 < len(stream) <= MAX_STREAM_LENGTH
                    and type(seq) is int
                    and 1 <= seq <= MAX_SAFE_INTEGER
                    and type(event_type) is str
                    and event_type
                    and type(emitted_text) is str
                    and normalised(emitted_text)
                    and type(payload) is dict
                    and type(stored) is str
                    and hex64(stored)
                    and (declared is None or declared in CATEGORIES)
                    and (not logged_text or (type(logged_text) is str and normalised(logged_text)))
                ):
                    try:
                        emitted = fromiso(emitted_text)
                        logged = fromiso(logged_text) if logged_text else None
                    except ValueError:
                        emitted = None
                if emitted is not None:  # parse_event would accept the line: the fast path
                    if not start <= emitted < end:
                        self.outside += 1
                        if own and self._unreachable(emitted, file_hour):
                            self.stray += 1
                        continue
                    try:
                        body = dumps(payload, option=sort_keys)
                        payload_text = body.decode()
                    except orjson.JSONEncodeError:
                        body = b""
                        payload_text = json.dumps(
                            payload, separators=(",", ":"), ensure_ascii=False, sort_keys=True
                        )
                    if body and is_jcs_text(body):
                        stream_json = as_json.get(stream)
                        if stream_json is None:
                            stream_json = as_json[stream] = dumps(stream)
                        type_json = as_json.get(event_type)
                        if type_json is None:
                            type_json = as_json[event_type] = dumps(event_type)
                        text = CANDIDATE % (
                            emitted_text.encode(),
                            type_json,
                            body,
                            seq,
                            stream_json,
                        )
                        valid = sha256(text).hexdigest() == stored
                    else:
                        valid = checksum_matches(
                            stream, seq, event_type, emitted_text, payload, stored
                        )
                    category, unclassified = classify(event_type)
                    if declared is not None:
                        category, unclassified = declared, False
                    # The general path below appends the same row; kept inline on purpose:
                    # a shared helper is one more call per line on the hottest loop.
                    c_stream.append(stream)
                    c_seq.append(seq)
                    c_type.append(event_type)
                    c_cat.append(category)
                    c_declared.append(declared)
                    c_uncl.append(unclassified)
                    c_emitted.append(emitted_text)  # normalised text: cast per batch
                    c_logged.append(logged_text if logged is not None else None)
                    c_payload.append(payload_text)
                    c_checksum.append(stored)
                    c_valid.append(valid)
                    c_file.append(relpath)
                    c_line.append(lineno)
                    if len(c_line) >= BATCH_ROWS:
                        flush()
                    continue

            if not own:
                # Most lines of a neighbouring file belong to its own hour: skip them on the
                # timestamp alone; their bad lines are quarantined by their own window.
                try:
                    emitted = parse_timestamp(obj.get("emitted_at") if type(obj) is dict else None)
                except InvalidEventError:
                    self.bad_elsewhere += 1
                    continue
                if not start <= emitted < end:
                    self.outside += 1
                    continue
            try:
                event = parse_event(obj)
            except InvalidEventError as exc:
                if own:
                    self._quarantine(relpath, lineno, exc.reason, exc.detail, _strip_eol(line))
                else:
                    self.bad_elsewhere += 1
                continue
            emitted = event.emitted_at
            if not start <= emitted < end:
                self.outside += 1
                if own and self._unreachable(emitted, file_hour):
                    self.stray += 1
                continue

            stream, seq, event_type = event.stream, event.seq, event.event_type
            payload = event.payload
            try:
                # Decoded to str: the bytes orjson returns keep its whole (kilobytes-large)
                # write buffer allocated, which would multiply the memory held per row.
                payload_text = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS).decode()
            except orjson.JSONEncodeError:  # integers beyond 64 bits: orjson cannot write them
                payload_text = json.dumps(
                    payload, separators=(",", ":"), ensure_ascii=False, sort_keys=True
                )
            declared = event.category
            category, unclassified = classify(event_type)
            if declared is not None:
                category, unclassified = declared, False
            c_stream.append(stream)
            c_seq.append(seq)
            c_type.append(event_type)
            c_cat.append(category)
            c_declared.append(declared)
            c_uncl.append(unclassified)
            c_emitted.append(format_timestamp(emitted))
            c_logged.append(None if event.logged_at is None else format_timestamp(event.logged_at))
            c_payload.append(payload_text)
            c_checksum.append(event.checksum)
            # Text already in the normalised form is used as is (parse_event accepted it,
            # and a 27-character ``...THH:MM:SS.ffffffZ`` has no other reading): strftime
            # would be a tenth of the cost of a line.
            emitted_text = obj["emitted_at"]
            if len(emitted_text) != 27 or emitted_text[26] != "Z" or emitted_text[10] != "T":
                emitted_text = emitted.strftime(TIMESTAMP_FORMAT)
            c_valid.append(
                checksum_matches(stream, seq, event_type, emitted_text, payload, event.checksum)
            )
            c_file.append(relpath)
            c_line.append(lineno)
            if len(c_line) >= BATCH_ROWS:
                flush()

    @staticmethod
    def _drain(readline: Callable[[int], bytes], lineno: int, already: int) -> int:
        """Skip the rest of an overlong line in bounded chunks; returns its length."""
        total = already
        while True:
            try:
                chunk = readline(_READ_LIMIT)
            except EOFError:
                raise _StreamStopped(
                    lineno,
                    TRUNCATED_GZIP,
                    f"compressed stream ends before its end marker inside an overlong line; "
                    f"{lineno - 1} lines before it were read",
                ) from None
            total += len(chunk)
            if not chunk or chunk[-1] == 0x0A:
                return total - (1 if chunk else 0)

    def _unreachable(self, emitted: dt.datetime, file_hour: dt.datetime) -> bool:
        partition = floor_hour(emitted)
        return not partition - HOUR <= file_hour < partition + HOUR + self.grace


#: The snapshot's columns as the reader gathers them: timestamps as their normalised text
#: (``2026-11-28T10:00:01.123000Z``), which Arrow casts a batch at a time: turning datetime
#: objects into Arrow costs about 2.4 us each, a fifth of the cost of a line.
_GATHERED_SCHEMA = pa.schema(
    [
        pa.field(f.name, pa.string(), f.nullable) if f.type == UTC_US else f
        for f in WS_SNAPSHOT_SCHEMA
    ]
)


def _to_batch(cols: dict[str, list[Any]]) -> pa.RecordBatch:
    """The gathered rows as a batch of ``WS_SNAPSHOT_SCHEMA``. Every timestamp text was
    accepted by ``datetime.fromisoformat`` in the normalised form, which Arrow parses too."""
    return pa.RecordBatch.from_pydict(cols, schema=_GATHERED_SCHEMA).cast(WS_SNAPSHOT_SCHEMA)


def _cannot_open(path: Path, exc: OSError) -> LogReadError:
    return LogReadError(
        f"WebSocket log file {path}: cannot open ({exc.strerror or exc}); "
        "check that it exists and is readable"
    )


def _read_failed(path: Path, exc: OSError) -> LogReadError:
    return LogReadError(f"WebSocket log file {path}: read failed ({exc.strerror or exc})")


def _line_ranges(fh: BinaryIO, size: int, shares: int) -> tuple[list[int], list[int]]:
    """Byte bounds splitting a file into about ``shares`` ranges that each start a line,
    and the number of lines before each range."""
    bounds = [0]
    for i in range(1, shares):
        at = max(size * i // shares, bounds[-1])
        fh.seek(at)
        while True:  # forward to the next line start (in bounded reads: lines may be long)
            chunk = fh.read(_BUFFER_BYTES)
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
            lines += chunk.count(b"\n")
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


def _open_range(path: Path, start: int, end: int) -> BinaryIO:
    raw = _RangeRaw(os.open(path, os.O_RDONLY), start, end)
    return cast(BinaryIO, io.BufferedReader(raw, _BUFFER_BYTES))


class _StreamStopped(Exception):
    def __init__(self, lineno: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.lineno, self.reason, self.detail = lineno, reason, detail


def _strip_eol(line: bytes) -> bytes:
    return line[:-1] if line.endswith(b"\n") else line


def _undecodable(line: bytes, exc: ValueError) -> tuple[str, str, bytes]:
    """Reason, detail and raw bytes for a line that did not parse."""
    raw = _strip_eol(line)
    unterminated = (
        ""
        if line.endswith(b"\n")
        else (" (last line of the file has no newline: it may still be being written)")
    )
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as err:
        return NOT_UTF8, f"not UTF-8: {err.reason} at byte {err.start}{unterminated}", raw
    return INVALID_JSON, f"not valid JSON: {exc}{unterminated}", raw


def _check_unicode(line: bytes, obj: object) -> None:
    """Refuse what orjson refuses but the standard library accepts: encoded or escaped
    lone surrogates, which no UTF-8 column can hold."""
    try:
        line.decode("utf-8")
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeError as exc:
        raise ValueError(f"lone surrogate in text ({exc})") from None


def write_events(
    log_dir: Path,
    events: Iterable[Event],
    *,
    logged_at: Callable[[Event], dt.datetime] | None = None,
    gzip: bool = False,
) -> list[Path]:
    """Append events to the hour files they were logged in (as a producer's logger would).

    The hour is ``logged_at(event)`` when given, else the event's ``logged_at``, else its
    ``emitted_at``. Each line is ``orjson.dumps(event.to_json_dict())`` and a newline. With
    ``gzip`` the ``.jsonl.gz`` files are appended to (one gzip member per call). Returns the
    files written, in the order first touched.
    """
    log_dir = Path(log_dir)
    handles: dict[Path, BinaryIO] = {}
    try:
        for event in events:
            when = logged_at(event) if logged_at is not None else event.logged_at
            plain, packed = hour_file_paths(log_dir, floor_hour(when or event.emitted_at))
            path = packed if gzip else plain
            fh = handles.get(path)
            if fh is None:
                path.parent.mkdir(parents=True, exist_ok=True)
                fh = handles[path] = _open_append(path, gzip)
            fh.write(orjson.dumps(event.to_json_dict()) + b"\n")
    finally:
        for fh in handles.values():
            fh.close()
    return list(handles)


def _open_append(path: Path, compressed: bool) -> BinaryIO:
    return cast(BinaryIO, _gzip_open(path, "ab")) if compressed else open(path, "ab")

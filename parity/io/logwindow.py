"""One window's read of the WebSocket log: blocks of lines in, Arrow batches out.

Each block (:mod:`parity.io.logblocks`) goes to the native kernel when it is built
(:mod:`parity.io.native`): it returns the block's events as Arrow buffers and flags the
lines it leaves undecided, which Python then reads one by one (:mod:`parity.io.loglines`),
exactly as it reads every line without the kernel. Either way a line ends up in exactly one
of: the window's events, the events of other windows (counted), the quarantine (the
window's own files), or the bad lines of neighbouring files (counted).
"""

from __future__ import annotations

import datetime as dt
import gzip
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from parity.core.classify import Classifier
from parity.core.errors import LogReadError
from parity.core.events import CATEGORIES
from parity.core.schema import QUARANTINE_SCHEMA, UTC_US, WS_SNAPSHOT_SCHEMA
from parity.io import native, parallel
from parity.io.logblocks import (
    STRAY_EVENT,
    HourFile,
    Lines,
    LongLine,
    StreamStopped,
    line_ranges,
    open_range,
    read_blocks,
    split_lines,
)
from parity.io.loglines import LineReader, too_long
from parity.io.snapshot import SnapshotWriter, Spill

HOUR = dt.timedelta(hours=1)
#: A plain file at least this large is read by all cores, each a range of whole lines.
SPLIT_MIN_BYTES = 8 << 20
_BUFFER_BYTES = 256 << 10
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_DECLARED = pa.array([None, *CATEGORIES], pa.string())

SORT_KEYS = [
    ("stream", "ascending"),
    ("seq", "ascending"),
    ("source_file", "ascending"),
    ("source_line", "ascending"),
]


@dataclass(frozen=True)
class LogRead:
    """The result of reading one window of the log."""

    #: Valid lines whose ``emitted_at`` is in the window, duplicates included
    #: (``WS_SNAPSHOT_SCHEMA``, sorted by stream, seq, source_file, source_line).
    events: pa.Table
    #: Lines from the files whose hour is in the window that are not the window's events
    #: nor another window's (``QUARANTINE_SCHEMA``): bad lines, stray events, unreadable
    #: hour paths.
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
    #: no hourly read with the same ``grace`` scans their file: quarantined as
    #: ``stray_event``, since no window would ever count them.
    stray_events: int = 0
    #: Hour paths of this window that exist but are not regular files (quarantined as
    #: ``unreadable_path``), relative to the log directory.
    unreadable_paths: list[str] = field(default_factory=list)
    quarantine_counts: dict[str, int] = field(default_factory=dict)

    @property
    def quarantined_lines(self) -> int:
        return self.quarantined.num_rows


def _us(value: dt.datetime) -> int:
    return (value - _EPOCH) // dt.timedelta(microseconds=1)


class WindowReader(LineReader):
    """Accumulates one window's rows across files."""

    def __init__(
        self, start: dt.datetime, end: dt.datetime, grace: dt.timedelta, classifier: Classifier
    ) -> None:
        super().__init__(start, end, grace, classifier)
        self.batches: list[pa.RecordBatch] = []
        self.lines_read = 0
        self.sink: SnapshotWriter | None = None
        self.spill: Spill | None = None  # a forked share's rows, for the parent's sink
        self.unreadable: list[str] = []

    def emit(self, batch: pa.RecordBatch) -> None:
        if self.sink is not None:
            self.sink.write(batch)
        else:
            self.batches.append(batch)

    def result(self, files_read: list[str]) -> LogRead:
        self.flush()
        events = pa.Table.from_batches(self.batches, schema=WS_SNAPSHOT_SCHEMA)
        self.batches = []
        if events.num_rows > 1:  # with a sink, the sink sorts each part
            events = events.sort_by(SORT_KEYS)
        # In file and line order, however the lines were shared between kernel and Python.
        quarantined = pa.table(self.q, schema=QUARANTINE_SCHEMA).sort_by(
            [("source_file", "ascending"), ("source_line", "ascending")]
        )
        return LogRead(
            events=events,
            quarantined=quarantined,
            files_read=files_read,
            lines_read=self.lines_read,
            blank_lines=self.blank_lines,
            events_outside_window=self.outside,
            bad_lines_elsewhere=self.bad_elsewhere,
            stray_events=self.stray,
            unreadable_paths=list(self.unreadable),
            quarantine_counts=dict(Counter(self.q["reason"])),
        )

    def read_file(self, hour_file: HourFile, *, own: bool) -> None:
        """Read one file. ``own``: its hour is in the window, so its bad lines are ours."""
        path = hour_file.path
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
                else open(path, "rb", buffering=0)
            )
        except OSError as exc:
            raise _cannot_open(path, exc) from None
        with fh:
            self.lines_read += self._read_stream(fh, hour_file, own)

    def _read_stream(
        self, fh: BinaryIO, hour_file: HourFile, own: bool, first_line: int = 0
    ) -> int:
        """Read the blocks of ``fh``; returns the number of lines read."""
        last = first_line
        try:
            for block in read_blocks(fh, first_line=first_line, at_start=first_line == 0):
                if isinstance(block, LongLine):
                    last = block.lineno
                    if own:
                        self.quarantine(hour_file.relpath, *too_long(block))
                    else:
                        self.bad_elsewhere += 1
                    continue
                last = block.first + block.count - 1
                self._read_block(block, hour_file, own)
        except StreamStopped as stop:
            if own:
                self.quarantine(hour_file.relpath, stop.lineno, stop.reason, stop.detail, b"")
            else:
                self.bad_elsewhere += 1
            last = stop.lineno - 1
        except OSError as exc:
            raise LogReadError(
                f"WebSocket log file {hour_file.path}: read failed ({exc.strerror or exc})"
            ) from None
        return last - first_line

    def _read_block(self, block: Lines, hour_file: HourFile, own: bool) -> None:
        unterminated = 0 if block.data.endswith(b"\n") else block.first + block.count - 1
        if native.kernel is None:
            self.read_lines(
                enumerate(split_lines(block), block.first), hour_file, own, unterminated
            )
            return
        scan = native.scan_log(block.data, _us(self.start), _us(self.end), self.max_line)
        flags = scan.flags
        outside = np.flatnonzero(flags == native.OUTSIDE)
        self.outside += len(outside)
        data, starts = block.data, scan.line_starts
        if own and len(outside):
            stray = outside[self.unreachable_us(scan.emitted_us[outside], hour_file.hour)]
            for i in stray.tolist():
                self.stray += 1
                detail = self.stray_detail(int(scan.emitted_us[i]), hour_file.hour)
                line = native.line_of(data, starts, i)
                self.quarantine(hour_file.relpath, block.first + i, STRAY_EVENT, detail, line)
        if len(scan.line_index):
            self.flush()
            self.emit(self._batch(scan, block.first, hour_file.relpath))
        undecided = np.flatnonzero(flags == native.UNDECIDED)
        if len(undecided):
            chosen = (
                (block.first + i, native.line_of(data, starts, i)) for i in undecided.tolist()
            )
            self.read_lines(chosen, hour_file, own, unterminated)

    def _batch(self, scan: native.LogScan, first: int, relpath: str) -> pa.RecordBatch:
        """The kernel's rows as a batch of ``WS_SNAPSHOT_SCHEMA``."""
        rows = len(scan.line_index)
        declared = _DECLARED.take(pa.array(scan.declared, pa.int8()))
        types = scan.event_type.dictionary_encode()
        ruled = [self.classify(t) for t in types.dictionary.to_pylist()]
        category = pa.array([c for c, _ in ruled], pa.string()).take(types.indices)
        unclassified = pa.array([u for _, u in ruled], pa.bool_()).take(types.indices)
        has_declared = scan.declared != 0
        if has_declared.any():
            mask = pa.array(has_declared)
            category = pc.if_else(mask, declared, category)
            unclassified = pc.and_(unclassified, pa.array(~has_declared))
        emitted = scan.emitted_us[scan.line_index]
        logged = pa.array(scan.logged_us, pa.int64(), mask=~scan.has_logged)
        columns = {
            "stream": scan.stream,
            "seq": pa.array(scan.seq, pa.int64()),
            "event_type": scan.event_type,
            "category": category,
            "declared_category": declared,
            "unclassified": unclassified,
            "emitted_at": pa.array(emitted, pa.int64()).cast(UTC_US),
            "logged_at": logged.cast(UTC_US),
            "payload": scan.payload,
            "checksum": scan.checksum,
            "checksum_valid": pa.array(scan.checksum_valid, pa.bool_()),
            "source_file": pa.repeat(pa.scalar(relpath, pa.string()), rows),
            "source_line": pa.array(scan.line_index + first, pa.int64()),
        }
        return pa.RecordBatch.from_pydict(columns, schema=WS_SNAPSHOT_SCHEMA)

    def _read_shared(self, hour_file: HourFile, own: bool, size: int, shares: int) -> None:
        """Read a plain file in ``shares`` ranges of whole lines, one per core
        (:mod:`parity.io.parallel`), and merge the ranges' results in file order: the
        outcome is that of reading the file from start to end."""
        path = hour_file.path
        try:
            with open(path, "rb", buffering=0) as fh:
                bounds, first_lines = line_ranges(cast(BinaryIO, fh), size, shares)
        except OSError as exc:
            raise _cannot_open(path, exc) from None

        def share(i: int) -> WindowReader:
            part = WindowReader(self.start, self.end, self.grace, self.classifier)
            part.categories = self.categories
            part.sink = self.sink.sibling() if self.sink is not None else None
            try:
                with open_range(path, bounds[i], bounds[i + 1]) as fh:
                    part.lines_read = part._read_stream(fh, hour_file, own, first_lines[i])
            except OSError as exc:
                raise _cannot_open(path, exc) from None
            part.flush()
            if part.sink is not None:
                part.spill, part.sink = part.sink.close_spill(), None
            part.classifier = None  # type: ignore[assignment]  # not sent back
            return part

        for part in parallel.run_shares(share, len(bounds) - 1):
            self._merge(part)

    def _merge(self, part: WindowReader) -> None:
        self.flush()
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


def _cannot_open(path: Path, exc: OSError) -> LogReadError:
    return LogReadError(
        f"WebSocket log file {path}: cannot open ({exc.strerror or exc}); "
        "check that it exists and is readable"
    )

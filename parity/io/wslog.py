"""Reading the WebSocket log, the source of truth (contract §3).

The log is a directory of hour files, ``<log_dir>/YYYY-MM-DD/HH.jsonl`` or ``HH.jsonl.gz``,
named for the UTC hour in which each line was *logged*. An event belongs to the partition
of its ``emitted_at``, so reading the window ``[start, end)`` scans the files for the hours
from ``start - 1h`` up to (not including) ``end + grace``: an event logged up to an hour
early, or up to ``grace`` late, is still found. An event at exactly ``HH:00:00.000000``
belongs to the hour it starts.

Bad lines are attributed to the partition of the *file* they sit in (a line that cannot be
parsed has no trustworthy ``emitted_at``), so each bad line is quarantined by exactly one
partition: the one whose ``[start, end)`` contains the file's hour. Bad lines met in the
neighbouring files are only counted here. So are an hour path of the window that exists but
is not a regular file (``unreadable_path``: a directory, a FIFO, which is never opened) and
a valid event no window would ever count (``stray_event``, :mod:`parity.io.loglines`).

Files are read in blocks of whole lines (:mod:`parity.io.logblocks`), by the native kernel
where it is built and by Python otherwise (:mod:`parity.io.logwindow`); a line's outcome is
the same either way (:mod:`parity.io.loglines` defines it). Input files are opened
read-only and never modified. Memory is bounded by one block plus I/O buffers, apart from
the output table itself.
"""

from __future__ import annotations

import datetime as dt
import gzip
import os
import stat
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO, cast

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from parity.core.classify import Classifier
from parity.core.errors import LogDirectoryMissingError, LogReadError
from parity.core.events import Event
from parity.core.partitions import floor_hour
from parity.io.logblocks import (
    CORRUPT_GZIP,
    INVALID_FIELD,
    INVALID_JSON,
    LINE_TOO_LONG,
    MAX_LINE_BYTES,
    MISSING_FIELD,
    NOT_AN_OBJECT,
    NOT_UTF8,
    QUARANTINE_REASONS,
    RAW_KEEP_BYTES,
    STRAY_EVENT,
    TOO_DEEP,
    TRUNCATED_GZIP,
    UNPROCESSABLE,
    UNREADABLE_PATH,
    HourFile,
)
from parity.io.logwindow import SORT_KEYS, LogRead, WindowReader
from parity.io.snapshot import SnapshotWriter

HOUR = dt.timedelta(hours=1)
DEFAULT_GRACE = dt.timedelta(hours=1)
_gzip_open = gzip.open  # ``write_events`` has a parameter named ``gzip``

__all__ = [
    "CORRUPT_GZIP",
    "DEFAULT_GRACE",
    "HOUR",
    "INVALID_FIELD",
    "INVALID_JSON",
    "LINE_TOO_LONG",
    "MAX_LINE_BYTES",
    "MISSING_FIELD",
    "NOT_AN_OBJECT",
    "NOT_UTF8",
    "QUARANTINE_REASONS",
    "RAW_KEEP_BYTES",
    "SORT_KEYS",
    "STRAY_EVENT",
    "TOO_DEEP",
    "TRUNCATED_GZIP",
    "UNPROCESSABLE",
    "UNREADABLE_PATH",
    "HourFile",
    "LogRead",
    "hour_file_paths",
    "list_hour_files",
    "read_window",
    "write_events",
    "write_parquet_atomic",
]


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
        raise LogDirectoryMissingError(
            f"WebSocket log directory {log_dir} does not exist or is not a directory: "
            "set PARITY_WS_LOG_DIR to the directory holding YYYY-MM-DD/HH.jsonl files"
        )


def list_hour_files(log_dir: Path, start: dt.datetime, end: dt.datetime) -> list[HourFile]:
    """The hour files that exist for the hours overlapping ``[start, end)``, in time order
    (an hour's ``.jsonl`` before its ``.jsonl.gz`` when both exist: both are read).

    Raises LogReadError when ``log_dir`` is missing; hours without files are skipped, and
    so are paths that are not regular files (:func:`irregular_hour_paths` lists those).
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


def irregular_hour_paths(log_dir: Path, start: dt.datetime, end: dt.datetime) -> list[HourFile]:
    """The hour paths of ``[start, end)`` that exist but are not regular files (a directory,
    a FIFO, a dangling link): checked with ``stat``, never opened, so nothing blocks."""
    out = []
    hour = floor_hour(start)
    while hour < end:
        for path in hour_file_paths(log_dir, hour):
            try:
                irregular = not stat.S_ISREG(path.stat().st_mode)
            except FileNotFoundError:
                irregular = path.is_symlink()
            except OSError:
                irregular = True
            if irregular:
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
    reader = WindowReader(start, end, grace, classifier)
    reader.sink = sink
    for irregular in irregular_hour_paths(Path(log_dir), start, end):
        reader.unreadable.append(irregular.relpath)
        detail = "exists but is not a regular file: its lines, if any, cannot be read"
        reader.quarantine(irregular.relpath, 0, UNREADABLE_PATH, detail, b"")
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

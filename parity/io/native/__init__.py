"""The optional native verification kernel (``parity.io.native._jcs``, C).

The Python functions in :mod:`parity.events` define every verdict. The kernel answers only
what it has proven: a log line or a snapshot row is *valid* or *invalid* when it is an
event of the plain shape and the kernel wrote its RFC 8785 text exactly; everything else is
*undecided* (integers beyond 2^53, duplicate keys, long numbers, escapes in identifiers,
unusual fields, malformed text, nesting beyond :data:`MAX_DEPTH`) and goes to Python.

The extension is built at install time when a C compiler and Python's headers are there
(``setup.py``, optional); without it :data:`kernel` is None and callers take the Python
path. :func:`use_kernel` turns it off or on for the process (``PARITY_NO_NATIVE=1``, applied
by each entry point from its settings; the differential tests run the suite both ways).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

import numpy as np
import pyarrow as pa

from parity.core.events import MAX_DEPTH

VALID, INVALID, UNDECIDED, OUTSIDE = 1, 0, 2, 3


def _load() -> ModuleType | None:
    try:
        # Loaded first so that the kernel finds the libcrypto it already mapped (one of its
        # SHA-256 routes) without linking against OpenSSL.
        import _hashlib  # noqa: F401
    except ImportError:
        pass
    try:
        return importlib.import_module("parity.io.native._jcs")
    except ImportError:
        return None


_built: ModuleType | None = _load()
#: The compiled module, or None (not built, or turned off).
kernel: ModuleType | None = _built


def use_kernel(enabled: bool) -> None:
    """Verify with the kernel (when built) or the pure-Python path from now on, in this
    process and the children it forks."""
    global kernel
    kernel = _built if enabled else None


def sha256_routes() -> list[str]:
    """The SHA-256 routes the kernel can take here (``shani``, ``libcrypto``, ``portable``)."""
    return list(kernel.sha256_routes()) if kernel is not None else []


def canonicalize(data: bytes) -> bytes:
    """The RFC 8785 text of the JSON text ``data`` as the kernel writes it; ValueError (with
    the reason) for text it leaves to Python. For tests: callers verify through
    :func:`scan_log` and :func:`verify_columns`."""
    if kernel is None:
        raise RuntimeError("the native kernel is not available")
    return kernel.canonicalize(data, MAX_DEPTH)


@dataclass(frozen=True)
class LogScan:
    """What the kernel made of a block of log lines (:func:`scan_log`)."""

    #: One flag a line: VALID / INVALID (an event in the window, a row below), OUTSIDE (an
    #: event of another window), UNDECIDED (for Python to read).
    flags: np.ndarray
    #: emitted_at of each line in microseconds since the epoch (0 when undecided).
    emitted_us: np.ndarray
    #: Where each line starts in the block, and then the block's length (one more entry
    #: than lines): line ``i`` is ``block[starts[i]:starts[i + 1]]``, its newline included.
    line_starts: np.ndarray
    #: Per row (the lines flagged VALID or INVALID, in order): the line's index in the block.
    line_index: np.ndarray
    seq: np.ndarray
    logged_us: np.ndarray
    has_logged: np.ndarray
    #: 0 when the line declares no category, else 1 + its index in ``CATEGORIES``.
    declared: np.ndarray
    checksum_valid: np.ndarray
    checksum: pa.Array
    stream: pa.Array
    event_type: pa.Array
    #: The payload's RFC 8785 text.
    payload: pa.Array


def _strings(rows: int, offsets: bytes, data: bytes) -> pa.Array:
    return pa.Array.from_buffers(
        pa.string(), rows, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def scan_log(block: bytes, start_us: int, end_us: int, max_line: int) -> LogScan:
    """Read every line of ``block`` (split on ``\\n``; the last may lack it), for the
    window ``[start_us, end_us)``. Lines longer than ``max_line`` bytes are undecided."""
    assert kernel is not None
    (
        flags,
        emitted,
        starts,
        index,
        seq,
        logged,
        has_logged,
        declared,
        valid,
        checksum,
        (stream_off, stream_data),
        (type_off, type_data),
        (payload_off, payload_data),
    ) = kernel.scan_log(block, start_us, end_us, max_line, MAX_DEPTH)
    rows = len(valid)
    return LogScan(
        flags=np.frombuffer(flags, np.uint8),
        emitted_us=np.frombuffer(emitted, np.int64),
        line_starts=np.frombuffer(starts, np.int64),
        line_index=np.frombuffer(index, np.int64),
        seq=np.frombuffer(seq, np.int64),
        logged_us=np.frombuffer(logged, np.int64),
        has_logged=np.frombuffer(has_logged, np.bool_),
        declared=np.frombuffer(declared, np.uint8),
        checksum_valid=np.frombuffer(valid, np.bool_),
        checksum=pa.Array.from_buffers(
            pa.string(),
            rows,
            [
                None,
                pa.py_buffer(np.arange(0, 64 * rows + 1, 64, dtype=np.int32)),
                pa.py_buffer(checksum),
            ],
        ),
        stream=_strings(rows, stream_off, stream_data),
        event_type=_strings(rows, type_off, type_data),
        payload=_strings(rows, payload_off, payload_data),
    )


def count_newlines(data: bytes) -> int:
    """``data.count(b"\\n")``, by the kernel when it is on (memchr: several times faster)."""
    return kernel.count_newlines(data) if kernel is not None else data.count(b"\n")


def line_of(block: bytes, starts: np.ndarray, i: int) -> bytes:
    """Line ``i`` of a block the kernel scanned (:attr:`LogScan.line_starts`), without
    its newline."""
    line = block[int(starts[i]) : int(starts[i + 1])]
    return line[:-1] if line.endswith(b"\n") else line


def is_text(kind: pa.DataType) -> bool:
    """Whether :func:`verify_columns` reads a column of this type as text."""
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _string_buffers(column: pa.Array) -> tuple[np.ndarray, pa.Buffer]:
    """(int64 offsets, data) of a string column, nulls included as their (empty) slots."""
    if pa.types.is_large_string(column.type):
        offsets = np.frombuffer(column.buffers()[1], np.int64, len(column) + 1, column.offset * 8)
    else:
        offsets = np.frombuffer(
            column.buffers()[1], np.int32, len(column) + 1, column.offset * 4
        ).astype(np.int64)
    data = column.buffers()[2] or pa.py_buffer(b"")
    return offsets, data


def verify_columns(
    stream: pa.Array,
    seq: pa.Array,
    event_type: pa.Array,
    emitted_us: pa.Array,
    payload: pa.Array,
    checksum: pa.Array,
) -> np.ndarray:
    """One flag a row (VALID, INVALID, UNDECIDED) of a snapshot's columns: strings (any
    string type), ``seq`` as int64, ``emitted_us`` as int64 microseconds. Rows with a null
    anywhere are undecided."""
    assert kernel is not None
    n = len(stream)
    columns = (stream, seq, event_type, emitted_us, payload, checksum)
    flags = np.frombuffer(
        kernel.verify_columns(
            n,
            _string_buffers(stream),
            _int64_values(seq),
            _string_buffers(event_type),
            _int64_values(emitted_us),
            _string_buffers(payload),
            _string_buffers(checksum),
            # The payload's own object is level 2 of the event, as in a log line.
            MAX_DEPTH - 1,
        ),
        np.uint8,
    ).copy()
    for column in columns:
        if column.null_count:
            flags[~np.asarray(column.is_valid())] = UNDECIDED
    return flags


def _int64_values(column: pa.Array) -> np.ndarray:
    """The int64 values of a column without nulls' meaning (null slots hold anything). A
    slice starts ``column.offset`` values into its buffer (numpy's offset is in bytes)."""
    return np.frombuffer(column.buffers()[1], np.int64, len(column), column.offset * 8)

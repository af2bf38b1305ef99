"""Checksum verification of whole snapshot tables.

The verdict for each row is :mod:`parity.core.checksum`' definition; this module only decides
where the rows are verified: the native kernel (:mod:`parity.io.native`) on the table's
Arrow buffers when it is built, Python for the rows it leaves undecided, and Python for
everything otherwise, spread over the machine's cores (:mod:`parity.io.parallel`).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from parity.core.checksum import verify_rows
from parity.core.jsontext import LONG_NUMBER_REGEX, MAX_DEPTH, exceeds_depth
from parity.core.timestamps import timestamp_texts
from parity.io import native, parallel

_COLUMNS = ("stream", "seq", "event_type", "emitted_at", "payload", "checksum")


def verify_checksums(table: pa.Table) -> pa.BooleanArray:
    """Checksum validity of every row of a snapshot table (see
    :func:`verify_checksums_python` for the columns and the verdicts)."""
    table = _plain_texts(table)
    n = table.num_rows
    texts = ("stream", "event_type", "payload", "checksum")
    if (
        native.kernel is None
        or n == 0
        or not all(native.is_text(table.schema.field(name).type) for name in texts)
    ):
        return verify_checksums_python(table)
    # Batch by batch: the kernel reads each batch's buffers where they are (combining the
    # chunks first would copy every payload).
    flags = np.concatenate([_kernel_flags(b) for b in table.select(_COLUMNS).to_batches()])
    valid = flags == native.VALID
    undecided = np.flatnonzero(flags == native.UNDECIDED)
    if undecided.size:
        rest = verify_checksums_python(table.take(pa.array(undecided)))
        valid[undecided] = rest.to_numpy(zero_copy_only=False)
    return pa.array(valid, pa.bool_())


def _kernel_flags(batch: pa.RecordBatch) -> np.ndarray:
    column = batch.column
    return native.verify_columns(
        column("stream"),
        column("seq").cast(pa.int64()),
        column("event_type"),
        column("emitted_at").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()),
        column("payload"),
        column("checksum"),
    )


def verify_checksums_python(table: pa.Table) -> pa.BooleanArray:
    """Checksum validity of every row of a snapshot table.

    Needs the columns ``stream``, ``seq``, ``event_type``, ``emitted_at`` (timestamp, UTC),
    ``payload`` (JSON text) and ``checksum``. A row whose payload is not a JSON object,
    or whose values JCS cannot represent, is invalid (False), never an exception; so is one
    nested deeper than a log line may be (:func:`too_deep`), before any parser sees it.

    The Python path: the rows are shared between the cores; each share is one
    Python loop that decides most rows with orjson and one sha256 (see the module
    docstring), and the rest with ``rfc8785``.
    """
    table = _plain_texts(table)
    n = table.num_rows
    if n == 0:
        return pa.array([], pa.bool_())
    emitted = timestamp_texts(table.column("emitted_at"))
    payload = table.column("payload")
    deep = too_deep(payload)
    if deep.any():  # a null payload makes the row invalid in verify_rows
        payload = pc.if_else(pa.array(deep), pa.scalar(None, payload.type), payload)
    # loads_exact's test, vectorised: text with a long digit run needs the exact parser.
    long_runs = pc.fill_null(pc.match_substring_regex(payload, LONG_NUMBER_REGEX), False)
    columns = [
        table.column("stream"),
        table.column("seq"),
        table.column("event_type"),
        # As bytes: orjson parses them without a str, and CANDIDATE takes them as they are.
        pc.cast(emitted, pa.binary()),
        pc.cast(payload, pa.binary()),
        table.column("checksum"),
        long_runs,
    ]
    # What verify_rows would otherwise ask row by row, asked once of the whole table.
    nulls = any(column.null_count for column in columns)
    plain = pc.all(pc.match_substring_regex(emitted, "^[0-9T:.Z-]*$")).as_py() is not False
    shares = parallel.workers(n)
    bounds = [n * i // shares for i in range(shares + 1)]

    def share(i: int) -> bytes:
        lo, hi = bounds[i], bounds[i + 1]
        rows = (column.slice(lo, hi - lo).to_pylist() for column in columns)
        return verify_rows(*rows, nulls=nulls, plain_timestamps=plain)

    flags = b"".join(parallel.run_shares(share, shares))
    valid = np.frombuffer(flags, dtype=np.bool_)
    return pa.array(valid, pa.bool_())


def _plain_texts(table: pa.Table) -> pa.Table:
    """``table`` with its text columns as plain strings: views and dictionaries of strings
    (which some readers produce) have the same values, and Arrow's string functions and the
    kernel take plain strings."""
    fields = [
        pa.field(f.name, pa.string())
        if pa.types.is_string_view(f.type)
        or (pa.types.is_dictionary(f.type) and pa.types.is_string(f.type.value_type))
        else f
        for f in table.schema
    ]
    schema = pa.schema(fields)
    return table if schema.equals(table.schema) else table.cast(schema)


def too_deep(payload: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Per row: whether the payload text nests arrays and objects deeper than a log line
    may (:data:`~parity.core.jsontext.MAX_DEPTH`, counting the event object around it as
    level 1, as the line's own object is). Bracket counts rule out almost every row at
    once; only rows with more brackets than the limit are scanned."""
    limit = MAX_DEPTH - 1
    brackets = pc.add(pc.count_substring(payload, "["), pc.count_substring(payload, "{"))
    many = pc.fill_null(pc.greater(brackets, limit), False)
    deep = np.zeros(len(payload), dtype=bool)
    for row in np.flatnonzero(many.to_numpy(zero_copy_only=False)).tolist():
        text = payload[row].as_py()
        deep[row] = exceeds_depth(text.encode() if isinstance(text, str) else text, limit)
    return deep

"""Snapshots written and read in bounded parts, so memory does not grow with the hour.

A snapshot is one Parquet file (``snapshots/<asset>/<partition>.parquet``)
whose row groups are *parts*: each part holds whole streams, sorted by the snapshot's sort
keys, and no stream is in two parts. Anything that works stream by stream (the
reconciliation, gaps, duplicates) can then run one part at a time and merge.

:class:`SnapshotWriter` takes rows in any order, in batches, and spills each batch to Arrow
IPC files, one per *bucket* (a hash of the stream: :func:`stream_buckets`). Finishing
groups consecutive buckets into parts of about ``part_rows`` rows, sorts each part and
appends it to the Parquet file as one row group. The file's key-value metadata marks it
(``parity.parts``), and both sides of a reconciliation use the same bucket function, so the
same stream lands in the same bucket on both sides; the parts themselves may differ, which
:func:`aligned_parts` accounts for.

Peak memory is one batch while writing and one part while finishing, whatever the size of
the hour; the spill files need about the Arrow size of the hour on disk, beside the
output, and are removed when the writer finishes or fails.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from parity.core.layout import Layout
from parity.io.files import atomic_target

#: Buckets rows are spilled into. Parts are groups of consecutive buckets, so this bounds
#: how finely an hour can be split: at 10M events a bucket holds about 40,000 rows.
BUCKETS = 256
#: Rows per part, about: a part is read whole by the reconciliation and the checks, and
#: finishing holds a part and its sorted copy. Measured at 1M events: 125,000 rather than
#: 250,000 lowers the peak RSS by about 60 MB at the same speed (at 10M the peak is in the
#: reconciliation, and the part size made no measurable difference there).
DEFAULT_PART_ROWS = 125_000
#: Rows gathered before a spill: fewer, larger IPC batches per bucket.
SPILL_ROWS = 65_536
#: Columns whose values are nearly all different: Parquet's dictionary encoding (tried,
#: then abandoned page by page) and min/max statistics cost a quarter of the write there
#: and buy nothing.
DISTINCT_COLUMNS = frozenset({"payload", "checksum"})
#: Key-value metadata marking a file whose row groups are parts.
PARTS_KEY = b"parity.parts"
PARTS_FORMAT = 1


def stream_buckets(streams: pa.Array | pa.ChunkedArray, buckets: int = BUCKETS) -> np.ndarray:
    """The bucket of each row's stream: the first four bytes of sha256(stream), big endian,
    modulo ``buckets``. Hashed once per distinct stream."""
    if isinstance(streams, pa.ChunkedArray):
        streams = streams.combine_chunks()
    if len(streams) == 0:
        return np.zeros(0, dtype=np.int64)
    encoded = pc.dictionary_encode(pc.fill_null(streams, ""))
    of_value = np.array(
        [
            int.from_bytes(hashlib.sha256(s.encode()).digest()[:4], "big") % buckets
            for s in encoded.dictionary.to_pylist()
        ],
        dtype=np.int64,
    )
    return of_value[encoded.indices.to_numpy(zero_copy_only=False)]


@dataclass
class Spill:
    """What a writer spilled: per bucket, its files and row count. Picklable, so a forked
    reader can hand its spill to the parent (:meth:`SnapshotWriter.adopt`)."""

    directory: Path
    files: dict[int, list[str]] = field(default_factory=dict)
    rows: list[int] = field(default_factory=lambda: [0] * BUCKETS)


class SnapshotWriter:
    """Accepts rows of ``schema`` in batches, writes a parted snapshot on :meth:`finish`.

    Use as a context manager: on leaving it the spill files are removed, and after an
    exception nothing is published.
    """

    def __init__(
        self,
        schema: pa.Schema,
        sort_keys: Sequence[tuple[str, str]],
        *,
        spill_dir: Path,
        part_rows: int | None = None,
    ) -> None:
        part_rows = DEFAULT_PART_ROWS if part_rows is None else part_rows
        if part_rows < 1:
            raise ValueError("part_rows must be at least 1")
        self.schema = schema
        self.sort_keys = list(sort_keys)
        self.part_rows = part_rows
        spill_dir = Path(spill_dir)
        spill_dir.mkdir(parents=True, exist_ok=True)
        self.spill = Spill(Path(tempfile.mkdtemp(prefix="spill.", dir=spill_dir)))
        self._adopted: list[Spill] = []
        self._open: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
        self._sinks: dict[int, Any] = {}
        self._pending: list[pa.Table] = []
        self._pending_rows = 0

    def sibling(self) -> SnapshotWriter:
        """A writer for another process's share of the rows, spilling inside this one's
        directory (so :meth:`abort` removes what a killed share left); hand its
        :meth:`close_spill` to :meth:`adopt`."""
        return SnapshotWriter(
            self.schema, self.sort_keys, spill_dir=self.spill.directory, part_rows=self.part_rows
        )

    def __enter__(self) -> SnapshotWriter:
        return self

    def __exit__(self, *_: object) -> None:
        self.abort()  # after finish() there is nothing left; after a failure, the spill

    @property
    def rows(self) -> int:
        spilled = sum(self.spill.rows) + sum(sum(s.rows) for s in self._adopted)
        return spilled + self._pending_rows

    def write(self, data: pa.Table | pa.RecordBatch) -> None:
        """Take rows (the columns of ``schema``, in any order); spilled in batches."""
        if data.num_rows == 0:
            return
        table = data if isinstance(data, pa.Table) else pa.Table.from_batches([data])
        self._pending.append(table.select(self.schema.names).cast(self.schema))
        self._pending_rows += table.num_rows
        if self._pending_rows >= SPILL_ROWS:
            self._spill()

    def _spill(self) -> None:
        if not self._pending:
            return
        table = pa.concat_tables(self._pending)
        self._pending, self._pending_rows = [], 0
        bucket = stream_buckets(table.column("stream"))
        order = np.argsort(bucket, kind="stable")
        bucket = bucket[order]
        table = table.take(pa.array(order))
        bounds = np.flatnonzero(np.diff(bucket)) + 1
        starts, ends = np.r_[0, bounds], np.r_[bounds, len(bucket)]
        for lo, hi in zip(starts.tolist(), ends.tolist(), strict=True):
            b = int(bucket[lo])
            self._writer(b).write_table(table.slice(lo, hi - lo))
            self.spill.rows[b] += hi - lo

    def _writer(self, bucket: int) -> pa.ipc.RecordBatchStreamWriter:
        writer = self._open.get(bucket)
        if writer is None:
            name = str(
                self.spill.directory / f"{bucket:03d}-{len(self.spill.files.get(bucket, []))}"
            )
            sink = pa.OSFile(name, "wb")
            writer = pa.ipc.new_stream(sink, self.schema)
            self._open[bucket], self._sinks[bucket] = writer, sink
            self.spill.files.setdefault(bucket, []).append(name)
        return writer

    def close_spill(self) -> Spill:
        """Close the spill files and return them (a forked reader's last step)."""
        self._spill()
        for bucket, writer in self._open.items():
            writer.close()
            self._sinks[bucket].close()
        self._open.clear()
        self._sinks.clear()
        return self.spill

    def adopt(self, spill: Spill) -> None:
        """Take another writer's spill (same schema) into this snapshot."""
        self._adopted.append(spill)

    def finish(self, path: Path) -> SnapshotFile:
        """Write the snapshot to ``path`` (a temporary file renamed into place) and remove
        the spill files."""
        self.close_spill()
        spills = [self.spill, *self._adopted]
        rows = np.sum([s.rows for s in spills], axis=0)
        path = Path(path)
        layout = []
        try:
            with atomic_target(path) as tmp:
                writer = self._parquet_writer(tmp)
                try:
                    for buckets in part_ranges(int(rows.sum()), self.part_rows):
                        if not rows[buckets.start : buckets.stop].any():
                            continue
                        part = self._read_buckets(spills, buckets)
                        if part.num_rows > 1:
                            part = part.sort_by(self.sort_keys)
                        writer.write_table(part, row_group_size=part.num_rows)
                        layout.append([buckets.start, buckets.stop])
                        del part
                    marker = {"format": PARTS_FORMAT, "buckets": BUCKETS, "parts": layout}
                    writer.add_key_value_metadata({PARTS_KEY: json.dumps(marker)})
                finally:
                    writer.close()
        finally:
            self.abort()
        return SnapshotFile(path)

    def _parquet_writer(self, path: Path) -> pq.ParquetWriter:
        kept = [f for f in self.schema if f.name not in DISTINCT_COLUMNS]
        return pq.ParquetWriter(
            path,
            self.schema,
            compression="zstd",
            use_dictionary=[f.name for f in kept if pa.types.is_string(f.type)],
            write_statistics=[f.name for f in kept],
        )

    def _read_buckets(self, spills: list[Spill], buckets: range) -> pa.Table:
        tables = []
        for spill in spills:
            for bucket in buckets:
                for name in spill.files.get(bucket, []):
                    with pa.memory_map(name) as source:
                        tables.append(pa.ipc.open_stream(source).read_all())
        return pa.concat_tables(tables) if tables else self.schema.empty_table()

    def abort(self) -> None:
        """Remove every spill file (this writer's and adopted ones)."""
        self._pending, self._pending_rows = [], 0
        try:
            self.close_spill()
        finally:
            for spill in [self.spill, *self._adopted]:
                shutil.rmtree(spill.directory, ignore_errors=True)


def part_ranges(rows: int, part_rows: int) -> list[range]:
    """The bucket ranges of the parts of a snapshot of ``rows`` rows: a power of two of
    equal ranges, enough for parts of about ``part_rows`` rows. Powers of two nest, so the
    parts of two snapshots of different sizes line up (:func:`aligned_parts`)."""
    parts = 1
    while parts < BUCKETS and rows > parts * part_rows:
        parts *= 2
    width = BUCKETS // parts
    return [range(i * width, (i + 1) * width) for i in range(parts)]


@dataclass(frozen=True)
class SnapshotFile:
    """A snapshot on disk, read part by part. A Parquet file without Parity's parts marker
    (written by an older Parity or by hand) is one part."""

    path: Path

    @property
    def num_rows(self) -> int:
        return pq.read_metadata(self.path).num_rows

    def layout(self) -> list[tuple[range, int | None]]:
        """Each part's bucket range and row group; one part of all buckets, row group None
        (the whole file), when the file is not parted."""
        metadata = pq.read_metadata(self.path).metadata or {}
        marker = metadata.get(PARTS_KEY)
        if marker is None:
            return [(range(0, BUCKETS), None)]
        parts = json.loads(marker)
        if parts.get("format") != PARTS_FORMAT or parts.get("buckets") != BUCKETS:
            raise ValueError(
                f"snapshot {self.path} was written in parts format {parts.get('format')} with "
                f"{parts.get('buckets')} buckets; this Parity reads format {PARTS_FORMAT} with "
                f"{BUCKETS}: materialize the snapshot again"
            )
        return [(range(lo, hi), i) for i, (lo, hi) in enumerate(parts["parts"])]

    def parts(self, columns: list[str] | None = None) -> Iterator[pa.Table]:
        """Each part as a table of ``columns`` (all when None): whole streams."""
        handle = pq.ParquetFile(self.path)
        for _, group in self.layout():
            yield self._read(handle, group, columns)

    def _read(
        self, handle: pq.ParquetFile, group: int | None, columns: list[str] | None
    ) -> pa.Table:
        if group is None:
            return handle.read(columns=columns)
        return handle.read_row_group(group, columns=columns)

    def read(self, columns: list[str] | None = None) -> pa.Table:
        """The whole snapshot (for small hours, tests and tools)."""
        return pq.read_table(self.path, columns=columns)

    def empty(self, columns: list[str] | None = None) -> pa.Table:
        schema = pq.read_schema(self.path)
        if columns is not None:
            schema = pa.schema([schema.field(name) for name in columns])
        return schema.remove_metadata().empty_table()


def aligned_parts(
    left: SnapshotFile,
    right: SnapshotFile,
    left_columns: list[str] | None = None,
    right_columns: list[str] | None = None,
) -> Iterator[tuple[pa.Table, pa.Table]]:
    """Pairs of (left, right) tables over disjoint sets of streams that together cover both
    files, one pair in memory at a time.

    Each side's parts are power-of-two ranges of the same buckets (:func:`part_ranges`), so
    every part of the side with fewer, wider parts contains whole parts of the other: a pair
    is one wide part and the narrow parts inside it.
    """
    left_layout, right_layout = left.layout(), right.layout()
    wide_is_left = _width(left_layout) >= _width(right_layout)
    wide, narrow = (left_layout, right_layout) if wide_is_left else (right_layout, left_layout)
    wide_file, narrow_file = (left, right) if wide_is_left else (right, left)
    wide_cols, narrow_cols = (
        (left_columns, right_columns) if wide_is_left else (right_columns, left_columns)
    )
    wide_handle, narrow_handle = pq.ParquetFile(wide_file.path), pq.ParquetFile(narrow_file.path)
    width = _width(wide)
    for start in range(0, BUCKETS, width):
        span = range(start, start + width)
        w = [wide_file._read(wide_handle, g, wide_cols) for r, g in wide if _within(r, span)]
        n = [
            narrow_file._read(narrow_handle, g, narrow_cols) for r, g in narrow if _within(r, span)
        ]
        w_tab = pa.concat_tables(w) if w else wide_file.empty(wide_cols)
        n_tab = pa.concat_tables(n) if n else narrow_file.empty(narrow_cols)
        if w_tab.num_rows or n_tab.num_rows:
            yield (w_tab, n_tab) if wide_is_left else (n_tab, w_tab)


def _width(layout: list[tuple[range, int | None]]) -> int:
    return len(layout[0][0]) if layout else BUCKETS


def _within(inner: range, outer: range) -> bool:
    if inner.start >= outer.start and inner.stop <= outer.stop:
        return True
    if inner.start < outer.stop and outer.start < inner.stop:
        raise ValueError(
            f"snapshot parts do not nest: buckets {inner.start}-{inner.stop} and "
            f"{outer.start}-{outer.stop}"
        )
    return False


@contextmanager
def staged(layout: Layout, asset: str, partition: str) -> Iterator[Path]:
    """A private path where an asset writes its snapshot before the IO manager publishes
    it (by a rename); removed if the block fails, so a failed run leaves nothing behind."""
    path = layout.staging(asset, partition)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except BaseException:
        path.unlink(missing_ok=True)
        raise

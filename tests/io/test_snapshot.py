"""Parted snapshots: written in batches, read one part at a time, parts of two snapshots
aligned on the same streams."""

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from parity.io import snapshot
from parity.io.snapshot import SnapshotFile, SnapshotWriter, aligned_parts, part_ranges

SCHEMA = pa.schema([("stream", pa.string()), ("seq", pa.int64()), ("payload", pa.string())])
SORT = [("stream", "ascending"), ("seq", "ascending")]


def rows(streams: int, per_stream: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    stream = np.repeat([f"s{i}" for i in range(streams)], per_stream)
    seq = np.tile(np.arange(1, per_stream + 1), streams)
    order = rng.permutation(len(stream))
    return pa.table(
        {
            "stream": stream[order].tolist(),
            "seq": seq[order],
            "payload": [f'{{"n":{i}}}' for i in order],
        },
        schema=SCHEMA,
    )


def write(table: pa.Table, path: Path, *, part_rows: int, batch: int = 97) -> SnapshotFile:
    with SnapshotWriter(SCHEMA, SORT, spill_dir=path.parent / "spill", part_rows=part_rows) as w:
        for lo in range(0, table.num_rows, batch):
            w.write(table.slice(lo, batch))
        return w.finish(path)


def key_set(table: pa.Table) -> set[tuple[str, int]]:
    return set(
        zip(table.column("stream").to_pylist(), table.column("seq").to_pylist(), strict=True)
    )


def test_parts_hold_whole_sorted_streams_and_everything_once(tmp_path: Path) -> None:
    table = rows(streams=40, per_stream=50)
    snap = write(table, tmp_path / "s.parquet", part_rows=300)
    parts = list(snap.parts())
    assert len(parts) > 1
    seen: set[str] = set()
    for part in parts:
        streams = set(part.column("stream").to_pylist())
        assert not streams & seen, "a stream is in two parts"
        seen |= streams
        assert part.equals(part.sort_by(SORT))
    assert sum(p.num_rows for p in parts) == snap.num_rows == table.num_rows
    assert key_set(pa.concat_tables(parts)) == key_set(table)
    assert snap.read().num_rows == table.num_rows
    assert list(snap.parts(["seq"]))[0].column_names == ["seq"]
    assert not (tmp_path / "spill").exists() or not any((tmp_path / "spill").iterdir())


def test_part_ranges_are_nested_powers_of_two() -> None:
    assert part_ranges(0, 100) == [range(0, snapshot.BUCKETS)]
    assert part_ranges(100, 100) == [range(0, snapshot.BUCKETS)]
    four = part_ranges(350, 100)
    assert len(four) == 4 and four[1] == range(64, 128)
    assert len(part_ranges(10**12, 1)) == snapshot.BUCKETS


def test_aligned_parts_pair_the_same_streams_across_sizes(tmp_path: Path) -> None:
    big = rows(streams=60, per_stream=40, seed=1)
    small = big.filter(pa.array(np.arange(big.num_rows) % 7 != 0)).slice(0, 900)
    left = write(big, tmp_path / "l.parquet", part_rows=150)
    right = write(small, tmp_path / "r.parquet", part_rows=400)
    assert len(left.layout()) > len(right.layout()) > 1
    pairs = list(aligned_parts(left, right, None, ["stream", "seq"]))
    assert len(pairs) == len(right.layout())
    left_seen: set[str] = set()
    for lt, rt in pairs:
        assert rt.column_names == ["stream", "seq"]
        ls, rs = set(lt.column("stream").to_pylist()), set(rt.column("stream").to_pylist())
        # every stream of the right is paired with the same stream's rows on the left
        assert rs <= ls
        assert not ls & left_seen
        left_seen |= ls
    assert sum(lt.num_rows for lt, _ in pairs) == big.num_rows
    assert sum(rt.num_rows for _, rt in pairs) == small.num_rows
    # and in the other direction (the wide side on the left)
    assert sum(rt.num_rows for _, rt in aligned_parts(right, left)) == big.num_rows


def test_a_parquet_file_without_the_marker_is_one_part(tmp_path: Path) -> None:
    table = rows(streams=5, per_stream=10)
    plain = tmp_path / "plain.parquet"
    pq.write_table(table, plain)
    snap = SnapshotFile(plain)
    assert [p.num_rows for p in snap.parts()] == [table.num_rows]
    parted = write(table, tmp_path / "p.parquet", part_rows=10)
    pairs = list(aligned_parts(snap, parted))
    assert len(pairs) == 1 and pairs[0][1].num_rows == table.num_rows


def test_empty_snapshot_has_no_parts(tmp_path: Path) -> None:
    snap = write(SCHEMA.empty_table(), tmp_path / "e.parquet", part_rows=10)
    assert snap.num_rows == 0
    assert list(snap.parts()) == []
    assert list(aligned_parts(snap, snap)) == []


def test_failure_publishes_nothing_and_removes_the_spill(tmp_path: Path) -> None:
    target = tmp_path / "s.parquet"
    target.write_bytes(b"previous")
    with (
        pytest.raises(RuntimeError),
        SnapshotWriter(SCHEMA, SORT, spill_dir=tmp_path / "spill", part_rows=10) as w,
    ):
        w.write(rows(streams=3, per_stream=30_000))
        raise RuntimeError("reader failed")
    assert target.read_bytes() == b"previous"
    assert list((tmp_path / "spill").iterdir()) == []


def test_a_forked_writers_spill_is_adopted(tmp_path: Path) -> None:
    table = rows(streams=20, per_stream=30)
    half = table.num_rows // 2
    with SnapshotWriter(SCHEMA, SORT, spill_dir=tmp_path / "spill", part_rows=100) as parent:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child spills its half and reports its Spill
            import pickle

            child = SnapshotWriter(SCHEMA, SORT, spill_dir=tmp_path / "spill", part_rows=100)
            child.write(table.slice(half))
            os.write(write_fd, pickle.dumps(child.close_spill()))
            os._exit(0)
        os.close(write_fd)
        import pickle

        with os.fdopen(read_fd, "rb") as fh:
            spill = pickle.loads(fh.read())
        os.waitpid(pid, 0)
        parent.write(table.slice(0, half))
        parent.adopt(spill)
        assert parent.rows == table.num_rows
        snap = parent.finish(tmp_path / "s.parquet")
    assert key_set(snap.read()) == key_set(table)
    assert list((tmp_path / "spill").iterdir()) == []


def test_stream_buckets_are_stable_and_spread() -> None:
    streams = pa.array([f"stream-{i}" for i in range(2000)])
    buckets = snapshot.stream_buckets(streams)
    assert np.array_equal(buckets, snapshot.stream_buckets(streams.slice(0)))
    assert buckets.min() >= 0 and buckets.max() < snapshot.BUCKETS
    assert len(np.unique(buckets)) > snapshot.BUCKETS * 0.9
    # the same stream gets the same bucket wherever it appears
    again = snapshot.stream_buckets(pa.array(["stream-7", "x", "stream-7"]))
    assert again[0] == again[2] == buckets[7]

"""The snapshot IO manager publishes what an asset staged, by a rename, and hands inputs
over as parted snapshot files."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from orchestration import io_manager
from orchestration.io_manager import ParquetSnapshotIOManager
from parity.io.snapshot import SnapshotFile, SnapshotWriter

PARTITION = "2026-11-28-10:00"
HOURLY = dg.HourlyPartitionsDefinition(start_date="2026-11-27-00:00")
SCHEMA = pa.schema([("stream", pa.string()), ("seq", pa.int64())])


def staged_snapshot(directory: Path) -> SnapshotFile:
    rows = pa.table({"stream": ["b", "a", "b"], "seq": [2, 1, 1]}, schema=SCHEMA)
    with SnapshotWriter(SCHEMA, [("stream", "ascending")], spill_dir=directory) as writer:
        writer.write(rows)
        return writer.finish(directory / "staged.parquet")


def output_context() -> dg.OutputContext:
    return dg.build_output_context(
        asset_key="ws_log_snapshot", partition_key=PARTITION, asset_partitions_def=HOURLY
    )


def input_context() -> dg.InputContext:
    return dg.build_input_context(
        asset_key="ws_log_snapshot", partition_key=PARTITION, asset_partitions_def=HOURLY
    )


def test_a_staged_snapshot_is_moved_into_place_and_loaded_as_a_file(tmp_path: Path) -> None:
    manager = ParquetSnapshotIOManager(home=str(tmp_path / "home"))
    staged = staged_snapshot(tmp_path / "staging")
    manager.handle_output(output_context(), staged)

    final = tmp_path / "home" / "snapshots" / "ws_log_snapshot" / f"{PARTITION}.parquet"
    assert final.exists() and not staged.path.exists()
    loaded = manager.load_input(input_context())
    assert isinstance(loaded, SnapshotFile) and loaded.path == final
    assert loaded.read().num_rows == 3


def test_across_file_systems_it_copies_then_renames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_replace = os.replace
    calls: list[str] = []

    def cross_device(src: str | Path, dst: str | Path) -> None:
        if Path(src).name == "staged.parquet":  # the staged file is "on another device"
            calls.append("refused")
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_replace(src, dst)

    monkeypatch.setattr(io_manager.os, "replace", cross_device)
    manager = ParquetSnapshotIOManager(home=str(tmp_path / "home"))
    staged = staged_snapshot(tmp_path / "staging")
    manager.handle_output(output_context(), staged)
    assert calls == ["refused"]
    assert manager.load_input(input_context()).read().num_rows == 3
    assert not staged.path.exists()
    leftovers = [p.name for p in (tmp_path / "home").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_a_table_output_is_written_and_a_missing_snapshot_is_named(tmp_path: Path) -> None:
    manager = ParquetSnapshotIOManager(home=str(tmp_path / "home"))
    with pytest.raises(FileNotFoundError, match="materialize ws_log_snapshot"):
        manager.load_input(input_context())
    manager.handle_output(output_context(), pa.table({"stream": ["a"], "seq": [1]}))
    assert manager.load_input(input_context()).read().num_rows == 1

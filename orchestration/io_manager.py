"""Snapshots are Parquet files, one per asset and partition, published by a rename so a
failed run leaves the previous snapshot intact."""

import os
import shutil
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from parity.io.files import atomic_target, fsync_dir
from parity.io.snapshot import SnapshotFile


class ParquetSnapshotIOManager(dg.ConfigurableIOManager):
    """Stores snapshots at ``$PARITY_HOME/snapshots/<asset key>/<partition key>.parquet``.

    An asset hands over either a :class:`~parity.snapshot.SnapshotFile` it wrote to a
    staging path (the large-hour path: the file is moved into place, never rewritten) or a
    ``pyarrow.Table`` (written here). Inputs are loaded as a ``SnapshotFile``, read part by
    part by the consumer.
    """

    #: PARITY_HOME. A plain field rather than a nested ParityResource: Dagster 1.13's
    #: nested-resource resolution calls a deprecated context property.
    home: str = ".parity"

    def _path(self, context: dg.OutputContext | dg.InputContext) -> Path:
        key = context.asset_key.path
        name = context.asset_partition_key if context.has_asset_partitions else "__all__"
        base = Path(self.home).expanduser().absolute() / "snapshots"
        return base.joinpath(*key) / f"{name}.parquet"

    def handle_output(self, context: dg.OutputContext, obj: SnapshotFile | pa.Table) -> None:
        path = self._path(context)
        if isinstance(obj, SnapshotFile):
            _publish(obj.path, path)
        else:
            with atomic_target(path) as tmp:
                pq.write_table(obj, tmp, compression="zstd")
        context.add_output_metadata(
            {
                "path": dg.MetadataValue.path(str(path)),
                "bytes": path.stat().st_size,
            }
        )

    def load_input(self, context: dg.InputContext) -> SnapshotFile:
        path = self._path(context)
        if not path.exists():
            raise FileNotFoundError(
                f"snapshot {path} does not exist: materialize {context.asset_key.to_user_string()} "
                f"for partition {context.asset_partition_key} first"
            )
        return SnapshotFile(path)


def _publish(staged: Path, path: Path) -> None:
    """Move a finished snapshot into place: a rename when both are on one file system,
    else a copy to a temporary file beside the target and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(staged, path)
    except OSError:
        with atomic_target(path) as tmp:
            shutil.copyfile(staged, tmp)
        staged.unlink(missing_ok=True)
    fsync_dir(path.parent)

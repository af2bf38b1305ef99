"""Snapshots are Parquet files, one per asset and partition, published by a rename so a
failed run leaves the previous snapshot intact."""

import os
import shutil
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from assets.resources import LOAD_BY_PARTITION
from parity.core.layout import Layout
from parity.io.files import atomic_target, fsync_dir
from parity.io.snapshot import SnapshotFile


class ParquetSnapshotIOManager(dg.ConfigurableIOManager):
    """Stores snapshots at ``$PARITY_HOME/snapshots/<asset key>/<partition key>.parquet``.

    An asset hands over either a :class:`~parity.io.snapshot.SnapshotFile` it wrote to a
    staging path (the large-hour path: the file is moved into place, never rewritten) or a
    ``pyarrow.Table`` (written here). Inputs are loaded as a ``SnapshotFile``, read part by
    part by the consumer; an input with ``LOAD_BY_PARTITION`` metadata gets every partition
    of the run as ``{partition key: SnapshotFile or None}`` (None: never materialized).
    """

    #: PARITY_HOME. A plain field rather than a nested ParityResource: Dagster 1.13's
    #: nested-resource resolution calls a deprecated context property.
    home: str = ".parity"

    def _layout(self) -> Layout:
        return Layout(Path(self.home).expanduser().absolute())

    def _path(self, context: dg.OutputContext | dg.InputContext) -> Path:
        name = context.asset_partition_key if context.has_asset_partitions else "__all__"
        return self._layout().snapshot(tuple(context.asset_key.path), name)

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

    def load_input(self, context: dg.InputContext) -> SnapshotFile | dict[str, SnapshotFile | None]:
        if (context.definition_metadata or {}).get(LOAD_BY_PARTITION):
            layout, key = self._layout(), tuple(context.asset_key.path)
            paths = {p: layout.snapshot(key, p) for p in context.asset_partition_keys}
            return {p: SnapshotFile(path) if path.exists() else None for p, path in paths.items()}
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

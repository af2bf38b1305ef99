"""Snapshots are Parquet files, one per asset and partition, written then renamed so a
failed run leaves the previous snapshot intact."""

from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from parity.files import atomic_target


class ParquetSnapshotIOManager(dg.ConfigurableIOManager):
    """Stores ``pyarrow.Table`` outputs at
    ``$PARITY_HOME/snapshots/<asset key>/<partition key>.parquet``."""

    #: PARITY_HOME. A plain field rather than a nested ParityResource: Dagster 1.13's
    #: nested-resource resolution calls a deprecated context property.
    home: str = ".parity"

    def _path(self, context: dg.OutputContext | dg.InputContext) -> Path:
        key = context.asset_key.path
        name = context.asset_partition_key if context.has_asset_partitions else "__all__"
        base = Path(self.home).expanduser().absolute() / "snapshots"
        return base.joinpath(*key) / f"{name}.parquet"

    def handle_output(self, context: dg.OutputContext, obj: pa.Table) -> None:
        path = self._path(context)
        with atomic_target(path) as tmp:
            pq.write_table(obj, tmp, compression="zstd")
        context.add_output_metadata(
            {
                "path": dg.MetadataValue.path(str(path)),
                "bytes": path.stat().st_size,
            }
        )

    def load_input(self, context: dg.InputContext) -> pa.Table:
        path = self._path(context)
        if not path.exists():
            raise FileNotFoundError(
                f"snapshot {path} does not exist: materialize {context.asset_key.to_user_string()} "
                f"for partition {context.asset_partition_key} first"
            )
        return pq.read_table(path)

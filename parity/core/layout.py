"""Where each hour's artefacts live under ``$PARITY_HOME``: the one place that builds those paths.

```
$PARITY_HOME/
  snapshots/<asset>/<partition>.parquet          published snapshots (the IO manager's)
  snapshots/.staging/<asset>/<partition>.*.parquet   snapshots being written
  quarantine/<partition>.parquet                 log lines that could not be read as events
  reports/<partition>.json                       the hour's reconciliation report
  reports/<partition>.ge.<asset>.json            Great Expectations' results for its checks
  backfills/<partition>.json                     the ledger of events a backfill wrote
  pgdata/                                        the embedded PostgreSQL, when used
  pgdata.users.json, pgdata.lock                 which processes use it, and who started it
```

A partition key is Dagster's (``2026-11-28-10:00``); asset names are plain identifiers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    """The artefact paths of every partition, rooted at one home directory."""

    home: Path

    @property
    def snapshots_dir(self) -> Path:
        return self.home / "snapshots"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def pgdata_dir(self) -> Path:
        return self.home / "pgdata"

    def snapshot(self, asset: str | tuple[str, ...], partition: str) -> Path:
        parts = (asset,) if isinstance(asset, str) else asset
        return self.snapshots_dir.joinpath(*parts) / f"{partition}.parquet"

    def staging(self, asset: str, partition: str) -> Path:
        """A fresh, unique path for a snapshot being written."""
        directory = self.snapshots_dir / ".staging" / asset
        return directory / f"{partition}.{os.getpid()}.{os.urandom(4).hex()}.parquet"

    def quarantine(self, partition: str) -> Path:
        return self.home / "quarantine" / f"{partition}.parquet"

    def report(self, partition: str) -> Path:
        return self.reports_dir / f"{partition}.json"

    def ge_results(self, partition: str, asset: str) -> Path:
        return self.reports_dir / f"{partition}.ge.{asset}.json"

    def ledger(self, partition: str) -> Path:
        return self.home / "backfills" / f"{partition}.json"

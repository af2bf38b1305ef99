"""What a backfill reads and keeps among a partition's files: the report's missing keys
(its input, contract §6) and the ledger of what it sent and when (its output), which lets
latency figures tell backfilled rows, ``received_at = now()``, from live deliveries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa

from parity.core.errors import ReportNotFoundError
from parity.core.layout import Layout
from parity.io.backfill import BackfillResult
from parity.io.files import write_json_atomic
from parity.io.reports import load_report


def report_keys(layout: Layout, partition: str, *, all_missing: bool) -> list[Any] | None:
    """The report's ``missing_keys`` (the backfill's input, contract §6); None (recompute)
    with ``all_missing`` — the report lists only keys the cohort expected — or when the
    hour has no report yet."""
    if all_missing:
        return None
    try:
        return list(load_report(layout, partition)["missing_keys"])
    except ReportNotFoundError:
        return None


def write_ledger(layout: Layout, result: BackfillResult) -> Path | None:
    """Append the backfill to the partition's ledger: when it ran and the keys it sent.
    Backfilled rows carry ``received_at = now()``; the ledger lets latency figures tell
    them from live deliveries. Nothing is kept for a dry run or when nothing was sent."""
    if result.dry_run or result.sent_keys.num_rows == 0:
        return None
    path = layout.ledger(result.partition)
    runs = json.loads(path.read_text("utf-8")) if path.exists() else []
    keys = result.sent_keys
    runs.append(
        {
            **result.to_dict(),
            "sent_keys": [
                [s, q]
                for s, q in zip(
                    keys.column("stream").to_pylist(), keys.column("seq").to_pylist(), strict=True
                )
            ],
        }
    )
    write_json_atomic(path, runs)
    return path


def backfilled_keys(layout: Layout, partition: str) -> pa.Table:
    """Every (stream, seq) a backfill has sent for the partition, from its ledger."""
    path = layout.ledger(partition)
    runs = json.loads(path.read_text("utf-8")) if path.exists() else []
    pairs = {(s, q) for run in runs for s, q in run.get("sent_keys", [])}
    ordered = sorted(pairs)
    return pa.table(
        {"stream": [s for s, _ in ordered], "seq": [q for _, q in ordered]},
        schema=pa.schema([("stream", pa.string()), ("seq", pa.int64())]),
    )

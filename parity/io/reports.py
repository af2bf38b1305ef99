"""Reading and writing the hour's report file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from parity.core.errors import ReportNotFoundError
from parity.core.layout import Layout
from parity.core.report import REPORT_KEYS
from parity.io.files import write_json_atomic


def write_report(layout: Layout, report: dict[str, Any]) -> Path:
    missing = [k for k in REPORT_KEYS if k not in report]
    if missing:
        raise ValueError(f"report for {report.get('partition')!r} lacks keys {missing}")
    path = layout.report(report["partition"])
    write_json_atomic(path, report)
    return path


def load_report(layout: Layout, partition: str) -> dict[str, Any]:
    path = layout.report(partition)
    try:
        return json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise ReportNotFoundError(
            f"no report for partition {partition} at {path}: run `parity reconcile "
            f"--partition {partition}` first"
        ) from None

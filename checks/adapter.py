"""The one place that talks to Great Expectations 1.x.

GE is imported lazily (its import takes seconds, and loading the code location must not
pay it) and its ephemeral context, pandas data source and whole-dataframe batch
definition are created once per process and reused: in a helper process when one was
started early (:mod:`checks.ge_process`), else here. It only ever sees the small frames
the checks derive (offending rows, one-row summaries), never a snapshot.

Analytics: GE 1.24 sends none (its analytics client is gone), and the context is created
with ``analytics_enabled=False`` besides. Progress bars are off.

Side effect to know about: importing GE's validator calls ``logging.captureWarnings(True)``,
so from then on Python warnings go to the ``py.warnings`` logger instead of stderr.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

if TYPE_CHECKING:
    from great_expectations.core.batch_definition import BatchDefinition

_DATASOURCE = "parity_checks"
_ASSET = "derived_frame"
_BATCH = "whole_frame"
#: What GE keeps per failed expectation: up to this many unexpected values.
_PARTIAL_UNEXPECTED = 20

_lock = threading.Lock()
_batch_definition: BatchDefinition | None = None


@dataclass(frozen=True)
class ExpectationSpec:
    """A GE expectation by class name and arguments, so suites can be described without
    importing GE. ``severity`` is GE's own: ``critical``, ``warning`` or ``info``."""

    type: str
    kwargs: Mapping[str, Any]
    severity: str = "critical"


@dataclass(frozen=True)
class Outcome:
    """A validation's result, reduced to what a check result needs."""

    success: bool
    failed: list[dict[str, Any]]  # {"type", "kwargs", "severity", "result"} per failure
    document: dict[str, Any]  # GE's validation result, JSON-serialisable


def _context_batch_definition() -> BatchDefinition:
    global _batch_definition
    with _lock:
        if _batch_definition is None:
            import great_expectations as gx
            from great_expectations.data_context.types.base import (
                DataContextConfig,
                InMemoryStoreBackendDefaults,
                ProgressBarsConfig,
            )

            config = DataContextConfig(
                store_backend_defaults=InMemoryStoreBackendDefaults(),
                analytics_enabled=False,
                progress_bars=ProgressBarsConfig(globally=False),
            )
            context = gx.get_context(mode="ephemeral", project_config=config)
            asset = context.data_sources.add_pandas(_DATASOURCE).add_dataframe_asset(_ASSET)
            _batch_definition = asset.add_batch_definition_whole_dataframe(_BATCH)
        return _batch_definition


def warm() -> None:
    """Import GE and create its context now rather than at the first validation."""
    _context_batch_definition()


def validate(suite_name: str, frame: pa.Table, expectations: Sequence[ExpectationSpec]) -> Outcome:
    """Validate ``frame`` against the expectations with GE (BASIC result format), in this
    process (:func:`checks.ge_process.validate` chooses where)."""
    batch_definition = _context_batch_definition()
    import great_expectations as gx

    suite = gx.ExpectationSuite(
        name=suite_name,
        expectations=[
            getattr(gx.expectations, spec.type)(**spec.kwargs, severity=spec.severity)
            for spec in expectations
        ],
    )
    batch = batch_definition.get_batch(batch_parameters={"dataframe": frame.to_pandas()})
    result = batch.validate(
        suite,
        result_format={"result_format": "BASIC", "partial_unexpected_count": _PARTIAL_UNEXPECTED},
    )
    document = result.to_json_dict()
    failed = [
        {
            "type": item["expectation_config"]["type"],
            "kwargs": {
                k: v for k, v in item["expectation_config"]["kwargs"].items() if k != "batch_id"
            },
            "severity": item["expectation_config"].get("severity", "critical"),
            "result": item["result"],
        }
        for item in document["results"]
        if not item["success"]
    ]
    return Outcome(success=bool(document["success"]), failed=failed, document=document)

"""Snapshot checks read part by part: however a snapshot is split into parts (whole streams
per part, rows in any order), the check results and GE's documents are those of the whole
table, and only the columns the selected checks need are read."""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from checks import specs
from checks.criteria import SAMPLE_LIMIT, SuccessCriteria
from checks.evaluate import evaluate_checks
from parity.core.layout import Layout
from tests.checks.test_checks import PARTITION, corrupt, meta, rows, sb_table, ws_table

# GE 1.24 imports the deprecated sre_constants / sre_parse modules; nothing to do about it here.
pytestmark = [
    pytest.mark.filterwarnings("ignore:module 'sre_constants' is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:module 'sre_parse' is deprecated:DeprecationWarning"),
]

SNAPSHOTS = {specs.WS_LOG_SNAPSHOT: ws_table, specs.SUPABASE_EVENTS_SNAPSHOT: sb_table}
CRITERIA = SuccessCriteria()


class Split:
    """A snapshot in ``k`` parts by stream (crc32 of the stream, mod k), rows shuffled within
    each part and each part in two chunks, after one empty part. Records the columns it is
    asked for."""

    def __init__(self, table: pa.Table, k: int, seed: int = 0):
        self.table, self.k, self.seed = table, k, seed
        self.requests: list[list[str] | None] = []

    def parts(self, columns: list[str] | None = None) -> Iterator[pa.Table]:
        self.requests.append(columns)
        table = self.table if columns is None else self.table.select(columns)
        yield table.schema.empty_table()
        rng = np.random.default_rng(self.seed)
        bucket = np.array(
            [zlib.crc32(s.encode()) % self.k for s in table.column("stream").to_pylist()],
            dtype=np.int64,
        )
        for part in range(self.k):
            rows_ = rng.permutation(np.flatnonzero(bucket == part))
            half = len(rows_) // 2
            yield pa.concat_tables([table.take(rows_[:half]), table.take(rows_[half:])])


class Parts:
    """A snapshot given as its parts."""

    def __init__(self, tables: Sequence[pa.Table]):
        self.tables = tables

    def parts(self, columns: list[str] | None = None) -> Iterator[pa.Table]:
        for table in self.tables:
            yield table if columns is None else table.select(columns)


def all_checks(asset: str) -> set[str]:
    return {c.name for c in specs.checks_for(asset)}


def run(asset: str, data: object, reports_dir: Path | None = None) -> list[dg.AssetCheckResult]:
    return list(
        evaluate_checks(
            asset,
            data,
            all_checks(asset),
            PARTITION,
            Layout(reports_dir) if reports_dir else None,
            CRITERIA,
        )
    )


def outcome(results: list[dg.AssetCheckResult]) -> list[tuple[Any, ...]]:
    """What a result says, metadata values with their types (an int 5 is not a float 5.0);
    the GE results path differs between runs and is compared by its contents instead."""
    return [
        (
            r.check_name,
            r.passed,
            r.severity,
            {
                key: (type(value).__name__, getattr(value, "value", value))
                for key, value in r.metadata.items()
                if key != "ge_results"
            },
        )
        for r in results
    ]


def ge_document(reports_dir: Path, asset: str) -> dict[str, Any]:
    """GE's results file without what differs from run to run (load and evaluation time)."""
    doc = json.loads(Layout(reports_dir).ge_results(PARTITION, asset).read_text("utf-8"))
    del doc["evaluated_at"]
    for validation in doc["validations"].values():
        del validation["meta"]["batch_markers"]["ge_load_time"]
    return doc


def faulty_rows() -> list[dict[str, Any]]:
    """31 streams with every fault, more of each than a sample holds.

    Even streams lack seq 4 and 8-9 (two gaps each); in every fourth stream seqs 1-3 are
    CRITICAL, so its first gap is outside Supabase's judged span. Every fifth stream logs
    seq 2 twice (a retry), every seventh has a second, different (LEGACY) event at seq 3,
    which in s00 and s28 brings the first gap into the judged span again. Odd
    streams' seq 11 and every third stream's seq 10 are altered after their checksum. One
    more stream is CRITICAL only, with gaps.
    """
    streams: dict[str, list[int]] = {}
    categories: dict[tuple[str, int], str] = {}
    for i in range(30):
        name = f"s{i:02d}"
        streams[name] = [s for s in range(1, 13) if i % 2 or s not in (4, 8, 9)]
        if i % 4 == 0:
            categories |= {(name, s): "CRITICAL" for s in (1, 2, 3)}
    streams["critical-only"] = [1, 5, 9]
    categories |= {("critical-only", s): "CRITICAL" for s in (1, 5, 9)}
    out = rows(streams, categories)
    for i in range(30):
        name = f"s{i:02d}"
        if i % 5 == 0:
            out.append(next(dict(r) for r in out if (r["stream"], r["seq"]) == (name, 2)))
        if i % 7 == 0:
            out += rows({name: [3]}, {(name, 3): "LEGACY"})
        if i % 2:
            corrupt(out, (name, 11), payload='{"n":1100}')
        if i % 3 == 0:
            corrupt(out, (name, 10), payload='{"n":1000}')
    return out


FAULTY = faulty_rows()
#: What the whole table gives, so the comparisons below are of checks that fail.
EXPECTED = {
    specs.WS_SEQUENCE_IS_CONTINUOUS: {"gaps": 32, "streams_with_gaps": 16, "streams": 31},
    specs.SUPABASE_SEQUENCE_IS_CONTINUOUS: {"gaps": 24, "streams_with_gaps": 15, "streams": 31},
    specs.WS_CHECKSUMS_ARE_VALID: {"observed_value": 25},
    specs.SUPABASE_CHECKSUMS_ARE_VALID: {"observed_value": 25},
    specs.WS_KEYS_ARE_UNIQUE: {"duplicated_keys": 11, "conflicting_keys": 5, "retry_copies": 6},
    specs.SUPABASE_KEYS_ARE_UNIQUE: {"duplicated_keys": 11, "conflicting_keys": 5},
}


@pytest.mark.parametrize("asset", list(SNAPSHOTS))
@pytest.mark.parametrize("k", [1, 3, 7])
def test_checks_on_parts_equal_checks_on_the_whole_table(asset: str, k: int, tmp_path: Path):
    table = SNAPSHOTS[asset](FAULTY)
    whole = run(asset, table, tmp_path / "whole")
    for result in whole:
        assert not result.passed
        for key, value in EXPECTED[result.check_name].items():
            assert meta(result, key) == value, (result.check_name, key)
        assert len(meta(result, "sample")) == min(SAMPLE_LIMIT, meta(result, "observed_value"))

    split = Split(table, k, seed=k)
    in_parts = run(asset, split, tmp_path / "parts")
    assert outcome(in_parts) == outcome(whole)
    assert ge_document(tmp_path / "parts", asset) == ge_document(tmp_path / "whole", asset)
    assert len(split.requests) == 1  # one pass over the snapshot for all its checks


SNAPSHOT_SCHEMA = pa.schema(
    [
        ("stream", pa.string()),
        ("seq", pa.int64()),
        ("category", pa.string()),
        ("checksum", pa.string()),
        ("checksum_valid", pa.bool_()),
        ("payload", pa.string()),
    ]
)
#: Far-apart seqs make the key sort fall back from one packed integer key to lexsort.
SEQS = st.one_of(st.integers(0, 40), st.integers(2**60, 2**60 + 3))
EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "d", "e", "f"]),
        SEQS,
        st.sampled_from(["CRITICAL", "INFORMATIONAL", "LEGACY", None]),
        st.sampled_from(["c0", "c1", None]),  # the same key twice with c0 and c1: a conflict
        st.sampled_from([True, False, None]),
    ),
    max_size=80,
)


@given(events=EVENTS, k=st.sampled_from([1, 3, 7]), seed=st.integers(0, 2**16))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_split_into_parts_gives_the_results_of_the_whole_table(
    events: list[tuple[str, int, str | None, str | None, bool | None]], k: int, seed: int
):
    table = pa.Table.from_pylist(
        [dict(zip(SNAPSHOT_SCHEMA.names, (*event, "{}"), strict=True)) for event in events],
        schema=SNAPSHOT_SCHEMA,
    )
    for asset in SNAPSHOTS:
        assert outcome(run(asset, Split(table, k, seed))) == outcome(run(asset, table))


@pytest.mark.parametrize(
    ("asset", "selected", "columns"),
    [
        (
            specs.WS_LOG_SNAPSHOT,
            all_checks(specs.WS_LOG_SNAPSHOT),
            ["stream", "seq", "checksum_valid", "checksum"],
        ),
        (
            specs.SUPABASE_EVENTS_SNAPSHOT,
            all_checks(specs.SUPABASE_EVENTS_SNAPSHOT),
            ["stream", "seq", "category", "checksum_valid", "checksum"],
        ),
        (specs.WS_LOG_SNAPSHOT, {specs.WS_SEQUENCE_IS_CONTINUOUS}, ["stream", "seq"]),
        (
            specs.SUPABASE_EVENTS_SNAPSHOT,
            {specs.SUPABASE_SEQUENCE_IS_CONTINUOUS},
            ["stream", "seq", "category"],
        ),
        (
            specs.SUPABASE_EVENTS_SNAPSHOT,
            {specs.SUPABASE_CHECKSUMS_ARE_VALID},
            ["stream", "seq", "checksum_valid"],
        ),
        (specs.WS_LOG_SNAPSHOT, {specs.WS_KEYS_ARE_UNIQUE}, ["stream", "seq", "checksum"]),
    ],
)
def test_parts_are_read_once_in_only_the_columns_the_checks_need(
    asset: str, selected: set[str], columns: list[str]
):
    split = Split(SNAPSHOTS[asset](FAULTY), 3)
    results = list(evaluate_checks(asset, split, selected, PARTITION, None, CRITERIA))
    assert {r.check_name for r in results} == selected
    assert split.requests == [columns]


@pytest.mark.parametrize("asset", list(SNAPSHOTS))
@pytest.mark.parametrize("empty_parts", [0, 1, 3])
def test_an_empty_snapshot_passes_in_no_parts_or_empty_parts(asset: str, empty_parts: int):
    empty = SNAPSHOTS[asset]([])
    results = run(asset, Parts([empty] * empty_parts))
    assert outcome(results) == outcome(run(asset, empty))
    assert all(r.passed for r in results)
    counts = {k: meta(r, k) for r in results for k in ("streams", "rows") if k in r.metadata}
    assert counts == {"streams": 0, "rows": 0}


def test_a_snapshot_that_is_neither_a_table_nor_parts_is_refused():
    with pytest.raises(TypeError, match=r"\.parts\(columns\)"):
        run(specs.WS_LOG_SNAPSHOT, FAULTY)

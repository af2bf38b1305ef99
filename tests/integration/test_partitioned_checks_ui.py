"""Red hours in the UI: each hour's check results are recorded against its partition, so the
asset's Checks tab shows, per check, which hours passed and which failed.

Two hours are reconciled into one Dagster instance, one clean and one that lost a CRITICAL
event; a real ``dagster-webserver`` over the same instance is then asked, through the GraphQL
API its UI uses, for each check's partition statuses.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from checks.specs import (
    EVENT_RECONCILIATION,
    NO_CRITICAL_EVENTS_LOST,
    NO_EVENTS_LOST,
    WS_CHECKSUMS_ARE_VALID,
    WS_LOG_SNAPSHOT,
)
from orchestration.definitions import build_definitions
from orchestration.jobs import RECONCILE_EVENTS_JOB
from parity.core.config import TableName
from parity.core.events import Event
from tests.integration.webserver import running_webserver
from tests.orchestration.conftest import HOUR, World, stream_events

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
CLEAN, LOSSY = HOUR, HOUR + dt.timedelta(hours=1)
CLEAN_KEY, LOSSY_KEY = (f"{h:%Y-%m-%d-%H}:00" for h in (CLEAN, LOSSY))

CHECK_STATUSES_QUERY = """
query CheckStatuses {
  assetNodes {
    assetKey { path }
    assetChecksOrError {
      ... on AssetChecks {
        checks {
          name
          partitionDefinition { type }
          partitionStatuses {
            __typename
            ... on AssetCheckTimePartitionStatuses { ranges { startKey endKey status } }
          }
        }
      }
    }
  }
}
"""


def hour_events(hour: dt.datetime, first_seq: int) -> list[Event]:
    return stream_events("health", "system.health", 20, start=hour, first_seq=first_seq)


@pytest.fixture
def reconciled_home(pg_url: str, pg_table: TableName, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A Dagster home holding the two hours' runs, and the environment they ran with."""
    world = World(tmp_path / "home", pg_url, pg_table)
    clean, lossy = hour_events(CLEAN, 1), hour_events(LOSSY, 21)
    world.log([*clean, *lossy])
    world.insert([*clean, *[e for e in lossy if e.seq != 27]])  # the lossy hour lost health 27
    world.critical_first(HOUR - dt.timedelta(days=1))
    dagster_home = tmp_path / "dagster-home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**world.env, "DAGSTER_HOME": str(dagster_home)}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        job = build_definitions().resolve_job_def(RECONCILE_EVENTS_JOB)
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            for key in (CLEAN_KEY, LOSSY_KEY):
                job.execute_in_process(partition_key=key, instance=instance, raise_on_error=False)
    yield env


def statuses_by_check(nodes: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, str]]:
    """(asset, check) -> {partition key: status}, from the time ranges the UI draws."""
    out: dict[tuple[str, str], dict[str, str]] = {}
    for node in nodes:
        asset = "/".join(node["assetKey"]["path"])
        for check in (node.get("assetChecksOrError") or {}).get("checks", []):
            statuses = check["partitionStatuses"] or {}
            per_key: dict[str, str] = {}
            for rng in statuses.get("ranges", []):
                for key in (CLEAN_KEY, LOSSY_KEY):
                    if rng["startKey"] <= key <= rng["endKey"]:
                        per_key[key] = rng["status"]
            out[(asset, check["name"])] = per_key
    return out


def test_each_hours_check_results_are_shown_on_its_partition(
    reconciled_home: dict[str, str], tmp_path: Path
) -> None:
    with running_webserver(
        REPO_ROOT / "workspace.yaml",
        reconciled_home,
        log_dir=tmp_path / "logs",
        cwd=REPO_ROOT,
        timeout=120,
    ) as server:
        nodes = server.graphql(CHECK_STATUSES_QUERY)["assetNodes"]

    statuses = statuses_by_check(nodes)
    lost = statuses[(EVENT_RECONCILIATION, NO_CRITICAL_EVENTS_LOST)]
    assert lost == {CLEAN_KEY: "SUCCEEDED", LOSSY_KEY: "FAILED"}
    assert statuses[(EVENT_RECONCILIATION, NO_EVENTS_LOST)] == {
        CLEAN_KEY: "SUCCEEDED",
        LOSSY_KEY: "FAILED",
    }
    assert statuses[(WS_LOG_SNAPSHOT, WS_CHECKSUMS_ARE_VALID)] == {
        CLEAN_KEY: "SUCCEEDED",
        LOSSY_KEY: "SUCCEEDED",
    }

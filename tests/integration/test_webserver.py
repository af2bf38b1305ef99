"""The code location as the Dagster UI shows it: a real ``dagster-webserver`` over
``workspace.yaml``, asked through its GraphQL API (the API the UI itself uses).

Issue 3: the asset graph, the partitioned job, the schedule and the sensors. Issue 4: the
asset checks on their assets. The field names below exist in dagster-webserver 1.13.27's
schema (found by introspection, see ``test_schema_has_the_fields_these_tests_use``).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from checks.specs import (
    CHECKS,
    EVENT_RECONCILIATION,
    SUPABASE_EVENTS_SNAPSHOT,
    WS_LOG_SNAPSHOT,
    checks_for,
)
from orchestration.backfill_sensors import (
    BACKFILL_MISSED_EVENTS_JOB,
    RECONCILE_AFTER_BACKFILL,
    REPAIR_LOST_EVENTS,
)
from orchestration.jobs import HOURLY_RECONCILIATION_SCHEDULE, RECONCILE_EVENTS_JOB
from orchestration.rollout import (
    CANARY_PROMOTION,
    PROMOTE_ROLLOUT_JOB,
    ROLLBACK_JOB,
    ROLLBACK_ON_CHECK_FAILURE,
    ROLLBACK_ON_HEALTH_TRIGGERS,
)
from orchestration.scorecard import SCORECARD_SENSOR
from tests.integration.webserver import Webserver, running_webserver

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKSPACE = REPO_ROOT / "workspace.yaml"
#: Two days back at midnight: a fixed start whose partition list stays short.
PARTITIONS_START = (dt.datetime.now(dt.UTC) - dt.timedelta(days=2)).replace(
    hour=0, minute=0, second=0, microsecond=0
)
GROUP = "reconciliation"
FEATURE_FLAGS = "feature_flags"
#: Startup is ~10-20 s (Great Expectations loads lazily); the margin is for slow CI machines.
STARTUP_TIMEOUT_S = 120

LOCATION_QUERY = """
query ParityLocation {
  repositoriesOrError {
    __typename
    ... on PythonError { message stack }
    ... on RepositoryConnection {
      nodes {
        name
        location { name }
        jobs {
          name
          description
          isAssetJob
          partitionKeysOrError(limit: 3) { partitionKeys }
        }
        schedules {
          name
          pipelineName
          cronSchedule
          executionTimezone
          description
          partitionSet { name }
        }
        sensors {
          name
          description
          minIntervalSeconds
          defaultStatus
          targets { pipelineName }
        }
        allTopLevelResourceDetails {
          name
          configuredValues { key value type }
        }
      }
    }
  }
}
"""

ASSET_NODES_QUERY = """
query ParityAssetNodes {
  assetNodes {
    assetKey { path }
    dependencyKeys { path }
    dependedByKeys { path }
    groupName
    description
    kinds
    jobNames
    isPartitioned
    partitionDefinition { type name fmt description }
    hasAssetChecks
    assetChecksOrError {
      __typename
      ... on AssetChecks {
        checks { name blocking description assetKey { path } jobNames }
      }
    }
  }
}
"""

#: Fields the queries above select, per type: checked against the live schema first, so a
#: schema change fails with a message naming the field rather than a GraphQL parse error.
USED_FIELDS = {
    "Query": {"repositoriesOrError", "workspaceOrError", "assetNodes"},
    "Repository": {
        "name",
        "location",
        "jobs",
        "schedules",
        "sensors",
        "allTopLevelResourceDetails",
    },
    "Job": {"name", "description", "isAssetJob", "partitionKeysOrError"},
    "Schedule": {
        "name",
        "pipelineName",
        "cronSchedule",
        "executionTimezone",
        "description",
        "partitionSet",
    },
    "Sensor": {"name", "description", "minIntervalSeconds", "defaultStatus", "targets"},
    "AssetNode": {
        "assetKey",
        "dependencyKeys",
        "dependedByKeys",
        "groupName",
        "description",
        "kinds",
        "jobNames",
        "isPartitioned",
        "partitionDefinition",
        "hasAssetChecks",
        "assetChecksOrError",
    },
    "AssetCheck": {"name", "blocking", "description", "assetKey", "jobNames"},
    "ResourceDetails": {"name", "configuredValues"},
}


@pytest.fixture(scope="module")
def webserver(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webserver]:
    root = tmp_path_factory.mktemp("webserver")
    dagster_home = root / "dagster-home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        "DAGSTER_HOME": str(dagster_home),
        "PARITY_HOME": str(root / "parity-home"),
        "PARITY_DATABASE_URL": pg_url,
        "PARITY_PARTITIONS_START": PARTITIONS_START.date().isoformat(),
    }
    with running_webserver(
        WORKSPACE, env, log_dir=root / "logs", cwd=REPO_ROOT, timeout=STARTUP_TIMEOUT_S
    ) as server:
        yield server


@pytest.fixture(scope="module")
def repository(webserver: Webserver) -> dict[str, Any]:
    data = webserver.graphql(LOCATION_QUERY)["repositoriesOrError"]
    assert data["__typename"] == "RepositoryConnection", data
    (repo,) = data["nodes"]
    return repo


@pytest.fixture(scope="module")
def asset_nodes(webserver: Webserver) -> dict[str, dict[str, Any]]:
    nodes = webserver.graphql(ASSET_NODES_QUERY)["assetNodes"]
    return {"/".join(node["assetKey"]["path"]): node for node in nodes}


def keys(items: list[dict[str, Any]]) -> set[str]:
    return {"/".join(item["path"]) for item in items}


def by_name(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in items}


def test_schema_has_the_fields_these_tests_use(webserver: Webserver) -> None:
    query = " ".join(
        f'{name}: __type(name: "{name}") {{ fields {{ name }} }}' for name in USED_FIELDS
    )
    types = webserver.graphql(f"query {{ {query} }}")
    for name, used in USED_FIELDS.items():
        assert types[name] is not None, f"type {name} is not in the schema"
        present = {field["name"] for field in types[name]["fields"]}
        assert used <= present, f"{name} lacks {sorted(used - present)}"


def test_location_loads_from_workspace_yaml(webserver: Webserver) -> None:
    entries = webserver.wait_until_loaded(timeout=10)
    assert [(e["name"], e["loadStatus"]) for e in entries] == [
        ("orchestration.definitions:defs", "LOADED")
    ]
    assert entries[0]["locationOrLoadError"]["__typename"] == "RepositoryLocation"


def test_reconciliation_graph(asset_nodes: dict[str, dict[str, Any]]) -> None:
    """Issue 3: both snapshots and the flags feed the reconciliation, in their groups."""
    reconciliation = asset_nodes[EVENT_RECONCILIATION]
    assert keys(reconciliation["dependencyKeys"]) == {
        WS_LOG_SNAPSHOT,
        SUPABASE_EVENTS_SNAPSHOT,
        FEATURE_FLAGS,
    }
    for snapshot in (WS_LOG_SNAPSHOT, SUPABASE_EVENTS_SNAPSHOT):
        assert keys(asset_nodes[snapshot]["dependencyKeys"]) == set()
        assert EVENT_RECONCILIATION in keys(asset_nodes[snapshot]["dependedByKeys"])
    assert EVENT_RECONCILIATION in keys(asset_nodes[FEATURE_FLAGS]["dependedByKeys"])

    for name in (WS_LOG_SNAPSHOT, SUPABASE_EVENTS_SNAPSHOT, EVENT_RECONCILIATION):
        node = asset_nodes[name]
        assert node["groupName"] == GROUP, name
        assert node["isPartitioned"], name
        assert RECONCILE_EVENTS_JOB in node["jobNames"], name
    assert asset_nodes[FEATURE_FLAGS]["groupName"] == "rollout"
    assert set(asset_nodes[WS_LOG_SNAPSHOT]["kinds"]) == {"python", "parquet"}
    assert set(asset_nodes[SUPABASE_EVENTS_SNAPSHOT]["kinds"]) == {
        "supabase",
        "postgres",
        "parquet",
    }
    assert set(asset_nodes[EVENT_RECONCILIATION]["kinds"]) == {"python"}


def test_every_asset_has_a_group_a_description_and_kinds(
    asset_nodes: dict[str, dict[str, Any]],
) -> None:
    """STYLE: every asset has a group, a business-language description, and kinds."""
    assert {WS_LOG_SNAPSHOT, SUPABASE_EVENTS_SNAPSHOT, EVENT_RECONCILIATION, FEATURE_FLAGS} <= set(
        asset_nodes
    )
    for name, node in asset_nodes.items():
        assert node["groupName"] and node["groupName"] != "default", name
        assert node["description"] and len(node["description"].split()) >= 5, name
        assert node["kinds"], name


def test_reconcile_job_is_partitioned_hourly(
    repository: dict[str, Any], asset_nodes: dict[str, dict[str, Any]]
) -> None:
    job = by_name(repository["jobs"])[RECONCILE_EVENTS_JOB]
    assert job["isAssetJob"]
    assert job["description"]
    first = [PARTITIONS_START + dt.timedelta(hours=h) for h in range(3)]
    assert job["partitionKeysOrError"]["partitionKeys"] == [f"{t:%Y-%m-%d-%H:%M}" for t in first]
    for name in (WS_LOG_SNAPSHOT, SUPABASE_EVENTS_SNAPSHOT, EVENT_RECONCILIATION):
        partitions = asset_nodes[name]["partitionDefinition"]
        assert partitions["type"] == "TIME_WINDOW", name
        assert partitions["fmt"] == "%Y-%m-%d-%H:%M", name
        assert partitions["description"].startswith("Hourly"), partitions


def test_schedule(repository: dict[str, Any]) -> None:
    schedule = by_name(repository["schedules"])[HOURLY_RECONCILIATION_SCHEDULE]
    assert schedule["pipelineName"] == RECONCILE_EVENTS_JOB
    assert schedule["cronSchedule"] == "15 * * * *"
    assert schedule["executionTimezone"] == "UTC"
    assert schedule["description"]


def test_sensors(repository: dict[str, Any]) -> None:
    sensors = by_name(repository["sensors"])
    expected_targets = {
        ROLLBACK_ON_CHECK_FAILURE: ROLLBACK_JOB,
        ROLLBACK_ON_HEALTH_TRIGGERS: ROLLBACK_JOB,
        CANARY_PROMOTION: PROMOTE_ROLLOUT_JOB,
        REPAIR_LOST_EVENTS: BACKFILL_MISSED_EVENTS_JOB,
        RECONCILE_AFTER_BACKFILL: RECONCILE_EVENTS_JOB,
    }
    assert set(expected_targets) <= set(sensors)
    assert sensors[SCORECARD_SENSOR]["defaultStatus"] == "RUNNING"
    for name, job in expected_targets.items():
        sensor = sensors[name]
        assert [t["pipelineName"] for t in sensor["targets"]] == [job], name
        assert sensor["defaultStatus"] == "RUNNING", name
        assert sensor["description"], name
    assert {ROLLBACK_JOB, PROMOTE_ROLLOUT_JOB} <= set(by_name(repository["jobs"]))


def test_checks_show_on_their_assets(asset_nodes: dict[str, dict[str, Any]]) -> None:
    """Issue 4: each asset shows exactly the checks of checks/specs.py, with blocking and
    description as declared."""
    for asset in (WS_LOG_SNAPSHOT, SUPABASE_EVENTS_SNAPSHOT, EVENT_RECONCILIATION):
        node = asset_nodes[asset]
        assert node["hasAssetChecks"], asset
        result = node["assetChecksOrError"]
        assert result["__typename"] == "AssetChecks", result
        shown = by_name(result["checks"])
        declared = checks_for(asset)
        assert set(shown) == {c.name for c in declared}, asset
        for check in declared:
            ui = shown[check.name]
            assert ui["assetKey"]["path"] == [asset]
            assert ui["blocking"] is check.blocking, check.name
            assert ui["description"] == check.description, check.name
            assert RECONCILE_EVENTS_JOB in ui["jobNames"], check.name
    assert len(CHECKS) == 12


def test_secrets_show_as_variable_names(repository: dict[str, Any], pg_url: str) -> None:
    """The resource's database URL reaches Dagster as an EnvVar: the UI names the variable
    and never shows the URL."""
    resources = by_name(repository["allTopLevelResourceDetails"])
    values = {v["key"]: v for v in resources["parity"]["configuredValues"]}
    assert values["database_url"]["type"] == "ENV_VAR"
    assert values["database_url"]["value"] == "PARITY_DATABASE_URL"
    assert pg_url not in json.dumps(repository)


def test_the_knobs_in_force_and_the_alert_sensors_show(repository: dict[str, Any]) -> None:
    """A person sees the plan's thresholds in force on the parity resource, and the alert
    sensors running, each saying what it alerts on."""
    resources = by_name(repository["allTopLevelResourceDetails"])
    values = {v["key"]: v for v in resources["parity"]["configuredValues"]}
    knobs = values["knobs"]["value"]
    for variable, default in (
        ("PARITY_TRIGGER_ERROR_RATE", "0.05"),
        ("PARITY_ROLLOUT_STEPS", "10,50,100"),
        ("PARITY_SLO_DELIVERY_RATE", "0.999"),
        ("PARITY_ROLLBACK_DRY_RUN", "false"),
    ):
        assert variable in knobs and default in knobs, (variable, knobs)
    sensors = by_name(repository["sensors"])
    for name in ("alert_on_discrepancies", "alert_on_delivery_health", "alert_on_run_failure"):
        assert sensors[name]["defaultStatus"] == "RUNNING", name
        assert sensors[name]["description"], name

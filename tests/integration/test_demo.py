"""``parity demo --no-ui``: the whole story end to end, as a user runs it (a subprocess on
the embedded PostgreSQL, a real WebSocket broadcaster and recorder, Dagster in-process)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from parity.app.demo_alerts import read_alerts
from parity.core.config import Settings
from parity.io.embedded import stop_embedded

pytestmark = pytest.mark.integration

PARITY = str(Path(sys.executable).parent / "parity")


def _env(home: Path) -> dict[str, str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PARITY_", "SUPABASE_", "DAGSTER_"))
    }
    return {**base, "PARITY_HOME": str(home)}


@pytest.fixture
def demo_root() -> Iterator[Path]:
    # Not tmp_path: run as root, the embedded server's user must traverse the parents
    # (see tests/conftest.py parity_home).
    root = Path(tempfile.mkdtemp(prefix="parity-demo-test-"))
    try:
        yield root
    finally:
        stop_embedded(Settings.from_env({"PARITY_HOME": str(root / "demo")}))
        shutil.rmtree(root, ignore_errors=True)


def test_headless_demo_detects_every_fault_rolls_back_and_repairs(demo_root: Path) -> None:
    home = demo_root / "demo"
    run = subprocess.run(
        [PARITY, "demo", "--no-ui", "--hours", "2", "--events-per-hour", "5000"]
        + ["--home", str(home), "--keep-db", "--seed", "11"],
        cwd=demo_root,
        env=_env(demo_root),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "NOT DETECTED" not in run.stdout
    assert "ROLLBACK applied" in run.stdout

    summary = json.loads((home / "demo-summary.json").read_text())
    assert summary["ok"] is True
    faults = summary["faults"]
    assert set(faults) == {
        "dropped_writes",
        "retry_duplicates",
        "corrupted_payload",
        "latency_spike",
        "supabase_outage",
    }
    assert all(f["ok"] for f in faults.values()), faults
    dropped = faults["dropped_writes"]
    assert dropped["injected"] == dropped["detected"] == 5
    assert dropped["injected_critical"] >= 1 and dropped["detected_critical"] >= 1
    assert dropped["other_missing"] == 0  # nothing lost that was not dropped on purpose
    assert faults["retry_duplicates"]["injected"] == faults["retry_duplicates"]["detected"] == 3
    assert faults["latency_spike"]["detected"] > 500
    assert summary["health"]["fired"] is True
    # The outage breaches the plan's triggers: the simulated producer wrote a metrics window
    # every 10 s of the outage, whatever the machine's speed.
    assert summary["health"]["triggers"]["error_rate"]["state"] == "BREACH", summary["health"]
    assert summary["health"]["triggers"]["connection_failures"]["state"] == "BREACH"
    # The producer numbered exactly as planned, and the recorder logged every send.
    assert summary["traffic"]["seq_mismatches"] == 0
    assert summary["traffic"]["emitted"] == summary["traffic"]["planned"]

    hours = summary["hours"]
    assert len(hours) == 2 and all(h["colour"] == "red" for h in hours.values())
    first, last = sorted(hours)
    assert "supabase_checksums_are_valid" in hours[first]["failed_error_checks"]
    assert "latency_p95_within_slo" in hours[first]["failed_warn_checks"]
    assert "no_critical_events_lost" in hours[last]["failed_error_checks"]
    assert "no_events_lost" in hours[last]["failed_warn_checks"]

    # The repair loop, ticked as the daemon would: the hour that lost events is backfilled
    # and reconciled again, green with no person involved; the corrupted hour stays red (a
    # backfill never overwrites a stored row).
    assert summary["lost_hours"] == [last]
    repair = summary["repair"]
    assert [(r["job"], r["partition"], r["success"]) for r in repair["runs"]] == [
        ("backfill_missed_events_job", last, True),
        ("reconcile_events_job", last, True),
    ]
    assert repair["hours"][last] == {"colour": "green", "reasons": [], "repair": "done"}
    assert repair["hours"][first]["colour"] == "red"
    assert any("invalid checksums in Supabase" in r for r in repair["hours"][first]["reasons"])
    assert f"{last}  GREEN" in run.stdout
    # The alert log a person can open: the lost hour red, then green after its repair.
    assert summary["alerts_log"] == str(home / "alerts.log")
    assert f"tail -f {home / 'alerts.log'}" in run.stdout
    alerts = read_alerts(home / "alerts.log")
    assert [(a.kind, a.state) for a in alerts if a.hour == last] == [
        ("hour_red", "red"),
        ("hour_green", "green"),
    ], alerts
    assert any(a.kind == "rollback" and a.state == "red" for a in alerts), alerts
    for key in hours:
        assert (home / "reports" / f"{key}.json").exists()
    assert list((home / "ws-log").glob("*/*.jsonl"))

    # The rollback is in the database, audited as the health sensor's.
    flags = subprocess.run(
        [PARITY, "flags", "list", "--json"],
        cwd=demo_root,
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    values = json.loads(flags.stdout)
    assert values["MONITORING_SUPABASE_ROLLOUT_PERCENTAGE"] == 0
    assert values["MONITORING_CRITICAL_EVENTS_SUPABASE"] is False
    assert values["MONITORING_DUAL_WRITE_ENABLED"] is True
    assert values["MONITORING_DASHBOARD_FALLBACK_MODE"] is True
    history = subprocess.run(
        [PARITY, "flags", "history", "--json"],
        cwd=demo_root,
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    rows = json.loads(history.stdout)
    actors = {r["actor"] for r in rows}
    assert "parity:demo" in actors  # the canary history, written in the past
    assert any(a.startswith("parity:rollback_on_health_triggers") for a in actors)
    assert {r["new_value"] for r in rows if r["flag"].endswith("ROLLOUT_PERCENTAGE")} == {10, 0}


def test_demo_refuses_a_folder_it_did_not_create(demo_root: Path) -> None:
    home = demo_root / "someone-elses"
    home.mkdir()
    (home / "precious.txt").write_text("keep me")
    run = subprocess.run(
        [PARITY, "demo", "--no-ui", "--home", str(home)],
        cwd=demo_root,
        env=_env(demo_root),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "--reset" in run.stderr
    assert (home / "precious.txt").read_text() == "keep me"

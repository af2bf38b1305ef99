"""``parity demo`` with the UI: the demo's environment for ``dagster dev``, the process
(webserver and daemon) in a group of its own, what the terminal shows while a person
watches, and the guide to what to look at."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from parity.app.demo_plan import DemoPlan
from parity.app.demo_results import lost_hours
from parity.core import partitions

DROPPED_ENV_PREFIXES = ("PARITY_", "SUPABASE_", "DAGSTER_")
#: Variables of those the demo keeps: where the user wants alerts sent.
KEPT_ENV = ("PARITY_ALERT_URLS", "PARITY_ALERT_WEBHOOK_URL")


def demo_env(home: Path, first_hour: dt.datetime, base: Mapping[str, str]) -> dict[str, str]:
    """The demo's environment: ``base`` without Parity's, Supabase's and Dagster's variables
    (the demo runs on its own embedded database, never on a configured one), plus its own.
    The user's alert targets are kept: the demo's alerts go there instead of its log."""
    env = {k: v for k, v in base.items() if not k.startswith(DROPPED_ENV_PREFIXES) or k in KEPT_ENV}
    env["PARITY_HOME"] = str(home)
    env["DAGSTER_HOME"] = str(home / "dagster")
    env["PARITY_PARTITIONS_START"] = first_hour.strftime("%Y-%m-%dT%H:%MZ").replace("Z", "+00:00")
    return env


def workspace_file() -> Path:
    """The checkout's workspace.yaml (the UI needs the source tree: an editable install)."""
    from parity.core.errors import ConfigurationError

    path = Path(__file__).resolve().parents[2] / "workspace.yaml"
    if not path.exists():
        raise ConfigurationError(
            f"no workspace.yaml next to the parity package ({path}): the UI needs a checkout "
            "installed with `pip install -e .`; use --no-ui otherwise"
        )
    return path


def start_dagster_dev(port: int, env: Mapping[str, str], log_path: Path) -> subprocess.Popen:
    """``dagster dev`` (webserver and daemon) in a process group of its own."""
    workspace = workspace_file()
    skip_welcome_dialog(Path(env["DAGSTER_HOME"]))
    log_file = open(log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-w", str(workspace)]
            + ["-h", "127.0.0.1", "-p", str(port)],
            cwd=workspace.parent,
            env=dict(env),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        log_file.close()


def skip_welcome_dialog(dagster_home: Path) -> None:
    """The demo's own Dagster home marks the UI's "Join the Dagster community" dialog as
    seen (the file the webserver's ``setNuxSeen`` writes), so it does not cover the first
    page a person opens from the banner."""
    nux = dagster_home / ".nux" / "nux.yaml"
    nux.parent.mkdir(parents=True, exist_ok=True)
    nux.write_text("seen: 1\n")


def wait_for_webserver(process: subprocess.Popen, url: str, timeout: float = 180.0) -> None:
    from parity.core.errors import ParityError

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ParityError(f"dagster dev exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url + "/server_info", timeout=2) as answer:  # noqa: S310
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise ParityError(f"dagster dev did not answer on {url} within {timeout:g} s")


def stop_process_group(process: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM to the group (dagster dev shuts its webserver, daemon and code servers
    down), then SIGKILL for whatever of the group is left after ``timeout``."""
    try:
        pgid = os.getpgid(process.pid)
    except ProcessLookupError:
        return
    with _suppress_lookup():
        os.killpg(pgid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    with _suppress_lookup():
        os.killpg(pgid, signal.SIGKILL)
    process.wait(5)


class _suppress_lookup:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: object, tb: object) -> bool:
        return kind is ProcessLookupError


def rollback_seen(plane: Any) -> dict[str, Any] | None:
    """The rollback in force, with who applied it (the latest audit row of the state), or
    None."""
    from parity.io import control

    state = control.read_state(plane)
    if not state.rollback_in_force:
        return None
    rows = plane.history(control.ROLLOUT_STATE_FLAG)
    last = max(rows, key=lambda r: r.id) if rows else None
    return {
        "at": state.rollback_at.isoformat() if state.rollback_at else None,
        "reason": state.rollback_reason,
        "actor": last.actor if last else None,
    }


def watch(traffic: Any, dagster: subprocess.Popen, plane: Any, out: Any) -> None:
    """Until Ctrl-C: report the rollback when a sensor applies it; a minute later Supabase
    comes back and the producer's buffer is replayed."""
    seen: dict[str, Any] | None = None
    recovered = False
    since = time.monotonic()
    while dagster.poll() is None:
        time.sleep(5)
        if traffic.finished.is_set():
            traffic.stop()  # raises what stopped it
        if seen is None:
            seen = rollback_seen(plane)
            if seen is not None:
                out(f"  ROLLBACK by {seen['actor']} at {seen['at']}: {seen['reason']}")
                out("  (Supabase stays down for another minute, then the buffer replays)")
                since = time.monotonic()
        elif not recovered and time.monotonic() - since > 60:
            traffic.end_outage()
            recovered = True
            out("  Supabase is back: the producer replays the events it buffered")
    out(f"parity demo: dagster dev exited with code {dagster.returncode}")


def guide(ui: str, plan: DemoPlan, hours: dict[str, Any], home: Path, alerts: str) -> str:
    red = [k for k, h in hours.items() if h["colour"] == "red"]
    green = [k for k, h in hours.items() if h["colour"] == "green"]
    damaged = lost_hours(plan)
    corrupted = sorted({partitions.format_key(plan.by_key()[k].at) for k in plan.faults.corrupted})
    # The command as it can be typed: the `parity` of this environment, which need not be on
    # PATH, with the demo's home (its database and reports are not under $PARITY_HOME).
    parity = shutil.which("parity", path=str(Path(sys.executable).parent)) or "parity"
    return f"""
Parity demo is running: {ui}   (Ctrl-C stops it)

  Scorecard      {ui}/assets/migration_scorecard
                 every hour green / yellow / red and why, delivery rate and p95 latency
                 against the SLOs (refreshed after each reconciliation; the asset's
                 description says what each colour means)
  Lineage        {ui}/asset-groups  (reconciliation: ws_log_snapshot + supabase_events_snapshot
                 -> event_reconciliation -> missed_events_backfill, migration_scorecard;
                 rollout: feature_flags)
  Red now        {", ".join(red) or "-"}    green: {", ".join(green) or "-"}
  Rollback       {ui}/automation: within a minute rollback_on_health_triggers sees the ongoing
                 outage in delivery_metrics and launches rollback_job;
                 rollback_on_check_failure reacts to the lost CRITICAL events. Runs: {ui}/runs
  Repair         no click needed: repair_lost_events backfills {", ".join(damaged) or "-"}
                 (dropped writes) and reconcile_after_backfill reconciles it again; it turns
                 green on the scorecard within a few minutes (Runs: rollback_job ->
                 backfill_missed_events_job -> reconcile_events_job). The corrupted-payload
                 hour {", ".join(corrupted) or "-"} stays red: a backfill never overwrites a
                 stored row, so the altered one waits for a person.
  Alerts         {alerts}
                 alert_on_discrepancies: each hour once red, once green again after its
                 repair; the rollback; producers gone silent; failed runs
  From a shell   PARITY_HOME={home} {parity} flags history
                 PARITY_HOME={home} {parity} report {(red or green or ["<hour>"])[0]}
  Files          ws log {home / "ws-log"}, reports {home / "reports"},
                 dagster dev log {home / "dagster-dev.log"}
"""

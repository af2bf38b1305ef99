"""The ``parity demo`` session around :mod:`parity.demo`'s traffic: the demo folder, the
flag history, the health verdict taken as the sensor takes it, what was detected, and the
``dagster dev`` process."""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from parity.app.demo import DEMO_ACTOR, HEALTH_ACTOR, DemoPlan, TrafficStats
from parity.core import partitions

# -- home, database, verdict -----------------------------------

MARKER = ".parity-demo"
SUMMARY_FILE = "demo-summary.json"
LATENCY_SLO_MS = 500.0

#: What reconciling the hours returns per hour (orchestration.headless.PartitionOutcome).
Reconcile = Callable[[list[str]], list[Any]]


def prepare_home(home: Path, *, reset: bool, cwd: Path | None = None) -> str:
    """Make ``home`` ready for a fresh demo; what was done, for the terminal.

    A folder holding a previous demo (its marker file) is wiped; any other non-empty folder
    only with ``reset``. The embedded server of a previous demo is stopped first.
    """
    from parity.core.errors import ConfigurationError

    home = home.expanduser().absolute()
    cwd = (cwd or Path.cwd()).absolute()
    if home == Path(home.anchor) or cwd == home or home in cwd.parents:
        raise ConfigurationError(f"refusing to use {home} as the demo folder: it holds {cwd}")
    if home.exists() and any(home.iterdir()):
        if not (home / MARKER).exists() and not reset:
            raise ConfigurationError(
                f"{home} is not empty and holds no previous demo: choose another --home, or "
                "pass --reset to delete its contents"
            )
        _stop_db(home)
        import shutil

        shutil.rmtree(home)
        done = f"removed the previous demo in {home}"
    else:
        done = f"using {home}"
    home.mkdir(parents=True, exist_ok=True)
    (home / MARKER).write_text("parity demo folder: `parity demo` deletes and rebuilds it\n")
    return done


def _stop_db(home: Path) -> bool:
    from parity.core.config import Settings
    from parity.io.embedded import stop_embedded

    return stop_embedded(Settings.from_env({"PARITY_HOME": str(home)}))


def write_flag_history(plane: Any, plan: DemoPlan) -> int:
    """The canary's history, written as it happened (``changed_at`` in the past)."""
    rows = 0
    for step in plan.flag_steps:
        rows += len(
            plane.set_flags(step.changes, actor=DEMO_ACTOR, reason=step.reason, now=step.at)
        )
    return rows


def evaluate_and_roll_back(plane: Any, now: dt.datetime) -> dict[str, Any]:
    """What ``rollback_on_health_triggers`` does on a tick, headless: evaluate the triggers
    over ``delivery_metrics`` at ``now``; on a breach, unless a rollback is in force, apply
    the rollback with the sensor's reason and evidence."""
    from parity.io import control

    health = control.read_health(plane, now)
    state = control.read_state(plane)
    verdict = health.verdict
    out: dict[str, Any] = {
        "evaluated_at": now.isoformat(),
        "samples": health.samples,
        "breached": verdict.breached,
        "triggers": {r.name: {"state": r.state.value, "detail": r.detail} for r in verdict.results},
        "fired": False,
    }
    if not verdict.breached or state.rollback_in_force:
        out["skipped"] = "no breach" if not verdict.breached else "rollback already in force"
        return out
    names = sorted(r.name for r in verdict.breaches)
    evidence = {
        "trigger": "health",
        **verdict.evidence(),
        "partitions": [partitions.format_key(now)],
    }
    applied = control.apply_rollback(
        plane,
        actor=f"{HEALTH_ACTOR} (headless, parity demo)",
        reason=f"health trigger breached: {', '.join(names)}",
        evidence=evidence,
        now=now,
    )
    out.update(
        fired=applied.applied,
        reason=f"health trigger breached: {', '.join(names)}",
        changes=applied.changes,
        flags_after=applied.flags_after,
        audit_ids=applied.audit_ids,
    )
    return out


def hours_summary(outcomes: Sequence[Any]) -> dict[str, Any]:
    hours = {}
    for o in outcomes:
        report = o.report or {}
        errors = sorted(c["check"] for c in o.failed_checks if c["severity"] == "ERROR")
        warnings = sorted(c["check"] for c in o.failed_checks if c["severity"] != "ERROR")
        hours[o.partition] = {
            "colour": "red" if errors or not o.success else ("green" if o.clean else "yellow"),
            "failed_error_checks": errors,
            "failed_warn_checks": warnings,
            "ws_events": report.get("ws_events"),
            "supabase_events": report.get("supabase_events"),
            "expected_in_supabase": report.get("expected_in_supabase"),
            "matched": report.get("matched"),
            "missing_in_supabase": report.get("missing_in_supabase"),
            "duplicates_ws": report.get("duplicates_ws"),
            "invalid_checksums_supabase": report.get("invalid_checksums_supabase"),
            "checksum_mismatches": report.get("checksum_mismatches"),
            "latency_p95_ms": (report.get("latency_ms") or {}).get("p95"),
            "error": o.error,
        }
    return hours


def detection_summary(
    plan: DemoPlan, stats: TrafficStats, outcomes: Sequence[Any], health: dict[str, Any] | None
) -> dict[str, dict[str, Any]]:
    """Per fault kind: what was injected, what the reconciliation / triggers found."""
    reports = {o.partition: (o.report or {}) for o in outcomes}
    failed = {o.partition: {c["check"] for c in o.failed_checks} for o in outcomes}
    missing = {(str(s), int(q)) for r in reports.values() for s, q in (r.get("missing_keys") or [])}
    dropped = set(stats.dropped)
    critical = dropped & set(plan.faults.dropped_critical)
    spike_hour = partitions.format_key(plan.faults.latency_spike[0])
    spike_p95 = (reports.get(spike_hour, {}).get("latency_ms") or {}).get("p95")
    duplicates = sum(int(r.get("duplicates_ws") or 0) for r in reports.values())
    invalid = sum(int(r.get("invalid_checksums_supabase") or 0) for r in reports.values())
    mismatches = sum(int(r.get("checksum_mismatches") or 0) for r in reports.values())
    critical_lost = sum(
        int(((r.get("by_category") or {}).get("CRITICAL") or {}).get("missing_in_supabase") or 0)
        for r in reports.values()
    )
    by_key = plan.by_key()
    out = {
        "dropped_writes": {
            "injected": len(dropped),
            "injected_critical": len(critical),
            "detected": len(dropped & missing),
            "detected_critical": min(critical_lost, len(critical & missing)),
            "other_missing": len(missing - dropped),
            "hours": sorted({partitions.format_key(by_key[k].at) for k in dropped}),
            "how": "report missing_keys; no_events_lost (WARN, repaired) and "
            "no_critical_events_lost (ERROR, rollback)",
            "ok": bool(dropped)
            and dropped <= missing
            and bool(critical)
            and critical_lost > 0
            and "no_critical_events_lost" in set().union(*failed.values()),
        },
        "retry_duplicates": {
            "injected": len(stats.resent),
            "detected": duplicates,
            "how": "report duplicates_ws (identical retry copies: ws_keys_are_unique passes)",
            "ok": bool(stats.resent) and duplicates == len(stats.resent),
        },
        "corrupted_payload": {
            "injected": len(stats.corrupted),
            "detected": invalid,
            "checksum_mismatches": mismatches,
            "how": "report invalid_checksums_supabase; supabase_checksums_are_valid (ERROR)",
            "ok": bool(stats.corrupted)
            and invalid >= len(stats.corrupted)
            and "supabase_checksums_are_valid" in set().union(*failed.values()),
        },
        "latency_spike": {
            "injected": spike_hour,
            "window": [t.isoformat() for t in plan.faults.latency_spike],
            "detected": None if spike_p95 is None else round(spike_p95),
            "how": f"latency_p95_within_slo (WARN, SLO {LATENCY_SLO_MS:g} ms)",
            "ok": spike_p95 is not None
            and spike_p95 > LATENCY_SLO_MS
            and "latency_p95_within_slo" in failed.get(spike_hour, set()),
        },
    }
    if health is not None:
        out["supabase_outage"] = {
            "injected": f"down since {plan.faults.outage_start:%H:%M:%S} "
            f"({stats.outage_store_failures} failed store calls)",
            "detected": {k: v["state"] for k, v in health["triggers"].items()},
            "rollback_fired": health["fired"],
            "how": "health triggers over delivery_metrics, then the rollback",
            "ok": bool(health["breached"] and health["fired"]),
        }
    return out


# -- dagster dev ----------------------------------------------------------------------------

DROPPED_ENV_PREFIXES = ("PARITY_", "SUPABASE_", "DAGSTER_")


def demo_env(home: Path, first_hour: dt.datetime, base: Mapping[str, str]) -> dict[str, str]:
    """The demo's environment: ``base`` without Parity's, Supabase's and Dagster's variables
    (the demo runs on its own embedded database, never on a configured one), plus its own."""
    env = {k: v for k, v in base.items() if not k.startswith(DROPPED_ENV_PREFIXES)}
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
    import sys

    workspace = workspace_file()
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


# -- the run --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoOptions:
    home: Path
    hours: int = 3
    events_per_hour: int = 5000
    seed: int = 7
    port: int = 3000
    ui: bool = True
    reset: bool = False
    keep_db: bool = False


#: Reconciles the hours in the given environment (orchestration.headless, via the CLI).
ReconcileIn = Callable[[list[str], Mapping[str, str]], list[Any]]


def repair_headless(keys: list[str], environ: Mapping[str, str]) -> dict[str, Any]:
    """The repair loop run in this process on the demo's instance (after ``reconcile``
    put the demo's variables in the environment): the runs it launched and each hour's
    verdict afterwards."""
    from orchestration.headless import instance_for_cli
    from orchestration.repair_loop import hour_verdicts, run_repair_loop

    with instance_for_cli() as instance:
        runs = run_repair_loop(instance, environ)
        return {
            "runs": [vars(r) for r in runs],
            "hours": hour_verdicts(instance, keys),
        }


def lost_hours(plan: DemoPlan) -> list[str]:
    """The hours the demo damaged by loss (dropped writes)."""
    by_key = plan.by_key()
    return sorted({partitions.format_key(by_key[k].at) for k in plan.faults.dropped})


def run_demo(
    opts: DemoOptions,
    reconcile: ReconcileIn,
    *,
    out: Callable[[str], None] = print,
    base_env: Mapping[str, str] | None = None,
    repair: Callable[[list[str], Mapping[str, str]], dict[str, Any]] = repair_headless,
) -> int:
    """The whole demo; 0 when (headless) every injected fault was detected, the rollback
    fired and every hour that lost events was repaired green, else 1. With the UI it runs
    until interrupted (Ctrl-C)."""
    import json

    from parity.app.demo import Traffic, plan_demo
    from parity.core.config import Settings
    from parity.io.control_pg import PostgresControlPlane
    from parity.io.embedded import ensure_embedded
    from parity.io.store_pg import PostgresStore, connect
    from parity.producer import postgres_flag_source

    started = time.monotonic()
    timings: dict[str, float] = {}
    # The outage is on purpose: the producer's and recorder's per-retry warnings would
    # bury the demo's own output (the summary counts them).
    for name in ("parity.producer", "parity.io.recorder"):
        logging.getLogger(name).setLevel(logging.ERROR)
    home = opts.home.expanduser().absolute()
    out(f"parity demo: {prepare_home(home, reset=opts.reset)}")
    settings = Settings.from_env({"PARITY_HOME": str(home)})
    url = ensure_embedded(settings)
    timings["database_s"] = time.monotonic() - started
    out(f"  embedded PostgreSQL under {settings.pgdata_dir} (migrated)")
    plan = plan_demo(opts.seed, dt.datetime.now(dt.UTC), opts.hours, opts.events_per_hour)
    env = demo_env(home, plan.first_hour, base_env if base_env is not None else os.environ)
    (home / "dagster").mkdir(exist_ok=True)
    # The demo's own instance: no telemetry banner in the middle of its output.
    (home / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    store = PostgresStore(url, settings.events_table)
    plane = PostgresControlPlane(url, settings.events_table.schema)
    metrics_conn = connect(url)
    traffic: Traffic | None = None
    dagster: subprocess.Popen | None = None
    try:
        write_flag_history(plane, plan)
        out(
            f"  canary history: critical events to Supabase since "
            f"{plan.flag_steps[0].at:%H:%M}, 10% of streams since {plan.flag_steps[1].at:%H:%M} UTC"
        )
        out(
            f"  playing {len(plan.events)} events from {plan.first_hour:%Y-%m-%d %H:%M} UTC to "
            "now through DualWriter -> WebSocket -> Recorder, in simulated time"
        )
        traffic = Traffic(
            plan,
            store,
            metrics_conn,
            settings.ws_log_dir,
            home / "producer",
            live_flags=postgres_flag_source(store),
        )
        mark = time.monotonic()
        traffic.start(keep_live=opts.ui)
        traffic.wait_caught_up()
        timings["traffic_s"] = time.monotonic() - mark
        out(
            f"  caught up with real time after {timings['traffic_s']:.1f} s; Supabase has been "
            f"down since {plan.faults.outage_start:%H:%M:%S} UTC"
        )
        health = None
        if not opts.ui:
            stats = traffic.stop()
            traffic = None
            # As a sensor tick during the outage sees it: at the instant the traffic stopped,
            # not after the seconds stopping takes (on a busy machine those would read as a
            # gap in delivery_metrics, i.e. no data).
            health = evaluate_and_roll_back(plane, stats.end or dt.datetime.now(dt.UTC))
            out(f"  health triggers: {_triggers_line(health)}")
            if health["fired"]:
                out(f"  ROLLBACK applied ({health['reason']}): {health['changes']}")
        else:
            stats = traffic.current_stats()
        out(f"  reconciling {', '.join(plan.hours)} headless (runs recorded in $DAGSTER_HOME)")
        mark = time.monotonic()
        outcomes = reconcile(list(plan.hours), env)
        timings["reconcile_s"] = time.monotonic() - mark
        hours = hours_summary(outcomes)
        for key, h in hours.items():
            out(f"    {key}  {h['colour'].upper():6}  {', '.join(h['failed_error_checks']) or '-'}")
        detection = detection_summary(plan, stats, outcomes, health)
        damaged = lost_hours(plan)
        repaired = None
        if not opts.ui:
            # Headless, the demo ticks the repair sensors itself; with the UI, the daemon does.
            out("  repairing the hours that lost events, as repair_lost_events would")
            mark = time.monotonic()
            repaired = repair(list(plan.hours), env)
            timings["repair_s"] = time.monotonic() - mark
            for key, verdict in repaired["hours"].items():
                why = "; ".join(verdict["reasons"]) or "-"
                out(f"    {key}  {verdict['colour'].upper():6}  {why}")
        timings["total_s"] = time.monotonic() - started
        ok = all(d["ok"] for d in detection.values()) and (
            repaired is None
            or all(repaired["hours"][k]["colour"] == "green" for k in damaged if k in plan.hours)
        )
        summary = {
            "home": str(home),
            "seed": opts.seed,
            "first_hour": plan.first_hour.isoformat(),
            "end": plan.end.isoformat(),
            "hours": hours,
            "faults": detection,
            "injected": plan.faults.to_json(plan.by_key()),
            "health": health,
            "lost_hours": damaged,
            "repair": repaired,
            "traffic": {
                "planned": stats.planned,
                "emitted": stats.emitted,
                "logged_lines": stats.logged,
                "seq_mismatches": stats.seq_mismatches,
                "buffered_at_stop": stats.buffered_at_stop,
                "simulated_s": stats.sim_seconds,
            },
            "timings": {k: round(v, 2) for k, v in timings.items()},
            "ok": ok if not opts.ui else None,
        }
        (home / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=str))
        out("  fault               injected -> detected")
        for kind, d in detection.items():
            out(f"  {kind:19} {_fault_line(kind, d)}")
            out(f"  {'':19}   {'detected' if d['ok'] else 'NOT DETECTED'} by {d['how']}")
        out(f"  summary: {home / SUMMARY_FILE}  ({timings['total_s']:.1f} s)")
        if not opts.ui:
            return 0 if ok else 1
        dagster = start_dagster_dev(opts.port, env, home / "dagster-dev.log")
        ui = f"http://127.0.0.1:{opts.port}"
        wait_for_webserver(dagster, ui)
        out(_guide(ui, plan, hours, home))
        assert traffic is not None
        _watch(traffic, dagster, plane, out)
        return 0
    except KeyboardInterrupt:
        out("\nparity demo: stopping")
        return 130
    finally:
        if dagster is not None:
            stop_process_group(dagster)
        if traffic is not None:
            traffic.stop()
        metrics_conn.close()
        store.close()
        if not opts.keep_db and _stop_db(home):
            out(f"  stopped the embedded PostgreSQL ({settings.pgdata_dir}); --keep-db keeps it")


def _triggers_line(health: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v['state']}" for k, v in health["triggers"].items())


def _fault_line(kind: str, d: dict[str, Any]) -> str:
    if kind == "dropped_writes":
        return (
            f"{d['injected']} dropped ({d['injected_critical']} CRITICAL) in "
            f"{', '.join(d['hours'])} -> {d['detected']} missing "
            f"({d['detected_critical']} CRITICAL)"
        )
    if kind == "latency_spike":
        return f"{d['window'][0][11:16]}-{d['window'][1][11:16]} -> p95 {d['detected']} ms"
    if kind == "supabase_outage":
        breached = [k for k, v in d["detected"].items() if v == "BREACH"]
        fired = "rollback fired" if d["rollback_fired"] else "no rollback"
        return f"{d['injected']} -> breach: {', '.join(breached) or 'none'}; {fired}"
    return f"{d['injected']} -> {d['detected']}"


def _watch(traffic: Any, dagster: subprocess.Popen, plane: Any, out: Any) -> None:
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


def _guide(ui: str, plan: DemoPlan, hours: dict[str, Any], home: Path) -> str:
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
  From a shell   PARITY_HOME={home} {parity} flags history
                 PARITY_HOME={home} {parity} report {(red or green or ["<hour>"])[0]}
  Files          ws log {home / "ws-log"}, reports {home / "reports"},
                 dagster dev log {home / "dagster-dev.log"}
"""

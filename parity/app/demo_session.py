"""The ``parity demo`` session around :mod:`parity.app.demo`'s traffic: the demo folder and
its database, the flag history, the health verdict taken as the sensor takes it, the
reconciliation and repair of the hours, and where the alerts go. What was detected is
:mod:`parity.app.demo_results`; the UI and ``dagster dev`` are :mod:`parity.app.demo_ui`."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from parity.app import demo_ui
from parity.app.demo import Traffic, TrafficStats
from parity.app.demo_alerts import ALERTS_FILE, AlertReceiver
from parity.app.demo_plan import DEMO_ACTOR, HEALTH_ACTOR, DemoPlan
from parity.app.demo_results import (
    detection_summary,
    fault_line,
    hours_summary,
    lost_hours,
    triggers_line,
)
from parity.core import partitions
from parity.core.config import Settings

if TYPE_CHECKING:
    from parity.io.notify import Notifier

# -- home, database, flag history, health ------------------------------------------------

MARKER = ".parity-demo"

SUMMARY_FILE = "demo-summary.json"


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


def evaluate_and_roll_back(
    plane: Any, now: dt.datetime, notifier: Notifier | None = None
) -> dict[str, Any]:
    """What ``rollback_on_health_triggers`` and ``rollback_job`` do, headless: evaluate the
    triggers over ``delivery_metrics`` at ``now``; on a breach, unless a rollback is in
    force, apply the rollback with the sensor's reason and evidence, and alert it."""
    from parity.core.alerts import rollback_alert
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
    reason = f"health trigger breached: {', '.join(names)}"
    control.record_decision(
        plane,
        applied,
        dry_run=False,
        reason=reason,
        source=f"{HEALTH_ACTOR} (headless, parity demo)",
        evidence=evidence,
        now=now,
    )
    out.update(
        fired=applied.applied,
        reason=reason,
        changes=applied.changes,
        flags_after=applied.flags_after,
        audit_ids=applied.audit_ids,
    )
    if applied.applied and notifier is not None:
        notifier.send(
            rollback_alert(
                reason=reason,
                changes=applied.changes,
                flags=applied.flags_after,
                evidence=evidence,
                run_id=None,
            )
        )
    return out


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
#: Runs the repair loop in the given environment: its runs and each hour's verdict.
RepairIn = Callable[[list[str], Mapping[str, str]], dict[str, Any]]


def repair_headless(keys: list[str], environ: Mapping[str, str]) -> dict[str, Any]:
    """The repair loop run in this process on the demo's instance (after ``reconcile``
    put the demo's variables in the environment), with the discrepancy alerts it causes:
    the runs it launched and each hour's verdict afterwards."""
    from orchestration.headless import instance_for_cli
    from orchestration.repair_loop import hour_verdicts, run_repair_loop

    with instance_for_cli() as instance:
        runs = run_repair_loop(instance, environ)
        return {
            "runs": [vars(r) for r in runs],
            "hours": hour_verdicts(instance, keys),
        }


@dataclass
class Session:
    """What one demo holds open, and what it has learnt so far."""

    opts: DemoOptions
    home: Path
    settings: Settings
    plan: DemoPlan
    env: dict[str, str]
    out: Callable[[str], None]
    store: Any = None
    plane: Any = None
    metrics_conn: Any = None
    alerts: AlertReceiver | None = None
    traffic: Traffic | None = None
    dagster: subprocess.Popen | None = None
    started: float = field(default_factory=time.monotonic)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def alerts_where(self) -> str:
        """Where the demo's alerts go, as the terminal says it."""
        if self.alerts is not None:
            return f"tail -f {self.alerts.path}"
        return "to your PARITY_ALERT_URLS / PARITY_ALERT_WEBHOOK_URL"

    def lap(self, name: str, since: float) -> float:
        self.timings[name] = time.monotonic() - since
        return self.timings[name]


def open_session(
    opts: DemoOptions, base_env: Mapping[str, str], out: Callable[[str], None]
) -> Session:
    """A fresh demo folder with its embedded PostgreSQL (migrated), the plan, the
    environment the demo's Dagster runs in, and the alert log (unless the user's
    ``PARITY_ALERT_URLS`` or ``PARITY_ALERT_WEBHOOK_URL`` take the alerts)."""
    from parity.app.demo_plan import plan_demo
    from parity.io.control_pg import PostgresControlPlane
    from parity.io.embedded import ensure_embedded
    from parity.io.store_pg import PostgresStore, connect

    started = time.monotonic()
    home = opts.home.expanduser().absolute()
    out(f"parity demo: {prepare_home(home, reset=opts.reset)}")
    settings = Settings.from_env({"PARITY_HOME": str(home)})
    url = ensure_embedded(settings)
    out(f"  embedded PostgreSQL under {settings.pgdata_dir} (migrated)")
    plan = plan_demo(opts.seed, dt.datetime.now(dt.UTC), opts.hours, opts.events_per_hour)
    env = demo_ui.demo_env(home, plan.first_hour, base_env)
    session = Session(opts, home, settings, plan, env, out, started=started)
    session.lap("database_s", started)
    (home / "dagster").mkdir(exist_ok=True)
    # The demo's own instance: no telemetry banner in the middle of its output.
    (home / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    if not any(env.get(name) for name in demo_ui.KEPT_ENV):
        session.alerts = AlertReceiver(home / ALERTS_FILE).start()
        env["PARITY_ALERT_URLS"] = session.alerts.url
    out(f"  alerts: {session.alerts_where}")
    session.store = PostgresStore(url, settings.events_table)
    session.plane = PostgresControlPlane(url, settings.events_table.schema)
    session.metrics_conn = connect(url)
    return session


def play_traffic(s: Session) -> tuple[TrafficStats, dict[str, Any] | None]:
    """The canary's history, then the planned traffic up to now; headless, the health
    triggers evaluated (and the rollback applied) as the sensor would during the outage."""
    from parity.io.notify import Notifier
    from parity.producer import postgres_flag_source

    plan, out = s.plan, s.out
    write_flag_history(s.plane, plan)
    out(
        f"  canary history: critical events to Supabase since "
        f"{plan.flag_steps[0].at:%H:%M}, 10% of streams since {plan.flag_steps[1].at:%H:%M} UTC"
    )
    out(
        f"  playing {len(plan.events)} events from {plan.first_hour:%Y-%m-%d %H:%M} UTC to "
        "now through DualWriter -> WebSocket -> Recorder, in simulated time"
    )
    s.traffic = Traffic(
        plan,
        s.store,
        s.metrics_conn,
        s.settings.ws_log_dir,
        s.home / "producer",
        live_flags=postgres_flag_source(s.store),
    )
    mark = time.monotonic()
    s.traffic.start(keep_live=s.opts.ui)
    s.traffic.wait_caught_up()
    out(
        f"  caught up with real time after {s.lap('traffic_s', mark):.1f} s; Supabase has "
        f"been down since {plan.faults.outage_start:%H:%M:%S} UTC"
    )
    if s.opts.ui:
        return s.traffic.current_stats(), None
    stats = s.traffic.stop()
    s.traffic = None
    # As a sensor tick during the outage sees it: at the instant the traffic stopped,
    # not after the seconds stopping takes (on a busy machine those would read as a
    # gap in delivery_metrics, i.e. no data).
    notifier = Notifier.from_settings(Settings.from_env(s.env))
    health = evaluate_and_roll_back(s.plane, stats.end or dt.datetime.now(dt.UTC), notifier)
    out(f"  health triggers: {triggers_line(health)}")
    if health["fired"]:
        out(f"  ROLLBACK applied ({health['reason']}): {health['changes']}")
    return stats, health


def reconcile_hours(s: Session, reconcile: ReconcileIn) -> tuple[list[Any], dict[str, Any]]:
    """Every complete hour reconciled headless; each hour's colour printed."""
    s.out(f"  reconciling {', '.join(s.plan.hours)} headless (runs recorded in $DAGSTER_HOME)")
    mark = time.monotonic()
    outcomes = reconcile(list(s.plan.hours), s.env)
    s.lap("reconcile_s", mark)
    hours = hours_summary(outcomes)
    for key, h in hours.items():
        s.out(f"    {key}  {h['colour'].upper():6}  {', '.join(h['failed_error_checks']) or '-'}")
    return outcomes, hours


def repair_hours(s: Session, repair: RepairIn) -> dict[str, Any]:
    """Headless, the demo ticks the repair and alert sensors itself (with the UI, the
    daemon does): the runs and each hour's verdict afterwards, printed."""
    s.out("  repairing the hours that lost events, as repair_lost_events would")
    mark = time.monotonic()
    repaired = repair(list(s.plan.hours), s.env)
    s.lap("repair_s", mark)
    for key, verdict in repaired["hours"].items():
        why = "; ".join(verdict["reasons"]) or "-"
        s.out(f"    {key}  {verdict['colour'].upper():6}  {why}")
    return repaired


def write_summary(
    s: Session,
    stats: TrafficStats,
    hours: dict[str, Any],
    detection: dict[str, Any],
    health: dict[str, Any] | None,
    repaired: dict[str, Any] | None,
) -> bool:
    """The summary file and the injected -> detected table; whether (headless) every fault
    was detected and every hour that lost events was repaired green."""
    plan, damaged = s.plan, lost_hours(s.plan)
    s.timings["total_s"] = time.monotonic() - s.started
    ok = all(d["ok"] for d in detection.values()) and (
        repaired is None
        or all(repaired["hours"][k]["colour"] == "green" for k in damaged if k in plan.hours)
    )
    summary = {
        "home": str(s.home),
        "seed": s.opts.seed,
        "first_hour": plan.first_hour.isoformat(),
        "end": plan.end.isoformat(),
        "hours": hours,
        "faults": detection,
        "injected": plan.faults.to_json(plan.by_key()),
        "health": health,
        "lost_hours": damaged,
        "repair": repaired,
        "alerts_log": str(s.alerts.path) if s.alerts is not None else None,
        "traffic": {
            "planned": stats.planned,
            "emitted": stats.emitted,
            "logged_lines": stats.logged,
            "seq_mismatches": stats.seq_mismatches,
            "buffered_at_stop": stats.buffered_at_stop,
            "simulated_s": stats.sim_seconds,
        },
        "timings": {k: round(v, 2) for k, v in s.timings.items()},
        "ok": ok if not s.opts.ui else None,
    }
    (s.home / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=str))
    s.out("  fault               injected -> detected")
    for kind, d in detection.items():
        s.out(f"  {kind:19} {fault_line(kind, d)}")
        s.out(f"  {'':19}   {'detected' if d['ok'] else 'NOT DETECTED'} by {d['how']}")
    s.out(f"  summary: {s.home / SUMMARY_FILE}  ({s.timings['total_s']:.1f} s)")
    s.out(f"  alerts:  {s.alerts_where}")
    return ok


def show_ui(s: Session, hours: dict[str, Any]) -> None:
    """``dagster dev`` on the demo's instance, the guide, then the outage's end, until
    Ctrl-C."""
    s.dagster = demo_ui.start_dagster_dev(s.opts.port, s.env, s.home / "dagster-dev.log")
    ui = f"http://127.0.0.1:{s.opts.port}"
    demo_ui.wait_for_webserver(s.dagster, ui)
    s.out(demo_ui.guide(ui, s.plan, hours, s.home, s.alerts_where))
    assert s.traffic is not None
    demo_ui.watch(s.traffic, s.dagster, s.plane, s.out)


def close_session(s: Session) -> None:
    """Stop what the demo started, the embedded PostgreSQL too unless ``--keep-db``."""
    if s.dagster is not None:
        demo_ui.stop_process_group(s.dagster)
    if s.traffic is not None:
        s.traffic.stop()
    for resource in (s.metrics_conn, s.store, s.plane, s.alerts):
        if resource is not None:
            resource.close()
    if not s.opts.keep_db and _stop_db(s.home):
        s.out(f"  stopped the embedded PostgreSQL ({s.settings.pgdata_dir}); --keep-db keeps it")


def run_demo(
    opts: DemoOptions,
    reconcile: ReconcileIn,
    *,
    out: Callable[[str], None] = print,
    base_env: Mapping[str, str] | None = None,
    repair: RepairIn = repair_headless,
) -> int:
    """The whole demo; 0 when (headless) every injected fault was detected, the rollback
    fired and every hour that lost events was repaired green, else 1. With the UI it runs
    until interrupted (Ctrl-C)."""
    # The outage is on purpose: the producer's and recorder's per-retry warnings would
    # bury the demo's own output (the summary counts them).
    for name in ("parity.producer", "parity.io.recorder"):
        logging.getLogger(name).setLevel(logging.ERROR)
    s = open_session(opts, base_env if base_env is not None else os.environ, out)
    try:
        stats, health = play_traffic(s)
        outcomes, hours = reconcile_hours(s, reconcile)
        detection = detection_summary(s.plan, stats, outcomes, health)
        repaired = None if opts.ui else repair_hours(s, repair)
        ok = write_summary(s, stats, hours, detection, health, repaired)
        if not opts.ui:
            return 0 if ok else 1
        show_ui(s, hours)
        return 0
    except KeyboardInterrupt:
        out("\nparity demo: stopping")
        return 130
    finally:
        close_session(s)

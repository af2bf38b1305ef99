"""``parity flags …``, ``parity rollback`` and ``parity rollout …``."""

from __future__ import annotations

import datetime as dt
import getpass
import json
from contextlib import contextmanager
from typing import Any

import click

from parity.app.common import EXIT_DISCREPANCIES, database_in_use, with_settings
from parity.core import rollout, triggers
from parity.core.config import Settings
from parity.core.errors import FlagError
from parity.core.routing import FLAG_DEFAULTS, parse_flag_value, validate_flag
from parity.io import control, rollback
from parity.io.notify import Notifier

EXIT_OK = 0


def cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


@contextmanager
def control_plane(settings: Settings):  # noqa: ANN201
    """The control plane the settings point at: PostgreSQL (a URL or the embedded server),
    or the Supabase REST API. A missing flag table says `parity db migrate`."""
    with database_in_use(settings):
        plane = control.open_control_plane(settings)
        try:
            yield plane
        finally:
            plane.close()


def _show(value: Any) -> str:
    return json.dumps(value)


@click.group("flags")
def flags_group() -> None:
    """Read, set and audit the feature flags."""


@flags_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@with_settings
def cmd_flags_list(settings: Settings, as_json: bool) -> int:
    """The values in force."""
    with control_plane(settings) as plane:
        values = plane.read_flags()
    if as_json:
        click.echo(json.dumps(values, indent=2))
    else:
        width = max(len(n) for n in values)
        for name, value in values.items():
            click.echo(f"{name:<{width}}  {_show(value)}")
    return EXIT_OK


@flags_group.command("set")
@click.argument("name")
@click.argument("value")
@click.option("--reason", required=True)
@click.option("--actor", help="who is changing it (default: cli:<user>)")
@with_settings
def cmd_flags_set(settings: Settings, name: str, value: str, reason: str, actor: str | None) -> int:
    """Change one flag (audited). VALUE: true/false, or 0-100 for the rollout percentage."""
    parsed = parse_flag_value(name, value)
    with control_plane(settings) as plane:
        rows = plane.set_flags(
            {name: parsed},
            actor=actor or cli_actor(),
            reason=reason,
            evidence={"source": "cli"},
        )
    if rows:
        click.echo(f"{name}: {_show(rows[0].old_value)} -> {_show(rows[0].new_value)}")
    else:
        click.echo(f"{name} is already {_show(parsed)}: nothing changed")
    return EXIT_OK


@flags_group.command("history")
@click.argument("name", required=False)
@click.option("--limit", type=click.IntRange(min=1))
@click.option(
    "--rollbacks",
    is_flag=True,
    help="only the rollback decisions: applied, and those dry-run mode would have made",
)
@click.option("--json", "as_json", is_flag=True)
@with_settings
def cmd_flags_history(
    settings: Settings, name: str | None, limit: int | None, rollbacks: bool, as_json: bool
) -> int:
    """The audit trail (of one flag, with NAME), then the rollback decisions."""
    if name and name not in FLAG_DEFAULTS and name not in control.RESERVED_FLAGS:
        validate_flag(name, None)  # raises with the list of known flags
    with control_plane(settings) as plane:
        rows = [] if rollbacks else plane.history(name)
        decisions = plane.decisions() if rollbacks or (not name and not as_json) else []
    if limit is not None:
        rows, decisions = rows[-limit:], decisions[-limit:]
    if as_json:
        shown = decisions if rollbacks else rows
        click.echo(json.dumps([r.__dict__ for r in shown], indent=2, default=str))
        return EXIT_OK
    if not rollbacks and not rows:
        click.echo("no flag changes audited")
    for r in rows:
        click.echo(
            f"{r.changed_at:%Y-%m-%d %H:%M:%S}Z  {r.flag}  {_show(r.old_value)} -> "
            f"{_show(r.new_value)}  by {r.actor}: {r.reason}"
        )
    if decisions or rollbacks:
        click.echo("rollback decisions:" if decisions else "no rollback decisions audited")
    for d in decisions:
        verb = "WOULD ROLL BACK (dry run)" if d.mode == control.DRY_RUN else "rolled back"
        click.echo(
            f"{d.decided_at:%Y-%m-%d %H:%M:%S}Z  {verb}  by {d.source}: {d.reason}; "
            f"flags: {_show(d.changes) if d.changes else 'none to change'}"
        )
    return EXIT_OK


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@click.command("rollback")
@click.option("--reason", required=True)
@click.option("--actor", help="who is rolling back (default: cli:<user>)")
@with_settings
def cmd_rollback(settings: Settings, reason: str, actor: str | None) -> int:
    """Roll the migration back now (audited)."""
    evidence = {"trigger": "manual", "source": "cli"}
    with control_plane(settings) as plane:
        now = _now()
        applied = control.apply_rollback(
            plane, actor=actor or cli_actor(), reason=reason, evidence=evidence, now=now
        )
        control.record_decision(
            plane,
            applied,
            dry_run=False,
            reason=reason,
            source=actor or cli_actor(),
            evidence=evidence,
            now=now,
        )
    if not applied.applied:
        click.echo("rollback already in force: nothing changed")
        return EXIT_OK
    for name, value in applied.changes.items():
        click.echo(f"{name} -> {_show(value)}")
    click.echo("rollback in force until `parity rollout resume`")
    delivery = rollback.notify_rollback(
        Notifier.from_settings(settings),
        applied,
        reason=reason,
        evidence={"trigger": "manual", "source": "cli"},
    )
    click.echo(f"alert: {delivery.detail}")
    return EXIT_OK


@click.command("rollout")
@click.argument("action", type=click.Choice(["status", "promote", "pause", "resume"]))
@click.option("--reason", help="why (needed for pause and resume)")
@click.option("--actor", help="who is acting (default: cli:<user>)")
@click.option("--json", "as_json", is_flag=True, help="status as JSON")
@with_settings
def cmd_rollout(
    settings: Settings, action: str, reason: str | None, actor: str | None, as_json: bool
) -> int:
    """The canary rollout: status, promote, pause, resume."""
    now = _now()
    config = settings.knobs.rollout
    actor = actor or cli_actor()
    with control_plane(settings) as plane:
        values = plane.read_flags(include_reserved=True)
        state = control.read_state_from(values)
        values = {k: v for k, v in values.items() if k in FLAG_DEFAULTS}
        verdict = control.read_health(plane, now, settings.knobs.triggers).verdict
        hours = rollback.reconciled_hours(settings.layout, state.step_started_at, now)
        decision = rollout.decide(rollout.RolloutInputs(state, values, hours, verdict), config, now)
        if action == "status":
            status = {
                "state": state.to_json(),
                "flags": values,
                "health": verdict.summary(),
                "next": decision.evidence(),
            }
            if as_json:
                click.echo(json.dumps(status, indent=2, default=str))
            else:
                _print_status(state.to_json(), values, verdict, decision.evidence())
            return EXIT_OK
        if action == "promote":
            if decision.action != rollout.Action.PROMOTE:
                click.echo(f"not promoting ({decision.reason}): {decision.detail}")
                return EXIT_DISCREPANCIES
            changes, next_state = dict(decision.flag_changes), decision.next_state
            reason = reason or f"manual promote: stage {decision.from_step} -> {decision.to_step}"
            evidence: dict[str, Any] = {**decision.evidence(), "health": verdict.evidence()}
        else:
            if not reason:
                raise FlagError(f"parity rollout {action} needs --reason")
            if action == "pause":
                transition = rollout.pause(state, now, reason)
            else:
                transition = rollout.resume(state, values, config, now)
            changes, next_state = dict(transition.flag_changes), transition.state
            evidence = {"action": action, "source": "cli"}
        applied = control.apply_transition(
            plane,
            expected_state=state,
            expected_flags=values,
            flag_changes=changes,
            next_state=next_state,
            actor=actor,
            reason=reason,
            evidence=evidence,
            now=now,
        )
    click.echo(
        f"rollout {action}: step {next_state.step}, {'paused' if next_state.paused else 'running'}"
    )
    for name, value in applied.changes.items():
        click.echo(f"{name} -> {_show(value)}")
    return EXIT_OK


def _print_status(
    state: dict[str, Any],
    values: dict[str, Any],
    verdict: triggers.HealthVerdict,
    next_step: dict[str, Any],
) -> None:
    """``parity rollout status`` as tables a person reads (``--json`` for a program)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    rollout_table = Table("rollout", "", title="Rollout state", title_justify="left")
    for key, value in state.items():
        if key != "version":
            rollout_table.add_row(key.replace("_", " "), "-" if value is None else str(value))
    console.print(rollout_table)
    flag_table = Table("flag", "value", title="Flags in force", title_justify="left")
    for name, value in values.items():
        flag_table.add_row(name, _show(value))
    console.print(flag_table)
    health = Table("trigger", "state", "detail", title="Health triggers", title_justify="left")
    for result in verdict.results:
        health.add_row(result.name, result.state.value, result.detail)
    console.print(health)
    decision = Table("next", "", title="Next step", title_justify="left")
    for key, value in next_step.items():
        decision.add_row(key.replace("_", " "), "-" if value in (None, {}) else str(value))
    console.print(decision)

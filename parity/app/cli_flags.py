"""``parity flags …``, ``parity rollback`` and ``parity rollout …``."""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
from contextlib import contextmanager
from typing import Any

from parity.core import rollout
from parity.core.config import Settings
from parity.core.errors import FlagError
from parity.core.routing import FLAG_DEFAULTS, parse_flag_value, validate_flag
from parity.io import control, rollback

EXIT_OK = 0


def cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


@contextmanager
def control_plane(settings: Settings):  # noqa: ANN201
    """The control plane the settings point at: PostgreSQL, or the Supabase REST API."""
    plane = control.open_control_plane(settings)
    try:
        yield plane
    finally:
        plane.close()


def _show(value: Any) -> str:
    return json.dumps(value)


def cmd_flags_list(args: argparse.Namespace, settings: Settings) -> int:
    with control_plane(settings) as plane:
        values = plane.read_flags()
    if args.json:
        print(json.dumps(values, indent=2))
    else:
        width = max(len(n) for n in values)
        for name, value in values.items():
            print(f"{name:<{width}}  {_show(value)}")
    return EXIT_OK


def cmd_flags_set(args: argparse.Namespace, settings: Settings) -> int:
    value = parse_flag_value(args.name, args.value)
    with control_plane(settings) as plane:
        rows = plane.set_flags(
            {args.name: value},
            actor=args.actor or cli_actor(),
            reason=args.reason,
            evidence={"source": "cli"},
        )
    if rows:
        print(f"{args.name}: {_show(rows[0].old_value)} -> {_show(rows[0].new_value)}")
    else:
        print(f"{args.name} is already {_show(value)}: nothing changed")
    return EXIT_OK


def cmd_flags_history(args: argparse.Namespace, settings: Settings) -> int:
    if args.name and args.name not in FLAG_DEFAULTS and args.name not in control.RESERVED_FLAGS:
        validate_flag(args.name, None)  # raises with the list of known flags
    with control_plane(settings) as plane:
        rows = plane.history(args.name)
    if args.limit is not None:
        rows = rows[-args.limit :] if args.limit > 0 else []
    if args.json:
        print(json.dumps([r.__dict__ for r in rows], indent=2, default=str))
        return EXIT_OK
    if not rows:
        print("no flag changes audited")
    for r in rows:
        print(
            f"{r.changed_at:%Y-%m-%d %H:%M:%S}Z  {r.flag}  {_show(r.old_value)} -> "
            f"{_show(r.new_value)}  by {r.actor}: {r.reason}"
        )
    return EXIT_OK


def add_flag_commands(sub: argparse._SubParsersAction) -> None:
    fl = sub.add_parser("flags", help="read, set and audit the feature flags")
    fl_sub = fl.add_subparsers(dest="flags_command", required=True)
    ls = fl_sub.add_parser("list", help="the values in force")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_flags_list)
    st = fl_sub.add_parser("set", help="change one flag (audited)")
    st.add_argument("name")
    st.add_argument("value", help="true/false, or 0-100 for the rollout percentage")
    st.add_argument("--reason", required=True)
    st.add_argument("--actor", help="who is changing it (default: cli:<user>)")
    st.set_defaults(func=cmd_flags_set)
    hi = fl_sub.add_parser("history", help="the audit trail")
    hi.add_argument("name", nargs="?")
    hi.add_argument("--limit", type=int)
    hi.add_argument("--json", action="store_true")
    hi.set_defaults(func=cmd_flags_history)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def cmd_rollback(args: argparse.Namespace, settings: Settings) -> int:
    with control_plane(settings) as plane:
        applied = control.apply_rollback(
            plane,
            actor=args.actor or cli_actor(),
            reason=args.reason,
            evidence={"trigger": "manual", "source": "cli"},
            now=_now(),
        )
    if not applied.applied:
        print("rollback already in force: nothing changed")
        return EXIT_OK
    for name, value in applied.changes.items():
        print(f"{name} -> {_show(value)}")
    print("rollback in force until `parity rollout resume`")
    if settings.alert_webhook_url:
        delivery = rollback.notify_rollback(
            settings.alert_webhook_url,
            applied,
            reason=args.reason,
            evidence={"trigger": "manual", "source": "cli"},
        )
        print(f"webhook: {delivery.detail}")
    return EXIT_OK


def cmd_rollout(args: argparse.Namespace, settings: Settings) -> int:
    now = _now()
    config = rollout.RolloutConfig()
    actor = args.actor or cli_actor()
    with control_plane(settings) as plane:
        values = plane.read_flags(include_reserved=True)
        state = control.read_state_from(values)
        values = {k: v for k, v in values.items() if k in FLAG_DEFAULTS}
        verdict = control.read_health(plane, now).verdict
        hours = rollback.reconciled_hours(settings.layout, state.step_started_at, now)
        decision = rollout.decide(rollout.RolloutInputs(state, values, hours, verdict), config, now)
        if args.rollout_command == "status":
            status = {
                "state": state.to_json(),
                "flags": values,
                "health": verdict.summary(),
                "next": decision.evidence(),
            }
            print(json.dumps(status, indent=2, default=str))
            return EXIT_OK
        if args.rollout_command == "promote":
            if decision.action != rollout.Action.PROMOTE:
                print(f"not promoting ({decision.reason}): {decision.detail}")
                return 1
            changes, next_state = dict(decision.flag_changes), decision.next_state
            reason = (
                args.reason or f"manual promote: stage {decision.from_step} -> {decision.to_step}"
            )
            evidence: dict[str, Any] = {**decision.evidence(), "health": verdict.evidence()}
        else:
            if not args.reason:
                raise FlagError(f"parity rollout {args.rollout_command} needs --reason")
            if args.rollout_command == "pause":
                transition = rollout.pause(state, now, args.reason)
            else:
                transition = rollout.resume(state, values, config, now)
            changes, next_state = dict(transition.flag_changes), transition.state
            reason, evidence = args.reason, {"action": args.rollout_command, "source": "cli"}
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
    print(
        f"rollout {args.rollout_command}: step {next_state.step}, "
        f"{'paused' if next_state.paused else 'running'}"
    )
    for name, value in applied.changes.items():
        print(f"{name} -> {_show(value)}")
    return EXIT_OK


def add_rollout_commands(sub: argparse._SubParsersAction) -> None:
    rb = sub.add_parser("rollback", help="roll the migration back now (audited)")
    rb.add_argument("--reason", required=True)
    rb.add_argument("--actor")
    rb.set_defaults(func=cmd_rollback)
    ro = sub.add_parser("rollout", help="the canary rollout: status, promote, pause, resume")
    ro.add_argument("rollout_command", choices=["status", "promote", "pause", "resume"])
    ro.add_argument("--reason")
    ro.add_argument("--actor")
    ro.set_defaults(func=cmd_rollout)

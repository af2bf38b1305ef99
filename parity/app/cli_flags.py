"""``parity flags …``, ``parity rollback`` and ``parity rollout …``."""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
from contextlib import contextmanager
from typing import Any

from parity.core import rollout, triggers
from parity.core.config import Settings
from parity.core.errors import ConfigurationError, FlagError
from parity.io import flags, rollback
from parity.io.metrics import load_samples, lookback
from parity.io.store import open_store

EXIT_OK = 0


def cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


@contextmanager
def flag_connection(settings: Settings):  # noqa: ANN201
    """A PostgreSQL connection to the flag tables. Flags change in transactions, which the
    REST API cannot span, so this needs PARITY_DATABASE_URL (or the embedded server)."""
    if settings.transport == "rest":
        raise ConfigurationError(
            "changing flags needs a PostgreSQL connection: set PARITY_DATABASE_URL "
            "(the project's direct or session-pooler URL)"
        )
    store = open_store(settings)
    try:
        with store.connection() as conn:  # type: ignore[attr-defined]
            yield conn, store.table.schema
    finally:
        store.close()


def _show(value: Any) -> str:
    return json.dumps(value)


def cmd_flags_list(args: argparse.Namespace, settings: Settings) -> int:
    with flag_connection(settings) as (conn, schema):
        values = flags.read_flags(conn, schema)
    if args.json:
        print(json.dumps(values, indent=2))
    else:
        width = max(len(n) for n in values)
        for name, value in values.items():
            print(f"{name:<{width}}  {_show(value)}")
    return EXIT_OK


def cmd_flags_set(args: argparse.Namespace, settings: Settings) -> int:
    value = flags.parse_value(args.name, args.value)
    with flag_connection(settings) as (conn, schema):
        rows = flags.set_flags(
            conn,
            schema,
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
    if args.name and args.name not in flags.FLAG_DEFAULTS and args.name not in flags.RESERVED_FLAGS:
        flags.validate(args.name, None)  # raises with the list of known flags
    with flag_connection(settings) as (conn, schema):
        rows = flags.history(conn, schema, args.name, limit=args.limit)
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
    with flag_connection(settings) as (conn, schema):
        applied = rollback.apply_rollback(
            conn,
            schema,
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


def _health(conn, schema: str, now: dt.datetime) -> triggers.HealthVerdict:  # noqa: ANN001
    config = triggers.TriggerConfig()
    return triggers.evaluate(load_samples(conn, schema, now - lookback(config), now), now, config)


def cmd_rollout(args: argparse.Namespace, settings: Settings) -> int:
    now = _now()
    config = rollout.RolloutConfig()
    actor = args.actor or cli_actor()
    with flag_connection(settings) as (conn, schema):
        state = rollback.read_state(conn, schema)
        values = flags.read_flags(conn, schema)
        verdict = _health(conn, schema, now)
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
        applied = rollback.apply_transition(
            conn,
            schema,
            expected_state=state,
            expected_flags={k: values[k] for k in flags.FLAG_DEFAULTS},
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

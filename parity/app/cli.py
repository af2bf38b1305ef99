"""The ``parity`` command: parse, call the library, map outcomes to exit codes.

Exit codes: 0 ok (clean), 1 discrepancies found, 2 usage or configuration error.

Commands that run Dagster jobs import :mod:`orchestration` inside their handler: the CLI is
the one place in ``parity`` that composes the library with the Dagster layer.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from parity.app.common import EXIT_DISCREPANCIES, EXIT_OK, _partition_keys, _print_json
from parity.core import partitions
from parity.core import report as reports
from parity.core.config import Settings
from parity.core.errors import ParityError
from parity.core.redact import redact
from parity.io.reports import load_report


def cmd_db_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from parity.io.migrate import migrate

    if settings.transport == "rest":
        raise ParityError(
            "parity db migrate needs a PostgreSQL connection: set PARITY_DATABASE_URL to the "
            "project's direct or session-pooler URL, or paste `parity db sql` into the "
            "Supabase SQL editor"
        )
    if settings.embedded:
        from parity.io.embedded import ensure_embedded

        url = ensure_embedded(settings)
        print(f"embedded PostgreSQL under {settings.pgdata_dir}")
    else:
        url = settings.database_url  # type: ignore[assignment]
    applied = migrate(url, settings.events_table)
    if applied:
        for name in applied:
            print(f"applied {name}")
    else:
        print("schema is up to date: nothing to apply")
    return EXIT_OK


def cmd_db_sql(args: argparse.Namespace, settings: Settings) -> int:
    from parity.io.migrate import migration_sql

    print(migration_sql(settings.events_table))
    return EXIT_OK


def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    keys = _partition_keys(args)
    from orchestration.headless import reconcile_partitions

    outcomes = reconcile_partitions(keys)
    if args.json:
        _print_json(
            [
                {
                    "partition": o.partition,
                    "success": o.success,
                    "clean": o.clean,
                    "failed_checks": o.failed_checks,
                    "error": o.error,
                    "report": o.report,
                }
                for o in outcomes
            ]
        )
    else:
        for o in outcomes:
            if o.report is not None:
                print(reports.summary_text(o.report))
            else:
                print(f"{o.partition}  NO REPORT")
            for check in o.failed_checks:
                print(f"  check failed: {check['check']} on {check['asset']} ({check['severity']})")
            if o.error:
                print(f"  run failed: {o.error}")
    if any(o.report is None and not o.success for o in outcomes):
        # A run that produced no report at all is a problem to look at, reported as such.
        return EXIT_DISCREPANCIES
    return EXIT_OK if all(o.clean for o in outcomes) else EXIT_DISCREPANCIES


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    partitions.parse_key(args.partition)
    doc = load_report(settings.layout, args.partition)
    if args.json:
        _print_json(doc)
    else:
        print(reports.summary_text(doc))
    return EXIT_OK if reports.is_clean(doc) else EXIT_DISCREPANCIES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="parity",
        description="Reconcile the WebSocket event log against Supabase, hour by hour.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="the Supabase/PostgreSQL schema")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("migrate", help="apply the migrations (idempotent)").set_defaults(
        func=cmd_db_migrate
    )
    db_sub.add_parser(
        "sql", help="print the migration SQL (for the Supabase SQL editor)"
    ).set_defaults(func=cmd_db_sql)

    rec = sub.add_parser("reconcile", help="snapshot and reconcile hours, headless")
    rec.add_argument("--partition", help="an hourly partition key, e.g. 2026-11-28-10:00")
    rec.add_argument("--from", dest="from_", help="first partition key of a range")
    rec.add_argument("--to", help="last partition key of a range (included)")
    rec.add_argument("--json", action="store_true", help="print the reports as JSON")
    rec.set_defaults(func=cmd_reconcile)

    rep = sub.add_parser("report", help="print a stored report")
    rep.add_argument("partition")
    rep.add_argument("--json", action="store_true")
    rep.set_defaults(func=cmd_report)

    _add_extra_commands(sub)
    return parser


def _add_extra_commands(sub: argparse._SubParsersAction) -> None:
    """Commands owned by other modules register here."""
    from parity.app.cli_backfill import add_backfill_command
    from parity.app.cli_demo import add_demo_command
    from parity.app.cli_flags import add_flag_commands, add_rollout_commands
    from parity.app.cli_record import add_record_command

    add_flag_commands(sub)
    add_rollout_commands(sub)
    add_record_command(sub)
    add_backfill_command(sub)
    add_demo_command(sub)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
        return int(args.func(args, settings))
    except ParityError as exc:
        print(f"parity: error: {redact(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

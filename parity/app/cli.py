"""The ``parity`` command: parse, call the library, map outcomes to exit codes.

Exit codes (one home: :mod:`parity.core.errors`): 0 clean, 1 discrepancies found, 2 usage
or configuration error, 3 infrastructure failure (database, REST API, files, disk), 4 an
unexpected error (a bug), 130 interrupted.

Built on click, as Dagster's own command lines are (and already installed with it):
subcommands, help and usage errors come from it. rich draws the progress bars and tables:
click has a progress bar but no tables, and rich draws neither when the output is not a
terminal, so pipes and logs get plain results. Commands that run Dagster jobs import
:mod:`orchestration` inside their handler: the CLI is the one place in ``parity`` that
composes the library with the Dagster layer.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from collections.abc import Sequence
from typing import Any

import click

from parity.app.common import (
    DEMO_HOME,
    EXIT_DISCREPANCIES,
    EXIT_OK,
    database_in_use,
    note,
    partition_keys,
    partition_options,
    print_json,
    progress,
    with_settings,
)
from parity.core import partitions
from parity.core import report as reports
from parity.core.config import Settings
from parity.core.errors import (
    EXIT_INFRASTRUCTURE,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    ParityError,
    ReportNotFoundError,
)
from parity.core.layout import Layout
from parity.core.redact import redact
from parity.io.reports import load_report


class _LazyGroup(click.Group):
    """A group whose commands in other modules are imported when they are used (or listed
    by ``--help``), not at start: the demo's and the flags' modules cost a few tenths of
    a second that ``parity reconcile`` does not need."""

    #: command name -> "module:attribute"
    lazy = {
        "flags": "parity.app.cli_flags:flags_group",
        "rollback": "parity.app.cli_flags:cmd_rollback",
        "rollout": "parity.app.cli_flags:cmd_rollout",
        "record": "parity.app.cli_record:record",
        "backfill": "parity.app.cli_backfill:backfill",
        "demo": "parity.app.cli_demo:demo",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self.lazy.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module, attribute = target.split(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command) and command.name == cmd_name, target
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Reconcile the WebSocket event log against Supabase, hour by hour.

    Exit codes: 0 clean, 1 discrepancies found, 2 usage or configuration error,
    3 infrastructure failure (database, REST API, files, disk), 4 unexpected error.
    """


@cli.group()
def db() -> None:
    """The Supabase/PostgreSQL schema."""


@db.command("migrate")
@with_settings
def db_migrate(settings: Settings) -> int:
    """Apply the migrations (idempotent)."""
    from parity.io.migrate import migrate

    if settings.transport == "rest":
        raise ParityError(
            "parity db migrate needs a PostgreSQL connection: set PARITY_DATABASE_URL to the "
            "project's direct or session-pooler URL, or paste `parity db sql` into the "
            "Supabase SQL editor"
        )
    with database_in_use(settings):
        if settings.embedded:
            from parity.io.embedded import ensure_embedded

            url = ensure_embedded(settings, create_table=True)
        else:
            assert settings.database_url is not None
            url = settings.database_url
        applied = migrate(url, settings.events_table)
    if applied:
        for name in applied:
            click.echo(f"applied {name}")
    else:
        click.echo("schema is up to date: nothing to apply")
    return EXIT_OK


@db.command("sql")
@with_settings
def db_sql(settings: Settings) -> int:
    """Print the migration SQL (for the Supabase SQL editor)."""
    from parity.io.migrate import migration_sql

    click.echo(migration_sql(settings.events_table))
    return EXIT_OK


@cli.command()
@partition_options
@click.option("--json", "as_json", is_flag=True, help="print the reports as JSON")
@with_settings
def reconcile(
    settings: Settings, partition: str | None, from_: str | None, to: str | None, as_json: bool
) -> int:
    """Snapshot and reconcile hours, headless (the same job and checks as Dagster runs)."""
    keys = partition_keys(partition, from_, to)
    from checks import ge_process

    # The runs' checks need Great Expectations: its import, in a helper process, overlaps
    # this process's own imports and the snapshots.
    ge_process.start()
    from orchestration.failures import exit_code
    from orchestration.headless import PartitionOutcome, check_partitions, reconcile_partitions

    check_partitions(keys)
    with database_in_use(settings), progress(len(keys), "reconciling") as bar:

        def show(o: PartitionOutcome) -> None:
            # Each hour as it is done: a long range interrupted keeps what was printed.
            for line in _outcome_lines(o):
                bar.echo(line)

        outcomes = reconcile_partitions(
            keys, advance=bar.advance, on_outcome=None if as_json else show
        )
    if as_json:
        print_json(
            [
                {
                    "partition": o.partition,
                    "success": o.success,
                    "clean": o.clean,
                    "failed_checks": o.failed_checks,
                    "failures": [f.to_json() for f in o.failures],
                    "error": o.error,
                    "report": o.report,
                }
                for o in outcomes
            ]
        )
    failures = [f for o in outcomes for f in o.failures]
    if failures:
        code = exit_code(failures)
        failed = len({o.partition for o in outcomes if o.failures})
        note(f"error: {failed} of {len(outcomes)} hours failed; first: {failures[0]}")
        return code if code is not None else EXIT_DISCREPANCIES
    if any(o.report is None for o in outcomes):
        # A blocking check stopped the run before the report: a discrepancy, shown above.
        return EXIT_DISCREPANCIES
    return EXIT_OK if all(o.clean for o in outcomes) else EXIT_DISCREPANCIES


def _outcome_lines(o: Any) -> list[str]:
    """An hour's result as ``parity reconcile`` prints it (o: a PartitionOutcome)."""
    lines = [reports.summary_text(o.report) if o.report else f"{o.partition}  NO REPORT"]
    lines += [
        f"  check failed: {c['check']} on {c['asset']} ({c['severity']})" for c in o.failed_checks
    ]
    lines += [f"  run failed: {failure}" for failure in o.failures]
    return lines


@cli.command()
@click.argument("partition")
@click.option("--json", "as_json", is_flag=True, help="print the whole report as JSON")
@with_settings
def report(settings: Settings, partition: str, as_json: bool) -> int:
    """Print a stored report (exit 1 when the hour has discrepancies)."""
    partitions.parse_key(partition)
    doc = _load_report(settings, partition)
    if as_json:
        print_json(doc)
    else:
        click.echo(reports.summary_text(doc))
    return EXIT_OK if reports.is_clean(doc) else EXIT_DISCREPANCIES


def _load_report(settings: Settings, partition: str) -> dict[str, Any]:
    """The report under $PARITY_HOME, else the demo's (``parity demo`` keeps its state in
    ``$PARITY_HOME/demo``), saying so."""
    try:
        return load_report(settings.layout, partition)
    except ReportNotFoundError:
        demo = Layout(settings.home / DEMO_HOME)
        if not demo.report(partition).exists():
            raise
    note(f"no report under {settings.home}; showing the demo's, from {demo.reports_dir}")
    return load_report(demo, partition)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; its exit code. A usage error exits 2 (``SystemExit``), as click's
    and argparse's do. Output into a pipe the reader closed (``parity report … | head``)
    ends quietly with 0: click catches the broken pipe and silences the final flush."""
    try:
        result = cli.main(
            args=list(argv) if argv is not None else None, prog_name="parity", standalone_mode=False
        )
    except click.exceptions.Abort:
        return EXIT_INTERRUPTED
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except ParityError as exc:
        click.echo(f"parity: error: {redact(exc)}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except OSError as exc:
        # A file that cannot be written, a full disk: outside Parity, and not a discrepancy.
        click.echo(f"parity: error: {redact(exc)}", err=True)
        return EXIT_INFRASTRUCTURE
    except Exception as exc:
        # A bug. Its traceback is for the report; exit 1 would read as "discrepancies".
        click.echo(redact(traceback.format_exc()), err=True, nl=False)
        click.echo(f"parity: unexpected error (a bug in Parity): {redact(repr(exc))}", err=True)
        return EXIT_INTERNAL
    return int(result) if isinstance(result, int) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

"""``parity backfill``: re-send missed events to Supabase, then reconcile the hours again.

Exit codes: 0 nothing is missing (and nothing conflicts) after the backfill; 1 discrepancies
remain (or, with ``--dry-run``, there is something to write or to look at); 2 usage or
configuration error; 3 infrastructure failure; 4 unexpected error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from parity.app.common import (
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
from parity.core import report as reports
from parity.core.config import Settings
from parity.core.errors import ConfigurationError

if TYPE_CHECKING:
    from orchestration.headless_backfill import BackfillOutcome

#: What a backfill can fix, or must report as not fixable; other discrepancies of the hour
#: (quarantined lines, gaps in the log itself) are printed but do not set the exit code.
BACKFILL_DISCREPANCIES = ("missing_in_supabase", "checksum_mismatches")


def _line(partition: str, r: dict[str, Any] | None) -> str:
    if r is None:
        return f"{partition}  backfill did not complete"
    verb = "would write" if r["dry_run"] else "wrote"
    count = r["planned"] if r["dry_run"] else r["written"]
    return (
        f"{partition}  {verb} {count}, already present {r['already_present']}, "
        f"conflicts {r['conflicts']}, invalid {r['invalid']}, refused {r.get('refused', 0)}, "
        "outside the cohort "
        f"{r['skipped_outside_cohort']}, {r['batches']} batches, {r['duration_s']:g} s"
    )


@click.command()
@partition_options
@click.option("--dry-run", is_flag=True, help="report what would be written")
@click.option(
    "--all-missing",
    is_flag=True,
    help="write every event Supabase lacks, not only those the rollout cohort sent there",
)
@click.option("--batch-size", type=int, default=1000, show_default=True, help="rows per insert")
@click.option("--json", "as_json", is_flag=True, help="print the outcome as JSON")
@with_settings
def backfill(
    settings: Settings,
    partition: str | None,
    from_: str | None,
    to: str | None,
    dry_run: bool,
    all_missing: bool,
    batch_size: int,
    as_json: bool,
) -> int:
    """Write missed events to Supabase (idempotent), then reconcile the hours again."""
    keys = partition_keys(partition, from_, to)
    if batch_size < 1:
        raise ConfigurationError(f"--batch-size must be at least 1, got {batch_size}")
    from orchestration.headless import check_partitions
    from orchestration.headless_backfill import backfill_partitions

    check_partitions(keys)
    hours = len(keys) if dry_run else 2 * len(keys)
    with database_in_use(settings), progress(hours, "backfill") as bar:
        outcome = backfill_partitions(
            keys,
            dry_run=dry_run,
            all_missing=all_missing,
            batch_size=batch_size,
            advance=bar.advance,
        )
    reconciled = {o.partition: o.report for o in outcome.reconciled}
    if as_json:
        print_json(
            {
                "partitions": keys,
                "backfill": outcome.results,
                "errors": outcome.errors,
                "failures": [f.to_json() for f in outcome.failures],
                "reports": reconciled,
            }
        )
    else:
        _print_outcome(keys, outcome, reconciled)
    return _exit_code(keys, outcome, reconciled, dry_run=dry_run)


def _print_outcome(keys: list[str], outcome: BackfillOutcome, reconciled: dict[str, Any]) -> None:
    """Per hour: what was written, a few conflicts and refusals, the report after."""
    for key in keys:
        click.echo(_line(key, outcome.results[key]))
        for conflict in (outcome.results[key] or {}).get("conflict_sample", [])[:5]:
            click.echo(f"  conflict {conflict['stream']}#{conflict['seq']}: {conflict['reason']}")
        for refused in (outcome.results[key] or {}).get("refused_sample", [])[:5]:
            click.echo(f"  refused {refused['stream']}#{refused['seq']}: {refused['reason']}")
        after = reconciled.get(key)
        if after is not None:
            click.echo("  after: " + reports.summary_text(after))
    for failure in outcome.failures:
        click.echo(f"  run failed: {failure}")


def _exit_code(
    keys: list[str], outcome: BackfillOutcome, reconciled: dict[str, Any], *, dry_run: bool
) -> int:
    """0 when every hour is whole after the backfill (a dry run: nothing left to write)."""
    from orchestration.failures import exit_code

    failures = [*outcome.failures, *(f for o in outcome.reconciled for f in o.failures)]
    if failures:
        note(f"error: {failures[0]}")
        return exit_code(failures) or EXIT_DISCREPANCIES
    if not outcome.success:
        return EXIT_DISCREPANCIES
    if dry_run:
        pending = any(
            r and (r["planned"] or r["conflicts"] or r["invalid"]) for r in outcome.results.values()
        )
        return EXIT_DISCREPANCIES if pending else EXIT_OK
    for key in keys:
        doc = reconciled.get(key)
        if doc is None or any(doc[k] for k in BACKFILL_DISCREPANCIES):
            return EXIT_DISCREPANCIES
    return EXIT_OK

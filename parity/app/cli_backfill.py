"""``parity backfill``: re-send missed events to Supabase, then reconcile the hours again.

Exit codes: 0 nothing is missing (and nothing conflicts) after the backfill; 1 discrepancies
remain (or, with ``--dry-run``, there is something to write or to look at); 2 usage or
configuration error.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from parity.app.common import EXIT_DISCREPANCIES, EXIT_OK, _partition_keys
from parity.core import report as reports
from parity.core.config import Settings
from parity.core.errors import ConfigurationError

#: What a backfill can fix, or must report as not fixable; other discrepancies of the hour
#: (quarantined lines, gaps in the log itself) are printed but do not set the exit code.
BACKFILL_DISCREPANCIES = ("missing_in_supabase", "checksum_mismatches")


def add_backfill_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "backfill",
        help="write missed events to Supabase (idempotent), then reconcile the hours again",
    )
    p.add_argument("--partition", help="an hourly partition key, e.g. 2026-11-28-10:00")
    p.add_argument("--from", dest="from_", help="first partition key of a range")
    p.add_argument("--to", help="last partition key of a range (included)")
    p.add_argument("--dry-run", action="store_true", help="report what would be written")
    p.add_argument(
        "--all-missing",
        action="store_true",
        help="write every event Supabase lacks, not only those the rollout cohort sent there",
    )
    p.add_argument("--batch-size", type=int, default=1000, help="rows per insert (default 1000)")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")
    p.set_defaults(func=cmd_backfill)


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


def cmd_backfill(args: argparse.Namespace, settings: Settings) -> int:
    keys = _partition_keys(args)
    if args.batch_size < 1:
        raise ConfigurationError(f"--batch-size must be at least 1, got {args.batch_size}")
    from orchestration.headless_backfill import backfill_partitions

    outcome = backfill_partitions(
        keys, dry_run=args.dry_run, all_missing=args.all_missing, batch_size=args.batch_size
    )
    reconciled = {o.partition: o for o in outcome.reconciled}
    if args.json:
        print(
            json.dumps(
                {
                    "partitions": keys,
                    "backfill": outcome.results,
                    "errors": outcome.errors,
                    "reports": {k: o.report for k, o in reconciled.items()},
                },
                indent=2,
                default=str,
            )
        )
    else:
        for key in keys:
            print(_line(key, outcome.results[key]))
            for conflict in (outcome.results[key] or {}).get("conflict_sample", [])[:5]:
                print(f"  conflict {conflict['stream']}#{conflict['seq']}: {conflict['reason']}")
            for refused in (outcome.results[key] or {}).get("refused_sample", [])[:5]:
                print(f"  refused {refused['stream']}#{refused['seq']}: {refused['reason']}")
            after = reconciled[key].report if key in reconciled else None
            if after is not None:
                print("  after: " + reports.summary_text(after))
        for error in outcome.errors:
            print(f"  run failed: {error}")
    if not outcome.success:
        return EXIT_DISCREPANCIES
    if args.dry_run:
        pending = any(
            r and (r["planned"] or r["conflicts"] or r["invalid"]) for r in outcome.results.values()
        )
        return EXIT_DISCREPANCIES if pending else EXIT_OK
    for key in keys:
        doc = reconciled[key].report if key in reconciled else None
        if doc is None or any(doc[k] for k in BACKFILL_DISCREPANCIES):
            return EXIT_DISCREPANCIES
    return EXIT_OK

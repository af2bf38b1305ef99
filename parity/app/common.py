"""What every command shares: exit codes, output, naming the hours."""

from __future__ import annotations

import argparse
import json
from typing import Any

from parity.core import partitions
from parity.core.errors import ParityError

EXIT_OK, EXIT_DISCREPANCIES, EXIT_USAGE = 0, 1, 2


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def _partition_keys(args: argparse.Namespace) -> list[str]:
    if args.partition and (args.from_ or args.to):
        raise ParityError("use either --partition or --from/--to, not both")
    if args.partition:
        partitions.parse_key(args.partition)
        return [args.partition]
    if args.from_ and args.to:
        return partitions.keys_between(args.from_, args.to)
    raise ParityError("name the hours: --partition KEY, or --from KEY --to KEY")

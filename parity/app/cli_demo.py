"""``parity demo``: the migration story end to end on the embedded default (see
:mod:`parity.demo` and :mod:`parity.demo_session`).

Exit codes: with ``--no-ui``, 0 when every injected fault was detected and the rollback
fired, 1 otherwise; with the UI, 0 after Ctrl-C. 2: usage or configuration error.
"""

from __future__ import annotations

import argparse
import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from parity.app.demo_session import DROPPED_ENV_PREFIXES, DemoOptions, run_demo
from parity.core.config import Settings
from parity.core.errors import ConfigurationError


def add_demo_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="simulate hours of dual-written traffic with faults, reconcile them, roll back, "
        "and open the UI",
        description="Starts the embedded PostgreSQL under --home, plays several past hours "
        "of monitoring traffic (simulated time) through the producer, the WebSocket "
        "broadcaster and the recorder, with dropped writes, retry duplicates, a corrupted "
        "payload, a latency spike, a canary rollout and a Supabase outage up to now; "
        "reconciles the complete hours, then runs `dagster dev`.",
    )
    p.add_argument(
        "--home",
        type=Path,
        help="the demo's own folder (default $PARITY_HOME/demo); a previous demo there is "
        "deleted and rebuilt, any other non-empty folder only with --reset",
    )
    p.add_argument("--reset", action="store_true", help="delete --home's contents first")
    p.add_argument("--hours", type=int, default=3, help="complete past hours (default 3)")
    p.add_argument("--events-per-hour", type=int, default=5000, help="default 5000")
    p.add_argument("--seed", type=int, default=7, help="traffic and fault seed (default 7)")
    p.add_argument("--port", type=int, default=3000, help="Dagster UI port (default 3000)")
    p.add_argument(
        "--no-ui",
        action="store_true",
        help="headless: evaluate the health triggers and roll back as the sensor would, "
        "print what was injected vs detected; exit 0 only if everything was",
    )
    p.add_argument(
        "--keep-db",
        action="store_true",
        help="leave the embedded PostgreSQL running on exit (default: stop it)",
    )
    p.set_defaults(func=cmd_demo)


def _reconcile(keys: list[str], environ: Mapping[str, str]) -> list[Any]:
    # The demo owns this process: its runs go to the demo's Dagster instance, and the
    # resources (dg.EnvVar) read the demo's variables at run time.
    for name in [k for k in os.environ if k.startswith(DROPPED_ENV_PREFIXES)]:
        del os.environ[name]
    os.environ.update({k: v for k, v in environ.items() if k.startswith(DROPPED_ENV_PREFIXES)})
    from orchestration.headless import reconcile_partitions

    return reconcile_partitions(keys, environ=environ)


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    if args.hours < 1 or args.hours > 48:
        raise ConfigurationError(f"--hours must be 1..48, got {args.hours}")
    if args.events_per_hour < 600 or args.events_per_hour > 200_000:
        raise ConfigurationError(
            f"--events-per-hour must be 600..200000, got {args.events_per_hour}"
        )
    if not 0 < args.port < 65536:
        raise ConfigurationError(f"--port must be a TCP port, got {args.port}")
    home = args.home if args.home is not None else settings.home / "demo"
    options = DemoOptions(
        home=home,
        hours=args.hours,
        events_per_hour=args.events_per_hour,
        seed=args.seed,
        port=args.port,
        ui=not args.no_ui,
        reset=args.reset,
        keep_db=args.keep_db,
    )
    # Ctrl-C, or SIGTERM from a service manager, stops everything the demo started (even
    # when started from a shell that had SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    return run_demo(options, _reconcile)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt

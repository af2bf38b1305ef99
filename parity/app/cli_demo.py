"""``parity demo``: the migration story end to end on the embedded default (see
:mod:`parity.app.demo`, :mod:`parity.app.demo_session` and :mod:`parity.app.demo_ui`).

Exit codes: with ``--no-ui``, 0 when every injected fault was detected and the rollback
fired, 1 otherwise; with the UI, 0 after Ctrl-C. 2: usage or configuration error.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from parity.app.common import DEMO_HOME, progress, with_settings
from parity.app.demo_session import DemoOptions, run_demo
from parity.app.demo_ui import DROPPED_ENV_PREFIXES
from parity.core.config import Settings
from parity.core.errors import ConfigurationError


def _reconcile(keys: list[str], environ: Mapping[str, str]) -> list[Any]:
    # The demo owns this process: its runs go to the demo's Dagster instance, and the
    # resources (dg.EnvVar) read the demo's variables at run time.
    for name in [k for k in os.environ if k.startswith(DROPPED_ENV_PREFIXES)]:
        del os.environ[name]
    os.environ.update({k: v for k, v in environ.items() if k.startswith(DROPPED_ENV_PREFIXES)})
    from orchestration.headless import reconcile_partitions

    with progress(len(keys), "reconciling") as bar:
        return reconcile_partitions(keys, environ=environ, advance=bar.advance)


@click.command()
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    help="the demo's own folder (default $PARITY_HOME/demo); a previous demo there is "
    "deleted and rebuilt, any other non-empty folder only with --reset",
)
@click.option("--reset", is_flag=True, help="delete --home's contents first")
@click.option("--hours", type=int, default=3, show_default=True, help="complete past hours")
@click.option("--events-per-hour", type=int, default=5000, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True, help="traffic and fault seed")
@click.option("--port", type=int, default=3000, show_default=True, help="Dagster UI port")
@click.option(
    "--no-ui",
    is_flag=True,
    help="headless: evaluate the health triggers and roll back as the sensor would, "
    "print what was injected vs detected; exit 0 only if everything was",
)
@click.option(
    "--keep-db",
    is_flag=True,
    help="leave the embedded PostgreSQL running on exit (default: stop it)",
)
@with_settings
def demo(
    settings: Settings,
    home: Path | None,
    reset: bool,
    hours: int,
    events_per_hour: int,
    seed: int,
    port: int,
    no_ui: bool,
    keep_db: bool,
) -> int:
    """Simulate hours of dual-written traffic with faults, reconcile them, roll back, and
    open the UI.

    Starts the embedded PostgreSQL under --home, plays several past hours of monitoring
    traffic (simulated time) through the producer, the WebSocket broadcaster and the
    recorder, with dropped writes, retry duplicates, a corrupted payload, a latency spike,
    a canary rollout and a Supabase outage up to now; reconciles the complete hours, then
    runs `dagster dev`.
    """
    if hours < 1 or hours > 48:
        raise ConfigurationError(f"--hours must be 1..48, got {hours}")
    if events_per_hour < 600 or events_per_hour > 200_000:
        raise ConfigurationError(f"--events-per-hour must be 600..200000, got {events_per_hour}")
    if not 0 < port < 65536:
        raise ConfigurationError(f"--port must be a TCP port, got {port}")
    options = DemoOptions(
        home=home if home is not None else settings.home / DEMO_HOME,
        hours=hours,
        events_per_hour=events_per_hour,
        seed=seed,
        port=port,
        ui=not no_ui,
        reset=reset,
        keep_db=keep_db,
    )
    # Ctrl-C, or SIGTERM from a service manager, stops everything the demo started (even
    # when started from a shell that had SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    # The person asked for this server: it lasts the session (the demo stops it at the end
    # unless --keep-db), not only as long as the process that happens to start it.
    from parity.io.embedded import keep_what_this_process_starts

    keep_what_this_process_starts(Settings.from_env({"PARITY_HOME": str(options.home)}))
    return run_demo(options, _reconcile)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt

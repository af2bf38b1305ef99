"""``parity record ws://HOST:PORT/PATH --out DIR``: write the WebSocket log (contract §3)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import click

from parity.app.common import EXIT_INFRASTRUCTURE, EXIT_OK, note, with_settings
from parity.core.config import Settings
from parity.io.recorder import Recorder, RecorderConfig

#: A duration in seconds that must be positive.
POSITIVE_SECONDS = click.FloatRange(min=0, min_open=True)


@click.command()
@click.argument("url")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="log directory (default: PARITY_WS_LOG_DIR, else $PARITY_HOME/ws-log)",
)
@click.option(
    "--fsync-interval",
    type=POSITIVE_SECONDS,
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="fsync the current hour file at least this often",
)
@click.option(
    "--max-backoff",
    type=POSITIVE_SECONDS,
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="longest wait between reconnection attempts",
)
@with_settings
def record(
    settings: Settings, url: str, out: Path | None, fsync_interval: float, max_backoff: float
) -> int:
    """Subscribe to a producer's WebSocket (URL: ws://HOST:PORT/PATH) and write the hourly
    event log.

    Appends every event to OUT/YYYY-MM-DD/HH.jsonl (UTC hour of receipt, with logged_at);
    malformed messages go to OUT/rejects/. Stop with Ctrl-C, which exits 0, or 3 when the
    disk still refused a line at that moment (the line is lost: the error says where).
    """
    out = out if out is not None else settings.ws_log_dir
    config = RecorderConfig(
        url=url, out=out, fsync_interval_s=fsync_interval, backoff_max_s=max_backoff
    )
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="parity record: %(message)s")
    recorder = Recorder(config)
    try:
        asyncio.run(recorder.run())
    except KeyboardInterrupt:
        pass
    stats = recorder.stats
    click.echo(f"recorded {stats.written} events ({stats.rejected} rejected) into {out}")
    if stats.unsaved:
        note(
            f"error: stopped with {stats.unsaved} line(s) that could not be written to {out} "
            "(see the errors above); free space there before recording again"
        )
        return EXIT_INFRASTRUCTURE
    return EXIT_OK

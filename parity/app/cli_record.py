"""``parity record ws://HOST:PORT/PATH --out DIR``: write the WebSocket log (DESIGN 3)."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path
from typing import Any

from parity.io.recorder import Recorder, RecorderConfig

EXIT_OK = 0


def cmd_record(args: argparse.Namespace, settings: Any) -> int:
    """Record until Ctrl-C; an interrupt is the normal way to stop, so it exits 0."""
    out = Path(args.out) if args.out else Path(settings.ws_log_dir)
    config = RecorderConfig(
        url=args.url,
        out=out,
        fsync_interval_s=args.fsync_interval,
        backoff_max_s=args.max_backoff,
    )
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="parity record: %(message)s")
    recorder = Recorder(config)
    try:
        asyncio.run(recorder.run())
    except KeyboardInterrupt:
        pass
    stats = recorder.stats
    print(f"recorded {stats.written} events ({stats.rejected} rejected) into {out}")
    return EXIT_OK


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def add_record_command(sub: argparse._SubParsersAction) -> None:
    rec = sub.add_parser(
        "record",
        help="subscribe to a producer's WebSocket and write the hourly event log",
        description="Append every event to <out>/YYYY-MM-DD/HH.jsonl (UTC hour of receipt, "
        "with logged_at); malformed messages go to <out>/rejects/. Stop with Ctrl-C.",
    )
    rec.add_argument("url", help="ws://HOST:PORT/PATH of the producer")
    rec.add_argument(
        "--out", help="log directory (default: PARITY_WS_LOG_DIR, else $PARITY_HOME/ws-log)"
    )
    rec.add_argument(
        "--fsync-interval",
        type=_positive,
        default=1.0,
        metavar="SECONDS",
        help="fsync the current hour file at least this often (default 1)",
    )
    rec.add_argument(
        "--max-backoff",
        type=_positive,
        default=30.0,
        metavar="SECONDS",
        help="longest wait between reconnection attempts (default 30)",
    )
    rec.set_defaults(func=cmd_record)

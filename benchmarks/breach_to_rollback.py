"""From a health-trigger breach to the flags flipped, with a running `dagster dev`.

Starts the embedded PostgreSQL and `dagster dev` (webserver and daemon, the default sensor
intervals) on 127.0.0.1, puts the rollout at 10%, then, per trial, writes a sustained
error-rate breach into `delivery_metrics` (every 10 s window of the last 6 minutes at 9%
failures, as a producer in trouble would have) and measures the time until the flags read
back as rolled back. Between trials it clears the samples, resumes the rollout and waits
for the health sensor to see the calm.

    python -m benchmarks.breach_to_rollback --trials 3

Prints one JSON line with each trial's seconds; issue 5's target is under 60 s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from parity.core import rollout  # noqa: E402
from parity.core.config import Settings  # noqa: E402
from parity.io import control_pg  # noqa: E402
from parity.io.embedded import ensure_embedded, stop_embedded  # noqa: E402
from tests.integration.webserver import running_webserver  # noqa: E402

PERCENTAGE = "MONITORING_SUPABASE_ROLLOUT_PERCENTAGE"


def breach(url: str, schema: str, now: dt.datetime) -> None:
    ident = sql.Identifier(schema, "delivery_metrics")
    rows = [(now - dt.timedelta(seconds=10 * i),) for i in range(36)]
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(
            sql.SQL(
                "insert into {} (sampled_at, producer, window_s, attempts, failures, "
                "latency_p50_ms, latency_p95_ms) values (%s, 'bench', 10, 100, 9, 20, 40)"
            ).format(ident),
            rows,
        )


def calm(url: str, schema: str) -> None:
    """No samples, rollout resumed at 10% (as a person would after fixing the cause)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("delete from {}").format(sql.Identifier(schema, "delivery_metrics")))
        now = dt.datetime.now(dt.UTC)
        state = rollout.RolloutState(step=1, step_started_at=now, paused=False, paused_reason=None)
        control_pg.set_flags(
            conn,
            schema,
            {
                "MONITORING_CRITICAL_EVENTS_SUPABASE": True,
                PERCENTAGE: 10,
                control_pg.ROLLOUT_STATE_FLAG: state.to_json(),
            },
            actor="benchmark",
            reason="trial setup",
        )


def rolled_back(url: str, schema: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        return (
            control_pg.read_flags(conn, schema)[PERCENTAGE] == 0
            and control_pg.read_state(conn, schema).rollback_in_force
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=180.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="parity-breach-"))
    settings = Settings(home=work / "home", ws_log_dir=work / "home" / "ws-log")
    url = ensure_embedded(settings)
    schema = settings.events_table.schema
    env = {
        "PARITY_HOME": str(settings.home),
        "PARITY_DATABASE_URL": url,
        "DAGSTER_HOME": str(work / "dagster"),
        "PARITY_PARTITIONS_START": (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).strftime(
            "%Y-%m-%d"
        ),
        "DAGSTER_DISABLE_TELEMETRY": "1",
    }
    os.makedirs(env["DAGSTER_HOME"], exist_ok=True)
    trials: list[float] = []
    try:
        with running_webserver(
            REPO / "workspace.yaml", env, log_dir=work / "logs", cwd=REPO, kind="dev"
        ):
            for _ in range(args.trials):
                calm(url, schema)
                time.sleep(20)  # the sensor ticks through the calm; the daemon is warm
                started = time.monotonic()
                breach(url, schema, dt.datetime.now(dt.UTC))
                while not rolled_back(url, schema):
                    if time.monotonic() - started > args.timeout:
                        raise SystemExit(f"no rollback within {args.timeout:g} s; see {work}")
                    time.sleep(0.25)
                trials.append(round(time.monotonic() - started, 1))
    finally:
        stop_embedded(settings)
    print(
        json.dumps(
            {
                "breach_to_flags_flipped_s": trials,
                "median_s": statistics.median(trials),
                "max_s": max(trials),
                "target_s": 60,
                "load_average": os.getloadavg(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

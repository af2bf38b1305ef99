"""One-off check that the Dagster UI shows a reconciled hour, latency histogram included.

Not part of the test suite or CI. It seeds one hour in a scratch directory (embedded
PostgreSQL, a WebSocket log, flag history that routes every event to Supabase, rows with
varied latency), reconciles it with ``parity reconcile`` into a Dagster instance, starts
``dagster-webserver`` (or ``dagster dev``) over that instance and screenshots the pages with
headless Chromium: through Playwright when it is importable (it can open the markdown
modal), else Chromium's own ``--screenshot``.

    python scripts/ui_screenshot.py --out /tmp/parity-ui
    PYTHONPATH=/path/to/playwright python scripts/ui_screenshot.py --out /tmp/parity-ui

Everything is written under ``--out``; the scratch state is removed afterwards unless
``--keep`` is given.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import orjson
import psycopg
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from parity.core.config import Settings  # noqa: E402
from parity.core.events import Event, make_event  # noqa: E402
from parity.core.partitions import floor_hour, format_key  # noqa: E402
from parity.core.schema import STORE_SCHEMA  # noqa: E402
from parity.io.control import AuditRow  # noqa: E402
from parity.io.control_pg import import_history  # noqa: E402
from parity.io.embedded import ensure_embedded, stop_embedded  # noqa: E402
from parity.io.store_pg import PostgresStore  # noqa: E402
from parity.io.wslog import write_events  # noqa: E402
from tests.integration.webserver import Webserver, running_webserver, server_env  # noqa: E402

ASSET = "event_reconciliation"
#: (stream, event_type, events in the hour)
STREAMS = [
    ("health", "system.health", 120),
    ("errors", "error.raised", 25),
    ("perf", "perf.alert", 12),
    ("conn", "connection.status", 30),
    ("debug", "debug.log", 90),
    ("session-7f3a", "user.action", 45),
    ("session-91c2", "session.started", 3),
]
LATEST_QUERY = """
query Latest($partition: String!) {
  assetNodeOrError(assetKey: {path: ["event_reconciliation"]}) {
    __typename
    ... on AssetNode {
      latestMaterializationByPartition(partitions: [$partition]) {
        runId
        partition
        metadataEntries {
          __typename
          label
          ... on MarkdownMetadataEntry { mdStr }
        }
      }
    }
  }
}
"""


def seed(settings: Settings, url: str, hour: dt.datetime, lost: int = 0) -> int:
    """Log the hour's events, route all of them to Supabase from a day before, insert them
    with log-normal latencies, all but the last ``lost`` of the health stream. Returns the
    number of events. Each hour's seqs start where the previous hour's ended."""
    rng = random.Random(7)
    first = 1 + 1000 * (hour.hour % 24)
    events: list[Event] = []
    for stream, event_type, count in STREAMS:
        step = 3600 / (count + 1)
        for i, seq in enumerate(range(first, first + count), start=1):
            at = hour + dt.timedelta(seconds=step * i + rng.random())
            events.append(make_event(stream, seq, event_type, at, {"seq": seq, "note": "ok"}))
    write_events(settings.ws_log_dir, events)

    day_before = hour - dt.timedelta(days=1)
    history = [
        AuditRow(
            0, "MONITORING_CRITICAL_EVENTS_SUPABASE", False, True, day_before, "seed", "ui", None
        ),
        AuditRow(
            0, "MONITORING_SUPABASE_ROLLOUT_PERCENTAGE", 0, 100, day_before, "seed", "ui", None
        ),
    ]
    if not lost:
        with psycopg.connect(url, autocommit=True) as conn:
            import_history(conn, settings.events_table.schema, history)
    dropped = {("health", seq) for seq in range(first + 120 - lost, first + 120)}
    events = [e for e in events if (e.stream, e.seq) not in dropped]

    latency = [dt.timedelta(milliseconds=min(rng.lognormvariate(4.2, 0.55), 900)) for _ in events]
    rows = pa.table(
        {
            "stream": [e.stream for e in events],
            "seq": [e.seq for e in events],
            "event_type": [e.event_type for e in events],
            "category": [e.category for e in events],
            "emitted_at": [e.emitted_at for e in events],
            "received_at": [e.emitted_at + lat for e, lat in zip(events, latency, strict=True)],
            "payload": [orjson.dumps(e.payload).decode() for e in events],
            "checksum": [e.checksum for e in events],
        },
        schema=STORE_SCHEMA,
    )
    PostgresStore(url, settings.events_table).insert_events(rows)
    return len(events)


def latest_histogram(server: Webserver, partition: str, out: Path) -> str:
    """The materialization's markdown as the UI receives it; saves the embedded PNG."""
    node = server.graphql(LATEST_QUERY, {"partition": partition})["assetNodeOrError"]
    (latest,) = node["latestMaterializationByPartition"]
    entries = {e["label"]: e for e in latest["metadataEntries"]}
    md = entries["latency_histogram"]["mdStr"]
    prefix = "![latency](data:image/png;base64,"
    assert md.startswith(prefix) and md.endswith(")"), md[:80]
    (out / "latency_histogram_from_graphql.png").write_bytes(base64.b64decode(md[len(prefix) : -1]))
    print(f"run {latest['runId']}: metadata {sorted(entries)}")
    return latest["runId"]


def refresh_scorecard(dagster_home: Path) -> None:
    """What the ``migration_scorecard_refresh`` sensor records, written into the instance."""
    import dagster as dg

    from assets.scorecard import MIGRATION_SCORECARD, scorecard_metadata
    from orchestration.scorecard import scorecard_rows
    from parity.core.knobs import SuccessCriteria

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        rows, _ = scorecard_rows(instance)
        metadata = scorecard_metadata(rows, SuccessCriteria())
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key=MIGRATION_SCORECARD, metadata=metadata)
        )
    print(f"scorecard: {len(rows)} hours")


def chromium_cli(url: str, png: Path, profile: Path) -> None:
    subprocess.run(
        [
            shutil.which("chromium") or "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--window-size=1400,1000",
            "--virtual-time-budget=15000",
            f"--screenshot={png}",
            url,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


def pages(server: Webserver, partition: str, location: str) -> dict[str, tuple[str, str]]:
    """Screenshot name -> (URL, text that shows the page has rendered)."""
    key = urllib.parse.quote(partition, safe="")
    repo = urllib.parse.quote(f"__repository__@{location}", safe="@")
    return {
        "lineage-group": (
            f"{server.url}/locations/{repo}/asset-groups/reconciliation/lineage",
            "event_reconciliation",
        ),
        "lineage-global": (f"{server.url}/asset-groups", "event_reconciliation"),
        "asset-overview": (f"{server.url}/assets/{ASSET}", "latency_histogram"),
        "asset-events": (
            f"{server.url}/assets/{ASSET}?view=events&partition={key}",
            "latency_histogram",
        ),
        "asset-checks": (f"{server.url}/assets/{ASSET}?view=checks", "no_checksum_mismatches"),
        "check-no-events-lost": (
            f"{server.url}/assets/{ASSET}?view=checks&checkDetail=no_events_lost",
            "no_events_lost",
        ),
        "scorecard": (f"{server.url}/assets/migration_scorecard?view=events", "red_hours"),
        "job": (
            f"{server.url}/locations/{repo}/jobs/reconcile_events_job",
            "event_reconciliation",
        ),
        "automation": (f"{server.url}/automation", "canary_promotion"),
    }


def screenshots(server: Webserver, partition: str, out: Path, profile: Path) -> None:
    # The first visit opens a "Join the Dagster community" dialog over every page.
    server.graphql("mutation { setNuxSeen }")
    (entry,) = server.wait_until_loaded(timeout=10)
    targets = pages(server, partition, entry["name"])
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        for name, (url, _) in targets.items():
            chromium_cli(url, out / f"{name}.png", profile)
            print(f"{name}: {out / f'{name}.png'} ({url})")
        return
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=shutil.which("chromium") or "/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-quic"],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        messages: list[str] = []
        page.on("console", lambda m: messages.append(f"{page.url} {m.type}: {m.text}"))
        page.on("pageerror", lambda e: messages.append(f"{page.url} pageerror: {e}"))
        for name, (url, ready) in targets.items():
            page.goto(url, wait_until="networkidle")
            try:
                page.get_by_text(ready).first.wait_for(state="visible", timeout=30_000)
            except Exception as exc:  # noqa: BLE001 - a one-off tool: record and go on
                print(f"{name}: {ready!r} not visible: {type(exc).__name__}")
            time.sleep(2)  # layout and images settle after the text appears
            page.screenshot(path=str(out / f"{name}.png"), full_page=True)
            print(f"{name}: {out / f'{name}.png'} ({url})")
            if name == "asset-events":
                _markdown_modal(page, out, "latency_histogram", "latency")
            if name == "scorecard":
                _markdown_modal(page, out, "chart", "delivery and latency")
            if name == "check-no-events-lost":
                page.get_by_text("Partitions", exact=True).last.click()
                time.sleep(3)
                page.screenshot(path=str(out / "check-partitions.png"), full_page=True)
                print(f"check partitions: {out / 'check-partitions.png'}")
        (out / "console.log").write_text("\n".join(messages) + "\n")
        browser.close()


def _markdown_modal(page, out: Path, label: str, alt: str) -> None:  # noqa: ANN001
    """Markdown metadata renders behind a "[Show Markdown]" link in the metadata table."""
    row = page.locator("tr", has_text=label)
    print(f"rows labelled {label}: {row.count()}")
    link = row.get_by_text("Show Markdown")
    if not link.count():
        img = page.locator(f'img[alt="{alt}"]')
        print(f"no Show Markdown link; inline {alt} <img>: {img.count()}")
        return
    row.first.scroll_into_view_if_needed()
    page.screenshot(path=str(out / f"{label}-row.png"))
    link.first.click()
    img = page.locator(f'img[alt="{alt}"]')
    img.first.wait_for(state="visible", timeout=15_000)
    time.sleep(1)
    page.screenshot(path=str(out / f"{label}-modal.png"))
    print(f"modal: {out / f'{label}-modal.png'}")
    natural = img.first.evaluate("i => [i.complete, i.naturalWidth, i.naturalHeight]")
    print(f"{alt} <img> complete, natural width x height: {natural}")
    page.keyboard.press("Escape")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/parity-ui"))
    parser.add_argument("--kind", choices=["webserver", "dev"], default="webserver")
    parser.add_argument("--keep", action="store_true", help="keep the scratch state")
    parser.add_argument("--serve", type=float, default=0, help="keep the UI up N seconds")
    args = parser.parse_args()
    out: Path = args.out.absolute()
    out.mkdir(parents=True, exist_ok=True)
    state = Path(tempfile.mkdtemp(prefix="parity-ui-state-"))
    settings = Settings(home=state / "home", ws_log_dir=state / "home" / "ws-log")
    hour = floor_hour(dt.datetime.now(dt.UTC)) - dt.timedelta(hours=2)
    partition = format_key(hour)
    try:
        url = ensure_embedded(settings)
        lossy = format_key(hour + dt.timedelta(hours=1))
        print(f"seeded {seed(settings, url, hour)} events for {partition}")
        print(f"seeded {seed(settings, url, hour + dt.timedelta(hours=1), lost=3)} for {lossy}")
        dagster_home = state / "dagster-home"
        dagster_home.mkdir()
        (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        env = {
            "DAGSTER_HOME": str(dagster_home),
            "PARITY_HOME": str(settings.home),
            "PARITY_DATABASE_URL": url,
            "PARITY_PARTITIONS_START": (hour - dt.timedelta(days=1)).date().isoformat(),
        }
        parity = Path(sys.executable).parent / "parity"
        for key in (partition, lossy):
            done = subprocess.run(
                [str(parity), "reconcile", "--partition", key],
                env=server_env(env),
                cwd=state,
                capture_output=True,
                text=True,
                timeout=600,
            )
            print(f"parity reconcile {key} exit {done.returncode}\n{done.stdout}{done.stderr}")
            if done.returncode not in (0, 1):
                return 2
        refresh_scorecard(dagster_home)
        with running_webserver(
            REPO / "workspace.yaml", env, log_dir=out / "logs", cwd=REPO, kind=args.kind
        ) as server:
            print(f"UI at {server.url}")
            latest_histogram(server, partition, out)
            screenshots(server, partition, out, state / "chromium")
            if args.serve:
                time.sleep(args.serve)
    finally:
        stop_embedded(settings)
        if not args.keep:
            shutil.rmtree(state, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The demo's alert log: alerts sent through Parity's notifier (Apprise's ``json://``
target) to the demo's real HTTP receiver, one readable line each, in order."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from parity.app.demo_alerts import AlertReceiver, alert_line, read_alerts
from parity.core.alerts import Alert, Level, repair_incomplete_alert
from parity.io.notify import Notifier


def test_each_alert_is_one_line_of_the_log_as_it_arrives(tmp_path: Path) -> None:
    receiver = AlertReceiver(tmp_path / "alerts.log").start()
    try:
        notifier = Notifier(receiver.url)
        red = Alert(
            "hour_red",
            Level.FAILURE,
            "Parity: hour 2026-11-28-10:00 went red",
            "failed checks: no_critical_events_lost\nand more",
            {"partition": "2026-11-28-10:00"},
        )
        assert notifier.send(red).delivered
        # Written and flushed as it arrived: readable while the receiver still runs.
        [line] = read_alerts(receiver.path)
        assert (line.kind, line.hour, line.state) == ("hour_red", "2026-11-28-10:00", "red")
        assert line.message == (
            "Parity: hour 2026-11-28-10:00 went red: failed checks: no_critical_events_lost "
            "and more"
        )
        assert notifier.send(repair_incomplete_alert("2026-11-28-11:00", "why", {})).delivered
        warn = Alert("would_roll_back", Level.WARNING, "Parity WOULD roll back", "dry run")
        assert notifier.send(warn).delivered
    finally:
        receiver.close()
    lines = read_alerts(tmp_path / "alerts.log")
    assert [(a.kind, a.hour, a.state) for a in lines] == [
        ("hour_red", "2026-11-28-10:00", "red"),
        ("repair_incomplete", "2026-11-28-11:00", "red"),
        ("would_roll_back", "-", "yellow"),
    ]
    assert len((tmp_path / "alerts.log").read_text().splitlines()) == 3


def test_a_text_that_repeats_its_title_is_written_once() -> None:
    post = {
        "title": "Parity: write error rate above 0.1000% for 300 s",
        "message": "write error rate above 0.1000% for 300 s (30/30 windows above)",
        "type": "warning",
    }
    line = alert_line(post, dt.datetime(2026, 11, 28, 10, tzinfo=dt.UTC))
    assert line.message == "write error rate above 0.1000% for 300 s (30/30 windows above)"

"""Alerts delivered through Apprise to a real HTTP receiver; a dead target never blocks."""

from __future__ import annotations

import http.server
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from parity.core.alerts import Alert, Level
from parity.core.errors import ConfigurationError
from parity.io.notify import Notifier, load_targets

ALERT = Alert("hour_red", Level.FAILURE, "hour 10:00 went red", "failed: a", {"partition": "p"})


class Receiver(http.server.BaseHTTPRequestHandler):
    received: list[tuple[str, dict]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["content-length"]))
        Receiver.received.append((self.path, json.loads(body)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[int]:
    Receiver.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed when the block ends: nothing listens


def test_apprise_json_target_receives_the_alert(receiver: int):
    notifier = Notifier(f"json://127.0.0.1:{receiver}/alerts")
    delivery = notifier.send(ALERT)
    assert delivery.delivered, delivery.detail
    [(path, body)] = Receiver.received
    assert path == "/alerts"
    assert body["title"] == ALERT.title and body["type"] == "failure"
    assert '"event": "parity.hour_red"' in body["message"] or "parity.hour_red" in body["message"]


def test_the_legacy_webhook_gets_the_structured_payload(receiver: int):
    delivery = Notifier(webhook_url=f"http://127.0.0.1:{receiver}/hook").send(ALERT)
    assert delivery.delivered
    [(path, body)] = Receiver.received
    assert path == "/hook" and body["event"] == "parity.hour_red" and body["partition"] == "p"


def test_a_dead_target_does_not_block_the_live_one(receiver: int):
    urls = f"json://127.0.0.1:{dead_port()}/x, json://127.0.0.1:{receiver}/alerts"
    notifier = Notifier(urls, webhook_url=f"http://127.0.0.1:{dead_port()}/h", sleep=lambda s: None)
    started = time.monotonic()
    delivery = notifier.send(ALERT)
    assert time.monotonic() - started < 15
    assert not delivery.delivered  # honest: not every target got it
    assert [p for p, _ in Receiver.received] == ["/alerts"]  # the live one did
    assert "json://" not in delivery.detail and "/h" not in delivery.detail


def test_a_target_that_never_answers_is_cut_off():
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen()  # accepts connections, never answers
        port = hole.getsockname()[1]
        notifier = Notifier(f"json://127.0.0.1:{port}/x", budget_s=2)
        started = time.monotonic()
        delivery = notifier.send(ALERT)
        elapsed = time.monotonic() - started
    assert not delivery.delivered
    assert elapsed < 6, elapsed


def test_without_targets_it_only_logs():
    delivery = Notifier().send(ALERT)
    assert not delivery.delivered and "PARITY_ALERT_URLS" in delivery.detail
    assert not Notifier().configured


def test_an_unknown_url_is_refused_without_showing_it():
    with pytest.raises(ConfigurationError, match="PARITY_ALERT_URLS") as raised:
        load_targets("json://127.0.0.1:1/ok nosuchservice://t0ken@host/")
    assert "t0ken" not in str(raised.value)
    assert len(load_targets("json://127.0.0.1:1/a, slack://T1/B2/C3")) == 2


def test_a_webhook_that_never_answers_is_given_up_within_the_budget():
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen()
        port = hole.getsockname()[1]
        started = time.monotonic()
        delivery = Notifier(webhook_url=f"http://127.0.0.1:{port}/h", budget_s=2).send(ALERT)
        elapsed = time.monotonic() - started
    assert not delivery.delivered and "ReadTimeout" in delivery.detail
    assert elapsed < 4, elapsed


def test_a_malformed_webhook_url_is_reported_not_raised():
    delivery = Notifier(webhook_url="http://[::1/t0ken").send(ALERT)
    assert not delivery.delivered and "t0ken" not in delivery.detail


def test_a_send_logs_no_token_even_at_debug(receiver: int, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    base = f"127.0.0.1:{receiver}"
    notifier = Notifier(f"json://{base}/apprise-t0ken", webhook_url=f"http://{base}/hook-t0ken")
    delivery = notifier.send(ALERT)
    assert delivery.delivered, delivery.detail
    assert sorted(p for p, _ in Receiver.received) == ["/apprise-t0ken", "/hook-t0ken"]
    assert caplog.records  # logging was on: Parity's own line at least
    assert "t0ken" not in caplog.text

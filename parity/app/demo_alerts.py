"""The demo's alert receiver: where ``parity demo`` sends its alerts when no
``PARITY_ALERT_URLS`` is set, so a person can read them as they arrive.

A real HTTP server on 127.0.0.1 stands where Slack or a webhook would: Parity's notifier
posts to it through Apprise's ``json://`` target, as it would to any other, and each alert
becomes one line of ``<PARITY_HOME>/alerts.log`` (written and flushed at once, so
``tail -f`` shows it)::

    2026-12-04T18:20:05Z  hour_red    2026-12-04-17:00  red    Parity: hour ... went red: ...

The fields are the receiving time (UTC), the alert's kind, its hour (``-`` when it has
none), its state (``red`` for a failure, ``yellow`` for a warning, ``green`` for a success)
and its message.
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

ALERTS_FILE = "alerts.log"
#: Apprise's notification type -> the state a reader of the log sees.
STATES = {"failure": "red", "warning": "yellow", "success": "green", "info": "info"}


@dataclass(frozen=True)
class AlertLine:
    """One alert as the log holds it."""

    at: dt.datetime
    kind: str
    hour: str
    state: str
    message: str

    def text(self) -> str:
        message = " ".join(self.message.split())
        return (
            f"{self.at:%Y-%m-%dT%H:%M:%SZ}  {self.kind:18} {self.hour:16}  {self.state:6} {message}"
        )

    @classmethod
    def parse(cls, line: str) -> AlertLine:
        at, kind, hour, state, message = line.split(maxsplit=4)
        return cls(dt.datetime.fromisoformat(at), kind, hour, state, message.strip())


def alert_line(post: dict[str, Any], at: dt.datetime) -> AlertLine:
    """An Apprise ``json://`` post as a log line. Parity's notifier ends the body with the
    alert's own JSON (kind, hour and details); a post without it still becomes a line."""
    body = str(post.get("message") or "")
    text, _, tail = body.rpartition("\n\n")
    try:
        details = json.loads(tail) if text else {}
    except ValueError:
        details, text = {}, body
    if not isinstance(details, dict):
        details, text = {}, body
    event = str(details.get("event") or "parity.alert")
    return AlertLine(
        at=at,
        kind=event.removeprefix("parity."),
        hour=str(details.get("partition") or "-"),
        state=STATES.get(str(post.get("type")), str(post.get("type") or "-")),
        message=_message(str(post.get("title") or ""), text or body),
    )


def _message(title: str, text: str) -> str:
    """Title and text on one line; the text alone when it only repeats the title."""
    if not title or text.startswith(title.removeprefix("Parity: ")):
        return text or title
    return f"{title}: {text}".strip(": ")


def read_alerts(path: Path) -> list[AlertLine]:
    """The alerts a log file holds, oldest first."""
    if not path.exists():
        return []
    return [AlertLine.parse(line) for line in path.read_text("utf-8").splitlines() if line]


class AlertReceiver:
    """The HTTP server and the file it appends to; :attr:`url` is the Apprise target."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"receiver": self})
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="parity-demo-alerts", daemon=True
        )

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self._server.server_address[1]}/parity-demo"

    def start(self) -> AlertReceiver:
        self._thread.start()
        return self

    def record(self, post: dict[str, Any]) -> None:
        line = alert_line(post, dt.datetime.now(dt.UTC)).text()
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
        with self._lock:
            self._file.close()


class _Handler(http.server.BaseHTTPRequestHandler):
    receiver: ClassVar[AlertReceiver]

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        try:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            post = json.loads(body)
            self.receiver.record(post if isinstance(post, dict) else {"message": str(post)})
        except ValueError:
            self.send_response(400)
        else:
            self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Quiet: the alert log is the output."""

"""The one notification path: every alert (``parity.core.alerts``) goes to the Apprise URLs
of ``PARITY_ALERT_URLS`` (Slack, Teams, Discord, email, PagerDuty, ``json://`` webhooks...)
and, as a JSON POST, to ``PARITY_ALERT_WEBHOOK_URL``. A log line is written always.

Sending never raises and is bounded in time: a dead target never blocks the rollback or
repair that is being reported, which has already happened when the alert is sent. Target
URLs carry tokens, so nothing here prints more of a URL than its scheme or host.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import apprise
import httpx
import orjson
from apprise.utils.parse import parse_urls
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential,
)
from tenacity.stop import stop_base

from parity.core.alerts import Alert
from parity.core.config import Settings
from parity.core.errors import ConfigurationError

log = logging.getLogger("parity.io.notify")

#: Upper bound on sending one alert to every target, in seconds (targets run concurrently).
SEND_BUDGET_S = 10.0

#: The loggers of the libraries that send, and the least level at which what they log
#: names no URL: httpx logs each request's URL at INFO, httpcore and urllib3 the request
#: line at DEBUG, Apprise the target URL and payload at DEBUG.
_SENDER_LOG_FLOORS = {
    "httpx": logging.WARNING,
    "httpcore": logging.WARNING,
    "urllib3": logging.WARNING,
    "apprise": logging.INFO,
}


def quiet_sender_logs() -> None:
    """Keep the sending libraries from logging target URLs (which carry tokens), whatever
    level the application logs at. Child loggers inherit the level."""
    for name, floor in _SENDER_LOG_FLOORS.items():
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < floor:
            logger.setLevel(floor)


@dataclass(frozen=True)
class Delivery:
    delivered: bool
    attempts: int
    detail: str


def _host(url: str) -> str:
    # Webhook URLs often carry a token in the path or query: name only the host.
    parts = urlsplit(url)
    return parts.hostname or "webhook"


def _schemes(text: str) -> list[str]:
    return [url.split("://", 1)[0] for url in parse_urls(text)]


def load_targets(text: str) -> apprise.Apprise:
    """Apprise with every URL of ``text`` (space- or comma-separated); a URL Apprise does
    not understand is a ConfigurationError naming its scheme, never the URL."""
    targets = apprise.Apprise()
    if not targets.add(text) or len(targets) != len(_schemes(text)):
        known = {type(s).__name__ for s in targets}
        raise ConfigurationError(
            f"PARITY_ALERT_URLS: not every URL is one Apprise can send to (schemes given: "
            f"{', '.join(_schemes(text)) or 'none'}; understood: {len(targets)}"
            f"{' ' + ', '.join(sorted(known)) if known else ''}); see "
            "https://github.com/caronc/apprise/wiki for the URL of each service"
        )
    return targets


class _Undelivered(Exception):
    """A failure worth another attempt: a transport error or a 5xx. Says no more of the URL
    than its host."""


def _post_once(url: str, body: bytes, timeout_s: float) -> tuple[bool, str]:
    """One POST: whether it was accepted (2xx) and what came back; 4xx is final."""
    try:
        response = httpx.post(
            url, content=body, headers={"content-type": "application/json"}, timeout=timeout_s
        )
    except httpx.HTTPError as exc:
        raise _Undelivered(f"{type(exc).__name__} posting to {_host(url)}") from None
    detail = f"HTTP {response.status_code} from {_host(url)}"
    if response.status_code >= 500:
        raise _Undelivered(detail)
    return response.status_code < 300, detail


def post_webhook(
    url: str,
    payload: dict[str, Any],
    *,
    attempts: int = 3,
    timeout_s: float = 5.0,
    backoff_s: float = 1.0,
    budget_s: float | None = None,
    sleep: Callable[[float], None] | None = None,
) -> Delivery:
    """POST ``payload`` as JSON, retrying on errors and 5xx (``backoff_s`` doubling), all
    within ``budget_s`` when given: no pause that would end past it, no attempt with no time
    left. Never raises."""
    body = orjson.dumps(payload, default=str)
    end = None if budget_s is None else time.monotonic() + budget_s
    stop: stop_base = stop_after_attempt(attempts)
    if budget_s is not None:
        stop = stop | stop_before_delay(budget_s)
    retrying = Retrying(
        retry=retry_if_exception_type(_Undelivered),
        stop=stop,
        wait=wait_exponential(multiplier=backoff_s),
        sleep=sleep or (lambda s: time.sleep(s)),
        reraise=True,
    )
    done, last = 0, ""
    outcome: tuple[bool, str] | None = None
    try:
        for attempt in retrying:
            with attempt:
                left = timeout_s if end is None else min(timeout_s, end - time.monotonic())
                if left <= 0:
                    break
                done = attempt.retry_state.attempt_number
                try:
                    outcome = _post_once(url, body, left)
                except _Undelivered as exc:
                    last = str(exc)
                    raise
    except _Undelivered:
        pass
    if outcome is None:
        log.warning("alert webhook not delivered after %d attempts: %s", done, last)
        return Delivery(False, done, last)
    ok, detail = outcome
    if not ok:
        log.warning("alert webhook refused: %s", detail)
    return Delivery(ok, done, detail)


class Notifier:
    """Sends alerts to the configured targets; with none configured it only logs."""

    def __init__(
        self,
        alert_urls: str | None = None,
        webhook_url: str | None = None,
        *,
        budget_s: float = SEND_BUDGET_S,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        if alert_urls or webhook_url:
            quiet_sender_logs()
        self._targets = load_targets(alert_urls) if alert_urls else None
        self._webhook_url = webhook_url
        self._budget_s = budget_s
        self._sleep = sleep

    @classmethod
    def from_settings(cls, settings: Settings) -> Notifier:
        return cls(settings.alert_urls, settings.alert_webhook_url)

    @property
    def configured(self) -> bool:
        return self._targets is not None or self._webhook_url is not None

    def send(self, alert: Alert) -> Delivery:
        """Deliver ``alert`` to every target, concurrently, within the send budget. Never
        raises; says what was delivered."""
        log.warning("alert %s: %s: %s", alert.kind, alert.title, alert.body)
        if not self.configured:
            return Delivery(False, 0, "no alert target configured (PARITY_ALERT_URLS)")
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="parity-alert") as pool:
            jobs = []
            if self._targets is not None:
                jobs.append(pool.submit(self._apprise, alert))
            if self._webhook_url is not None:
                jobs.append(pool.submit(self._webhook, self._webhook_url, alert))
            results = [job.result() for job in jobs]
        return Delivery(
            all(r.delivered for r in results),
            sum(r.attempts for r in results),
            "; ".join(r.detail for r in results),
        )

    def _apprise(self, alert: Alert) -> Delivery:
        assert self._targets is not None
        try:
            sent = self._targets.notify(
                body=f"{alert.body}\n\n{orjson.dumps(alert.payload(), default=str).decode()}",
                title=alert.title,
                notify_type=apprise.NotifyType(alert.level.value),
                timeout=self._budget_s,
            )
            ok = bool(sent)
        except Exception as exc:  # a plugin bug must not stop a rollback's report
            ok = False
            log.warning("apprise raised %s while sending an alert", type(exc).__name__)
        return Delivery(
            ok, 1, f"apprise ({len(self._targets)} targets): {'sent' if ok else 'FAILED'}"
        )

    def _webhook(self, url: str, alert: Alert) -> Delivery:
        try:
            posted = post_webhook(url, alert.payload(), budget_s=self._budget_s, sleep=self._sleep)
        except Exception as exc:  # a malformed URL must not fail what is being reported
            log.warning("alert webhook raised %s", type(exc).__name__)
            return Delivery(False, 0, f"webhook: not delivered ({type(exc).__name__})")
        return Delivery(posted.delivered, posted.attempts, f"webhook: {posted.detail}")

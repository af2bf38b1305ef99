"""Rollback notifications: a log line always, and a JSON POST when a webhook is configured.
A failing webhook never blocks or fails the rollback."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

log = logging.getLogger("parity.io.notify")


@dataclass(frozen=True)
class Delivery:
    delivered: bool
    attempts: int
    detail: str


def _host(url: str) -> str:
    # Webhook URLs often carry a token in the path or query: name only the host.
    parts = urlsplit(url)
    return parts.hostname or "webhook"


def post_webhook(
    url: str,
    payload: dict[str, Any],
    *,
    attempts: int = 3,
    timeout_s: float = 5.0,
    backoff_s: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> Delivery:
    """POST ``payload`` as JSON, retrying on errors and 5xx. Never raises."""
    body = orjson.dumps(payload, default=str)
    last = ""
    for attempt in range(1, attempts + 1):
        try:
            response = httpx.post(
                url,
                content=body,
                headers={"content-type": "application/json"},
                timeout=timeout_s,
            )
            if response.status_code < 500:
                ok = response.status_code < 300
                detail = f"HTTP {response.status_code} from {_host(url)}"
                if not ok:
                    log.warning("rollback webhook refused: %s", detail)
                return Delivery(ok, attempt, detail)
            last = f"HTTP {response.status_code} from {_host(url)}"
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__} posting to {_host(url)}"
        if attempt < attempts:
            sleep(backoff_s * 2 ** (attempt - 1))
    log.warning("rollback webhook not delivered after %d attempts: %s", attempts, last)
    return Delivery(False, attempts, last)

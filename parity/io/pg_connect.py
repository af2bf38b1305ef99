"""Connections to a PostgreSQL URL: its parsing, Parity's timeouts, and errors that name the
target and never the password.

The statement timeout is set with ``set_config`` after connecting rather than with the
``options`` startup parameter: PgBouncer and Supavisor may refuse ``options``, while ``SET``
works everywhere, and a ``SET`` made after login also beats a role-level default.
``prepare_threshold=None`` keeps psycopg from preparing statements, so that nothing breaks
behind a transaction-mode pooler. The connect timeout is libpq's ``connect_timeout``, whole
seconds and at least 2 (libpq's own floor), per address tried.

Every message built from a driver error or the URL goes through :func:`scrub` (the URL's
secrets and anything shaped like one removed). A URL libpq cannot parse is never echoed, not
even in part.
"""

from __future__ import annotations

import math
import re
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from parity.core.errors import (
    ConfigurationError,
    CredentialsRefusedError,
    StoreConnectionError,
)
from parity.core.redact import redact, secrets_of

DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_STATEMENT_TIMEOUT_S = 300.0
_SQLALCHEMY_URL = re.compile(r"^\s*postgres(?:ql)?\+[A-Za-z0-9_]+://", re.IGNORECASE)


def scrub(text: object, url: str) -> str:
    """``text`` on one line, without the secrets of ``url`` nor anything shaped like one."""
    return " ".join(redact(text, *secrets_of(url)).split())


def parse_url(url: str) -> dict[str, Any]:
    """libpq's reading of ``url``; a ConfigurationError, never echoing the URL, when it has
    none or a misleading one."""
    if _SQLALCHEMY_URL.match(url):
        raise ConfigurationError(
            "the database URL is in SQLAlchemy's dialect+driver form "
            "(postgresql+psycopg2://...), which libpq does not read: set PARITY_DATABASE_URL "
            "to the same URL starting with postgresql:// instead"
        )
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        # libpq's parse error quotes the offending fragment, which may be the password.
        raise ConfigurationError(
            "the database URL is neither a postgresql:// URL nor a libpq conninfo string "
            f"({scrub(exc, url)}); check PARITY_DATABASE_URL (percent-encode any of "
            "@ : / ? # in the password)"
        ) from None
    if "://" in url and "@" in str(params.get("dbname", "")):
        # libpq read "user:pa/ss@host/db" as host "user", port "pa", database "ss@host/db".
        raise ConfigurationError(
            "the database URL's password holds an unencoded '/', so its user, host and "
            "database cannot be told apart: percent-encode it (%2F) in PARITY_DATABASE_URL"
        )
    return params


def describe_target(url: str) -> str:
    """``host=… port=… dbname=… user=…`` of a URL, for messages (never the password)."""
    params = parse_url(url)
    parts = []
    for key in ("host", "port", "dbname", "user"):
        value = params.get(key)
        parts.append(f"{key}={value}" if value else f"{key}=(libpq default)")
    return scrub(" ".join(parts), url)


def connect_timeout_param(seconds: float) -> int:
    return max(2, math.ceil(seconds))


def statement_timeout_param(seconds: float) -> str:
    """Milliseconds for ``statement_timeout``; 0 (no limit) when ``seconds <= 0``."""
    return "0" if seconds <= 0 else str(max(1, round(seconds * 1000)))


#: The server's answers (libpq quotes them) that refuse the credentials rather than fail to
#: be reached: configuration to correct, not an outage to wait out.
_CREDENTIALS_REFUSED = re.compile(
    r"authentication failed for user|no password supplied|role \S+ does not exist|"
    r"no pg_hba\.conf entry"
)


def connection_error(url: str, exc: Exception, connect_timeout_s: float) -> StoreConnectionError:
    """A StoreConnectionError for a failed connect: where we tried, why, what to check."""
    reason = scrub(exc, url)
    if _CREDENTIALS_REFUSED.search(reason):
        return CredentialsRefusedError(
            f"PostgreSQL at {describe_target(url)} refused the credentials "
            f"({reason.rstrip('.')}): correct the user and password in PARITY_DATABASE_URL "
            "(special characters percent-encoded)"
        )
    if isinstance(exc, psycopg.errors.ConnectionTimeout) or "timeout expired" in reason:
        reason = f"no answer within the connect timeout of {connect_timeout_s:g} s ({reason})"
    if not reason.endswith((".", "?", "!")):
        reason += "."
    return StoreConnectionError(
        f"cannot connect to PostgreSQL at {describe_target(url)}: {reason} "
        "Check PARITY_DATABASE_URL (host, port, database, user and password) and that the "
        "server accepts connections from here."
    )


def connect(
    url: str,
    *,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    statement_timeout_s: float = DEFAULT_STATEMENT_TIMEOUT_S,
    autocommit: bool = True,
) -> psycopg.Connection[Any]:
    """A psycopg connection with Parity's timeouts. Raises StoreConnectionError."""
    parse_url(url)  # a malformed URL is a ConfigurationError, before anything is tried
    conninfo = make_conninfo(
        url, connect_timeout=connect_timeout_param(connect_timeout_s), application_name="parity"
    )
    try:
        conn = psycopg.connect(conninfo, autocommit=True, prepare_threshold=None)
    except psycopg.Error as exc:
        raise connection_error(url, exc, connect_timeout_s) from None
    try:
        conn.execute(
            "SELECT set_config('statement_timeout', %s, false)",
            [statement_timeout_param(statement_timeout_s)],
        )
    except psycopg.Error as exc:
        conn.close()
        raise StoreConnectionError(
            f"connected to {describe_target(url)} but could not set statement_timeout: "
            f"{scrub(exc, url)}"
        ) from None
    conn.autocommit = autocommit
    return conn

"""One way to open the Supabase API (PostgREST behind it) for the events store and the
control plane: explicit timeouts, no session or token refresh, the last HTTP status kept
for error messages."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from supabase import Client, ClientOptions, create_client

from parity.core.errors import ConfigurationError
from parity.core.redact import redact_url


def open_client(
    supabase_url: str,
    key: str,
    schema: str,
    *,
    timeout_s: float,
    connect_timeout_s: float,
    retry: bool,
    on_response: Callable[[httpx.Response], None],
) -> tuple[httpx.Client, Client]:
    """The HTTP client (close it when done) and the Supabase client over it. A URL the
    client cannot use is a ConfigurationError that shows it without credentials."""
    http = httpx.Client(
        timeout=httpx.Timeout(timeout_s, connect=min(connect_timeout_s, timeout_s)),
        follow_redirects=True,
        event_hooks={"response": [on_response]},
    )
    options = ClientOptions(
        schema=schema,
        httpx_client=http,
        postgrest_client_retry=retry,
        auto_refresh_token=False,
        persist_session=False,
    )
    try:
        return http, create_client(supabase_url, key, options)
    except Exception as exc:  # SupabaseException: a malformed URL
        http.close()
        raise ConfigurationError(
            f"SUPABASE_URL {redact_url(supabase_url)!r} is not usable ({type(exc).__name__}): "
            "expected https://<project>.supabase.co"
        ) from None

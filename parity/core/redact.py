"""Credentials out of every message: one place that knows what a secret looks like.

Anything Parity prints, logs, raises or puts into Dagster metadata that was built from a URL,
a libpq conninfo string, an API key or a driver's exception text goes through
:func:`redact` first. Two layers, because neither is enough alone:

- *Known secrets.* The caller passes what it knows is secret (:func:`secrets_of` a database
  or webhook URL, an API key). Each is masked wherever it appears, whole or percent-encoded,
  and so are its pieces between URL delimiters: a driver that misparses
  ``postgresql://u:pa/ss@host`` quotes fragments such as ``ss@host``, never the whole.
- *Shapes.* Whatever a driver echoes that the caller did not know about: any ``scheme://``
  URL is cut down to scheme, host and a numeric port (userinfo, path, query and fragment
  become ``***``: webhook tokens live in paths, API keys in query strings, and a password
  with a ``/`` or ``#`` lands in the port or path of a misparsed URL); conninfo
  ``password=…`` style pairs, ``Bearer`` tokens, JWTs (Supabase's legacy keys) and
  ``sb_secret_…`` keys are masked.

Masking too much is the safe failure: a message loses a detail, never a password.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable

MASK = "***"
#: Known secrets shorter than this are not masked inside text: a one- or two-character
#: password would mask every occurrence of that letter pair, making messages unreadable.
#: Parity's own messages never embed the password itself, only driver texts might.
MIN_SECRET_LENGTH = 3

_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s'\"<>()\[\]{}|\\^`]*")
_PAIR_KEYS = (
    r"password|passwd|pwd|pass|sslpassword|secret|client_secret|token|access_token|"
    r"refresh_token|api[_-]?key|apikey|sig|signature|authorization"
)
_PAIR = re.compile(
    rf"(?i)(?<![\w-])((?:{_PAIR_KEYS})\s*[=:]\s*)('(?:[^'\\]|\\.)*'|\"[^\"]*\"|[^\s&,;'\"]+)"
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]+")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*")
_SUPABASE_KEY = re.compile(r"\bsb_(?:secret|publishable)_[A-Za-z0-9_\-]+")
_CONNINFO_PASSWORD = re.compile(r"(?i)\bpassword\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")
_DELIMITERS = re.compile(r"[/?#@:\s]+")


def redact_url(url: str) -> str:
    """``url`` reduced to scheme, host and a numeric port; every other part that is present
    (userinfo, path, query, fragment) shown as ``***``. Never raises."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return f"{url.split(':', 1)[0]}://{MASK}" if "://" in url else MASK
    try:
        port = parts.port
    except ValueError:
        port = None
        host = MASK if not host else f"{host}:{MASK}"
    if "@" in parts.netloc:
        host = f"{MASK}@{host}"
    text = f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")
    if parts.path not in ("", "/"):
        text += "/" + MASK
    if parts.query:
        text += "?" + MASK
    if parts.fragment:
        text += "#" + MASK
    return text


def secrets_of(value: str | None) -> tuple[str, ...]:
    """What is secret in a URL or conninfo string: its password (raw and percent-decoded),
    a userinfo without a password (a token), its query values, the path of a non-database
    URL (webhook tokens), and ``password=`` values of a conninfo string. The whole value is
    included too. Tolerates any malformed input."""
    if not value:
        return ()
    found: list[str] = [value]
    for match in _CONNINFO_PASSWORD.finditer(value):
        found.append(match.group(1).strip("'\""))
    scheme, sep, rest = value.partition("://")
    if sep:
        # The userinfo ends at the last "@": a password may hold "/", "?", "#" or "@".
        userinfo, at, _ = rest.rpartition("@")
        if at:
            user, colon, password = userinfo.partition(":")
            if colon:
                found.append(password)
            elif not scheme.lower().startswith("postgres"):
                found.append(user)  # https://TOKEN@host: the user is the credential
        after_host = rest.split("@")[-1]
        if not scheme.lower().startswith("postgres"):
            path = re.split(r"[?#]", after_host, maxsplit=1)[0].partition("/")[2]
            found.append(path)
        for _, query_value in urllib.parse.parse_qsl(
            urllib.parse.urlsplit(value).query if "?" in value else "", keep_blank_values=True
        ):
            found.append(query_value)
    out: list[str] = []
    for i, secret in enumerate(found):
        for form in (secret, urllib.parse.unquote(secret)):
            # The parts of a password between URL delimiters too (not of the whole value:
            # its host and scheme are no secret).
            pieces = [] if i == 0 else _DELIMITERS.split(form)
            for piece in (form, *pieces):
                if len(piece) >= MIN_SECRET_LENGTH + 1 and piece not in out:
                    out.append(piece)
    return tuple(out)


def _forms(secrets: Iterable[str | None]) -> list[str]:
    forms: set[str] = set()
    for secret in secrets:
        if not secret or len(secret) < MIN_SECRET_LENGTH:
            continue
        forms.update({secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote(secret)})
    # Longest first, so a secret is masked whole before any of its pieces.
    return sorted(forms, key=len, reverse=True)


def redact(text: object, *secrets: str | None) -> str:
    """``text`` (any object: an exception is taken as its ``str``) with ``secrets`` and
    anything shaped like a credential masked (see the module docstring)."""
    out = str(text)
    for form in _forms(secrets):
        out = out.replace(form, MASK)
    out = _URL.sub(lambda m: redact_url(m.group(0)), out)
    out = _PAIR.sub(lambda m: m.group(1) + MASK, out)
    out = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", out)
    out = _JWT.sub(MASK, out)
    return _SUPABASE_KEY.sub(MASK, out)

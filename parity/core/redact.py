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
    rf"(?i)(?<![\w-])((?:{_PAIR_KEYS})[\"']?\s*[=:]\s*)('(?:[^'\\]|\\.)*'|\"[^\"]*\"|[^\s&,;'\"]+)"
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]+")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*")
_SUPABASE_KEY = re.compile(r"\bsb_(?:secret|publishable)_[A-Za-z0-9_\-]+")
_CONNINFO_PASSWORD = re.compile(r"(?i)\bpassword\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")
_DELIMITERS = re.compile(r"[/?#@:\s]+")
_URL_PARTS = re.compile(r"[/?#@:\[\]\s=&;,]+")
_HOST_NAME = re.compile(r"^(?:localhost|(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}|\d{1,3}(?:\.\d{1,3}){3})$")


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
    """What is secret in a URL or conninfo string, to pass to :func:`redact`: the whole
    value; a password (raw, percent-decoded, and its pieces between URL delimiters); a
    userinfo without a password (a token); query values. A URL other than a database's
    (a webhook) is a credential as a whole: its path, and every part of it that is not a
    well-formed host name or a numeric port, are secret too (tokens live in the path, and
    in the port or host of a malformed URL). Tolerates any malformed input."""
    if not value:
        return ()
    exact: list[str] = [value]
    split: list[str] = [m.group(1).strip("'\"") for m in _CONNINFO_PASSWORD.finditer(value)]
    scheme, sep, rest = value.partition("://")
    if sep:
        database = scheme.lower().startswith("postgres")
        # The userinfo ends at the last "@": a password may hold "/", "?", "#" or "@".
        userinfo, at, after = rest.rpartition("@")
        if at:
            user, colon, password = userinfo.partition(":")
            if colon:
                split.append(password)
            elif not database:
                exact.append(user)  # https://TOKEN@host: the user is the credential
        query = re.split(r"[?#]", value, maxsplit=1)[1] if re.search(r"[?#]", value) else ""
        exact.extend(v for _, v in urllib.parse.parse_qsl(query, keep_blank_values=True))
        if not database:
            authority, _, path = re.split(r"[?#]", after, maxsplit=1)[0].partition("/")
            exact.append(path)
            exact.extend(p for p in _URL_PARTS.split(authority) if not _locates(p))
            exact.extend(p for p in _URL_PARTS.split(path) if _token_like(p))
    out: list[str] = []
    for secret, pieces in [(s, False) for s in exact] + [(s, True) for s in split]:
        for form in (secret, urllib.parse.unquote(secret)):
            for piece in (form, *(_DELIMITERS.split(form) if pieces else ())):
                if len(piece) >= MIN_SECRET_LENGTH + 1 and piece not in out:
                    out.append(piece)
    return tuple(out)


def _locates(part: str) -> bool:
    """Whether a part of a URL's authority only says where (a host name, a port)."""
    return not part or part.isdigit() or bool(_HOST_NAME.match(part))


def _token_like(part: str) -> bool:
    """A path segment that looks generated rather than named: long, with a digit."""
    return len(part) >= 6 and any(c.isdigit() for c in part) and not _locates(part)


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
        # Case-insensitive: host names come back lower-cased (IDNA) from HTTP clients.
        out = re.sub(re.escape(form), MASK, out, flags=re.IGNORECASE)
    out = _URL.sub(lambda m: redact_url(m.group(0)), out)
    out = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", out)
    out = _PAIR.sub(lambda m: m.group(1) + MASK, out)
    out = _JWT.sub(MASK, out)
    return _SUPABASE_KEY.sub(MASK, out)

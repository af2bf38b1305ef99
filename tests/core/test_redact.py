"""The redaction helper: every shape of URL, conninfo and driver text that can carry a
credential comes out without it, and what locates the target (scheme, host) stays."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parity.core.redact import MASK, redact, redact_url, secrets_of

PW = "Zq8-vT41kXw"
TOKEN = "T0KENmQ9r2sLx"

URLS = [
    f"postgresql://alice:{PW}@db.example.com:5432/app",
    f"postgres://alice:{PW}@db.example.com/app?sslmode=require",
    f"postgresql+psycopg2://alice:{PW}@db.example.com/app",
    f"postgresql://alice:pa/{PW}@db.example.com/app",  # unencoded "/" in the password
    f"postgresql://alice:{PW}#x@db.example.com/app",  # unencoded "#"
    f"postgresql://alice:{PW}@db.example.com:54x32/app",  # a bad port
    f"postgresql://alice:{PW}@[::1/app",  # a bad IPv6 host
    f"postgresql://alice:{PW.replace('-', '%2D')}@db.example.com/app",  # percent-encoded
    f"postgresql://db.example.com/app?password={PW}",
    f"https://hooks.example.com/services/T000/B000/{TOKEN}",
    f"https://{TOKEN}@hooks.example.com/notify",
    f"https://hooks.example.com/notify?token={TOKEN}&x=1",
    f"https://hooks.example.com:{TOKEN}/notify",
    f"ht!tp://hooks.example.com/{TOKEN}",
    f"http://hooks.example.com/notify#{TOKEN}",
]
CONNINFOS = [
    f"host=db.example.com password={PW} user=alice",
    f"host=db.example.com password='{PW} x' user=alice",
    f"host=db.example.com PASSWORD = {PW}",
    f"host=db.example.com password='{PW}",  # unterminated quote
]


def _secret_of(text: str) -> str:
    return TOKEN if TOKEN in text else PW


@pytest.mark.parametrize("value", URLS + CONNINFOS)
def test_a_value_is_redacted_by_its_own_secrets(value: str) -> None:
    assert _secret_of(value) not in redact(value, *secrets_of(value))


@pytest.mark.parametrize("value", URLS)
def test_a_url_inside_any_text_is_redacted_by_shape(value: str) -> None:
    text = f'psycopg.OperationalError: could not parse "{value}": try again'
    assert _secret_of(value) not in redact(text)
    assert _secret_of(value) not in redact(text.replace('"', "'"))


@pytest.mark.parametrize("value", CONNINFOS[:3])
def test_conninfo_pairs_are_redacted_by_shape(value: str) -> None:
    assert PW not in redact(f"connection failed ({value})")


@pytest.mark.parametrize(
    "text",
    [
        f"Authorization: Bearer {TOKEN}",
        "apikey: eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.c2lnbmF0dXJl",
        f"key sb_secret_{TOKEN}",
        f"token={TOKEN}&other=1",
        f'{{"api_key": "{TOKEN}"}}',
    ],
)
def test_tokens_and_keys_are_redacted_by_shape(text: str) -> None:
    assert TOKEN not in redact(text) and "c2lnbmF0dXJl" not in redact(text)


def test_a_known_secret_is_masked_whole_percent_encoded_and_in_pieces() -> None:
    secret = f"ab/{PW}@cd"
    text = f"fragment {PW}@db and {secret} and {secret.replace('/', '%2F').replace('@', '%40')}"
    assert PW not in redact(text, *secrets_of(f"postgresql://u:{secret}@host/db"))


def test_what_locates_the_target_stays() -> None:
    assert redact_url(f"postgresql://alice:{PW}@db.example.com:5432/app") == (
        f"postgresql://{MASK}@db.example.com:5432/{MASK}"
    )
    assert redact_url(f"https://hooks.example.com/services/{TOKEN}?a=b") == (
        f"https://hooks.example.com/{MASK}?{MASK}"
    )
    assert redact("connection to server at 127.0.0.1, port 5432 failed") == (
        "connection to server at 127.0.0.1, port 5432 failed"
    )
    # The user name is not a secret of a database URL: "postgres" stays readable.
    url = f"postgresql://postgres:{PW}@localhost/postgres"
    assert redact("user postgres at localhost", *secrets_of(url)) == "user postgres at localhost"


@given(
    password=st.text(
        alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=8, max_size=30
    )
)
def test_any_password_in_a_url_never_survives(password: str) -> None:
    url = f"postgresql://alice:{password}@db.example.com/app"
    out = redact(f"error near {url}", *secrets_of(url))
    assert password not in out

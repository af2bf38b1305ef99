"""JSON text read exactly (contract §2): the limits of what RFC 8785 represents, and the
cheap screens over raw bytes that decide which parser a line may take.

orjson is fast but turns integers beyond 64 bits into floats; :func:`loads_exact` sends only
the text that may hold such a number (:func:`may_hold_long_number`) to the standard library.
:func:`exceeds_depth` bounds the nesting any parser sees.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

#: Largest integer RFC 8785 (IEEE 754 double) represents exactly.
MAX_SAFE_INTEGER = 2**53 - 1
#: Deepest nesting of arrays and objects read in a log line (the line's own object is
#: level 1): deeper lines are quarantined before any parser sees them, so the work per
#: line stays bounded whatever the parser (the recursive ones fail far deeper).
MAX_DEPTH = 128

#: A run of this many digits may be an integer beyond 2^53; such text bypasses the fast paths.
LONG_DIGIT_RUN = 16
_DIGIT_MAP = bytes(48 if 48 <= i <= 57 else 32 for i in range(256))
_DIGIT_RUN = b"0" * LONG_DIGIT_RUN


def has_long_digit_run(raw: bytes) -> bool:
    """True when ``raw`` has 16+ consecutive ASCII digits (bytes.translate: ~1 us a line)."""
    return _DIGIT_RUN in raw.translate(_DIGIT_MAP)


#: Digits to ``0``; a quote and the letters other than ``e``/``E`` (which precede exponent
#: digits) to ``x``; all else a space. In JSON text a digit right after a quote or a letter
#: is inside a string, never the start of a number.
_RUN_START_MAP = bytes(
    48 if 48 <= i <= 57
    else 120 if i == 34 or (chr(i).isascii() and chr(i).isalpha() and i not in (69, 101))
    else 32
    for i in range(256)
)  # fmt: skip
_NUMBER_RUN = " " + "0" * LONG_DIGIT_RUN
#: :func:`may_hold_long_number`, for Arrow's RE2 over a whole column.
LONG_NUMBER_REGEX = '(^|[^0-9A-DF-Za-df-z"])[0-9]{16}'


def may_hold_long_number(raw: bytes) -> bool:
    """True when ``raw`` has a run of 16+ digits that may be part of a number (as
    :func:`has_long_digit_run`, less the runs inside strings that start right after a
    letter or a quote, as hex digests do: one log line in a hundred)."""
    marks = raw.translate(_RUN_START_MAP).decode()
    return _NUMBER_RUN in marks or marks.startswith(_NUMBER_RUN[1:])


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(rb"[\[\]{}]")


def exceeds_depth(raw: bytes, limit: int = MAX_DEPTH) -> bool:
    """True when the JSON text ``raw`` nests arrays and objects deeper than ``limit``.
    Counting brackets decides almost every line; only a line with more brackets than the
    limit is scanned, its strings removed first."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    depth = 0
    for bracket in _BRACKETS.findall(_STRING.sub(b"", raw)):
        if bracket in b"[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (math.inf, -math.inf):
        raise ValueError(f"number {text[:40]} is out of range for a double")
    return value


def loads_exact(data: bytes | str) -> Any:
    """Parse JSON without losing integers: orjson turns integers beyond 64 bits into
    floats, so text with long digit runs goes through the standard library instead, held to
    orjson's rules (strict UTF-8, no NaN or infinities, no lone surrogates)."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if not may_hold_long_number(raw):
        return orjson.loads(raw)
    text = raw.decode("utf-8")  # strict: a lone surrogate or bad byte raises ValueError
    value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    # \ud800-style escapes decode to lone surrogates, which UTF-8 cannot carry: encoding
    # raises UnicodeEncodeError (a ValueError).
    json.dumps(value, ensure_ascii=False).encode("utf-8")
    return value

"""Random and adversarial JSON texts and log lines for the kernel's differential tests and
its sanitizer fuzz run: floats by bit pattern and written many ways, integers around 2^53,
escapes, characters above U+FFFF, keys from U+E000 (where code point and UTF-16 order
differ), whitespace, duplicate keys, deep nesting; and mutations of lines (bytes flipped,
inserted, cut, lines spliced)."""

from __future__ import annotations

import hashlib
import math
import random
import struct

import orjson
import rfc8785

CHARS = (
    [chr(c) for c in range(0x20)]
    + list('"\\/ab\x7fZz09 ')
    + [
        "é",
        "ß",
        "\u2028",
        "\u00a0",
        "日",
        "\ud7ff",
        "\ue000",
        "\uffff",
        "\ufffd",
        "\U0001f600",
        "\U00010000",
        "\U0010ffff",
        "ｱ",
        "\uff5e",
    ]
)
SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}
SPECIAL_FLOATS = [
    1e21,
    1e20,
    1e-6,
    1e-7,
    9.999999999999999e20,
    5e-324,
    2.2250738585072014e-308,
    1.7976931348623157e308,
    0.1,
    0.30000000000000004,
    123456789012345.6,
    1e15,
    1e16,
    1e17,
    9007199254740993.0,
    4.35,
    0.000001234,
    1e-5,
    100.0,
    -0.0,
    0.0,
]
MUTATION_BYTES = (
    b'{}[]":,.-+eE0123456789\\u \t\nabcdef'
    b"\x00\x1f\x7f\xc3\xa9\xed\xa0\x80\xf0\x9f\x98\x80\xef\xbb\xbf\xff"
)


TAME_KEYS = ['"a"', '"b"', '"value"', '"é"', '"\ue000"', '"\U0001f600"', '"z9"']


class JsonGen:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.tame = False

    def keys(self) -> list[str]:
        """An object's keys as JSON strings: awkward, or (``tame``) as producers write them."""
        n = self.rng.randrange(6)
        if self.tame:
            return self.rng.sample(TAME_KEYS, n)
        keys = [self.string(self.text(5)) for _ in range(n)]
        if keys and self.rng.random() < 0.03:
            keys.append(keys[0])
        return keys

    def text(self, max_len: int = 8) -> str:
        return "".join(self.rng.choice(CHARS) for _ in range(self.rng.randrange(max_len + 1)))

    def string(self, s: str) -> str:
        """A JSON string literal of ``s``, escaped at random."""
        rng, out = self.rng, ['"']
        for ch in s:
            cp, r = ord(ch), rng.random()
            if ch in '"\\' or cp < 0x20:
                if ch in SHORT_ESCAPES and r < 0.6:
                    out.append(SHORT_ESCAPES[ch])
                else:
                    out.append(f"\\u{cp:04x}" if r < 0.8 else f"\\u{cp:04X}")
            elif r < 0.15:
                if cp >= 0x10000:
                    v = cp - 0x10000
                    out.append(f"\\u{0xD800 + (v >> 10):04x}\\u{0xDC00 + (v & 0x3FF):04x}")
                else:
                    out.append(f"\\u{cp:04x}")
            elif ch == "/" and r < 0.5:
                out.append("\\/")
            else:
                out.append(ch)
        out.append('"')
        return "".join(out)

    def float_text(self) -> str:
        rng, k = self.rng, self.rng.random()
        if k < 0.25:
            x = math.inf
            while not math.isfinite(x):
                x = struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
        elif k < 0.45:
            x = round(rng.uniform(-1e4, 1e4), rng.randrange(0, 8))
        elif k < 0.55:
            x = float(rng.randrange(-(10**6), 10**6))
        elif k < 0.7:
            x = rng.choice([1, -1]) * rng.random() * 10 ** rng.randrange(-30, 30)
        elif k < 0.8:
            x = rng.choice(SPECIAL_FLOATS)
        else:
            x = float(f"{rng.randrange(1, 10 ** rng.randrange(1, 18))}e{rng.randrange(-330, 310)}")
            if not math.isfinite(x):
                x = 1.5
        form = rng.random()
        if form < 0.5:
            return repr(x)
        if form < 0.65:
            return f"{x:.17g}"
        if form < 0.75:
            t = repr(x)
            return t + "000" if "e" not in t and "." in t else t
        if form < 0.85:
            return f"{x:.15e}"
        if form < 0.92:
            return repr(x).upper()
        return f"{x:.20f}" if abs(x) < 1e20 else repr(x)

    def int_text(self) -> str:
        rng, k = self.rng, self.rng.random()
        if k < 0.6:
            return str(rng.randrange(-1000, 100000))
        if k < 0.8:
            return str(rng.choice([1, -1]) * rng.randrange(2**50, 2**53))
        if k < 0.9:
            return rng.choice(
                [
                    "-0",
                    "0",
                    str(2**53 - 1),
                    str(-(2**53 - 1)),
                    str(2**53),
                    str(2**64),
                    str(-(2**63)),
                ]
            )
        return str(rng.randrange(10**15, 10**17))

    def ws(self) -> str:
        return self.rng.choice(["", "", "", " ", "\n", " \t\r\n "])

    def value(self, depth: int = 0) -> str:
        rng, k = self.rng, self.rng.random()
        if depth < 4 and k < 0.25:
            keys = self.keys()
            ws = self.ws
            members = (f"{ws()}{key}{ws()}:{ws()}{self.value(depth + 1)}{ws()}" for key in keys)
            return "{" + ",".join(members) + "}"
        if depth < 4 and k < 0.4:
            return (
                "["
                + ",".join(
                    self.ws() + self.value(depth + 1) + self.ws() for _ in range(rng.randrange(5))
                )
                + "]"
            )
        if k < 0.6:
            return self.float_text()
        if k < 0.75:
            return self.int_text()
        if k < 0.9:
            return self.string(self.text())
        return rng.choice(["true", "false", "null"])

    def deep(self) -> str:
        """Nesting around the kernel's and the parsers' limits."""
        rng = self.rng
        depth = rng.choice([2, 64, 126, 127, 128, 129, 200, 600, 1100, 10_000])
        opener, closer = rng.choice([("[", "]"), ('{"a":', "}")])
        inner = rng.choice(["1", "12345678901234567", '"x"', "1.5e300", "[]"])
        return opener * depth + inner + closer * depth

    def json_text(self) -> bytes:
        body = self.deep() if self.rng.random() < 0.02 else self.value()
        return (self.ws() + body + self.ws()).encode("utf-8", "surrogatepass")

    def line(self, i: int) -> bytes:
        """A log line: mostly well-formed events (right or wrong checksums, awkward
        payloads and identifiers), now and then an odd field."""
        rng = self.rng
        self.tame = tame = rng.random() < 0.7  # keys and identifiers as producers write them
        keys = self.keys()
        payload = "{" + ",".join(f"{k}:{self.value(2)}" for k in keys) + "}"
        stream = rng.choice(["health"] * 4 + ["s-é", "\U0001f600x", "x" * 128, "x" * 129, "", 'q"'])
        event_type = rng.choice(["error.raised", "ü", "\ue000"] + ([] if tame else ["x\\y"]))
        as_json = (lambda s: orjson.dumps(s).decode()) if tame else self.string
        minute, second, micro = rng.randrange(60), rng.randrange(60), rng.randrange(10**6)
        emitted = rng.choice(
            [f"2026-11-28T10:{minute:02d}:{second:02d}.{micro:06d}Z"] * 5
            + [
                "2026-11-28T11:00:00.000000Z",
                "2026-02-29T10:00:00.000000Z",
                "2026-11-28T10:00:00.000000+00:00",
                "2026-11-28T09:59:59.999999Z",
            ]
        )
        seq = rng.choice([rng.randrange(1, 2**53)] * 8 + [1, 0, 2**53, 2**53 - 1])
        checksum = _checksum(payload, stream, event_type, emitted, seq, i)
        extras = ""
        if rng.random() < 0.2:
            extras = rng.choice(
                [
                    ',"category":"CRITICAL"',
                    ',"category":null',
                    ',"category":"other"',
                    ',"logged_at":"2026-11-28T10:00:02.000000Z"',
                    ',"logged_at":null',
                    ',"logged_at":""',
                    ',"seq":2',
                    ',"extra":[1,{"a":2}]',
                ]
            )
        seq_text = rng.choice([str(seq)] * 8 + [f"{seq}.0", f'"{seq}"'])
        fields = [
            f'"stream":{as_json(stream)}',
            f'"seq":{seq_text}',
            f'"event_type":{as_json(event_type)}',
            f'"emitted_at":{as_json(emitted)}',
            f'"payload":{payload}',
            f'"checksum":"{checksum}"',
        ]
        # Raw newlines end a log line: whitespace inside one is anything else.
        line = ("{" + ",".join(fields) + extras + "}").replace("\n", " ")
        self.tame = False
        return line.encode("utf-8", "surrogatepass")

    def mutate(self, line: bytes, others: list[bytes]) -> bytes:
        rng, out = self.rng, bytearray(line)
        for _ in range(rng.randrange(1, 4)):
            k, at = rng.random(), rng.randrange(len(out) + 1)
            if k < 0.25:
                del out[at:]
            elif k < 0.5 and out:
                out[min(at, len(out) - 1)] = rng.choice(MUTATION_BYTES)
            elif k < 0.7:
                out[at:at] = bytes(rng.choice(MUTATION_BYTES) for _ in range(rng.randrange(1, 5)))
            elif k < 0.85:
                other = rng.choice(others)
                out = out[:at] + other[rng.randrange(len(other) + 1) :]
            else:
                end = rng.randrange(len(out) + 1)
                del out[min(at, end) : max(at, end)]
        return bytes(out)


def _checksum(payload: str, stream: str, event_type: str, emitted: str, seq: int, i: int) -> str:
    """Mostly the right checksum, sometimes a producer's mistake or a random one."""
    try:
        value = orjson.loads(payload.encode("utf-8", "surrogatepass"))
        covered = {
            "stream": stream,
            "seq": seq,
            "event_type": event_type,
            "emitted_at": emitted,
            "payload": value,
        }
        if i % 5 == 0:
            return hashlib.sha256(orjson.dumps(covered, option=orjson.OPT_SORT_KEYS)).hexdigest()
        return hashlib.sha256(rfc8785.dumps(covered)).hexdigest()
    except Exception:
        return hashlib.sha256(b"%d" % i).hexdigest()

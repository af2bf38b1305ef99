"""Bounded mutation fuzz of the kernel, meant to run in a process whose kernel was built
with AddressSanitizer and UBSan (``test_sanitizers.py`` builds it and runs this file).

    python -m tests.io.native.fuzz_kernel <path to _jcs .so> <lines> <seed>

Mutated, truncated and spliced log lines and random JSON texts go through every entry
point; a verdict the kernel decides is checked against the Python definition. Exits 1 on
a disagreement; a sanitizer finding aborts the process.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys

import numpy as np

from parity.core.errors import InvalidEventError
from parity.core.events import checksum_matches, loads_exact, parse_event
from tests.io.native.jsongen import JsonGen

MAX_DEPTH = 128


def load(path: str):  # noqa: ANN201
    loader = importlib.machinery.ExtensionFileLoader("parity.io.native._jcs", path)
    spec = importlib.util.spec_from_file_location("parity.io.native._jcs", path, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def python_verdict(line: bytes) -> bool | None:
    try:
        e = parse_event(loads_exact(line))
    except (ValueError, RecursionError, InvalidEventError):
        return None
    return checksum_matches(e.stream, e.seq, e.event_type, e.emitted_at_text, e.payload, e.checksum)


def offsets(values: list[bytes]) -> tuple[bytes, bytes]:
    ends = np.cumsum([0, *map(len, values)], dtype=np.int64)
    return ends.tobytes(), b"".join(values)


def main(path: str, n: int, seed: int) -> int:
    kernel = load(path)
    gen = JsonGen(seed)
    seeds = [gen.line(i) for i in range(300)]
    disagreements = decided = 0
    for i in range(n):
        kind = i % 4
        line = gen.rng.choice(seeds)
        if kind == 0:
            line = gen.json_text()
        elif kind > 1:
            line = gen.mutate(line, seeds)
        flags, *_ = kernel.scan_log(line, 0, 2**62, 1 << 20, MAX_DEPTH)
        kernel.scan_log(line + b"\n" + line + b"\n", 0, 1, 1 << 20, MAX_DEPTH)
        try:
            kernel.canonicalize(line, MAX_DEPTH)
        except ValueError:
            pass
        kernel.verify_columns(
            1,
            offsets([line[:10]]),
            np.array([i], np.int64).tobytes(),
            offsets([line[10:20]]),
            np.array([i * 1_000_003], np.int64).tobytes(),
            offsets([line]),
            offsets([line[-64:]]),
            MAX_DEPTH,
        )
        if len(flags) == 1 and flags[0] in (0, 1):
            decided += 1
            if python_verdict(line) is not bool(flags[0]):
                disagreements += 1
                print("DISAGREE", flags[0], line[:300], file=sys.stderr)
    for route in kernel.sha256_routes():
        kernel.set_sha256_route(route)
        kernel.sha256_hex(b"x" * 1000)
    print(f"{n} inputs, {decided} decided by the kernel, {disagreements} disagreements")
    return 1 if disagreements else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))

"""Great Expectations (and the latency chart) in a helper process, so their imports overlap
the snapshot work.

Importing GE takes seconds of one core, and a run needs it only after the log snapshot. A
thread cannot overlap that import (it holds the GIL most of the time) and must not run
while :mod:`parity.io.parallel` forks; a helper *process* started early can, on a core the
parent leaves idle. :func:`start` launches ``python -m checks.ge_process`` through
``subprocess`` (fork and exec in one step, safe whatever threads exist), which imports GE
and creates its context at once, then answers validations over a pair of pipes:
``(suite_name, frame, expectations)`` in, an :class:`~checks.adapter.Outcome` out, both
pickled. The parent's process tree therefore holds no extra thread, and a fork of the
parent leaves the helper alone.

The reconciliation's latency chart is drawn there too (:func:`latency_histogram_png`):
matplotlib is another import of most of a second, which the helper makes while it waits
for its first validation.

The helper is an accelerator, never a dependency: if it cannot start, dies, answers with a
failure or takes longer than :data:`TIMEOUT_S`, :func:`validate` validates in its own
process (:func:`checks.adapter.validate`), which gives the same outcome or raises the real
error.
The helper leaves when its request pipe closes (the parent ended) and is stopped and
reaped at the parent's exit, so its CPU time is counted with the parent's.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from checks import adapter
from checks.adapter import ExpectationSpec, Outcome
from parity.core import report

if TYPE_CHECKING:
    import pyarrow as pa

#: A validation (the first one includes GE's import) that takes longer is given up on and
#: done in the caller's process.
TIMEOUT_S = 300.0

#: The helper's scheduling priority below its parent's (``nice``).
NICENESS = 10
#: What a request asks of the helper (its first item).
_VALIDATE, _CHART = "validate", "chart"

_lock = threading.Lock()
_helper: _Helper | None = None


class _Helper:
    """One helper process and the parent's ends of its two pipes."""

    def __init__(self) -> None:
        request_r, request_w = os.pipe()
        reply_r, reply_w = os.pipe()
        try:
            self.process = subprocess.Popen(
                # -P: the working directory is not put on the path, so a `checks` folder
                # there cannot stand in for this package.
                [sys.executable, "-P", "-m", "checks.ge_process", str(request_r), str(reply_w)],
                pass_fds=(request_r, reply_w),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        except BaseException:
            for fd in (request_r, request_w, reply_r, reply_w):
                os.close(fd)
            raise
        os.close(request_r)
        os.close(reply_w)
        self.requests = Connection(request_w, readable=False)
        self.replies = Connection(reply_r, writable=False)
        self.ready = False

    def ask(self, request: tuple, answer: type) -> Any:
        """The helper's answer (an instance of ``answer``), or None when it has none to
        give (then it is stopped)."""
        try:
            # The helper says it is ready once GE is imported; a frame larger than the
            # pipe's buffer would otherwise block this send for as long as that takes.
            if not self.ready:
                self.ready = self.replies.poll(TIMEOUT_S) and self.replies.recv() is True
            if self.ready:
                self.requests.send(request)
            if self.ready and self.replies.poll(TIMEOUT_S):
                reply = self.replies.recv()
                if isinstance(reply, answer):
                    return reply
        except (OSError, EOFError):
            pass
        self.stop()
        return None

    def stop(self) -> None:
        for conn in (self.requests, self.replies):
            conn.close()
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait()


def start() -> None:
    """Start the helper unless one runs or GE is already imported here; idempotent. Call it
    as early as the process knows it will validate."""
    global _helper
    with _lock:
        if _helper is not None or "great_expectations" in sys.modules:
            return
        try:
            _helper = _Helper()
        except OSError:
            return
        atexit.register(stop)


def stop() -> None:
    """Stop the helper (if any) and reap it."""
    global _helper
    with _lock:
        helper, _helper = _helper, None
    if helper is not None:
        helper.stop()


def validate(suite_name: str, frame: pa.Table, expectations: Sequence[ExpectationSpec]) -> Outcome:
    """Validate ``frame`` against the expectations with GE: in the helper when there is one
    and it answers, else in this process."""
    outcome = _ask((_VALIDATE, suite_name, frame, list(expectations)), Outcome)
    return outcome if outcome is not None else adapter.validate(suite_name, frame, expectations)


def latency_histogram_png(histogram: dict[str, Any], *, title: str) -> bytes:
    """:func:`parity.core.report.latency_histogram_png`, drawn in the helper when there is
    one and it answers, else in this process (the same picture)."""
    png = _ask((_CHART, histogram, title), bytes)
    return png if png is not None else report.latency_histogram_png(histogram, title=title)


def _ask(request: tuple, answer: type) -> Any:
    global _helper
    with _lock:
        reply = None
        if _helper is not None:
            reply = _helper.ask(request, answer)
            if reply is None:
                _helper = None
    return reply


def _answer(request: tuple) -> Any:
    kind, *args = request
    if kind == _VALIDATE:
        return adapter.validate(*args)
    if kind == _CHART:
        histogram, title = args
        return report.latency_histogram_png(histogram, title=title)
    return None


def _serve(requests: Connection, replies: Connection) -> None:
    adapter.warm()
    replies.send(True)
    warm_charts = True
    while True:
        if warm_charts and not requests.poll(0):
            # Idle before the first request: the chart's import is made now.
            report.warm_charts()
            warm_charts = False
        try:
            request = requests.recv()
        except EOFError:
            return
        reply: Any = None
        try:
            reply = _answer(request)
        except Exception:  # noqa: BLE001 - the parent does it again and raises it there
            reply = None
        replies.send(reply)


if __name__ == "__main__":
    # The imports are made while the parent works, and the parent's work comes first: a
    # lower priority lets it have the cores (measured: 0.3 s of a 12 s 1M-event hour). When
    # the parent waits for an answer, nothing of its own competes with the helper.
    os.nice(NICENESS)
    _serve(
        Connection(int(sys.argv[1]), writable=False), Connection(int(sys.argv[2]), readable=False)
    )

"""Spreading CPU-bound, GIL-bound work over the machine's cores by ``fork``.

The hot loops of Parity (checksum verification, parsing log lines) are Python code over
orjson and hashlib, so threads would take turns on the GIL. A forked child inherits the
parent's memory (the rows to work on) without serialising them, runs its share, writes its
result bytes to an anonymous temporary file and leaves with ``os._exit``; the parent runs
share 0 meanwhile. The child never returns into the caller's code and touches no lock the
parent might have held at fork time beyond those of the allocator and OpenSSL, which
handle fork.

Robustness over speed: a child that fails for any reason (killed, out of memory, an
exception) is simply redone by the parent, so the result never depends on whether the
parallel path worked. Where ``fork`` is unavailable (not Linux), or there is one core, or
the work is small, everything runs in the calling process.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, TypeVar

T = TypeVar("T")

#: Below this many items a fork costs more than it saves.
MIN_ITEMS_PER_SHARE = 25_000
#: A child always gets at least this long before it is presumed stuck.
CHILD_GRACE_S = 30.0
#: At most this many processes (``Settings.runtime.workers``, set by :func:`limit_workers`);
#: None: the usable cores. Module state, so forked children see the parent's limit.
_limit: int | None = None
#: How many :func:`no_forks` blocks are open.
_threads = 0


def limit_workers(limit: int | None) -> None:
    """Use at most ``limit`` processes from now on (None: every usable core; 1: no fork)."""
    global _limit
    _limit = limit


@contextmanager
def no_forks() -> Iterator[None]:
    """Nothing forks while this is entered (:func:`workers` is 1): a thread of this
    process is at work (:mod:`parity.io.prefetch`), and a child forked now could inherit a
    lock that thread holds."""
    global _threads
    _threads += 1
    try:
        yield
    finally:
        _threads -= 1


def workers(items: int) -> int:
    """How many shares to split ``items`` into: the usable cores (at most the
    :func:`limit_workers` limit),
    with at least :data:`MIN_ITEMS_PER_SHARE` items each; 1 where fork is unavailable or
    while a helper thread runs (:func:`no_forks`)."""
    if sys.platform != "linux" or not hasattr(os, "fork") or _threads:
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except OSError:
        cores = os.cpu_count() or 1
    if _limit is not None:
        cores = min(cores, _limit)
    return max(1, min(cores, items // MIN_ITEMS_PER_SHARE))


def _wait(pid: int, deadline: float) -> int | None:
    """The child's wait status, or None when it had to be killed at the deadline."""
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None
        time.sleep(0.005)


def run_shares(work: Callable[[int], T], shares: int) -> list[T]:
    """``[work(0), …, work(shares - 1)]``, shares 1.. in forked children, share 0 here.

    ``work`` must be deterministic and return something picklable (children send it back
    pickled); a child's failure is repaired by running its share here, so the result is the
    same as ``[work(i) for i in range(shares)]``.
    """
    if shares <= 1:
        return [work(i) for i in range(shares)]
    children: list[tuple[int, int, IO[bytes]]] = []
    for share in range(1, shares):
        out = tempfile.TemporaryFile()
        try:
            with warnings.catch_warnings():
                # Python 3.12+ warns about fork in a multi-threaded process: the child here
                # only runs ``work`` and exits, it never resumes the parent's threads' work.
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
        except OSError:
            out.close()
            break
        if pid == 0:  # the child: never returns
            code = 1
            try:
                pickle.dump(work(share), out, protocol=pickle.HIGHEST_PROTOCOL)
                out.flush()
                code = 0
            finally:
                os._exit(code)
        children.append((share, pid, out))
    began = time.monotonic()
    results: dict[int, T] = {0: work(0)}
    # A child is doing the same amount of work: give it a generous multiple of the
    # parent's time. One that is still running by then (say, stuck on a lock another
    # thread held at fork time) is killed and its share redone here.
    deadline = time.monotonic() + max(CHILD_GRACE_S, 4 * (time.monotonic() - began))
    for share, pid, result_file in children:
        status = _wait(pid, deadline)
        with result_file:
            if status is not None and os.waitstatus_to_exitcode(status) == 0:
                result_file.seek(0)
                try:
                    results[share] = pickle.load(result_file)
                except Exception:  # a truncated file: the share is redone below
                    pass
    return [results[i] if i in results else work(i) for i in range(shares)]

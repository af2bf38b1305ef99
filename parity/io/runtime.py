"""Applying :class:`parity.core.config.Runtime` to this process: how many processes the log
reader and checksum verification use, and whether the native kernel verifies.

Module state of :mod:`parity.io.parallel` and :mod:`parity.io.native`, set once by each entry
point from the settings it built; children forked for the work inherit it.
"""

from __future__ import annotations

from parity.core.config import Runtime
from parity.io import native, parallel


def apply_runtime(runtime: Runtime) -> None:
    parallel.limit_workers(runtime.workers)
    native.use_kernel(runtime.native)

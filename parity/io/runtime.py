"""Applying :class:`parity.core.config.Runtime` to this process: how many processes the log
reader and checksum verification use, whether the native kernel verifies, and which
allocator Arrow's buffers come from.

Module state of :mod:`parity.io.parallel`, :mod:`parity.io.native` and pyarrow, set once by
each entry point from the settings it built; children forked for the work inherit it.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa

from parity.core.config import Runtime
from parity.io import native, parallel

_POOLS: dict[str, Callable[[], pa.MemoryPool]] = {
    "jemalloc": pa.jemalloc_memory_pool,
    "mimalloc": pa.mimalloc_memory_pool,
    "system": pa.system_memory_pool,
}


def apply_runtime(runtime: Runtime) -> None:
    parallel.limit_workers(runtime.workers)
    native.use_kernel(runtime.native)
    use_memory_pool(runtime.memory_pool)


def use_memory_pool(name: str) -> str:
    """Allocate Arrow's buffers from the allocator ``name`` from now on (buffers already
    allocated stay where they are); the allocator in use after the call: Arrow's default
    where this pyarrow build lacks ``name``."""
    try:
        pool = _POOLS[name]()
    except NotImplementedError:  # a build without it (jemalloc is off on some platforms)
        return pa.default_memory_pool().backend_name
    pa.set_memory_pool(pool)
    return pool.backend_name

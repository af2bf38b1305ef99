"""How a process computes (``Settings.runtime``): applied by the entry point, inherited by
forked workers, and in force for the test session itself."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pyarrow as pa
import pytest

from parity.core.config import Runtime
from parity.io import native, parallel
from parity.io.runtime import _POOLS, apply_runtime, use_memory_pool


@pytest.fixture
def restored() -> Iterator[None]:
    yield
    apply_runtime(Runtime.from_env(os.environ))


def test_the_session_runs_as_its_environment_says() -> None:
    # scripts/test.sh runs tests/io once more with PARITY_NO_NATIVE=1: there, no kernel.
    runtime = Runtime.from_env(os.environ)
    if runtime.native:
        assert native.kernel is native._built
    else:
        assert native.kernel is None
    assert parallel._limit == runtime.workers
    assert pa.default_memory_pool().backend_name == _available(runtime.memory_pool)


def _available(pool: str) -> str:
    """``pool``, or Arrow's default where this pyarrow build lacks it."""
    try:
        return getattr(pa, f"{pool}_memory_pool")().backend_name
    except NotImplementedError:
        return pa.default_memory_pool().backend_name


def test_the_runtime_switches_the_kernel_and_the_workers(restored: None) -> None:
    apply_runtime(Runtime(workers=1, native=False))
    assert native.kernel is None and parallel.workers(10**9) == 1
    apply_runtime(Runtime())
    assert native.kernel is native._built


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_forked_workers_inherit_the_runtime(restored: None) -> None:
    apply_runtime(Runtime(workers=3, native=False))
    seen = parallel.run_shares(lambda share: (native.kernel is None, parallel._limit), 3)
    assert seen == [(True, 3)] * 3


def test_arrow_allocates_from_the_runtime_s_pool(restored: None) -> None:
    apply_runtime(Runtime(memory_pool="system"))
    assert pa.default_memory_pool().backend_name == "system"
    before = pa.system_memory_pool().bytes_allocated()
    column = pa.array(range(100_000), pa.int64())
    assert pa.system_memory_pool().bytes_allocated() - before >= column.nbytes  # it lives there
    apply_runtime(Runtime())  # Parity's default: jemalloc where the build has it
    assert pa.default_memory_pool().backend_name == _available("jemalloc")


def test_a_pool_this_build_lacks_leaves_arrow_s_default(
    restored: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def lacking() -> pa.MemoryPool:
        raise NotImplementedError("this pyarrow was built without jemalloc")

    use_memory_pool("system")
    monkeypatch.setitem(_POOLS, "jemalloc", lacking)
    assert use_memory_pool("jemalloc") == "system"
    assert pa.default_memory_pool().backend_name == "system"

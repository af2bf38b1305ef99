"""How a process computes (``Settings.runtime``): applied by the entry point, inherited by
forked workers, and in force for the test session itself."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from parity.core.config import Runtime
from parity.io import native, parallel
from parity.io.runtime import apply_runtime


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

"""A step that fails on a Parity error fails with that error's sentence.

Without this, Dagster reports every exception raised in a step as "Error occurred while
executing op" and keeps the real sentence three causes down; the UI's run page and the
``parity`` command would both have to dig for it. Raising ``dg.Failure`` puts the sentence
first in the UI and records the error's class and exit code as the failure's metadata,
which is how :mod:`orchestration.headless` picks the command's exit code.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

import dagster as dg

from parity.core.errors import EXIT_INFRASTRUCTURE, ParityError

#: Metadata keys of a failure raised from a Parity error (or an operating-system error).
ERROR_CLASS = "parity_error"
EXIT_CODE = "exit_code"

F = TypeVar("F", bound=Callable[..., Any])


def as_failure(exc: BaseException) -> dg.Failure | None:
    """The ``dg.Failure`` a step raises for ``exc``; None for an error Parity does not know
    (a bug), which keeps its traceback."""
    if isinstance(exc, ParityError):
        code = exc.exit_code
    elif isinstance(exc, OSError):
        # A full disk, a permission denied, a vanished directory: outside Parity.
        code = EXIT_INFRASTRUCTURE
    else:
        return None
    return dg.Failure(
        description=str(exc),
        metadata={ERROR_CLASS: type(exc).__name__, EXIT_CODE: code},
    )


def surface_parity_errors(fn: F) -> F:
    """Decorate an asset's or op's function (plain or generator) so that a Parity error
    fails the step with the error's own sentence."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator(*args: Any, **kwargs: Any) -> Any:
            try:
                yield from fn(*args, **kwargs)
            except Exception as exc:
                failure = as_failure(exc)
                if failure is None:
                    raise
                raise failure from exc

        return generator  # type: ignore[return-value]

    @functools.wraps(fn)
    def function(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            failure = as_failure(exc)
            if failure is None:
                raise
            raise failure from exc

    return function  # type: ignore[return-value]

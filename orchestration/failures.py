"""Why a run failed, in Parity's words: the sentence and exit code of the error behind
each failed step, read from the run's events through public Dagster API."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import dagster as dg

from assets.failures import ERROR_CLASS, EXIT_CODE
from parity.core.errors import EXIT_INFRASTRUCTURE, EXIT_INTERNAL, exit_code_for
from parity.core.redact import redact

#: A blocking check that failed stops the steps after it: a discrepancy, reported by the
#: check itself, not a failure of the run's machinery.
CHECK_FAILED = "DagsterAssetCheckFailedError"
#: Operating-system errors that reach a step unconverted are infrastructure too.
OS_ERRORS = {
    "OSError",
    "IOError",
    "PermissionError",
    "FileNotFoundError",
    "IsADirectoryError",
    "NotADirectoryError",
    "ConnectionError",
    "ConnectionRefusedError",
    "ConnectionResetError",
    "TimeoutError",
}


@dataclass(frozen=True)
class StepFailure:
    """One failed step: which, the error's class and sentence, and the exit code for it."""

    step: str
    error_class: str
    message: str
    exit_code: int

    def __str__(self) -> str:
        return f"{self.step}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "error": self.error_class,
            "message": self.message,
            "exit_code": self.exit_code,
        }


def run_failures(events: Iterable[dg.DagsterEvent]) -> list[StepFailure]:
    """The failures of a run's steps (blocking check failures excluded), most useful first:
    the sentence of the Parity error behind each, else of the innermost cause."""
    out: list[StepFailure] = []
    run_failure: StepFailure | None = None
    any_step_failed = False
    for event in events:
        if event.is_step_failure and event.step_failure_data is not None:
            any_step_failed = True
            failure = _step_failure(event.step_key or "?", event.step_failure_data)
            if failure is not None:
                out.append(failure)
        elif event.is_run_failure:
            # A run that failed outside any step (its resources, its executor).
            message = _one_line(event.message or "the run failed")
            run_failure = StepFailure("run", "RunFailure", message, EXIT_INTERNAL)
    if run_failure is not None and not any_step_failed:
        out.append(run_failure)
    return out


def exit_code(failures: Iterable[StepFailure]) -> int | None:
    """The most serious exit code among ``failures`` (None when there are none)."""
    codes = [f.exit_code for f in failures]
    return max(codes) if codes else None


def _step_failure(step: str, data: Any) -> StepFailure | None:
    error = data.error
    if error is not None and error.cls_name == CHECK_FAILED:
        return None
    user = data.user_failure_data
    if user is not None and EXIT_CODE in (user.metadata or {}):
        metadata = user.metadata
        return StepFailure(
            step,
            str(_value(metadata.get(ERROR_CLASS)) or "Failure"),
            _one_line(user.description or ""),
            int(_value(metadata[EXIT_CODE])),
        )
    chain = list(_chain(error))
    for info in chain:
        code = exit_code_for(info.cls_name or "")
        if code is not None:
            return StepFailure(step, info.cls_name, _message(info), code)
    if not chain:
        return StepFailure(step, "unknown", "the step failed without an error", EXIT_INTERNAL)
    innermost = chain[-1]
    code = EXIT_INFRASTRUCTURE if innermost.cls_name in OS_ERRORS else EXIT_INTERNAL
    return StepFailure(step, innermost.cls_name or "?", _message(innermost), code)


def _chain(error: Any) -> Iterable[Any]:
    """The error, then what caused it (``raise … from``), then what it happened during."""
    seen = 0
    while error is not None and seen < 20:
        yield error
        error = error.cause or error.context
        seen += 1


def _message(info: Any) -> str:
    """The sentence of a serialized error, without its ``module.Class: `` prefix."""
    text = _one_line(info.message or "")
    prefix, sep, rest = text.partition(": ")
    if sep and prefix.rsplit(".", 1)[-1] == info.cls_name:
        return rest
    return text


def _one_line(text: str) -> str:
    # Failures are printed and kept: a driver's text may quote a URL or a conninfo string.
    return " ".join(redact(text).split())


def _value(entry: Any) -> Any:
    return getattr(entry, "value", entry)

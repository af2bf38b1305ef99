"""What every command shares: exit codes, output, naming the hours, the database in use,
progress over many hours."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from parity.core import partitions
from parity.core.config import Settings
from parity.core.errors import (
    EXIT_CONFIGURATION,
    EXIT_DISCREPANCIES,
    EXIT_INFRASTRUCTURE,
    EXIT_INTERNAL,
    EXIT_OK,
    ConfigurationError,
)
from parity.io.runtime import apply_runtime
from parity.io.store import describe_database

__all__ = [
    "EXIT_CONFIGURATION",
    "EXIT_DISCREPANCIES",
    "EXIT_INFRASTRUCTURE",
    "EXIT_INTERNAL",
    "EXIT_OK",
]

#: The folder under $PARITY_HOME where ``parity demo`` keeps its own state.
DEMO_HOME = "demo"


def with_settings(fn: Callable[..., int]) -> Callable[..., int]:
    """Hand the command the settings from the environment, read when it runs (so that
    ``--help`` works whatever the environment holds), their runtime applied to the process."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> int:
        settings = Settings.from_env(os.environ)
        apply_runtime(settings.runtime)
        return fn(settings, *args, **kwargs)

    return wrapper


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def note(text: str) -> None:
    """A line for the person at the terminal (stderr), never part of a command's output."""
    click.echo(f"parity: {text}", err=True)


def partition_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--partition`` or ``--from``/``--to``: the hours a command works on."""
    fn = click.option("--to", "to", metavar="KEY", help="last partition key of a range (included)")(
        fn
    )
    fn = click.option("--from", "from_", metavar="KEY", help="first partition key of a range")(fn)
    return click.option(
        "--partition", metavar="KEY", help="an hourly partition key, e.g. 2026-11-28-10:00"
    )(fn)


def partition_keys(partition: str | None, from_: str | None, to: str | None) -> list[str]:
    if partition and (from_ or to):
        raise ConfigurationError("use either --partition or --from/--to, not both")
    if partition:
        partitions.parse_key(partition)
        return [partition]
    if from_ and to:
        return partitions.keys_between(from_, to)
    raise ConfigurationError("name the hours: --partition KEY, or --from KEY --to KEY")


@contextmanager
def database_in_use(settings: Settings) -> Iterator[None]:
    """Say on stderr which database the command uses. The embedded server is held for the
    command and let go of at its end: stopped then unless another process still uses it or
    it is kept (``parity demo``), so a command never leaves behind a server the person did
    not ask for."""
    if not settings.embedded:
        note(f"database: {describe_database(settings)}")
        yield
        return
    from parity.io.embedded import embedded_in_use

    with embedded_in_use(settings, announce=note):
        yield


class HourProgress:
    """A progress bar over hours, and the way to print a command's results while it runs."""

    def __init__(self, bar: Any, task: Any, what: str) -> None:
        self._bar, self._task, self._what = bar, task, what

    def advance(self, label: str, hours: int) -> None:
        self._bar.update(self._task, advance=hours, description=f"{self._what}: {label}")

    def echo(self, text: str) -> None:
        """A line of output (stdout) as soon as it is known; when the bar is drawn on the
        same terminal, through the bar's console, so that the line lands above the bar."""
        if not self._bar.disable and sys.stdout.isatty():
            self._bar.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            click.echo(text)


@contextmanager
def progress(total: int, what: str) -> Iterator[HourProgress]:
    """A progress bar on stderr while hours are worked through, drawn only on a terminal
    (a pipe or a log file gets the results alone)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(file=sys.stderr)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
        # Output to stdout stays on stdout (a file, when redirected), never in the bar's
        # stderr console.
        redirect_stdout=False,
    )
    with bar:
        yield HourProgress(bar, bar.add_task(what, total=total), what)

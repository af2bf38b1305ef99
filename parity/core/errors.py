"""One error hierarchy. Every error names what failed and where, and says what to do."""

from __future__ import annotations

#: Exit codes of the ``parity`` command, one home for them (the README documents them).
EXIT_OK = 0
#: The run worked and found discrepancies (or, for a dry run, work to do).
EXIT_DISCREPANCIES = 1
#: A usage or configuration error: a setting, an argument, a rules file, a partition,
#: credentials the server refused, a log directory that does not exist.
EXIT_CONFIGURATION = 2
#: Infrastructure failed: the database or the REST API unreachable or failing (5xx), a file
#: that cannot be read or written, a full disk. Retrying later may work.
EXIT_INFRASTRUCTURE = 3
#: Something Parity did not anticipate: a bug. The message and the run's log say where.
EXIT_INTERNAL = 4
#: Ctrl-C (128 + SIGINT, as a shell reports it).
EXIT_INTERRUPTED = 130


class ParityError(Exception):
    """Base of every error Parity raises on purpose."""

    #: The CLI maps this class of error to an exit code (2: usage or configuration).
    exit_code = EXIT_CONFIGURATION


class ConfigurationError(ParityError):
    """A setting is missing, malformed or contradictory."""


class InvalidEventError(ParityError):
    """An event does not satisfy the data contract (contract §2).

    ``reason`` is a short machine-readable code; ``field`` the offending field if any;
    ``where`` says where the event came from (file and line, table and key).
    """

    def __init__(self, reason: str, detail: str, *, field: str | None = None, where: str = ""):
        self.reason = reason
        self.detail = detail
        self.field = field
        self.where = where
        location = f" at {where}" if where else ""
        super().__init__(f"invalid event{location}: {detail}")


class InfrastructureError(ParityError):
    """Something outside Parity failed (a server, a file system); retrying later may work."""

    exit_code = EXIT_INFRASTRUCTURE


class LogReadError(InfrastructureError):
    """A WebSocket log file could not be read at all (not a bad line: those are quarantined)."""


class LogDirectoryMissingError(LogReadError, ConfigurationError):
    """The WebSocket log directory does not exist (or is not a directory): a setting to
    correct (``PARITY_WS_LOG_DIR``), which no retry fixes."""

    exit_code = EXIT_CONFIGURATION


class StoreError(InfrastructureError):
    """The events store (PostgreSQL or the Supabase REST API) failed."""


class StoreConnectionError(StoreError):
    """The store could not be reached or refused the credentials. Never carries the secret."""


class CredentialsRefusedError(StoreConnectionError, ConfigurationError):
    """The store refused the credentials: a wrong password or user, a key the REST API does
    not accept (HTTP 401/403). A setting to correct, named in the message; retrying the
    same credentials cannot help. Never carries the secret."""

    exit_code = EXIT_CONFIGURATION


class StoreRefusedError(StoreError):
    """The store refused the data itself (a value its columns cannot hold, a constraint):
    the same rows fail on every retry, while other rows of the batch would be accepted.
    ``reason`` is the store's own explanation (credentials redacted); ``code`` its SQLSTATE
    or API error code when it gave one."""

    def __init__(self, message: str, *, reason: str, code: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.code = code


class MissingTableError(StoreError):
    """A table Parity needs is not there: a name to correct or migrations to run."""

    exit_code = EXIT_CONFIGURATION


class MigrationError(StoreError):
    """A schema migration failed; the transaction was rolled back."""


class FlagError(ParityError):
    """A flag name or value is not valid; nothing was written."""


class ConcurrentUpdateError(FlagError):
    """A flag changed under us (compare-and-set failed); re-read and retry."""

    exit_code = EXIT_INFRASTRUCTURE


class ReportNotFoundError(ParityError):
    """No stored report exists for the partition asked for."""


def exit_code_for(class_name: str) -> int | None:
    """The exit code of the Parity error class called ``class_name`` (a name, because a
    Dagster run's failure records the class by name only), or None if it is not one."""
    pending: list[type[ParityError]] = [ParityError]
    while pending:
        cls = pending.pop()
        if cls.__name__ == class_name:
            return cls.exit_code
        pending.extend(cls.__subclasses__())
    return None

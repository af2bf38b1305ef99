"""One error hierarchy. Every error names what failed and where, and says what to do."""

from __future__ import annotations


class ParityError(Exception):
    """Base of every error Parity raises on purpose."""

    #: The CLI maps this class of error to an exit code (2: usage or configuration).
    exit_code = 2


class ConfigurationError(ParityError):
    """A setting is missing, malformed or contradictory."""


class InvalidEventError(ParityError):
    """An event does not satisfy the data contract (DESIGN 2).

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


class LogReadError(ParityError):
    """A WebSocket log file could not be read at all (not a bad line: those are quarantined)."""


class StoreError(ParityError):
    """The events store (PostgreSQL or the Supabase REST API) failed."""


class StoreConnectionError(StoreError):
    """The store could not be reached or refused the credentials. Never carries the secret."""


class StoreRefusedError(StoreError):
    """The store refused the data itself (a value its columns cannot hold, a constraint):
    the same rows fail on every retry, while other rows of the batch would be accepted.
    ``reason`` is the store's own explanation (credentials redacted); ``code`` its SQLSTATE
    or API error code when it gave one."""

    def __init__(self, message: str, *, reason: str, code: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.code = code


class MigrationError(StoreError):
    """A schema migration failed; the transaction was rolled back."""


class FlagError(ParityError):
    """A flag name or value is not valid; nothing was written."""


class ConcurrentUpdateError(FlagError):
    """A flag changed under us (compare-and-set failed); re-read and retry."""


class ReportNotFoundError(ParityError):
    """No stored report exists for the partition asked for."""

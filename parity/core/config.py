"""Settings from the environment (the README's table), resolved when asked for, never at import.

``Settings.from_env`` is the one route from the environment into Parity: the code location
and the CLI build it once and hand it down; nothing below reads ``os.environ``.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from parity.core.errors import ConfigurationError
from parity.core.knobs import Knobs, boolean
from parity.core.layout import Layout
from parity.core.partitions import floor_hour

DEFAULT_EVENTS_TABLE = "public.monitoring_events"
WORKERS_ENV = "PARITY_WORKERS"
NO_NATIVE_ENV = "PARITY_NO_NATIVE"
#: Arrow's own variable naming its allocator, honoured as Arrow documents it.
ARROW_POOL_ENV = "ARROW_DEFAULT_MEMORY_POOL"
#: The allocators a pyarrow build may have (``pyarrow.<name>_memory_pool``).
ARROW_POOLS = ("jemalloc", "mimalloc", "system")
#: Default first hourly partition: a recent date, so a new deployment's partition list is short.
DEFAULT_PARTITIONS_LOOKBACK = dt.timedelta(days=7)


@dataclass(frozen=True)
class TableName:
    """A schema-qualified table name. Both parts are identifiers, always quoted in SQL."""

    schema: str
    name: str

    @classmethod
    def parse(cls, text: str, *, default_schema: str = "public") -> TableName:
        """Parse ``table``, ``schema.table`` or double-quoted parts (``"My Schema"."t.1"``)."""
        parts: list[str] = []
        current: list[str] = []
        i, quoted, was_quoted = 0, False, False
        while i < len(text):
            ch = text[i]
            if quoted:
                if ch == '"' and text[i + 1 : i + 2] == '"':
                    current.append('"')
                    i += 1
                elif ch == '"':
                    quoted = False
                else:
                    current.append(ch)
            elif ch == '"':
                quoted = was_quoted = True
            elif ch == ".":
                parts.append("".join(current))
                current, was_quoted = [], False
            else:
                current.append(ch)
            i += 1
        parts.append("".join(current))
        if quoted or len(parts) > 2 or any(not p for p in parts):
            raise ConfigurationError(
                f"table name {text!r}: expected `table` or `schema.table` "
                '(double-quote parts that contain dots or quotes: "My Schema"."events")'
            )
        del was_quoted
        if len(parts) == 1:
            return cls(default_schema, parts[0])
        return cls(parts[0], parts[1])

    def __str__(self) -> str:
        def q(part: str) -> str:
            if part.replace("_", "a").isalnum() and part.islower() and not part[0].isdigit():
                return part
            return '"' + part.replace('"', '""') + '"'

        return f"{q(self.schema)}.{q(self.name)}"


def parse_partition_start(text: str) -> dt.datetime:
    """An ISO date or datetime (UTC when no offset), truncated to the hour."""
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigurationError(
            f"PARITY_PARTITIONS_START={text!r}: expected an ISO date or datetime, "
            "e.g. 2026-11-01 or 2026-11-01T00:00Z"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return floor_hour(value)


@dataclass(frozen=True)
class Runtime:
    """How this process computes, never what it decides: the results are the same either
    way. Each entry point (the CLI, the code location and its steps, the benchmarks, the
    tests) applies it with :func:`parity.io.runtime.apply_runtime`; forked workers inherit it.
    """

    #: Processes the log reader and checksum verification may use (``PARITY_WORKERS``);
    #: None: the usable cores; 1: no fork.
    workers: int | None = None
    #: Verify with the native kernel when it is built (``PARITY_NO_NATIVE=1`` turns it off).
    native: bool = True
    #: The allocator of Arrow's buffers (``ARROW_DEFAULT_MEMORY_POOL``). Parity's default is
    #: jemalloc, where the pyarrow build has it: it hands freed memory back to the system
    #: between the hour's phases, where Arrow's own default (mimalloc) keeps it (measured
    #: at 10M events: the run's peak 1.19-1.31 GB with mimalloc, 0.96-1.15 GB with jemalloc).
    memory_pool: str = "jemalloc"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Runtime:
        workers = env.get(WORKERS_ENV, "").strip()
        if workers and not (workers.isdigit() and int(workers) >= 1):
            raise ConfigurationError(
                f"{WORKERS_ENV}={workers!r}: expected a whole number of processes, at least 1"
            )
        no_native = env.get(NO_NATIVE_ENV, "").strip()
        pool = env.get(ARROW_POOL_ENV, "").strip().lower()
        if pool and pool not in ARROW_POOLS:
            raise ConfigurationError(
                f"{ARROW_POOL_ENV}={pool!r}: expected one of {', '.join(ARROW_POOLS)}"
            )
        return cls(
            workers=int(workers) if workers else None,
            native=not (no_native and boolean(NO_NATIVE_ENV, no_native)),
            memory_pool=pool or cls.memory_pool,
        )

    def to_env(self) -> dict[str, str]:
        """The variables that give this runtime (what the Dagster resource shows)."""
        env = {NO_NATIVE_ENV: "0" if self.native else "1", ARROW_POOL_ENV: self.memory_pool}
        if self.workers is not None:
            env[WORKERS_ENV] = str(self.workers)
        return env


@dataclass(frozen=True)
class Settings:
    home: Path
    ws_log_dir: Path
    database_url: str | None = field(default=None, repr=False)
    supabase_url: str | None = None
    supabase_key: str | None = field(default=None, repr=False)
    events_table: TableName = TableName.parse(DEFAULT_EVENTS_TABLE)
    partitions_start: dt.datetime | None = None
    alert_webhook_url: str | None = field(default=None, repr=False)
    #: Apprise URLs (one or more, separated by spaces or commas); secrets, never shown.
    alert_urls: str | None = field(default=None, repr=False)
    rules_path: Path | None = None
    knobs: Knobs = field(default_factory=Knobs)
    runtime: Runtime = field(default_factory=Runtime)

    @property
    def transport(self) -> str:
        """``postgres`` (a URL or the embedded server) or ``rest`` (the Supabase API)."""
        if self.database_url:
            return "postgres"
        if self.supabase_url:
            return "rest"
        return "postgres"

    @property
    def embedded(self) -> bool:
        return not self.database_url and not self.supabase_url

    @property
    def layout(self) -> Layout:
        """Where each hour's snapshots, reports and ledgers live under ``home``."""
        return Layout(self.home)

    @property
    def pgdata_dir(self) -> Path:
        return self.layout.pgdata_dir

    def partitions_start_or_default(self, now: dt.datetime) -> dt.datetime:
        if self.partitions_start is not None:
            return self.partitions_start
        start = (now - DEFAULT_PARTITIONS_LOOKBACK).astimezone(dt.UTC)
        return start.replace(hour=0, minute=0, second=0, microsecond=0)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        home = Path(get("PARITY_HOME") or ".parity").expanduser().absolute()
        supabase_url = get("SUPABASE_URL")
        supabase_key = get("SUPABASE_SERVICE_ROLE_KEY") or get("SUPABASE_SECRET_KEY")
        if supabase_url and not supabase_key and not get("PARITY_DATABASE_URL"):
            raise ConfigurationError(
                "SUPABASE_URL is set but neither SUPABASE_SERVICE_ROLE_KEY nor "
                "SUPABASE_SECRET_KEY is: set one of them (Project Settings -> API keys)"
            )
        start = get("PARITY_PARTITIONS_START")
        rules = get("PARITY_CLASSIFICATION_RULES")
        return cls(
            home=home,
            ws_log_dir=Path(get("PARITY_WS_LOG_DIR") or home / "ws-log").expanduser().absolute(),
            database_url=get("PARITY_DATABASE_URL"),
            supabase_url=supabase_url,
            supabase_key=supabase_key,
            events_table=TableName.parse(get("PARITY_EVENTS_TABLE") or DEFAULT_EVENTS_TABLE),
            partitions_start=parse_partition_start(start) if start else None,
            alert_webhook_url=get("PARITY_ALERT_WEBHOOK_URL"),
            alert_urls=get("PARITY_ALERT_URLS"),
            rules_path=Path(rules) if rules else None,
            knobs=Knobs.from_env(env),
            runtime=Runtime.from_env(env),
        )

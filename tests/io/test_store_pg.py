"""The PostgreSQL transport, the migrations and the embedded server, against a real server."""

from __future__ import annotations

import datetime as dt
import logging
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import psycopg
import pyarrow as pa
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from parity.core.config import Settings, TableName
from parity.core.errors import (
    EXIT_CONFIGURATION,
    EXIT_INFRASTRUCTURE,
    ConfigurationError,
    CredentialsRefusedError,
    MigrationError,
    StoreConnectionError,
    StoreError,
)
from parity.core.events import Event, make_event
from parity.core.schema import STORE_SCHEMA, UTC_US
from parity.io.migrate import derived_name, migrate, migration_sql
from parity.io.pg_connect import scrub
from parity.io.store_pg import SORT_KEYS, PostgresStore, unique_key_exists

pytestmark = pytest.mark.integration

H = dt.datetime(2026, 11, 28, 10, tzinfo=dt.UTC)
US = dt.timedelta(microseconds=1)


def events_table(events: list[Event], *, received_at: bool = False) -> pa.Table:
    """Events as rows for ``insert_events`` (STORE_SCHEMA columns)."""
    columns = {
        "stream": pa.array([e.stream for e in events], pa.string()),
        "seq": pa.array([e.seq for e in events], pa.int64()),
        "event_type": pa.array([e.event_type for e in events], pa.string()),
        "category": pa.array([e.category for e in events], pa.string()),
        "emitted_at": pa.array([e.emitted_at for e in events], UTC_US),
        "payload": pa.array([orjson.dumps(e.payload).decode() for e in events], pa.string()),
        "checksum": pa.array([e.checksum for e in events], pa.string()),
    }
    if received_at:
        columns["received_at"] = pa.array([e.emitted_at + US for e in events], UTC_US)
    return pa.table(columns)


def some_events(n: int, *, stream: str = "health", start: dt.datetime = H) -> list[Event]:
    return [
        make_event(stream, i, "system.health", start + dt.timedelta(seconds=i), {"i": i})
        for i in range(1, n + 1)
    ]


def execute(url: str, query: sql.Composable | str, params: list | None = None) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query, params)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def create_bare_table(url: str, table: TableName) -> None:
    """A user-made events table: contract §4's columns, no unique constraint."""
    execute(url, sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(table.schema)))
    execute(
        url,
        sql.SQL(
            "CREATE TABLE {} (stream text, seq bigint, event_type text, category text,"
            " emitted_at timestamptz, received_at timestamptz default now(), payload jsonb,"
            " checksum text)"
        ).format(sql.Identifier(table.schema, table.name)),
    )


def catalog(url: str, schema: str) -> list[tuple]:
    """What the migrations create in a schema, for before/after comparisons."""
    query = sql.SQL("""
        SELECT 'column', table_name, column_name || ' ' || data_type || ' '
               || is_nullable || ' ' || coalesce(column_default, '')
        FROM information_schema.columns WHERE table_schema = %(s)s
        UNION ALL SELECT 'index', tablename, indexdef FROM pg_indexes WHERE schemaname = %(s)s
        UNION ALL SELECT 'constraint', conrelid::regclass::text,
               conname || pg_get_constraintdef(oid)
        FROM pg_constraint WHERE connamespace = %(s)s::regnamespace
        UNION ALL SELECT 'policy', tablename, policyname FROM pg_policies WHERE schemaname = %(s)s
        UNION ALL SELECT 'rls', relname, relrowsecurity::text FROM pg_class
        WHERE relnamespace = %(s)s::regnamespace AND relkind = 'r'
        UNION ALL SELECT 'migration', events_table || '/' || name, checksum || applied_at::text
        FROM {migrations}
        ORDER BY 1, 2, 3
    """).format(migrations=sql.Identifier(schema, "parity_schema_migrations"))
    return execute(url, query, {"s": schema})  # type: ignore[arg-type]


# -- migrations ------------------------------------------------------------------------


def test_migrate_creates_the_tables_with_rls_and_twice_changes_nothing(
    pg_url: str, pg_schema: str
) -> None:
    table = TableName(pg_schema, "monitoring_events")
    assert migrate(pg_url, table) == [
        "001_init",
        "002_supabase",
        "003_control_plane",
        "004_rollback_decisions",
    ]
    before = catalog(pg_url, pg_schema)

    assert migrate(pg_url, table) == []
    assert catalog(pg_url, pg_schema) == before

    tables = {r[1]: r[2] for r in before if r[0] == "rls"}
    assert tables == {
        "monitoring_events": "true",
        "feature_flags": "true",
        "feature_flag_audit": "true",
        "delivery_metrics": "true",
        "parity_schema_migrations": "true",
        "parity_rollback_decisions": "true",
    }
    indexes = " ".join(r[2] for r in before if r[0] == "index")
    assert "(emitted_at)" in indexes
    assert "(flag, changed_at)" in indexes
    assert "(sampled_at)" in indexes
    constraints = [r[2] for r in before if r[0] == "constraint"]
    assert "monitoring_events_stream_seq_keyUNIQUE (stream, seq)" in constraints
    with psycopg.connect(pg_url) as conn:
        assert unique_key_exists(conn, table)


def test_a_second_events_table_in_the_same_schema_gets_its_own_migrations(
    pg_url: str, pg_table: TableName
) -> None:
    other = TableName(pg_table.schema, "events_v2")
    with psycopg.connect(pg_url, autocommit=True) as conn:  # a connection works as well
        assert migrate(conn, other) == [
            "001_init",
            "002_supabase",
            "003_control_plane",
            "004_rollback_decisions",
        ]
    assert migrate(pg_url, other) == []
    store = PostgresStore(pg_url, other)
    assert store.insert_events(events_table(some_events(3))) == 3
    assert store.has_unique_key()


@pytest.mark.parametrize(
    ("schema", "name"),
    [
        ("Parity Schema", "Monitoring Events"),
        ('we "quote"', "events.v1"),
        ("a.b", 'x"; DROP TABLE y; --'),
    ],
)
def test_names_with_capitals_spaces_dots_and_quotes(pg_url: str, schema: str, name: str) -> None:
    schema = f"{schema} {uuid.uuid4().hex[:6]}"
    table = TableName(schema, name)
    try:
        assert migrate(pg_url, table) == [
            "001_init",
            "002_supabase",
            "003_control_plane",
            "004_rollback_decisions",
        ]
        assert migrate(pg_url, table) == []
        store = PostgresStore(pg_url, table)
        assert store.insert_events(events_table(some_events(5))) == 5
        assert store.insert_events(events_table(some_events(5))) == 0
        assert store.snapshot(H, H + dt.timedelta(hours=1)).num_rows == 5
        assert store.count(H, H + dt.timedelta(hours=1)) == 5
        assert store.has_unique_key()
    finally:
        execute(pg_url, sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def test_derived_names_fit_postgres_identifier_limit() -> None:
    long = "e" * 80
    name = derived_name(long, "stream_seq_key")
    assert len(name.encode()) <= 63 and name.endswith("_stream_seq_key")
    assert derived_name("e" * 81, "stream_seq_key") != name
    assert derived_name("events", "emitted_at_idx") == "events_emitted_at_idx"


def test_existing_table_with_duplicates_migrates_without_the_constraint(
    pg_url: str, pg_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    table = TableName(pg_schema, "monitoring_events")
    create_bare_table(pg_url, table)
    store = PostgresStore(pg_url, table)
    rows = events_table(some_events(3))
    # The user's own writer left a duplicate of seq 2 behind.
    for chunk in (rows, rows.slice(1, 1)):
        execute(
            pg_url,
            sql.SQL(
                "INSERT INTO {} (stream, seq, event_type, emitted_at, payload, checksum)"
                " SELECT * FROM unnest(%s::text[], %s::bigint[], %s::text[], %s::timestamptz[],"
                " %s::jsonb[], %s::text[])"
            ).format(sql.Identifier(table.schema, table.name)),
            [
                chunk.column(c).to_pylist()
                for c in ("stream", "seq", "event_type", "emitted_at", "payload", "checksum")
            ],
        )

    with caplog.at_level(logging.WARNING, logger="parity.io.migrate"):
        assert migrate(pg_url, table) == [
            "001_init",
            "002_supabase",
            "003_control_plane",
            "004_rollback_decisions",
        ]
    assert not store.has_unique_key()
    assert "no unique key on (stream, seq)" in caplog.text
    # The other tables and the indexes were still created.
    assert {
        r[0]
        for r in execute(
            pg_url, "SELECT tablename FROM pg_tables WHERE schemaname = %s", [pg_schema]
        )
    } >= {"feature_flags", "feature_flag_audit", "delivery_metrics"}

    snap = store.snapshot(H, H + dt.timedelta(hours=1))
    assert snap.column("seq").to_pylist() == [1, 2, 2, 3]
    # Inserting skips existing keys even without a constraint, and adds only new ones.
    assert store.insert_events(events_table(some_events(5))) == 2
    assert store.insert_events(events_table(some_events(5))) == 0
    assert store.count(H, H + dt.timedelta(hours=1)) == 6


def test_existing_table_without_duplicates_gets_the_constraint(pg_url: str, pg_schema: str) -> None:
    table = TableName(pg_schema, "monitoring_events")
    create_bare_table(pg_url, table)
    store = PostgresStore(pg_url, table)
    assert not store.has_unique_key()
    migrate(pg_url, table)
    assert store.has_unique_key()


def test_a_failing_migration_names_file_and_table_and_rolls_back(
    pg_url: str, pg_schema: str
) -> None:
    table = TableName(pg_schema, "monitoring_events")
    execute(pg_url, sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(pg_schema)))
    # A table by that name without emitted_at: the index on it cannot be built.
    execute(
        pg_url,
        sql.SQL("CREATE TABLE {} (stream text, seq bigint)").format(
            sql.Identifier(pg_schema, "monitoring_events")
        ),
    )
    with pytest.raises(MigrationError) as err:
        migrate(pg_url, table)
    message = str(err.value)
    assert "001_init.sql" in message and str(table) in message and "rolled back" in message
    tables = {
        r[0]
        for r in execute(
            pg_url, "SELECT tablename FROM pg_tables WHERE schemaname = %s", [pg_schema]
        )
    }
    assert "feature_flags" not in tables
    assert execute(
        pg_url,
        sql.SQL("SELECT count(*) FROM {}").format(
            sql.Identifier(pg_schema, "parity_schema_migrations")
        ),
    ) == [(0,)]


def test_migration_sql_runs_by_hand_twice_and_counts_as_applied(
    pg_url: str, pg_schema: str
) -> None:
    table = TableName(pg_schema, "Monitoring Events")
    text = migration_sql(table)
    assert '"Monitoring Events"' in text and "{" not in text.replace("{}", "")
    for _ in range(2):
        execute(pg_url, text)
    assert migrate(pg_url, table) == []
    assert PostgresStore(pg_url, table).has_unique_key()


@pytest.fixture
def supabase_like_url(pg_url: str) -> Iterator[str]:
    """A database of its own with Supabase's roles and the Realtime publication."""
    database = f"supa_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for role in ("anon", "authenticated", "service_role"):
            conn.execute(
                sql.SQL(
                    "DO $$ BEGIN CREATE ROLE {} NOLOGIN; "
                    "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
                ).format(sql.Identifier(role))
            )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    url = make_conninfo(pg_url, dbname=database)
    execute(url, "SET client_min_messages = error; CREATE PUBLICATION supabase_realtime")
    yield url
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(database)))


def test_supabase_parts_apply_where_roles_and_publication_exist(supabase_like_url: str) -> None:
    table = TableName("public", "monitoring_events")
    assert migrate(supabase_like_url, table) == [
        "001_init",
        "002_supabase",
        "003_control_plane",
        "004_rollback_decisions",
    ]
    policies = set(execute(supabase_like_url, "SELECT tablename, policyname FROM pg_policies"))
    assert ("feature_flag_audit", "parity_service_role_append") in policies
    # Dashboard read access is opt-in: 003 removes what 002 gave authenticated.
    assert not {p for p in policies if p[1] == "parity_authenticated_read"}
    assert execute(
        supabase_like_url,
        "SELECT schemaname, tablename FROM pg_publication_tables"
        " WHERE pubname = 'supabase_realtime'",
    ) == [("public", "monitoring_events")]
    grants = set(
        execute(
            supabase_like_url,
            "SELECT grantee, table_name, privilege_type FROM information_schema.role_table_grants"
            " WHERE grantee IN ('anon', 'authenticated', 'service_role')",
        )
    )
    assert ("service_role", "feature_flag_audit", "INSERT") in grants
    assert ("service_role", "feature_flag_audit", "UPDATE") not in grants
    assert not {g for g in grants if g[0] in ("anon", "authenticated")}
    executors = execute(
        supabase_like_url,
        "SELECT r.rolname FROM pg_roles r, pg_proc p WHERE p.proname = 'parity_set_flags'"
        " AND has_function_privilege(r.oid, p.oid, 'EXECUTE')"
        " AND r.rolname IN ('anon', 'authenticated', 'service_role')",
    )
    assert executors == [("service_role",)]
    # The pasted script is idempotent on Supabase too.
    execute(supabase_like_url, migration_sql(table))
    assert migrate(supabase_like_url, table) == []


# -- snapshots and inserts -------------------------------------------------------------


def test_snapshot_returns_exactly_the_window_in_store_schema(
    pg_url: str, pg_table: TableName
) -> None:
    end = H + dt.timedelta(hours=1)
    at = [H - US, H, H + dt.timedelta(minutes=30), end - US, end]
    events = [
        make_event(
            s,
            1,
            "error.raised",
            t,
            {"n": i, "nested": {"b": [1, 2], "a": None}},
            category="CRITICAL" if i % 2 else None,
        )
        for i, (s, t) in enumerate(zip("edcba", at, strict=True))
    ]
    store = PostgresStore(pg_url, pg_table)
    assert store.insert_events(events_table(events)) == 5

    snap = store.snapshot(H, end)
    assert snap.schema == STORE_SCHEMA
    assert snap.schema.metadata is None
    assert snap.column("emitted_at").to_pylist() == [end - US, H + dt.timedelta(minutes=30), H]
    assert snap.column("stream").to_pylist() == ["b", "c", "d"]
    assert snap.column("category").to_pylist() == ["CRITICAL", None, "CRITICAL"]
    assert orjson.loads(snap.column("payload")[0].as_py()) == events[3].payload
    assert snap.column("checksum").to_pylist() == [
        e.checksum for e in (events[3], events[2], events[1])
    ]
    assert all(r is not None for r in snap.column("received_at").to_pylist())
    assert store.count(H, end) == 3
    # An empty window still has the schema.
    empty = store.snapshot(end + dt.timedelta(days=1), end + dt.timedelta(days=2))
    assert empty.num_rows == 0 and empty.schema == STORE_SCHEMA


def test_snapshot_is_sorted_by_stream_seq_received_at(pg_url: str, pg_table: TableName) -> None:
    store = PostgresStore(pg_url, pg_table)
    evs = some_events(20, stream="b") + some_events(20, stream="a")
    rows = events_table(evs, received_at=True)
    order = [7, 3, 39, 0, 21, 15, 2, 38, 20, 1] + list(range(4, 7)) + list(range(8, 15))
    rest = [i for i in range(40) if i not in order]
    assert store.insert_events(rows.take(order)) == 20
    assert store.insert_events(rows.take(rest)) == 20
    snap = store.snapshot(H, H + dt.timedelta(hours=1))
    keys = list(zip(snap.column("stream").to_pylist(), snap.column("seq").to_pylist(), strict=True))
    assert keys == sorted(keys) and len(keys) == 40
    # received_at given is kept (not replaced by now()).
    assert snap.column("received_at")[0].as_py() == evs[20].emitted_at + US


def test_snapshot_orders_streams_by_bytes_whatever_the_collation(
    pg_url: str, pg_table: TableName
) -> None:
    store = PostgresStore(pg_url, pg_table)
    streams = ["é", "a", "Z", "B", "b-2", "b_1"]
    evs = [e for s in streams for e in some_events(2, stream=s)]
    assert store.insert_events(events_table(evs)) == 12
    snap = store.snapshot(H, H + dt.timedelta(hours=1))
    keys = list(zip(snap.column("stream").to_pylist(), snap.column("seq").to_pylist(), strict=True))
    assert keys == sorted(keys, key=lambda k: (k[0].encode(), k[1]))


def test_insert_is_idempotent_and_skips_keys_repeated_within_a_batch(
    pg_url: str, pg_table: TableName
) -> None:
    store = PostgresStore(pg_url, pg_table)
    rows = events_table(some_events(100))
    assert store.insert_events(rows) == 100
    assert store.insert_events(rows) == 0
    assert store.insert_events(pa.concat_tables([events_table(some_events(101)), rows])) == 1
    assert store.insert_events(rows.slice(0, 0)) == 0
    assert store.count(H, H + dt.timedelta(hours=1)) == 101


def test_insert_rejects_rows_without_required_columns(pg_url: str, pg_table: TableName) -> None:
    store = PostgresStore(pg_url, pg_table)
    with pytest.raises(StoreError, match="checksum"):
        store.insert_events(events_table(some_events(1)).drop_columns(["checksum"]))


@pytest.mark.parametrize("unique", [True, False])
def test_concurrent_inserts_of_the_same_rows_write_each_key_once(
    pg_url: str, pg_schema: str, unique: bool
) -> None:
    table = TableName(pg_schema, "monitoring_events")
    if unique:
        migrate(pg_url, table)
    else:
        create_bare_table(pg_url, table)
    store = PostgresStore(pg_url, table)
    assert store.has_unique_key() is unique
    rows = events_table(some_events(2000))
    barrier = threading.Barrier(3)
    written: list[int] = []

    def insert() -> None:
        barrier.wait()
        written.append(store.insert_events(rows))

    threads = [threading.Thread(target=insert) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(written) == [0, 0, 2000]
    assert execute(
        pg_url,
        sql.SQL("SELECT count(*), count(DISTINCT (stream, seq)) FROM {}").format(
            sql.Identifier(table.schema, table.name)
        ),
    ) == [(2000, 2000)]


def test_statement_timeout_names_the_table(pg_url: str, pg_table: TableName) -> None:
    store = PostgresStore(pg_url, pg_table, statement_timeout_s=0.2)
    with psycopg.connect(pg_url) as locker:
        locker.execute(
            sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
                sql.Identifier(pg_table.schema, pg_table.name)
            )
        )
        for call in (
            lambda: store.snapshot(H, H + dt.timedelta(hours=1)),
            lambda: store.insert_events(events_table(some_events(1))),
        ):
            started = time.monotonic()
            with pytest.raises(StoreError, match="statement timeout") as err:
                call()
            assert time.monotonic() - started < 5
            assert str(pg_table) in str(err.value)
            assert not isinstance(err.value, StoreConnectionError)


def test_missing_table_says_to_migrate(pg_url: str, pg_schema: str) -> None:
    store = PostgresStore(pg_url, TableName(pg_schema, "nowhere"))
    with pytest.raises(StoreError, match="does not exist"):
        store.snapshot(H, H + dt.timedelta(hours=1))
    with pytest.raises(StoreError, match="does not exist"):
        store.insert_events(events_table(some_events(1)))


def test_connection_gives_psycopg_with_the_timeout(pg_url: str, pg_table: TableName) -> None:
    store = PostgresStore(pg_url, pg_table, statement_timeout_s=12.5)
    with store.connection() as conn:
        assert conn.autocommit
        assert conn.execute("SHOW statement_timeout").fetchone() == ("12500ms",)
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.snapshot(H, H + dt.timedelta(hours=1))


# -- connection errors -----------------------------------------------------------------

SECRET = "Wr0ng-Pa55-7f3c!x"


@pytest.fixture(scope="module")
def password_role(pg_url: str) -> str:
    """A role that must log in with a password (scram) over the server's Unix socket.

    The embedded server trusts local connections and listens on no TCP port, so a
    ``pg_hba.conf`` line is put first for this one role; reloading the configuration
    makes the server ask it for a password.
    """
    role = f"pw_{uuid.uuid4().hex[:8]}"
    execute(
        pg_url,
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'right-password'").format(sql.Identifier(role)),
    )
    (hba_file,) = execute(pg_url, "SHOW hba_file")[0]
    hba = Path(hba_file)
    hba.write_text(f"local all {role} scram-sha-256\n" + hba.read_text())
    execute(pg_url, "SELECT pg_reload_conf()")
    wrong = make_conninfo(pg_url, user=role, password="not-it")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the reload is asynchronous
        try:
            psycopg.connect(wrong).close()
        except psycopg.OperationalError:
            return role
        time.sleep(0.05)
    raise AssertionError("the server never started asking for a password")


def url_with_password(pg_url: str, role: str, password: str) -> str:
    host = conninfo_to_dict(pg_url)["host"]
    return f"postgresql://{role}:{password}@/postgres?host={host}"


def test_wrong_password_is_a_connection_error_without_the_password(
    pg_url: str, password_role: str
) -> None:
    url = url_with_password(pg_url, password_role, SECRET)
    store = PostgresStore(url, TableName("public", "monitoring_events"))
    assert SECRET not in repr(store) and SECRET not in store.target
    for call in (
        lambda: store.snapshot(H, H + dt.timedelta(hours=1)),
        lambda: store.insert_events(events_table(some_events(1))),
        lambda: migrate(url, TableName("public", "monitoring_events")),
    ):
        with pytest.raises(CredentialsRefusedError) as err:
            call()
        message = str(err.value)
        assert SECRET not in message
        assert err.value.exit_code == EXIT_CONFIGURATION  # a setting to correct, not an outage
        assert "password authentication failed" in message and "PARITY_DATABASE_URL" in message
        assert f"user={password_role}" in message and "dbname=postgres" in message
        assert err.value.__cause__ is None
    # The right password logs in (the role may read nothing: that is a different error).
    good = PostgresStore(
        url_with_password(pg_url, password_role, "right-password"),
        TableName("public", "monitoring_events"),
    )
    with good.connection() as conn:
        assert conn.execute("SELECT current_user").fetchone() == (password_role,)
    with pytest.raises(StoreError, match="permission denied") as denied:
        good.count(H, H + dt.timedelta(hours=1))
    assert not isinstance(denied.value, StoreConnectionError)


def test_malformed_url_is_a_configuration_error_without_the_password() -> None:
    with pytest.raises(ConfigurationError) as err:
        PostgresStore(f"postgresql://u:{SECRET}@h:notaport/db?x", TableName("s", "t"))
    assert SECRET not in str(err.value)


def test_scrub_removes_password_forms() -> None:
    text = (
        f"failed: postgresql://u:{SECRET}@h/db password={SECRET} "
        "password='a b' postgres://x:other@y"
    )
    out = scrub(text, SECRET)
    assert SECRET not in out and "a b" not in out and "other" not in out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_closed_port_fails_fast_with_where_it_tried() -> None:
    port = free_port()
    url = f"postgresql://parity:{SECRET}@127.0.0.1:{port}/events"
    store = PostgresStore(url, TableName("public", "monitoring_events"), connect_timeout_s=2)
    for call in (
        lambda: store.snapshot(H, H + dt.timedelta(hours=1)),
        lambda: store.count(H, H + dt.timedelta(hours=1)),
    ):
        started = time.monotonic()
        with pytest.raises(StoreConnectionError) as err:
            call()
        assert time.monotonic() - started < 2
        message = str(err.value)
        assert f"host=127.0.0.1 port={port} dbname=events user=parity" in message
        assert "refused" in message and SECRET not in message
        assert not isinstance(err.value, CredentialsRefusedError)
        assert err.value.exit_code == EXIT_INFRASTRUCTURE  # unreachable: retrying may work


def test_an_unknown_user_is_refused_credentials(pg_url: str) -> None:
    url = url_with_password(pg_url, "no_such_role_7c1", SECRET)
    with pytest.raises(CredentialsRefusedError) as err:
        PostgresStore(url, TableName("public", "monitoring_events")).count(
            H, H + dt.timedelta(hours=1)
        )
    message = str(err.value)
    assert 'role "no_such_role_7c1" does not exist' in message
    assert "PARITY_DATABASE_URL" in message and SECRET not in message


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield int(listener.getsockname()[1])


def test_server_that_never_answers_times_out_within_the_connect_timeout(
    silent_server: int,
) -> None:
    url = f"postgresql://parity:{SECRET}@127.0.0.1:{silent_server}/events?sslmode=disable"
    store = PostgresStore(url, TableName("public", "monitoring_events"), connect_timeout_s=2)
    for call in (
        lambda: store.count(H, H + dt.timedelta(hours=1)),
        lambda: store.snapshot(H, H + dt.timedelta(hours=1)),
    ):
        started = time.monotonic()
        with pytest.raises(StoreConnectionError) as err:
            call()
        elapsed = time.monotonic() - started
        assert 1.5 < elapsed < 4.5
        assert f"port={silent_server}" in str(err.value) and SECRET not in str(err.value)


# -- the embedded server ---------------------------------------------------------------


def test_embedded_server_is_shared_with_and_survives_other_processes(
    pg_url: str, pg_settings: Settings
) -> None:
    (pid_before,) = execute(pg_url, "SELECT pg_postmaster_start_time()")[0]
    code = (
        "from pathlib import Path; from parity.core.config import Settings; "
        "from parity.io.embedded import ensure_embedded; "
        f"home = Path({str(pg_settings.home)!r}); "
        "print(ensure_embedded(Settings(home=home, ws_log_dir=home / 'ws-log')))"
    )
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.strip() == pg_url
    assert out.stderr == ""
    # The other process has exited; the server it attached to still runs, unrestarted.
    assert execute(pg_url, "SELECT pg_postmaster_start_time()")[0] == (pid_before,)


def test_embedded_server_stops_and_starts_again_with_its_data(embedded_home: Path) -> None:
    from parity.io.embedded import embedded_running, ensure_embedded, stop_embedded

    home = embedded_home
    settings = Settings(
        home=home, ws_log_dir=home / "ws-log", events_table=TableName("Parity", "Events")
    )
    try:
        url = ensure_embedded(settings)
        assert embedded_running(settings)
        store = PostgresStore(url, settings.events_table)
        assert store.insert_events(events_table(some_events(3))) == 3
        assert stop_embedded(settings)
        assert not embedded_running(settings)
        assert not stop_embedded(settings)
        with pytest.raises(StoreConnectionError):
            store.count(H, H + dt.timedelta(hours=1))

        url = ensure_embedded(settings)
        assert PostgresStore(url, settings.events_table).count(H, H + dt.timedelta(hours=1)) == 3
        assert migrate(url, settings.events_table) == []
    finally:
        stop_embedded(settings)


def test_snapshot_batches_stream_the_window_in_bounded_tables(
    pg_url: str, pg_table: TableName, monkeypatch: pytest.MonkeyPatch
) -> None:
    from parity.io import store_pg

    store = PostgresStore(pg_url, pg_table)
    evs = some_events(30, stream="b") + some_events(25, stream="a")
    assert store.insert_events(events_table(evs)) == 55
    monkeypatch.setattr(store_pg, "BATCH_ROWS", 10)
    batches = list(store.snapshot_batches(H, H + dt.timedelta(hours=1)))
    # The driver's batches are about 16 MB: this window is one of them.
    assert [b.num_rows for b in batches] == [55]
    assert all(b.schema == STORE_SCHEMA for b in batches)
    assert (
        pa.concat_tables(batches)
        .sort_by(store_pg.SORT_KEYS)
        .equals(store.snapshot(H, H + dt.timedelta(hours=1)))
    )
    empty = list(store.snapshot_batches(H - dt.timedelta(days=2), H - dt.timedelta(days=1)))
    assert [b.num_rows for b in empty] == [0] and empty[0].schema == STORE_SCHEMA


@pytest.mark.parametrize("kernel", [True, False], ids=["kernel", "python"])
def test_derived_batches_read_ahead_only_with_the_kernel(
    pg_url: str, pg_table: TableName, kernel: bool
) -> None:
    """With the kernel the COPY is read by a thread while the previous batch is verified;
    without it (verification forks) it is not. The rows are the same either way, and the
    connection is given back."""
    from parity.core.classify import load_rules
    from parity.io import native, parallel
    from parity.io.store import derived_batches, with_derived_columns

    if kernel and native.kernel is None:
        pytest.skip("the native kernel is not built")
    store = PostgresStore(pg_url, pg_table)
    store.insert_events(events_table(some_events(40, stream="b") + some_events(20, stream="a")))
    window = (H, H + dt.timedelta(hours=1))
    classifier = load_rules(None)
    before = native.kernel is not None
    big = parallel.MIN_ITEMS_PER_SHARE * 64
    outside = parallel.workers(big)
    native.use_kernel(kernel)
    try:
        inside, batches = [], []
        for batch in derived_batches(store, *window, classifier):
            # While a reading thread runs, nothing forks (verification stays in-process).
            inside.append(parallel.workers(big))
            batches.append(batch)
    finally:
        native.use_kernel(before)
    assert inside == [1 if kernel else outside]
    assert not any(t.name == "parity-prefetch" for t in threading.enumerate())
    expected = with_derived_columns(store.snapshot(*window), classifier)
    got = pa.concat_tables(batches).sort_by(SORT_KEYS)
    assert got.equals(expected)
    assert got.column("checksum_valid").combine_chunks().true_count == 60
    with psycopg.connect(pg_url) as conn:
        (open_copies,) = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE query LIKE 'COPY%' AND state <> 'idle' AND pid <> pg_backend_pid()"
        ).fetchone()  # type: ignore[misc]
    assert open_copies == 0

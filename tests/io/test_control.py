"""The control-plane contract: the PostgreSQL and the Supabase REST implementations pass the
same tests (REST against the real PostgREST binary, with only the grants the migrations
give), and anon and authenticated are refused everything."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from parity.core import rollout
from parity.core.config import TableName
from parity.core.errors import (
    ConcurrentUpdateError,
    CredentialsRefusedError,
    FlagError,
    StoreConnectionError,
    StoreError,
)
from parity.core.routing import FLAG_DEFAULTS, SUPABASE_ROLLOUT_PERCENTAGE
from parity.io import control, control_pg
from parity.io.control import ROLLOUT_STATE_FLAG, AuditRow, ControlPlane
from parity.io.control_pg import PostgresControlPlane
from parity.io.control_rest import RestControlPlane
from parity.io.migrate import migrate
from parity.io.tables import (
    AUDIT_TABLE,
    FLAGS_TABLE,
    METRICS_TABLE,
    MIGRATIONS_TABLE,
    SET_FLAGS_FUNCTION,
)
from tests.restharness import SUPABASE_TABLE, SupabaseRest, insert_samples

pytestmark = pytest.mark.integration

TABLE = SUPABASE_TABLE
T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
PERCENT = SUPABASE_ROLLOUT_PERCENTAGE


PlaneFactory = Callable[..., ControlPlane]


@pytest.fixture(params=["postgres", "rest"])
def open_plane(
    request: pytest.FixtureRequest, supabase_db_url: str, empty_control_tables: None
) -> Iterator[PlaneFactory]:
    """Opens control planes of the parametrised transport (closed at the end); keyword
    arguments go to the REST implementation."""
    opened: list[ControlPlane] = []

    def factory(**kwargs: Any) -> ControlPlane:
        plane: ControlPlane
        if request.param == "postgres":
            plane = PostgresControlPlane(supabase_db_url, TABLE.schema)
        else:
            supabase_api = request.getfixturevalue("supabase_api")
            plane = RestControlPlane(
                supabase_api.url, supabase_api.service_role_key, TABLE.schema, **kwargs
            )
        opened.append(plane)
        return plane

    yield factory
    for plane in opened:
        plane.close()


@pytest.fixture
def plane(open_plane: PlaneFactory) -> ControlPlane:
    return open_plane()


def sql_history(supabase_db_url: str) -> list[AuditRow]:
    """The audit table read over SQL, independent of the implementation under test."""
    with psycopg.connect(supabase_db_url) as conn:
        return control_pg.history(conn, TABLE.schema)


# -- the contract ---------------------------------------------------------------------------


def test_defaults_before_any_change(plane: ControlPlane) -> None:
    assert plane.read_flags() == dict(FLAG_DEFAULTS)
    assert ROLLOUT_STATE_FLAG not in plane.read_flags(include_reserved=True)
    assert plane.history() == []
    assert control.read_state(plane) == rollout.RolloutState()


def test_changes_are_audited_once_with_their_evidence(
    plane: ControlPlane, supabase_db_url: str
) -> None:
    rows = plane.set_flags(
        {PERCENT: 10, "MONITORING_DUAL_WRITE_ENABLED": True},
        actor="alice",
        reason="canary",
        evidence={"ticket": 7},
        now=T0,
    )
    # Dual write was already on (its default): not rewritten, not audited.
    assert [(r.flag, r.old_value, r.new_value) for r in rows] == [(PERCENT, 0, 10)]
    assert plane.set_flags({PERCENT: 10}, actor="bob", reason="again") == []
    [row] = plane.history(PERCENT)
    assert (row.actor, row.reason, row.evidence, row.changed_at) == (
        "alice",
        "canary",
        {"ticket": 7},
        T0,
    )
    assert plane.read_flags()[PERCENT] == 10
    assert sql_history(supabase_db_url) == plane.history() == rows


@pytest.mark.parametrize(
    ("changes", "reason", "message"),
    [
        ({"MONITORING_NOT_A_FLAG": True}, "r", "unknown flag"),
        ({PERCENT: 101}, "r", "0 to 100"),
        ({PERCENT: True}, "r", "integer"),
        ({"MONITORING_DUAL_WRITE_ENABLED": 1}, "r", "true or false"),
        ({PERCENT: 5}, " ", "reason"),
    ],
)
def test_invalid_changes_write_nothing(
    plane: ControlPlane, supabase_db_url: str, changes: dict, reason: str, message: str
) -> None:
    with pytest.raises(FlagError, match=message):
        plane.set_flags(changes, actor="t", reason=reason)
    assert sql_history(supabase_db_url) == [] and plane.read_flags() == dict(FLAG_DEFAULTS)


def test_a_stale_compare_and_set_writes_nothing(plane: ControlPlane, supabase_db_url: str) -> None:
    plane.set_flags({PERCENT: 50}, actor="a", reason="r")
    with pytest.raises(ConcurrentUpdateError, match="re-read"):
        plane.set_flags(
            {PERCENT: 100, "MONITORING_DASHBOARD_DUAL_MODE": True},
            actor="b",
            reason="r",
            expected={PERCENT: 10},
        )
    assert plane.read_flags()[PERCENT] == 50
    assert plane.read_flags()["MONITORING_DASHBOARD_DUAL_MODE"] is False
    assert len(sql_history(supabase_db_url)) == 1
    # A reserved row that does not exist compares as None.
    with pytest.raises(ConcurrentUpdateError):
        plane.set_flags(
            {PERCENT: 60}, actor="b", reason="r", expected={ROLLOUT_STATE_FLAG: {"step": 0}}
        )
    plane.set_flags({PERCENT: 60}, actor="b", reason="r", expected={ROLLOUT_STATE_FLAG: None})
    assert plane.read_flags()[PERCENT] == 60


def test_concurrent_compare_and_set_leaves_every_change_once(open_plane: PlaneFactory) -> None:
    """Six writers each raise the percentage by one, compare-and-set, retrying on conflict:
    every increment lands exactly once."""
    writers = [open_plane() for _ in range(6)]
    errors: list[BaseException] = []

    def bump(plane: ControlPlane) -> None:
        try:
            while True:
                seen = plane.read_flags()[PERCENT]
                try:
                    plane.set_flags(
                        {PERCENT: seen + 1}, actor="w", reason="bump", expected={PERCENT: seen}
                    )
                    return
                except ConcurrentUpdateError:
                    continue
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=bump, args=(w,)) for w in writers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert writers[0].read_flags()[PERCENT] == 6
    assert [r.new_value for r in writers[0].history(PERCENT)] == [1, 2, 3, 4, 5, 6]


def test_rollbacks_at_once_leave_one_change(open_plane: PlaneFactory, supabase_db_url: str) -> None:
    open_plane().set_flags(
        {PERCENT: 50, "MONITORING_CRITICAL_EVENTS_SUPABASE": True}, actor="a", reason="r"
    )
    planes = [open_plane() for _ in range(4)]
    results: list[control.Applied] = []

    def roll_back(plane: ControlPlane) -> None:
        results.append(
            control.apply_rollback(plane, actor="t", reason="drill", evidence={"i": 1}, now=T0)
        )

    threads = [threading.Thread(target=roll_back, args=(p,)) for p in planes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(r.applied for r in results) == [False, False, False, True]
    [applied] = [r for r in results if r.applied]
    assert applied.changes == {PERCENT: 0, "MONITORING_CRITICAL_EVENTS_SUPABASE": False}
    assert {k: applied.flags_after[k] for k in rollout.rollback_plan()} == rollout.rollback_plan()
    written = [r for r in sql_history(supabase_db_url) if r.actor == "t"]
    assert sorted(r.flag for r in written) == sorted(
        [PERCENT, "MONITORING_CRITICAL_EVENTS_SUPABASE", ROLLOUT_STATE_FLAG]
    )
    assert all(r.evidence == {"i": 1} and r.changed_at == T0 for r in written)
    state = control.read_state(planes[0])
    assert state.rollback_in_force and state.rollback_reason == "drill"


def test_a_transition_decided_on_stale_values_is_refused(plane: ControlPlane) -> None:
    now = T0
    state = control.read_state(plane)
    values = plane.read_flags()
    decided = rollout.resume(state, values, rollout.RolloutConfig(), now)
    control.apply_rollback(plane, actor="t", reason="meanwhile", evidence={}, now=now)
    with pytest.raises(ConcurrentUpdateError, match="re-evaluated"):
        control.apply_transition(
            plane,
            expected_state=state,
            expected_flags=values,
            flag_changes=dict(decided.flag_changes),
            next_state=decided.state,
            actor="t",
            reason="stale",
            evidence={},
            now=now,
        )
    assert control.read_state(plane).rollback_in_force
    # Decided on what is in force now, it applies.
    state, values = control.read_state(plane), plane.read_flags()
    resumed = rollout.resume(state, values, rollout.RolloutConfig(), now)
    applied = control.apply_transition(
        plane,
        expected_state=state,
        expected_flags=values,
        flag_changes=dict(resumed.flag_changes),
        next_state=resumed.state,
        actor="t",
        reason="fixed",
        evidence={},
        now=now,
    )
    assert applied.applied and control.read_state(plane) == resumed.state


def test_history_and_timeline_past_the_row_cap(
    open_plane: PlaneFactory, supabase_db_url: str
) -> None:
    rows = [
        AuditRow(
            0,
            PERCENT,
            i % 100,
            (i + 1) % 100,
            T0 + dt.timedelta(minutes=i),
            "old",
            "imported",
            {"i": i},
        )
        for i in range(1, 1201)
    ]
    with psycopg.connect(supabase_db_url) as conn:
        control_pg.import_history(conn, TABLE.schema, rows)
    plane = open_plane(page_size=500)  # REST: pages below the server's cap of 1,000
    got = plane.history()
    assert len(got) == 1200
    assert [(r.flag, r.new_value, r.changed_at, r.evidence) for r in got] == [
        (r.flag, r.new_value, r.changed_at, r.evidence) for r in rows
    ]
    timeline = control.load_timeline(plane)
    assert timeline.value_at(PERCENT, T0 + dt.timedelta(minutes=5, seconds=30)) == 6
    assert timeline.value_at(PERCENT, T0 - dt.timedelta(seconds=1)) == 0  # the default


def test_samples_and_health_past_the_row_cap(plane: ControlPlane, supabase_db_url: str) -> None:
    now = dt.datetime(2026, 11, 28, 12, tzinfo=dt.UTC)
    insert_samples(supabase_db_url, now, count=1500, failures=9)  # 9% errors for over 4 hours
    samples = plane.load_samples(now - dt.timedelta(hours=1), now)
    assert len(samples) == 360
    assert [s.sampled_at for s in samples] == sorted(s.sampled_at for s in samples)
    assert samples[-1].sampled_at == now and samples[0].sampled_at > now - dt.timedelta(hours=1)
    health = control.read_health(plane, now)
    assert health.samples == 1500
    assert [r.name for r in health.verdict.breaches] == ["error_rate"]


# -- least privilege on Supabase ------------------------------------------------------------


@pytest.mark.parametrize("role", ["anon", "authenticated"])
def test_anon_and_authenticated_are_refused_everything(
    supabase_api: SupabaseRest, supabase_db_url: str, empty_control_tables: None, role: str
) -> None:
    key = supabase_api.anon_key if role == "anon" else supabase_api.authenticated_key
    headers = {"apikey": key, "Authorization": f"Bearer {key}"}
    base = f"{supabase_api.url}/rest/v1"
    with httpx.Client(timeout=10) as client:
        for table in (TABLE.name, FLAGS_TABLE, AUDIT_TABLE, METRICS_TABLE, MIGRATIONS_TABLE):
            read = client.get(f"{base}/{table}", params={"limit": 1}, headers=headers)
            assert read.status_code in (401, 403), (table, read.text)
            assert read.json()["code"] == "42501", read.text  # permission denied
            write = client.post(f"{base}/{table}", json={}, headers=headers)
            assert write.status_code in (401, 403), (table, write.text)
        call = client.post(
            f"{base}/rpc/{SET_FLAGS_FUNCTION}",
            json={
                "p_changes": {PERCENT: 100},
                "p_actor": "intruder",
                "p_reason": "r",
                "p_defaults": {},
            },
            headers=headers,
        )
        assert call.status_code in (401, 403), call.text
        assert call.json()["code"] == "42501", call.text
    refused = RestControlPlane(supabase_api.url, key, TABLE.schema)
    try:
        with pytest.raises(CredentialsRefusedError, match="SUPABASE_SERVICE_ROLE_KEY"):
            refused.read_flags()
        with pytest.raises(CredentialsRefusedError, match="service-role"):
            refused.set_flags({PERCENT: 100}, actor="intruder", reason="r")
    finally:
        refused.close()
    assert sql_history(supabase_db_url) == []


def test_service_role_reads_and_calls(
    supabase_api: SupabaseRest, empty_control_tables: None
) -> None:
    with RestControlPlane(supabase_api.url, supabase_api.service_role_key, TABLE.schema) as plane:
        assert plane.set_flags({PERCENT: 10}, actor="svc", reason="r")
        assert plane.read_flags()[PERCENT] == 10
        assert len(plane.history()) == 1


def test_an_unmigrated_schema_is_named_with_what_to_do(
    supabase_db_url: str, supabase_api: SupabaseRest
) -> None:
    with pytest.raises(StoreError, match="parity db migrate"):
        PostgresControlPlane(supabase_db_url, "not_migrated").read_flags()
    with pytest.raises(StoreError, match="parity db migrate"):
        PostgresControlPlane(supabase_db_url, "not_migrated").set_flags(
            {PERCENT: 1}, actor="a", reason="r"
        )
    with RestControlPlane(supabase_api.url, supabase_api.service_role_key, "not_exposed") as plane:
        with pytest.raises(StoreError, match="expose schema 'not_exposed'"):
            plane.read_flags()


def test_errors_never_carry_the_password_or_the_key(
    supabase_db_url: str, supabase_api: SupabaseRest
) -> None:
    params = conninfo_to_dict(supabase_db_url)
    wrong = make_conninfo(**{**params, "password": "s3cret-pw", "port": "1"})  # type: ignore[arg-type]
    with pytest.raises(StoreConnectionError) as err:
        PostgresControlPlane(wrong, TABLE.schema, connect_timeout_s=2).read_flags()
    assert "s3cret-pw" not in str(err.value)
    key = supabase_api.anon_key
    with RestControlPlane(supabase_api.url, key, TABLE.schema) as plane:
        with pytest.raises(StoreConnectionError) as err2:
            plane.history()
    assert key not in str(err2.value)


def test_a_database_migrated_before_003_is_upgraded_in_place(pg_url: str, pg_schema: str) -> None:
    """001 and 002 may already be applied in users' databases: migrating again applies 003
    alone, which takes back what 002 gave ``authenticated`` and adds the function."""
    from parity.io.migrate import compose, migrations

    table = TableName(pg_schema, "monitoring_events")
    migrate(pg_url, table)
    by_name = {m.name: m for m in migrations()}
    with psycopg.connect(pg_url, autocommit=True) as conn:
        # Back to how 002 left it: its grants and policies, no function, 003 not recorded.
        conn.execute(
            sql.SQL("drop function {}").format(sql.Identifier(pg_schema, SET_FLAGS_FUNCTION))
        )
        conn.execute(compose(by_name["002_supabase"].template, table))
        conn.execute(
            sql.SQL("delete from {} where name = '003_control_plane'").format(
                sql.Identifier(pg_schema, MIGRATIONS_TABLE)
            )
        )
        granted = conn.execute(
            "select count(*) from information_schema.role_table_grants "
            "where table_schema = %s and grantee = 'authenticated'",
            [pg_schema],
        ).fetchone()
        assert granted and granted[0] > 0
    assert migrate(pg_url, table) == ["003_control_plane"]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert (
            conn.execute(
                "select grantee, table_name from information_schema.role_table_grants "
                "where table_schema = %s and grantee in ('anon', 'authenticated')",
                [pg_schema],
            ).fetchall()
            == []
        )
        assert (
            conn.execute(
                "select policyname from pg_policies where schemaname = %s "
                "and policyname = 'parity_authenticated_read'",
                [pg_schema],
            ).fetchall()
            == []
        )
        plane = PostgresControlPlane(pg_url, pg_schema)
        assert plane.set_flags({PERCENT: 5}, actor="a", reason="after the upgrade")

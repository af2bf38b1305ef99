"""Flags in the feature_flags table: validation, audit, compare-and-set, history, and the
`parity flags` / `parity rollback` / `parity rollout` commands."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from parity.app import cli
from parity.core import rollout
from parity.core.config import TableName
from parity.core.errors import ConcurrentUpdateError, FlagError
from parity.core.routing import FLAG_DEFAULTS
from parity.io import control, control_pg
from parity.io.control_pg import PostgresControlPlane
from parity.io.store_pg import PostgresStore

pytestmark = pytest.mark.integration
T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


@pytest.fixture
def conn(pg_url: str, pg_table: TableName):
    with PostgresStore(pg_url, pg_table).connection() as c:
        yield c


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("MONITORING_NOT_A_FLAG", True, "unknown flag"),
        ("MONITORING_SUPABASE_ROLLOUT_PERCENTAGE", 101, "0 to 100"),
        ("MONITORING_SUPABASE_ROLLOUT_PERCENTAGE", -1, "0 to 100"),
        ("MONITORING_SUPABASE_ROLLOUT_PERCENTAGE", True, "integer"),
        ("MONITORING_SUPABASE_ROLLOUT_PERCENTAGE", 12.5, "integer"),
        ("MONITORING_DUAL_WRITE_ENABLED", 1, "true or false"),
    ],
)
def test_invalid_values_are_refused_and_nothing_is_written(conn, pg_table, name, value, message):
    with pytest.raises(FlagError, match=message):
        control_pg.set_flags(conn, pg_table.schema, {name: value}, actor="t", reason="r")
    assert control_pg.history(conn, pg_table.schema) == []
    assert control_pg.read_flags(conn, pg_table.schema) == dict(FLAG_DEFAULTS)


def test_defaults_then_changes_are_audited(conn, pg_table):
    schema = pg_table.schema
    assert control_pg.read_flags(conn, schema)["MONITORING_DASHBOARD_FALLBACK_MODE"] is True
    rows = control_pg.set_flags(
        conn,
        schema,
        {"MONITORING_SUPABASE_ROLLOUT_PERCENTAGE": 10, "MONITORING_DUAL_WRITE_ENABLED": True},
        actor="alice",
        reason="canary",
        evidence={"ticket": 7},
        now=T0,
    )
    assert [(r.flag, r.old_value, r.new_value) for r in rows] == [
        ("MONITORING_SUPABASE_ROLLOUT_PERCENTAGE", 0, 10)  # dual write was already on
    ]
    assert (
        control_pg.set_flags(
            conn,
            schema,
            {"MONITORING_SUPABASE_ROLLOUT_PERCENTAGE": 10},
            actor="bob",
            reason="again",
        )
        == []
    )
    [row] = control_pg.history(conn, schema, "MONITORING_SUPABASE_ROLLOUT_PERCENTAGE")
    assert (row.actor, row.reason, row.evidence, row.changed_at) == (
        "alice",
        "canary",
        {"ticket": 7},
        T0,
    )
    with pytest.raises(FlagError, match="reason"):
        control_pg.set_flags(
            conn, schema, {"MONITORING_DUAL_WRITE_ENABLED": False}, actor="a", reason=" "
        )


def test_compare_and_set_refuses_a_stale_write(conn, pg_table):
    schema = pg_table.schema
    control_pg.set_flags(
        conn, schema, {"MONITORING_SUPABASE_ROLLOUT_PERCENTAGE": 50}, actor="a", reason="r"
    )
    with pytest.raises(ConcurrentUpdateError, match="re-read"):
        control_pg.set_flags(
            conn,
            schema,
            {"MONITORING_SUPABASE_ROLLOUT_PERCENTAGE": 100},
            actor="b",
            reason="r",
            expected={"MONITORING_SUPABASE_ROLLOUT_PERCENTAGE": 10},
        )
    assert control_pg.read_flags(conn, schema)["MONITORING_SUPABASE_ROLLOUT_PERCENTAGE"] == 50


def test_concurrent_writers_lose_no_update(pg_url, pg_table):
    """Eight writers each move the percentage up by one with compare-and-set, retrying on
    conflict: every increment lands exactly once."""
    store = PostgresStore(pg_url, pg_table)
    name = "MONITORING_SUPABASE_ROLLOUT_PERCENTAGE"

    def bump() -> None:
        with store.connection() as c:
            while True:
                seen = control_pg.read_flags(c, pg_table.schema)[name]
                try:
                    control_pg.set_flags(
                        c,
                        pg_table.schema,
                        {name: seen + 1},
                        actor="w",
                        reason="bump",
                        expected={name: seen},
                    )
                    return
                except ConcurrentUpdateError:
                    continue

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with store.connection() as c:
        assert control_pg.read_flags(c, pg_table.schema)[name] == 8
        assert [r.new_value for r in control_pg.history(c, pg_table.schema, name)] == list(
            range(1, 9)
        )


def test_values_in_force_at_past_instants_come_from_the_audit(conn, pg_url, pg_table):
    schema = pg_table.schema
    name = "MONITORING_SUPABASE_ROLLOUT_PERCENTAGE"
    control_pg.import_history(
        conn,
        schema,
        [
            control_pg.AuditRow(0, name, 0, 10, T0, "old-system", "imported", None),
            control_pg.AuditRow(
                0, name, 10, 50, T0 + dt.timedelta(days=2), "old-system", "imported", None
            ),
        ],
    )
    timeline = control.load_timeline(PostgresControlPlane(pg_url, schema))
    assert timeline.value_at(name, T0 - dt.timedelta(seconds=1)) == 0  # the plan's default
    assert timeline.value_at(name, T0) == 10  # at the instant of the change
    assert timeline.value_at(name, T0 + dt.timedelta(days=3)) == 50
    assert timeline.value_at("MONITORING_DUAL_WRITE_ENABLED", T0) is True


def test_rollback_applies_the_plan_once(conn, pg_url, pg_table):
    schema = pg_table.schema
    control_pg.set_flags(
        conn,
        schema,
        {"MONITORING_SUPABASE_ROLLOUT_PERCENTAGE": 50, "MONITORING_DUAL_WRITE_ENABLED": False},
        actor="a",
        reason="r",
    )
    plane = PostgresControlPlane(pg_url, schema)
    first = control.apply_rollback(plane, actor="a", reason="why", evidence={}, now=T0)
    assert first.applied and first.changes == {
        "MONITORING_SUPABASE_ROLLOUT_PERCENTAGE": 0,
        "MONITORING_DUAL_WRITE_ENABLED": True,
    }
    second = control.apply_rollback(plane, actor="a", reason="why", evidence={}, now=T0)
    assert not second.applied and second.changes == {}
    state = control_pg.read_state(conn, schema)
    assert state.rollback_in_force and state.rollback_reason == "why"


# -- the command line ----------------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch, pg_url, pg_table, tmp_path):
    monkeypatch.setenv("PARITY_HOME", str(tmp_path))
    monkeypatch.setenv("PARITY_DATABASE_URL", pg_url)
    monkeypatch.setenv("PARITY_EVENTS_TABLE", str(pg_table))
    for key in ("SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "PARITY_ALERT_WEBHOOK_URL"):
        monkeypatch.delenv(key, raising=False)
    return pg_table


def test_cli_set_list_history(cli_env, capsys):
    name = "MONITORING_SUPABASE_ROLLOUT_PERCENTAGE"
    assert cli.main(["flags", "set", name, "10", "--reason", "start canary"]) == 0
    assert "0 -> 10" in capsys.readouterr().out
    assert cli.main(["flags", "list"]) == 0
    listed = dict(line.split() for line in capsys.readouterr().out.splitlines())
    assert listed[name] == "10" and listed["MONITORING_DUAL_WRITE_ENABLED"] == "true"
    assert cli.main(["flags", "history", name]) == 0
    assert "start canary" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["flags", "set", "MONITORING_SUPABASE_ROLLOUT_PERCENTAGE", "150", "--reason", "x"],
        ["flags", "set", "NOPE", "true", "--reason", "x"],
        ["flags", "set", "MONITORING_DUAL_WRITE_ENABLED", "maybe", "--reason", "x"],
    ],
)
def test_cli_refuses_bad_values_with_exit_2(cli_env, capsys, pg_url, argv):
    assert cli.main(argv) == 2
    assert "parity: error:" in capsys.readouterr().err
    with PostgresStore(pg_url, cli_env).connection() as c:
        assert control_pg.history(c, cli_env.schema) == []


def test_cli_rollback_and_resume(cli_env, capsys, pg_url):
    assert (
        cli.main(["flags", "set", "MONITORING_SUPABASE_ROLLOUT_PERCENTAGE", "50", "--reason", "x"])
        == 0
    )
    assert cli.main(["rollback", "--reason", "manual drill"]) == 0
    assert "MONITORING_SUPABASE_ROLLOUT_PERCENTAGE -> 0" in capsys.readouterr().out
    assert cli.main(["rollback", "--reason", "again"]) == 0
    assert "already in force" in capsys.readouterr().out
    assert cli.main(["rollout", "resume", "--reason", "fixed"]) == 0
    with PostgresStore(pg_url, cli_env).connection() as c:
        state = control_pg.read_state(c, cli_env.schema)
    assert not state.rollback_in_force and not state.paused
    assert state.step == rollout.NOT_STARTED and state.cooldown_until is not None
    assert cli.main(["rollout", "status", "--json"]) == 0
    assert '"step": -1' in capsys.readouterr().out
    assert cli.main(["rollout", "status"]) == 0
    table = capsys.readouterr().out
    assert "Rollout state" in table and "Health triggers" in table and "cooldown until" in table

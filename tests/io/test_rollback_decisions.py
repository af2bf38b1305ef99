"""Rollback decisions (migration 004): applied and dry-run rollbacks audited in
``parity_rollback_decisions`` by both control-plane implementations (REST against the real
PostgREST binary), apart from the flag history the cohort is computed from; anon and
authenticated can neither read nor write them."""

from __future__ import annotations

import datetime as dt

import httpx
import psycopg
import pytest
from psycopg import sql

from parity.core import rollout
from parity.core.errors import FlagError
from parity.io import control, control_pg, rollback
from parity.io.control import ControlPlane
from parity.io.tables import DECISIONS_TABLE, RECORD_DECISION_FUNCTION
from tests.io.test_control import (  # noqa: F401 - fixtures
    PERCENT,
    T0,
    TABLE,
    open_plane,
    plane,
    sql_history,
)
from tests.restharness import SupabaseRest

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def no_decisions(supabase_db_url: str) -> None:
    with psycopg.connect(supabase_db_url, autocommit=True) as conn:
        conn.execute(sql.SQL("truncate {}").format(sql.Identifier(TABLE.schema, DECISIONS_TABLE)))


def sql_decisions(supabase_db_url: str) -> list[control.RollbackDecision]:
    with psycopg.connect(supabase_db_url) as conn:
        return control_pg.decisions(conn, TABLE.schema)


def test_a_dry_run_is_audited_apart_from_the_flag_history(
    plane: ControlPlane,  # noqa: F811
    supabase_db_url: str,
) -> None:
    plane.set_flags({PERCENT: 10}, actor="alice", reason="canary", now=T0)
    history, timeline = plane.history(), control.load_timeline(plane)

    later = T0 + dt.timedelta(hours=2)
    preview = rollback.preview_rollback(plane)
    dry = control.record_decision(
        plane,
        preview,
        dry_run=True,
        reason="health trigger breached: error_rate",
        source="parity:rollback_job",
        evidence={"trigger": "health"},
        now=later,
    )
    assert dry is not None and dry.mode == control.DRY_RUN
    assert dry.changes[PERCENT] == 0 and dry.decided_at == later
    assert (dry.source, dry.evidence) == ("parity:rollback_job", {"trigger": "health"})
    # Nothing in the flag history: the cohort of every instant is as it was.
    assert plane.history() == sql_history(supabase_db_url) == history
    assert control.load_timeline(plane).value_at(PERCENT, later) == 10
    assert timeline.value_at(PERCENT, later) == 10
    assert plane.read_flags()[PERCENT] == 10

    applied = control.apply_rollback(
        plane, actor="bob", reason="drill", evidence={"trigger": "manual"}, now=later
    )
    real = control.record_decision(
        plane, applied, dry_run=False, reason="drill", source="bob", evidence={}, now=later
    )
    assert real is not None and real.mode == control.APPLIED
    assert real.changes == {k: v for k, v in rollout.rollback_plan().items() if k in real.changes}
    assert real.evidence["audit_ids"] == applied.audit_ids
    assert plane.decisions() == sql_decisions(supabase_db_url) == [dry, real]
    # A rollback already in force changes nothing, and records nothing.
    again = control.apply_rollback(plane, actor="bob", reason="again", evidence={}, now=later)
    assert (
        control.record_decision(
            plane, again, dry_run=False, reason="again", source="bob", evidence={}, now=later
        )
        is None
    )
    assert len(plane.decisions()) == 2


def test_a_decision_needs_its_mode_reason_and_source(
    plane: ControlPlane,  # noqa: F811 - the fixture imported above
    supabase_db_url: str,
) -> None:
    for mode, reason, source in (("maybe", "r", "s"), ("dry_run", " ", "s"), ("applied", "r", "")):
        with pytest.raises(FlagError):
            plane.record_decision(mode=mode, reason=reason, changes={}, source=source)
    assert sql_decisions(supabase_db_url) == []


@pytest.mark.parametrize("role", ["anon", "authenticated"])
def test_anon_and_authenticated_can_neither_read_nor_record_decisions(
    supabase_api: SupabaseRest,
    supabase_db_url: str,
    role: str,
) -> None:
    key = supabase_api.anon_key if role == "anon" else supabase_api.authenticated_key
    headers = {"apikey": key, "Authorization": f"Bearer {key}"}
    base = f"{supabase_api.url}/rest/v1"
    with httpx.Client(timeout=10) as client:
        read = client.get(f"{base}/{DECISIONS_TABLE}", params={"limit": 1}, headers=headers)
        assert read.status_code in (401, 403) and read.json()["code"] == "42501", read.text
        write = client.post(f"{base}/{DECISIONS_TABLE}", json={}, headers=headers)
        assert write.status_code in (401, 403), write.text
        call = client.post(
            f"{base}/rpc/{RECORD_DECISION_FUNCTION}",
            json={"p_mode": "dry_run", "p_reason": "r", "p_changes": {}, "p_source": "x"},
            headers=headers,
        )
        assert call.status_code in (401, 403) and call.json()["code"] == "42501", call.text
    assert sql_decisions(supabase_db_url) == []

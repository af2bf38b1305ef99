"""Heartbeats as a sign of life: both control-plane implementations (REST against the real
PostgREST binary) read each producer's newest heartbeat event from the events table."""

from __future__ import annotations

import datetime as dt

import orjson
import psycopg
import pytest
from psycopg import sql

from parity.core.events import make_event
from parity.core.schema import HEARTBEAT_EVENT_TYPE
from parity.io.control import ControlPlane
from parity.io.control_pg import PostgresControlPlane
from parity.io.control_rest import RestControlPlane
from tests.io.test_control import T0, TABLE

pytestmark = pytest.mark.integration


@pytest.fixture(params=["postgres", "rest"])
def plane(request: pytest.FixtureRequest, supabase_db_url: str):  # noqa: ANN201
    with psycopg.connect(supabase_db_url, autocommit=True) as conn:
        conn.execute(sql.SQL("truncate {}").format(sql.Identifier(TABLE.schema, TABLE.name)))
    opened: ControlPlane
    if request.param == "postgres":
        opened = PostgresControlPlane(supabase_db_url, TABLE.schema, events_table=TABLE.name)
    else:
        rest = request.getfixturevalue("supabase_api")
        opened = RestControlPlane(
            rest.url, rest.service_role_key, TABLE.schema, events_table=TABLE.name, page_size=2
        )
    yield opened
    opened.close()


def insert(supabase_db_url: str, events: list) -> None:  # noqa: F811
    with psycopg.connect(supabase_db_url, autocommit=True) as conn:
        for e in events:
            conn.execute(
                sql.SQL(
                    "insert into {} (stream, seq, event_type, category, emitted_at, payload, "
                    "checksum) values (%s, %s, %s, 'CRITICAL', %s, %s::jsonb, %s)"
                ).format(sql.Identifier(TABLE.schema, TABLE.name)),
                (
                    e.stream,
                    e.seq,
                    e.event_type,
                    e.emitted_at,
                    orjson.dumps(e.payload).decode(),
                    e.checksum,
                ),
            )


def test_each_producers_newest_heartbeat_in_the_window(
    plane: ControlPlane, supabase_db_url: str
) -> None:
    def beat(producer: str, seq: int, minutes: float) -> object:
        at = T0 + dt.timedelta(minutes=minutes)
        return make_event(
            f"{producer}.heartbeat", seq, HEARTBEAT_EVENT_TYPE, at, {"producer": producer}
        )

    insert(
        supabase_db_url,
        [
            beat("api", 1, 1),
            beat("api", 2, 1.5),
            beat("api", 3, 2),
            beat("worker", 1, 0.5),
            beat("worker", 2, 9),  # after the window
            make_event(
                "api.other", 1, "system.health", T0 + dt.timedelta(minutes=3), {"producer": "x"}
            ),
        ],
    )
    seen = plane.load_heartbeats(T0, T0 + dt.timedelta(minutes=5))
    assert seen == {
        "api": T0 + dt.timedelta(minutes=2),
        "worker": T0 + dt.timedelta(minutes=0.5),
    }

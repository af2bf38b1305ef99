"""Column contracts of the two snapshots (Arrow schemas). Both sides share the event
columns, so reconciliation can treat them alike."""

from __future__ import annotations

import pyarrow as pa

UTC_US = pa.timestamp("us", tz="UTC")

#: The event type of a producer's heartbeat (stream ``<producer>.heartbeat``, payload
#: ``{"producer": <name>, ...}``): a producer that still sends them is alive.
HEARTBEAT_EVENT_TYPE = "system.health.heartbeat"

#: What an events store returns for a time window (PostgreSQL and REST transports alike).
STORE_SCHEMA = pa.schema(
    [
        pa.field("stream", pa.string(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("event_type", pa.string()),
        pa.field("category", pa.string()),  # as stored; may be null
        pa.field("emitted_at", UTC_US),
        pa.field("received_at", UTC_US),
        pa.field("payload", pa.string()),  # JSON text (jsonb's text form on the PostgreSQL side)
        pa.field("checksum", pa.string()),
    ]
)

#: What the WebSocket log reader returns for a partition window.
WS_SNAPSHOT_SCHEMA = pa.schema(
    [
        pa.field("stream", pa.string(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("category", pa.string(), nullable=False),  # effective: declared, else by the rules
        pa.field("declared_category", pa.string()),  # what the producer said, if anything
        pa.field("unclassified", pa.bool_(), nullable=False),  # no rule matched (and none declared)
        pa.field("emitted_at", UTC_US, nullable=False),
        pa.field("logged_at", UTC_US),
        pa.field("payload", pa.string(), nullable=False),  # compact JSON text of the payload
        pa.field("checksum", pa.string(), nullable=False),
        pa.field("checksum_valid", pa.bool_(), nullable=False),
        pa.field("source_file", pa.string(), nullable=False),  # relative to the log directory
        pa.field("source_line", pa.int64(), nullable=False),  # 1-based
    ]
)

#: The Supabase snapshot: STORE_SCHEMA plus what Parity derives from it.
SUPABASE_SNAPSHOT_SCHEMA = pa.schema(
    [
        *[f for f in STORE_SCHEMA if f.name != "category"],
        pa.field("category", pa.string(), nullable=False),  # effective
        pa.field("declared_category", pa.string()),
        pa.field("unclassified", pa.bool_(), nullable=False),
        pa.field("checksum_valid", pa.bool_(), nullable=False),
    ]
)

#: One quarantined log line.
QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("source_line", pa.int64(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string(), nullable=False),
        pa.field(
            "raw", pa.binary(), nullable=False
        ),  # the line's bytes as read (capped, see wslog)
    ]
)

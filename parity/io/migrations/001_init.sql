-- Parity 001: the four tables of contract §4, their indexes, row-level security.
--
-- Placeholders in braces are identifiers (or, where compared with the catalogs, string
-- literals) that parity.migrate composes with psycopg.sql, so every name is quoted.
-- Each statement is idempotent: the file may be run again, or pasted into the Supabase
-- SQL editor, without changing anything that is already in place.

CREATE TABLE IF NOT EXISTS {schema}.{events} (
    stream      text        NOT NULL,
    seq         bigint      NOT NULL,
    event_type  text,
    category    text,
    emitted_at  timestamptz,
    received_at timestamptz DEFAULT now(),
    payload     jsonb,
    checksum    text
);

-- unique (stream, seq), unless the table already has a unique key on exactly those columns.
-- A table created earlier by someone else may hold duplicate keys: then the constraint is
-- not added (a warning says so) and Parity reports the duplicates instead of hiding them.
-- The ADD runs in a subtransaction, so a failed attempt costs one index build and leaves
-- nothing behind.
DO $parity$
BEGIN
    IF NOT EXISTS (
        SELECT 1
        FROM pg_index i
        JOIN pg_class c ON c.oid = i.indrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = {schema_name}
          AND c.relname = {events_name}
          AND i.indisunique
          AND i.indisvalid
          AND i.indpred IS NULL
          AND i.indnkeyatts = 2
          AND (SELECT array_agg(a.attname::text ORDER BY a.attname::text)
               FROM pg_attribute a
               WHERE a.attrelid = c.oid AND a.attnum IN (i.indkey[0], i.indkey[1]))
              = ARRAY['seq', 'stream']
    ) THEN
        BEGIN
            ALTER TABLE {schema}.{events} ADD CONSTRAINT {events_key} UNIQUE (stream, seq);
        EXCEPTION WHEN unique_violation THEN
            RAISE WARNING 'parity: %.% holds duplicate (stream, seq) rows; left without the unique constraint (duplicates will be reported)',
                quote_ident({schema_name}), quote_ident({events_name});
        END;
    END IF;
END
$parity$;

CREATE INDEX IF NOT EXISTS {events_emitted_at_idx} ON {schema}.{events} (emitted_at);

CREATE TABLE IF NOT EXISTS {schema}.{flags} (
    name       text PRIMARY KEY,
    value      jsonb NOT NULL,
    updated_at timestamptz,
    updated_by text,
    reason     text
);

CREATE TABLE IF NOT EXISTS {schema}.{audit} (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    flag       text NOT NULL,
    old_value  jsonb,
    new_value  jsonb NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now(),
    actor      text NOT NULL,
    reason     text NOT NULL,
    evidence   jsonb
);

CREATE INDEX IF NOT EXISTS {audit_flag_changed_at_idx} ON {schema}.{audit} (flag, changed_at);

CREATE TABLE IF NOT EXISTS {schema}.{metrics} (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sampled_at          timestamptz NOT NULL,
    producer            text NOT NULL,
    window_s            integer NOT NULL,
    attempts            integer NOT NULL,
    failures            integer NOT NULL,
    latency_p50_ms      double precision,
    latency_p95_ms      double precision,
    connection_attempts integer NOT NULL DEFAULT 0,
    connection_failures integer NOT NULL DEFAULT 0
);

CREATE INDEX IF NOT EXISTS {metrics_sampled_at_idx} ON {schema}.{metrics} (sampled_at);

-- Without policies, only the owner and roles with BYPASSRLS (Supabase's service_role)
-- see rows; 002 adds policies where Supabase's roles exist.
ALTER TABLE {schema}.{events} ENABLE ROW LEVEL SECURITY;
ALTER TABLE {schema}.{flags} ENABLE ROW LEVEL SECURITY;
ALTER TABLE {schema}.{audit} ENABLE ROW LEVEL SECURITY;
ALTER TABLE {schema}.{metrics} ENABLE ROW LEVEL SECURITY;

-- Parity 003: the control plane's write function, and least privilege on Supabase.
--
-- {set_flags_fn} is the one way flags change, over PostgreSQL and over the Supabase REST
-- API (PostgREST exposes it as /rpc/...): in one transaction, under the flags' advisory
-- lock, it reads the values in force, refuses a stale compare-and-set, writes only what
-- changes and appends one audit row per changed flag. SECURITY INVOKER (the default): the
-- caller's own privileges and row-level security apply.
--
-- Least privilege: anon and authenticated get nothing on Parity's tables, sequences and
-- function (Supabase's default privileges grant them everything new in public; PostgreSQL
-- grants EXECUTE on functions to PUBLIC). Read access for a dashboard is an explicit,
-- documented opt-in (README, "Running on a real Supabase project"). Role-specific parts
-- apply only where the role exists.

CREATE OR REPLACE FUNCTION {schema}.{set_flags_fn}(
    p_changes    jsonb,
    p_actor      text,
    p_reason     text,
    p_defaults   jsonb,
    p_evidence   jsonb DEFAULT NULL,
    p_expected   jsonb DEFAULT NULL,
    p_changed_at timestamptz DEFAULT NULL
) RETURNS jsonb
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $parity$
DECLARE
    v_current jsonb;
    v_stale   jsonb;
    v_written jsonb := '[]'::jsonb;
    v_at      timestamptz := coalesce(p_changed_at, now());
    v_name    text;
    v_new     jsonb;
    v_old     jsonb;
    v_id      bigint;
BEGIN
    IF coalesce(btrim(p_actor), '') = '' OR coalesce(btrim(p_reason), '') = '' THEN
        RAISE EXCEPTION 'parity: a flag change needs an actor and a reason'
            USING ERRCODE = '22023';
    END IF;
    IF jsonb_typeof(p_changes) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'parity: p_changes must be a JSON object of flag name to value'
            USING ERRCODE = '22023';
    END IF;
    PERFORM pg_advisory_xact_lock({lock_key});
    SELECT coalesce(p_defaults, '{{}}'::jsonb) || coalesce(jsonb_object_agg(f.name, f.value), '{{}}'::jsonb)
      INTO v_current
      FROM {schema}.{flags} f;
    IF p_expected IS NOT NULL THEN
        SELECT jsonb_object_agg(e.key, coalesce(v_current -> e.key, 'null'::jsonb))
          INTO v_stale
          FROM jsonb_each(p_expected) e
         WHERE coalesce(v_current -> e.key, 'null'::jsonb) IS DISTINCT FROM e.value;
        IF v_stale IS NOT NULL THEN
            -- PT409: PostgREST answers HTTP 409 with this code; psycopg sees the SQLSTATE.
            RAISE EXCEPTION 'parity: flags changed since they were read (now %)', v_stale
                USING ERRCODE = 'PT409';
        END IF;
    END IF;
    FOR v_name, v_new IN SELECT c.key, c.value FROM jsonb_each(p_changes) c ORDER BY c.key LOOP
        v_old := coalesce(v_current -> v_name, 'null'::jsonb);
        CONTINUE WHEN v_old = v_new;
        INSERT INTO {schema}.{flags} AS f (name, value, updated_at, updated_by, reason)
        VALUES (v_name, v_new, v_at, p_actor, p_reason)
        ON CONFLICT (name) DO UPDATE
            SET value = excluded.value, updated_at = excluded.updated_at,
                updated_by = excluded.updated_by, reason = excluded.reason;
        INSERT INTO {schema}.{audit} (flag, old_value, new_value, changed_at, actor, reason, evidence)
        VALUES (v_name, v_old, v_new, v_at, p_actor, p_reason, p_evidence)
        RETURNING id INTO v_id;
        v_written := v_written || jsonb_build_array(jsonb_build_object(
            'id', v_id, 'flag', v_name, 'old_value', v_old, 'new_value', v_new,
            'changed_at', v_at, 'actor', p_actor, 'reason', p_reason, 'evidence', p_evidence));
    END LOOP;
    RETURN v_written;
END
$parity$;

REVOKE ALL ON FUNCTION {schema}.{set_flags_fn}(jsonb, text, text, jsonb, jsonb, jsonb, timestamptz)
    FROM PUBLIC;

-- A dashboard's read access is opt-in: the policies 002 gave authenticated are removed.
DROP POLICY IF EXISTS parity_authenticated_read ON {schema}.{events};
DROP POLICY IF EXISTS parity_authenticated_read ON {schema}.{flags};

DO $parity$
DECLARE
    v_role text;
    v_sequence text;
BEGIN
    FOREACH v_role IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = v_role);
        EXECUTE format('REVOKE ALL ON %s, %s, %s, %s, %s FROM %I',
            {events_regclass}, {flags_regclass}, {audit_regclass}, {metrics_regclass},
            {migrations_regclass}, v_role);
        EXECUTE format('REVOKE ALL ON FUNCTION %s(jsonb, text, text, jsonb, jsonb, jsonb, timestamptz) FROM %I',
            {set_flags_fn_text}, v_role);
        FOR v_sequence IN
            SELECT pg_get_serial_sequence(t, 'id')
            FROM unnest(ARRAY[{audit_regclass}, {metrics_regclass}]) AS t
        LOOP
            CONTINUE WHEN v_sequence IS NULL;
            EXECUTE format('REVOKE ALL ON SEQUENCE %s FROM %I', v_sequence, v_role);
        END LOOP;
    END LOOP;

    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        GRANT EXECUTE ON FUNCTION {schema}.{set_flags_fn}(jsonb, text, text, jsonb, jsonb, jsonb, timestamptz)
            TO service_role;
    END IF;
END
$parity$;

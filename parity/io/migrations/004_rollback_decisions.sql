-- Parity 004: every rollback decision, applied or only decided in dry-run mode, audited.
--
-- {decisions} keeps one row per decision of the rollback job (and of `parity rollback`):
-- when, whether it was applied or a dry run ("would roll back"), why, the flags it set or
-- would set, who decided, and the evidence. It is not part of the flag history: the cohort
-- of every instant is computed from {audit}, and a dry run changes no flag, so it leaves
-- no row there. Append-only, written through {record_decision_fn}, the one way in over
-- PostgreSQL and over the Supabase REST API (PostgREST exposes it as /rpc/...).
--
-- SECURITY DEFINER: it writes as the migrating role, so row-level security (on, with no
-- policy) keeps every API role out of the table itself; EXECUTE is granted to service_role
-- only. anon and authenticated get nothing.

CREATE TABLE IF NOT EXISTS {schema}.{decisions} (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    decided_at  timestamptz NOT NULL DEFAULT now(),
    mode        text        NOT NULL CHECK (mode IN ('dry_run', 'applied')),
    reason      text        NOT NULL CHECK (btrim(reason) <> ''),
    changes     jsonb       NOT NULL,
    source      text        NOT NULL CHECK (btrim(source) <> ''),
    evidence    jsonb
);

CREATE INDEX IF NOT EXISTS {decisions_decided_at_idx} ON {schema}.{decisions} (decided_at);

ALTER TABLE {schema}.{decisions} ENABLE ROW LEVEL SECURITY;

CREATE OR REPLACE FUNCTION {schema}.{record_decision_fn}(
    p_mode       text,
    p_reason     text,
    p_changes    jsonb,
    p_source     text,
    p_evidence   jsonb DEFAULT NULL,
    p_decided_at timestamptz DEFAULT NULL
) RETURNS jsonb
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $parity$
DECLARE
    v_row {schema}.{decisions};
BEGIN
    IF p_mode IS NULL OR p_mode NOT IN ('dry_run', 'applied') THEN
        RAISE EXCEPTION 'parity: a rollback decision is dry_run or applied, not %', p_mode
            USING ERRCODE = '22023';
    END IF;
    IF coalesce(btrim(p_reason), '') = '' OR coalesce(btrim(p_source), '') = '' THEN
        RAISE EXCEPTION 'parity: a rollback decision needs a reason and a source'
            USING ERRCODE = '22023';
    END IF;
    INSERT INTO {schema}.{decisions} (decided_at, mode, reason, changes, source, evidence)
    VALUES (coalesce(p_decided_at, now()), p_mode, p_reason, coalesce(p_changes, '{{}}'::jsonb),
            p_source, p_evidence)
    RETURNING * INTO v_row;
    RETURN to_jsonb(v_row);
END
$parity$;

REVOKE ALL ON FUNCTION {schema}.{record_decision_fn}(text, text, jsonb, text, jsonb, timestamptz)
    FROM PUBLIC;

DO $parity$
DECLARE
    v_role text;
    v_sequence text;
BEGIN
    FOREACH v_role IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = v_role);
        EXECUTE format('REVOKE ALL ON %s FROM %I', {decisions_regclass}, v_role);
        EXECUTE format('REVOKE ALL ON FUNCTION %s(text, text, jsonb, text, jsonb, timestamptz) FROM %I',
            {record_decision_fn_text}, v_role);
        v_sequence := pg_get_serial_sequence({decisions_regclass}, 'id');
        IF v_sequence IS NOT NULL THEN
            EXECUTE format('REVOKE ALL ON SEQUENCE %s FROM %I', v_sequence, v_role);
        END IF;
    END LOOP;

    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        GRANT EXECUTE ON FUNCTION {schema}.{record_decision_fn}(text, text, jsonb, text, jsonb, timestamptz)
            TO service_role;
        EXECUTE format('GRANT SELECT ON %s TO service_role', {decisions_regclass});
    END IF;
END
$parity$;

-- Parity 002: what only a Supabase project has: its API roles and the Realtime publication.
-- Every part is guarded, so on plain PostgreSQL this file changes nothing.
--
-- service_role (Parity's server-side key) reads and writes everything, except that the
-- audit table is append-only. authenticated (a signed-in dashboard) may read events and
-- flags, nothing else. anon gets nothing: Supabase's default privileges grant it every
-- new table in public, so they are revoked here as well as blocked by RLS.

DO $parity$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
        REVOKE ALL ON {schema}.{events}, {schema}.{flags}, {schema}.{audit}, {schema}.{metrics}
            FROM anon;
    END IF;

    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        GRANT USAGE ON SCHEMA {schema} TO service_role;
        GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}.{events}, {schema}.{flags}, {schema}.{metrics}
            TO service_role;
        REVOKE UPDATE, DELETE, TRUNCATE ON {schema}.{audit} FROM service_role;
        GRANT SELECT, INSERT ON {schema}.{audit} TO service_role;
        IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE schemaname = {schema_name}
                       AND tablename = {events_name} AND policyname = 'parity_service_role_all') THEN
            CREATE POLICY parity_service_role_all ON {schema}.{events}
                FOR ALL TO service_role USING (true) WITH CHECK (true);
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE schemaname = {schema_name}
                       AND tablename = {flags_name} AND policyname = 'parity_service_role_all') THEN
            CREATE POLICY parity_service_role_all ON {schema}.{flags}
                FOR ALL TO service_role USING (true) WITH CHECK (true);
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE schemaname = {schema_name}
                       AND tablename = {audit_name} AND policyname = 'parity_service_role_read') THEN
            CREATE POLICY parity_service_role_read ON {schema}.{audit}
                FOR SELECT TO service_role USING (true);
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE schemaname = {schema_name}
                       AND tablename = {audit_name} AND policyname = 'parity_service_role_append') THEN
            CREATE POLICY parity_service_role_append ON {schema}.{audit}
                FOR INSERT TO service_role WITH CHECK (true);
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE schemaname = {schema_name}
                       AND tablename = {metrics_name} AND policyname = 'parity_service_role_all') THEN
            CREATE POLICY parity_service_role_all ON {schema}.{metrics}
                FOR ALL TO service_role USING (true) WITH CHECK (true);
        END IF;
    END IF;

    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
        REVOKE ALL ON {schema}.{events}, {schema}.{flags}, {schema}.{audit}, {schema}.{metrics}
            FROM authenticated;
        GRANT USAGE ON SCHEMA {schema} TO authenticated;
        GRANT SELECT ON {schema}.{events}, {schema}.{flags} TO authenticated;
        IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE schemaname = {schema_name}
                       AND tablename = {events_name} AND policyname = 'parity_authenticated_read') THEN
            CREATE POLICY parity_authenticated_read ON {schema}.{events}
                FOR SELECT TO authenticated USING (true);
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE schemaname = {schema_name}
                       AND tablename = {flags_name} AND policyname = 'parity_authenticated_read') THEN
            CREATE POLICY parity_authenticated_read ON {schema}.{flags}
                FOR SELECT TO authenticated USING (true);
        END IF;
    END IF;

    -- Realtime streams the events table to dashboards (MONITORING_DASHBOARD_REALTIME_UPDATES).
    IF EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'supabase_realtime' AND NOT puballtables)
       AND NOT EXISTS (SELECT 1 FROM pg_publication_tables WHERE pubname = 'supabase_realtime'
                       AND schemaname = {schema_name} AND tablename = {events_name}) THEN
        ALTER PUBLICATION supabase_realtime ADD TABLE {schema}.{events};
    END IF;
END
$parity$;

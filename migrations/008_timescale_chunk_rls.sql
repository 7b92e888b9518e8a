-- TimescaleDB copies a hypertable's grants onto each chunk but not its row-level security
-- ("RLS commands should not recurse to chunks"), so a chunk queried directly
-- (_timescaledb_internal._hyper_…) would show every tenant's rows. This gives every chunk of
-- sensor_data_raw the same RLS and policy as its parent: now for the existing chunks, and for each
-- new chunk from an event trigger at the end of the DDL that created it (TimescaleDB's chunk
-- creation issues an ALTER TABLE on the new chunk, which fires ddl_command_end in the creating
-- transaction, so a chunk is never visible unprotected). On vanilla PostgreSQL the partitions get
-- their policy from ensure_sensor_partitions and this migration does nothing.
--
-- Checked by hand against TimescaleDB 2.28.3 on PostgreSQL 15 (built from source; no package exists
-- on these machines): see docs/data-model.md. Event triggers need a superuser, as migrations do.

CREATE OR REPLACE FUNCTION millrace.secure_sensor_chunks() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
  ch      regclass;
  secured integer := 0;
  policy  constant text := '(tenant_id = (SELECT millrace.visible_tenant_id()))';
BEGIN
  IF current_setting('millrace.securing_chunks', true) = 'on' THEN
    RETURN 0; -- our own ALTER/CREATE POLICY below fire the event trigger again
  END IF;
  PERFORM set_config('millrace.securing_chunks', 'on', true);
  FOR ch IN
    SELECT c.oid::regclass FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'public.sensor_data_raw'::regclass
      AND (NOT c.relrowsecurity OR NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname = 'tenant_isolation'))
  LOOP
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', ch);
    IF NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = ch AND p.polname = 'tenant_isolation') THEN
      EXECUTE format('CREATE POLICY tenant_isolation ON %s USING %s WITH CHECK %s', ch, policy, policy);
    END IF;
    secured := secured + 1;
  END LOOP;
  PERFORM set_config('millrace.securing_chunks', 'off', true);
  RETURN secured;
END
$$;
ALTER FUNCTION millrace.secure_sensor_chunks() OWNER TO millrace_owner;

CREATE OR REPLACE FUNCTION millrace.on_ddl_secure_chunks() RETURNS event_trigger
LANGUAGE plpgsql AS $$
BEGIN
  -- One catalog query per DDL statement (DDL is rare); new chunks are caught whatever command made them.
  PERFORM millrace.secure_sensor_chunks();
END
$$;

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
    RETURN;
  END IF;
  PERFORM millrace.secure_sensor_chunks();
  IF NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'millrace_secure_sensor_chunks') THEN
    CREATE EVENT TRIGGER millrace_secure_sensor_chunks ON ddl_command_end EXECUTE FUNCTION millrace.on_ddl_secure_chunks();
  END IF;
END
$$;

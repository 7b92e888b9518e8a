-- The sink's bulk path (sinks/timescale/writer.ts, docs/benchmarks.md "Issue #7"): a batch's rows
-- are COPYd straight into sensor_data_raw. COPY FROM is refused on a table with row-level security
-- for a role subject to it, so the COPY runs as millrace_loader:
--   * NOLOGIN, granted to millrace_writer, which switches to it with SET LOCAL ROLE for the COPY
--     of one batch (the role ends with the transaction);
--   * BYPASSRLS, and INSERT on sensor_data_raw its only privilege: it cannot read any row, nor
--     write any other table;
--   * held to the transaction's tenant context by the CHECK below: as millrace_loader, a row is
--     accepted only if its tenant_id equals app.current_tenant_id (set with a bound parameter by the
--     writer, as for RLS). An unset or malformed context is an error, never a pass. For every other
--     role the check is true, so migrations, moves, restores and analysts are unaffected; it does
--     not depend on anything but the row and the session, and CASE fixes the evaluation order.
-- Creating a BYPASSRLS role needs a superuser (as running the migrations does on the local stack;
-- in production, the operator's migration role). Adding the constraint scans the table once.
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'millrace_loader') THEN
    CREATE ROLE millrace_loader NOLOGIN BYPASSRLS;
  END IF;
END
$$;
ALTER ROLE millrace_loader NOLOGIN BYPASSRLS;
GRANT millrace_loader TO millrace_writer;
GRANT INSERT ON sensor_data_raw TO millrace_loader;

ALTER TABLE sensor_data_raw DROP CONSTRAINT IF EXISTS sensor_data_raw_loader_tenant;
ALTER TABLE sensor_data_raw ADD CONSTRAINT sensor_data_raw_loader_tenant CHECK (
  CASE WHEN current_user = 'millrace_loader'
    THEN tenant_id = current_setting('app.current_tenant_id')::uuid
    ELSE true
  END
);

-- Raw readings. With the timescaledb extension available: a hypertable (1-day chunks).
-- On vanilla PostgreSQL: native range partitioning by day, partitions created ahead of time by
-- millrace.ensure_sensor_partitions() (no DEFAULT partition: a reading for a day without a
-- partition is an error the worker resolves by creating it, never a silent catch-all).
--
-- Row-level security is enabled on the parent and on every partition (a partition queried directly
-- is its own table); the same policy text is used everywhere.
DO $$
DECLARE
  -- TimescaleDB only when it is installed AND preloaded (CREATE EXTENSION fails otherwise), unless
  -- the session says millrace.disable_timescaledb = on.
  use_timescale boolean := EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')
                           AND current_setting('shared_preload_libraries') LIKE '%timescaledb%'
                           AND coalesce(current_setting('millrace.disable_timescaledb', true), '') <> 'on';
BEGIN
  IF to_regclass('public.sensor_data_raw') IS NOT NULL THEN
    RETURN;
  END IF;
  IF use_timescale THEN
    CREATE EXTENSION IF NOT EXISTS timescaledb;
    CREATE TABLE public.sensor_data_raw (
      time         timestamptz NOT NULL,
      tenant_id    uuid        NOT NULL,
      equipment_id text        NOT NULL,
      facility_id  text        NOT NULL,
      temperature  real,
      vibration    real,
      pressure     real,
      PRIMARY KEY (time, tenant_id, equipment_id)
    );
    PERFORM create_hypertable('public.sensor_data_raw', 'time', chunk_time_interval => interval '1 day');
  ELSE
    CREATE TABLE public.sensor_data_raw (
      time         timestamptz NOT NULL,
      tenant_id    uuid        NOT NULL,
      equipment_id text        NOT NULL,
      facility_id  text        NOT NULL,
      temperature  real,
      vibration    real,
      pressure     real,
      PRIMARY KEY (time, tenant_id, equipment_id)
    ) PARTITION BY RANGE (time);
  END IF;
END
$$;

ALTER TABLE sensor_data_raw OWNER TO millrace_owner;
ALTER TABLE sensor_data_raw ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON sensor_data_raw;
CREATE POLICY tenant_isolation ON sensor_data_raw
  USING (tenant_id = (SELECT millrace.visible_tenant_id()))
  WITH CHECK (tenant_id = (SELECT millrace.visible_tenant_id()));
GRANT SELECT, INSERT ON sensor_data_raw TO millrace_writer;
GRANT SELECT ON sensor_data_raw TO millrace_analyst;

-- Create the daily partitions covering [p_from, p_to] (UTC days) that do not exist yet; returns how
-- many it created. Idempotent and safe to call concurrently (serialised by an advisory lock).
-- On TimescaleDB it does nothing (chunks are created by the extension).
CREATE OR REPLACE FUNCTION millrace.ensure_sensor_partitions(p_from timestamptz, p_to timestamptz)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
  d       date;
  part    text;
  created integer := 0;
  policy  constant text := '(tenant_id = (SELECT millrace.visible_tenant_id()))';
BEGIN
  IF (SELECT relkind FROM pg_class WHERE oid = 'public.sensor_data_raw'::regclass) <> 'p' THEN
    RETURN 0;
  END IF;
  IF p_to < p_from THEN
    RAISE EXCEPTION 'ensure_sensor_partitions: p_to (%) is before p_from (%)', p_to, p_from;
  END IF;
  IF p_to - p_from > interval '3660 days' THEN
    RAISE EXCEPTION 'ensure_sensor_partitions: refusing to create more than 3660 daily partitions at once';
  END IF;
  PERFORM pg_advisory_xact_lock(hashtext('millrace.ensure_sensor_partitions'));
  FOR d IN
    SELECT g::date FROM generate_series((p_from AT TIME ZONE 'UTC')::date, (p_to AT TIME ZONE 'UTC')::date, interval '1 day') AS g
  LOOP
    part := format('sensor_data_raw_p%s', to_char(d, 'YYYYMMDD'));
    CONTINUE WHEN to_regclass(format('public.%I', part)) IS NOT NULL;
    EXECUTE format('CREATE TABLE public.%I PARTITION OF public.sensor_data_raw FOR VALUES FROM (%L) TO (%L)',
                   part, (d::timestamp AT TIME ZONE 'UTC'), ((d + 1)::timestamp AT TIME ZONE 'UTC'));
    EXECUTE format('ALTER TABLE public.%I ENABLE ROW LEVEL SECURITY', part);
    EXECUTE format('CREATE POLICY tenant_isolation ON public.%I USING %s WITH CHECK %s', part, policy, policy);
    EXECUTE format('GRANT SELECT ON public.%I TO millrace_analyst', part);
    created := created + 1;
  END LOOP;
  RETURN created;
END
$$;
ALTER FUNCTION millrace.ensure_sensor_partitions(timestamptz, timestamptz) OWNER TO millrace_owner;
GRANT EXECUTE ON FUNCTION millrace.ensure_sensor_partitions(timestamptz, timestamptz) TO millrace_writer;

-- The maintenance step: partitions from p_behind ago to p_ahead ahead of now (run by `millrace
-- partitions maintain`, by migrate, and periodically by every worker).
CREATE OR REPLACE FUNCTION millrace.maintain_sensor_partitions(p_behind interval DEFAULT interval '2 days',
                                                              p_ahead interval DEFAULT interval '14 days')
RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
  SELECT millrace.ensure_sensor_partitions(now() - p_behind, now() + p_ahead)
$$;
ALTER FUNCTION millrace.maintain_sensor_partitions(interval, interval) OWNER TO millrace_owner;
GRANT EXECUTE ON FUNCTION millrace.maintain_sensor_partitions(interval, interval) TO millrace_writer;

SELECT millrace.maintain_sensor_partitions();

-- Analysts' convenient view: hourly aggregates. security_invoker makes the caller's row-level
-- security apply through the view (a plain view would run with its owner's rights).
CREATE OR REPLACE VIEW sensor_data_hourly WITH (security_invoker = true) AS
  SELECT tenant_id, equipment_id, date_trunc('hour', time) AS hour,
         count(*) AS readings,
         avg(temperature) AS avg_temperature, max(temperature) AS max_temperature,
         avg(vibration) AS avg_vibration, max(vibration) AS max_vibration,
         avg(pressure) AS avg_pressure, max(pressure) AS max_pressure
  FROM sensor_data_raw
  GROUP BY tenant_id, equipment_id, date_trunc('hour', time);
ALTER VIEW sensor_data_hourly OWNER TO millrace_owner;
GRANT SELECT ON sensor_data_hourly TO millrace_analyst, millrace_writer;

-- SensorReading v2 adds a nullable measure, flow_rate (litres per minute; schemas/sensor-reading.avsc).
-- Readings published with v1 decode with flow_rate null (Avro schema resolution), so old rows and
-- old producers need nothing.
--
-- ADD COLUMN of a nullable column without a default is a catalog-only change in PostgreSQL (no
-- table rewrite, a brief ACCESS EXCLUSIVE lock): safe on a large table. It reaches every partition
-- of the vanilla-PostgreSQL layout and every chunk of a TimescaleDB hypertable. The column comes
-- last, as in the Parquet files (docs/data-model.md).
ALTER TABLE sensor_data_raw ADD COLUMN IF NOT EXISTS flow_rate real;

-- The analysts' hourly view gains the measure (CREATE OR REPLACE VIEW may only add columns at the
-- end: the existing ones keep their names, types and order).
CREATE OR REPLACE VIEW sensor_data_hourly WITH (security_invoker = true) AS
  SELECT tenant_id, equipment_id, date_trunc('hour', time) AS hour,
         count(*) AS readings,
         avg(temperature) AS avg_temperature, max(temperature) AS max_temperature,
         avg(vibration) AS avg_vibration, max(vibration) AS max_vibration,
         avg(pressure) AS avg_pressure, max(pressure) AS max_pressure,
         avg(flow_rate) AS avg_flow_rate, min(flow_rate) AS min_flow_rate
  FROM sensor_data_raw
  GROUP BY tenant_id, equipment_id, date_trunc('hour', time);

-- Workers refuse a database whose schema is older than their code (migrations/migrate.ts
-- assertMigrated): they read which migrations are applied.
GRANT SELECT ON public.millrace_schema_migrations TO millrace_writer;

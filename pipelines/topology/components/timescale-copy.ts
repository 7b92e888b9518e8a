/** `type: timescale_copy` — validated readings into TimescaleDB with COPY, one transaction per batch, per tenant. */
import { z } from "zod";
import { defineComponent } from "../component-spec.ts";
import { duration, integer } from "../fields.ts";

const config = z.strictObject({
  pool_size: integer({ min: 1, max: 100 }).prefault(4).describe("Database connections this worker keeps open for writing."),
  statement_timeout: duration({ min: 1_000 })
    .prefault("60s")
    .describe("A COPY running longer than this is cancelled by the server and the batch retried."),
  partition_maintenance: duration({ min: 1_000 })
    .prefault("1h")
    .describe(
      "How often the worker runs the time-partition maintenance step (vanilla PostgreSQL: the daily partitions of sensor_data_raw from 2 days behind to 14 days ahead) on every database it writes to, besides once at start. A failure is logged and counted (millrace_partition_maintenance_runs_total{outcome=\"failed\"}) and retried at the next interval.",
    ),
});

export const timescaleCopy = defineComponent({
  type: "timescale_copy",
  kind: "sink",
  summary:
    "Writes validated readings to TimescaleDB with COPY, one transaction per batch (rows, dead letters and offsets together) under the tenant's row-level-security context. Connection and serialization failures are retried; a row the database refuses (a data error) is rejected to the dead-letter sink and the rest of the batch is written.",
  config,
  framework: ["batch", "retry"],
  accepts: "stored_readings",
  singleton: true,
  example: {
    id: "timescale",
    entry: {
      inputs: ["thresholds"],
      batch: { max_rows: 5000, max_bytes: "4MiB" },
      retry: { initial_delay: "100ms", max_delay: "10s", factor: 2, max_retries: "unlimited" },
      pool_size: 4,
      statement_timeout: "60s",
      partition_maintenance: "1h",
    },
  },
  plan: ({ id, config: c, inputs, batch, retry }) => ({
    id,
    type: "timescale_copy",
    input: inputs[0]!,
    batch: batch!,
    retry: retry!,
    poolSize: c.pool_size,
    statementTimeoutMs: c.statement_timeout,
    partitionMaintenanceMs: c.partition_maintenance,
  }),
});

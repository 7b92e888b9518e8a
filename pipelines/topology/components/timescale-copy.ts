/** `type: timescale_copy` — validated readings into TimescaleDB with COPY, one transaction per batch, per tenant. */
import { z } from "zod";
import { defineComponent } from "../component-spec.ts";
import { duration, integer } from "../fields.ts";

const config = z.strictObject({
  pool_size: integer({ min: 1, max: 100 }).prefault(4).describe("Database connections this worker keeps open for writing."),
  statement_timeout: duration({ min: 1_000 })
    .prefault("60s")
    .describe("A COPY running longer than this is cancelled by the server and the batch retried."),
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
  }),
});

/** `type: s3_parquet` — every stored reading, in rolling Parquet files in the tenant's S3 place. */
import { z } from "zod";
import { defineComponent } from "../component-spec.ts";
import { duration, integer, size, text } from "../fields.ts";
import { bucketNameProblem } from "../../../sinks/s3-parquet/location.ts";

const config = z.strictObject({
  max_rows: integer({ min: 1, max: 10_000_000 }).prefault(100_000).describe("A file is closed when it holds this many rows."),
  max_bytes: size({ min: 1024 }).prefault("64MiB").describe("… or when its rows take about this much memory (the file itself is several times smaller)."),
  max_span: duration({ min: 0 }).prefault("1h").describe("… or when its readings span this much event time."),
  idle_flush: duration({ min: 100 }).prefault("60s").describe("… or when its oldest row has waited this long (wall clock): no reading waits unwritten longer."),
  row_group_rows: integer({ min: 1, max: 1_000_000 }).prefault(4096).describe("Rows per Parquet row group (bounds the encoder's memory)."),
  max_buffered_bytes: size({ min: 1024 })
    .prefault("256MiB")
    .describe("Rows buffered for files over all partitions of a worker: beyond about this much memory, the largest buffers are closed into files early (they then wait for upload, bounded by max_memory_bytes). Lower it (with the V8 heap limit) to bound RSS; early cuts move Parquet encoding into the ingest path and make smaller files."),
  max_pending_bytes: size({ min: 1024 }).prefault("256MiB").describe("A partition whose rows buffered plus files waiting to be uploaded pass this is paused (backpressure) until back under half; other tenants go on."),
  max_memory_bytes: size({ min: 1024 })
    .prefault("1GiB")
    .describe("Rows buffered plus files waiting to be uploaded, over all partitions of a worker (the same estimate as max_buffered_bytes): beyond it every partition that would add to it is paused until uploads bring it back under 90% — with S3 slow or down the Parquet sink's memory stays bounded whatever the number of partitions, never dropping a row. Keep it above max_buffered_bytes + max_pending_bytes, so one failing tenant (paused at max_pending_bytes) does not pause the others."),
  multipart_threshold: size({ min: 1 }).prefault("16MiB").describe("Files of at least this many bytes are uploaded as a multipart upload (8 MiB parts), smaller ones with one PutObject."),
  shared_bucket: text()
    .superRefine((v, ctx) => {
      const problem = bucketNameProblem(v);
      if (problem) ctx.addIssue({ code: "custom", message: problem });
    })
    .prefault("millrace-shared").describe("Bucket of multi-tenant tenants (each under its own prefix); $MILLRACE_S3_SHARED_BUCKET overrides it."),
  key_prefix: z
    .string()
    .regex(/^([a-z0-9_-]+\/)*$/, "a key prefix is empty or segments of [a-z0-9_-] each ending in /")
    .prefault("")
    .describe("Key prefix before the tenant id ('' or e.g. 'raw/')."),
});

export const s3Parquet = defineComponent({
  type: "s3_parquet",
  kind: "sink",
  summary:
    "Writes every reading the database stored into Parquet files on S3: a shared bucket with a prefix per tenant, or the tenant's dedicated bucket with its KMS key. Each file's offset range is recorded in PostgreSQL before it is uploaded, so a replay after a crash rebuilds the same object; Kafka offsets are committed only when both PostgreSQL and S3 hold the records.",
  config,
  framework: ["retry"],
  accepts: "stored_readings",
  singleton: true,
  example: {
    id: "parquet",
    entry: { inputs: ["thresholds"], max_rows: 100000, max_bytes: "64MiB", max_span: "1h", idle_flush: "60s" },
  },
  plan: ({ id, config: c, inputs, retry }) => ({
    id,
    type: "s3_parquet",
    input: inputs[0]!,
    retry: retry!,
    maxRows: c.max_rows,
    maxBytes: c.max_bytes,
    maxSpanMs: c.max_span,
    idleFlushMs: c.idle_flush,
    rowGroupRows: c.row_group_rows,
    maxBufferedBytes: c.max_buffered_bytes,
    maxPendingBytes: c.max_pending_bytes,
    maxMemoryBytes: c.max_memory_bytes,
    multipartThreshold: c.multipart_threshold,
    sharedBucket: c.shared_bucket,
    keyPrefix: c.key_prefix,
  }),
});

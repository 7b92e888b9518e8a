/**
 * The Parquet stage's memory bound with S3 failing, over many partitions (docs/parquet.md, "Memory"):
 * rows buffered plus files waiting to be uploaded, over all partitions, stay under
 * `max_memory_bytes` (plus the one chunk appended after the last check) while every upload fails,
 * partitions are paused instead, and once the bucket exists everything is uploaded — nothing dropped.
 *
 * The stage is driven the way the worker drives it: before and after each chunk, a partition over
 * the limit is paused (`overLimit`) and resumed by `whenDrained`. PostgreSQL and S3 are the real
 * stack's; the tenant's dedicated bucket does not exist at first, so every upload fails.
 */
import { randomUUID } from "node:crypto";
import { CreateBucketCommand, ListObjectsV2Command, S3Client } from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../lib/log.ts";
import { PipelineMetrics } from "../../lib/metrics.ts";
import type { StoredReading } from "../../pipelines/reading.ts";
import { ParquetStage } from "../../pipelines/runtime/parquet-stage.ts";
import type { SinkPlan } from "../../pipelines/topology/plan.ts";
import { estimateRowBytes } from "../../sinks/s3-parquet/roller.ts";
import { createTestDatabase, insertTenant, type TestDatabase } from "../helpers/db.ts";
import { stackS3Client } from "../helpers/s3.ts";
import { waitUntil } from "../helpers/wait.ts";
import { testPlan } from "../helpers/worker.ts";

const PARTITIONS = 12;
const CHUNKS = 30;
const CHUNK_ROWS = 50;
const BOUND = 60_000;

describe("Parquet stage memory with S3 failing", () => {
  let db: TestDatabase;
  let s3: S3Client;
  let stage: ParquetStage | undefined;

  beforeAll(async () => {
    db = await createTestDatabase();
    s3 = stackS3Client();
  });
  afterAll(async () => {
    await stage?.close(5000);
    s3?.destroy();
    await db?.drop();
  });

  it("buffered + pending bytes over all partitions never pass max_memory_bytes (+ one chunk); nothing is dropped once S3 works", async () => {
    const tenant = randomUUID();
    const bucket = `millrace-m-${tenant.slice(0, 8)}`; // not created yet: every upload fails
    await insertTenant(db.admin, { tenantId: tenant });
    await db.admin.query("UPDATE tenants SET deployment_type = 'single-tenant', storage_mode = 'dedicated', storage_bucket = $2, kms_key_id = 'test-key' WHERE tenant_id = $1", [tenant, bucket]);
    const topic = `sensor-data-${tenant}`;
    const plan = testPlan().sinks.find((s) => s.type === "s3_parquet") as Extract<SinkPlan, { type: "s3_parquet" }>;
    Object.assign(plan, {
      maxRows: 400,
      maxBytes: 1024 ** 2,
      idleFlushMs: 200,
      maxBufferedBytes: 20_000,
      maxPendingBytes: 40_000, // per partition: alone, 12 partitions could hold 480 kB
      maxMemoryBytes: BOUND,
      retry: { ...plan.retry, initialDelayMs: 50, maxDelayMs: 400 },
    });
    const lost: string[] = [];
    stage = new ParquetStage(plan, db.admin, () => db.admin, "memory-test", silentLogger, new PipelineMetrics(), (t, p) => lost.push(`${t}[${p}]`));
    await stage.start();
    for (let p = 0; p < PARTITIONS; p++) expect(await stage.assign(topic, p, tenant, 0)).toBeUndefined();

    const rowsOf = (p: number, chunk: number): StoredReading[] =>
      Array.from({ length: CHUNK_ROWS }, (_, i) => {
        const offset = chunk * CHUNK_ROWS + i;
        return { offset, time: Date.UTC(2024, 5, 1) + offset * 1000, tenantId: tenant, equipmentId: `eq-${p}`, facilityId: "fac-01", temperature: 20, vibration: offset, pressure: null, flow_rate: null };
      });
    const chunkBytes = rowsOf(0, 0).reduce((n, r) => n + estimateRowBytes(r), 0);
    const next = new Array<number>(PARTITIONS).fill(0); // next chunk per partition
    const paused = new Array<boolean>(PARTITIONS).fill(false);
    let peak = 0;
    let pauses = 0;
    let wake: (() => void) | undefined;
    const pause = (p: number) => {
      paused[p] = true;
      pauses++;
      stage!.whenDrained(topic, p, () => {
        paused[p] = false;
        wake?.();
      });
    };
    /** One pass over the partitions, as the worker's consumer would: check, append a chunk, check. */
    const drive = () => {
      let appended = 0;
      for (let p = 0; p < PARTITIONS; p++) {
        if (paused[p] || next[p]! >= CHUNKS) continue;
        if (stage!.overLimit(topic, p)) {
          pause(p);
          continue;
        }
        const c = next[p]!;
        stage!.append(topic, p, rowsOf(p, c), (c + 1) * CHUNK_ROWS - 1, c * CHUNK_ROWS);
        next[p] = c + 1;
        appended++;
        peak = Math.max(peak, stage!.heldBytes());
        if (stage!.overLimit(topic, p)) pause(p);
      }
      return appended;
    };
    const done = () => next.every((n) => n >= CHUNKS);
    /** Drive until every partition is done or paused; wait (bounded) for a resume when all are paused. */
    const run = async (until: () => boolean, what: string, timeoutMs: number) => {
      const deadline = Date.now() + timeoutMs;
      while (!until()) {
        if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
        if (drive() === 0) {
          // Everyone paused (or done): wait for a resume, or poll `until` again shortly.
          await new Promise<void>((res) => {
            wake = res;
            setTimeout(res, 100).unref();
          });
          wake = undefined;
        } else {
          await new Promise((res) => setImmediate(res));
        }
      }
    };

    // S3 failing: the stage stalls with every unfinished partition paused, memory under the bound.
    await run(() => stage!.failing().length > 0 && paused.every((x, p) => x || next[p]! >= CHUNKS), "every partition paused while the bucket is missing", 60_000);
    expect(done()).toBe(false); // far more input than the bound: the stall is the bound working
    expect(pauses).toBeGreaterThan(0);
    expect(stage.heldBytes()).toBeGreaterThan(0);
    expect(peak).toBeLessThanOrEqual(BOUND + chunkBytes);
    const uploaded = await db.admin.query("SELECT count(*)::int AS n FROM millrace.parquet_files WHERE consumer_group = 'memory-test' AND status = 'uploaded'");
    expect(uploaded.rows[0].n).toBe(0);
    // Without the stage-wide bound, the per-partition limits alone would have let it hold far more.
    expect(PARTITIONS * plan.maxPendingBytes).toBeGreaterThan(4 * BOUND);

    // The bucket appears: uploads drain, partitions resume, every row ends up in S3 exactly once.
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    await run(done, "every chunk appended once uploads drain", 120_000);
    await waitUntil(
      "every partition's rows uploaded",
      async () => {
        for (let p = 0; p < PARTITIONS; p++) {
          if (stage!.committed(topic, p) !== CHUNKS * CHUNK_ROWS) {
            drive();
            return false;
          }
        }
        return true;
      },
      120_000,
    );
    expect(peak).toBeLessThanOrEqual(BOUND + chunkBytes);
    expect(lost).toEqual([]);
    const files = await db.admin.query<{ partition: number; first_offset: string; last_offset: string; row_count: number; status: string }>(
      "SELECT partition, first_offset, last_offset, row_count, status FROM millrace.parquet_files WHERE consumer_group = 'memory-test' ORDER BY partition, first_offset",
    );
    expect(files.rows.every((f) => f.status === "uploaded")).toBe(true);
    for (let p = 0; p < PARTITIONS; p++) {
      const mine = files.rows.filter((f) => f.partition === p);
      expect(mine.reduce((n, f) => n + f.row_count, 0)).toBe(CHUNKS * CHUNK_ROWS);
      let expected = 0;
      for (const f of mine) {
        expect(Number(f.first_offset)).toBe(expected);
        expected = Number(f.last_offset) + 1;
      }
      expect(expected).toBe(CHUNKS * CHUNK_ROWS);
    }
    const listed = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: `${tenant}/` }));
    expect(listed.KeyCount).toBe(files.rows.length);
    expect(stage.heldBytes()).toBe(0);
  });
});

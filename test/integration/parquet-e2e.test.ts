/**
 * Parquet on S3 end to end, read back with an independent reader (pyarrow over the S3 API):
 *  - kill -9 of the worker in the middle of rolling files, then a restart: per tenant the rows in
 *    S3 equal the rows produced — every sequence once, none missing;
 *  - a single-tenant tenant's files are in its dedicated bucket, uploaded with its KMS key (the
 *    headers are recorded client-side: the local S3 accepts but does not store them), never in the
 *    shared bucket; no tenant's file is under another tenant's prefix.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { join } from "node:path";
import { CreateBucketCommand, ListObjectsV2Command, S3Client } from "@aws-sdk/client-s3";
import type { Admin, Kafka } from "kafkajs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { requireEnv } from "../../lib/env.ts";
import type { IngestWorker } from "../../pipelines/runtime/worker.ts";
import type { SensorReading } from "../../schemas/index.ts";
import { repoRoot } from "../../stack/context.ts";
import { createTenant } from "../../tenants/provision.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";
import { deleteTopics, encodeReading, endOffsets, produce, registerSensorSchema, testKafka } from "../helpers/kafka.ts";
import { pyarrowVersion, readS3DatasetWithPyarrow } from "../helpers/parquet-readers.ts";
import { startWorkerProcess, writeTopology, type WorkerProcess } from "../helpers/processes.ts";
import { waitUntil } from "../helpers/wait.ts";
import { testPlan, testWorker } from "../helpers/worker.ts";

const LOG_DIR = join(repoRoot, ".stack", "test-logs");
const SHARED = "millrace-shared";

function s3Settings() {
  return {
    endpoint: requireEnv("MILLRACE_S3_ENDPOINT"),
    region: process.env.MILLRACE_S3_REGION ?? "us-east-1",
    accessKeyId: requireEnv("MILLRACE_S3_ACCESS_KEY_ID"),
    secretAccessKey: requireEnv("MILLRACE_S3_SECRET_ACCESS_KEY"),
  };
}

describe("Parquet on S3 end to end", () => {
  let db: TestDatabase;
  let kafka: Kafka;
  let admin: Admin;
  let s3: S3Client;
  let schemaId: number;
  const procs: WorkerProcess[] = [];
  const workers: IngestWorker[] = [];
  const tenants: string[] = [];
  const base = Date.now() - 2 * 86_400_000;

  const reading = (tenant: string, seq: number): SensorReading => ({
    time: base + Math.floor(seq / 10) * 1000,
    tenant_id: tenant,
    equipment_id: `eq-${seq % 10}`,
    facility_id: "fac-01",
    temperature: 20,
    vibration: seq,
    pressure: null,
  });
  const publish = (tenant: string, from: number, n: number) =>
    produce(
      kafka,
      `sensor-data-${tenant}`,
      Array.from({ length: n }, (_, i) => ({ key: `eq-${(from + i) % 10}`, value: encodeReading(schemaId, reading(tenant, from + i)) })),
    );
  /** Every partition of the tenant's topic fully in S3 (the Parquet sink's stored offsets at the end). */
  const inS3 = async (tenant: string, group: string) => {
    const topic = `sensor-data-${tenant}`;
    const end = await endOffsets(admin, topic);
    const r = await db.admin.query<{ partition: number; next_offset: string }>(
      "SELECT partition, next_offset FROM millrace.sink_offsets WHERE sink = 's3_parquet' AND consumer_group = $1 AND topic = $2",
      [group, topic],
    );
    const got = new Map(r.rows.map((x) => [x.partition, Number(x.next_offset)]));
    return [...end].every(([p, high]) => high === 0 || got.get(p) === high);
  };
  const rowsOf = (bucket: string, tenant: string) => readS3DatasetWithPyarrow(`${bucket}/${tenant}/sensor-data/`, s3Settings()).rows;

  beforeAll(async () => {
    pyarrowVersion();
    db = await createTestDatabase();
    kafka = testKafka();
    admin = kafka.admin();
    await admin.connect();
    schemaId = await registerSensorSchema(`sensor-data-${randomUUID()}`);
    s3 = new S3Client({ ...s3Settings(), credentials: { accessKeyId: s3Settings().accessKeyId, secretAccessKey: s3Settings().secretAccessKey }, forcePathStyle: true });
  });
  afterAll(async () => {
    for (const p of procs) p.kill("SIGKILL");
    await Promise.all(procs.map((p) => p.exited));
    await Promise.allSettled(workers.map((w) => w.stop()));
    await deleteTopics(admin, (t) => tenants.some((x) => t.endsWith(x)));
    await admin.disconnect();
    s3.destroy();
    await db?.drop();
  });

  it("kill -9 in the middle of rolling files, then restart: rows in S3 equal rows produced, per tenant, exactly", async () => {
    const ts = [randomUUID(), randomUUID()];
    tenants.push(...ts);
    for (const t of ts) await createTenant(db.admin, admin, { tenantId: t, name: "roll", partitions: 3 });
    const group = `roll-${randomBytes(3).toString("hex")}`;
    const topology = writeTopology(LOG_DIR, [
      [/max_rows: 5000/, "max_rows: 300"],
      [/max_rows: 100000/, "max_rows: 400"],
      [/idle_flush: 60s/, "idle_flush: 1s"],
    ]);
    const total = 4000;
    for (const t of ts) await publish(t, 0, total);
    const w1 = startWorkerProcess({ name: "roll-w1", topology, group, tenants: ts, pgUrl: db.adminUrl, logDir: LOG_DIR });
    procs.push(w1);
    await waitUntil("some Parquet files to be uploaded", async () => {
      const r = await db.admin.query("SELECT count(*)::int AS n FROM millrace.parquet_files WHERE status = 'uploaded' AND consumer_group = $1", [group]);
      return r.rows[0].n >= 4;
    }, 120_000);
    w1.kill("SIGKILL");
    await w1.exited;
    const w2 = startWorkerProcess({ name: "roll-w2", topology, group, tenants: ts, pgUrl: db.adminUrl, logDir: LOG_DIR });
    procs.push(w2);
    for (const t of ts) await publish(t, total, 1000); // more traffic after the restart
    for (const t of ts) await waitUntil(`tenant ${t.slice(0, 8)} fully in S3`, () => inS3(t, group), 120_000);
    for (const t of ts) {
      const rows = rowsOf(SHARED, t);
      expect(rows.length).toBe(total + 1000);
      expect(new Set(rows.map((r) => r.vibration)).size).toBe(total + 1000);
      expect(rows.every((r) => r.tenant_id === t)).toBe(true);
      const pg = await db.admin.query("SELECT count(*)::int AS n FROM sensor_data_raw WHERE tenant_id = $1", [t]);
      expect(pg.rows[0].n).toBe(total + 1000); // Parquet rows = PostgreSQL rows
    }
    // The manifest has no gaps or overlaps per partition.
    const ranges = await db.admin.query<{ topic: string; partition: number; first_offset: string; last_offset: string }>(
      "SELECT topic, partition, first_offset, last_offset FROM millrace.parquet_files WHERE consumer_group = $1 ORDER BY topic, partition, first_offset",
      [group],
    );
    let prev: { topic: string; partition: number; last: number } | undefined;
    for (const r of ranges.rows) {
      if (prev && prev.topic === r.topic && prev.partition === r.partition) expect(Number(r.first_offset)).toBe(prev.last + 1);
      prev = { topic: r.topic, partition: r.partition, last: Number(r.last_offset) };
    }
    w2.kill("SIGTERM");
    expect(await w2.exited).toBe(0);
  });

  it("one tenant's failing bucket does not stall the other tenants; its partition is paused, nothing is lost, it drains when the bucket is back", async () => {
    const broken = randomUUID();
    const healthy = randomUUID();
    tenants.push(broken, healthy);
    const bucket = `millrace-b-${broken.slice(0, 8)}`; // not created yet: every upload fails
    await createTenant(db.admin, admin, { tenantId: broken, name: "broken bucket", partitions: 1, deploymentType: "single-tenant" });
    await db.admin.query("UPDATE tenants SET storage_mode = 'dedicated', storage_bucket = $2, kms_key_id = 'test-key' WHERE tenant_id = $1", [broken, bucket]);
    await createTenant(db.admin, admin, { tenantId: healthy, name: "healthy", partitions: 1 });
    const plan = testPlan({ maxRows: 100 });
    for (const x of plan.sinks) {
      if (x.type === "s3_parquet") Object.assign(x, { maxRows: 100, maxPendingBytes: 30_000, retry: { ...x.retry, initialDelayMs: 100, maxDelayMs: 1000 } });
    }
    const worker = testWorker(plan, db.adminUrl, [broken, healthy].map((t) => `sensor-data-${t}`), { stallAfterMs: 3000 });
    workers.push(worker);
    await worker.start();
    const group = worker.plan.source.consumerGroup;
    await publish(broken, 0, 3000);
    await publish(healthy, 0, 3000);
    await waitUntil("the healthy tenant fully in PostgreSQL and S3", async () => inS3(healthy, group), 90_000);
    expect(rowsOf(SHARED, healthy)).toHaveLength(3000);
    // The broken tenant is held back (paused), not dropped, and readiness says why.
    const pgBroken = await db.admin.query("SELECT count(*)::int AS n FROM sensor_data_raw WHERE tenant_id = $1", [broken]);
    expect(pgBroken.rows[0].n).toBeLessThan(3000);
    expect(worker.ready().why.join(" ")).toMatch(/Parquet uploads for sensor-data-[0-9a-f-]+\[0\] are failing/);
    // The bucket appears: everything drains, exactly once.
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    await waitUntil("the broken tenant to drain once its bucket exists", async () => inS3(broken, group), 120_000);
    const rows = rowsOf(bucket, broken);
    expect(rows).toHaveLength(3000);
    expect(new Set(rows.map((r) => r.vibration)).size).toBe(3000);
    await worker.stop();
  });

  it("a single-tenant tenant's files are in its dedicated bucket under its KMS key, never in the shared bucket", async () => {
    const dedicated = randomUUID();
    const shared = randomUUID();
    tenants.push(dedicated, shared);
    const bucket = `millrace-t-${dedicated.slice(0, 8)}`;
    const kmsKeyId = `arn:aws:kms:us-east-1:111122223333:key/${randomUUID()}`;
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    await createTenant(db.admin, admin, { tenantId: dedicated, name: "dedicated", partitions: 1, deploymentType: "single-tenant" });
    await db.admin.query("UPDATE tenants SET storage_mode = 'dedicated', storage_bucket = $2, kms_key_id = $3 WHERE tenant_id = $1", [dedicated, bucket, kmsKeyId]);
    await createTenant(db.admin, admin, { tenantId: shared, name: "shared", partitions: 1 });

    const sent: Array<{ command: string; bucket: string; headers: Record<string, string> }> = [];
    const worker = testWorker(testPlan(), db.adminUrl, [dedicated, shared].map((t) => `sensor-data-${t}`), {
      onS3Client: (client) =>
        client.middlewareStack.add(
          (next, context) => async (args) => {
            const req = args.request as { headers?: Record<string, string> };
            const headers = Object.fromEntries(Object.entries(req.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
            sent.push({ command: context.commandName ?? "", bucket: String((args.input as { Bucket?: string }).Bucket ?? ""), headers });
            return await next(args);
          },
          { step: "finalizeRequest", name: "recordRequests", priority: "low" },
        ),
    });
    workers.push(worker);
    await worker.start();
    await publish(dedicated, 0, 200);
    await publish(shared, 0, 200);
    const group = worker.plan.source.consumerGroup;
    await waitUntil("both tenants in S3", async () => (await inS3(dedicated, group)) && (await inS3(shared, group)), 90_000);

    expect(rowsOf(bucket, dedicated)).toHaveLength(200);
    expect(rowsOf(SHARED, shared)).toHaveLength(200);
    // Nothing of the dedicated tenant in the shared bucket.
    const leaked = await s3.send(new ListObjectsV2Command({ Bucket: SHARED, Prefix: `${dedicated}/` }));
    expect(leaked.KeyCount ?? 0).toBe(0);
    // Every upload into the dedicated bucket carried SSE-KMS with the tenant's key; none into the shared one.
    const puts = sent.filter((r) => r.command === "PutObjectCommand" || r.command === "CreateMultipartUploadCommand");
    const toDedicated = puts.filter((r) => r.bucket === bucket);
    expect(toDedicated.length).toBeGreaterThan(0);
    for (const r of toDedicated) {
      expect(r.headers["x-amz-server-side-encryption"]).toBe("aws:kms");
      expect(r.headers["x-amz-server-side-encryption-aws-kms-key-id"]).toBe(kmsKeyId);
    }
    for (const r of puts.filter((x) => x.bucket === SHARED)) expect(r.headers["x-amz-server-side-encryption"]).toBeUndefined();
    // Every file under a tenant's prefix in the shared bucket holds only that tenant's rows.
    const sharedTenants = await db.admin.query<{ tenant_id: string }>("SELECT tenant_id FROM tenants WHERE storage_mode = 'shared' AND tenant_id = ANY($1)", [tenants]);
    for (const t of sharedTenants.rows.map((r) => r.tenant_id)) {
      const rows = rowsOf(SHARED, t);
      expect(rows.every((r) => r.tenant_id === t)).toBe(true);
    }
    await worker.stop();
  });
});

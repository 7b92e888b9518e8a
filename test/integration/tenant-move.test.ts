/**
 * Moving a tenant between the shared database and a dedicated one while a worker runs and its
 * producer keeps publishing (issue #6 §2, tenants/move.ts): every reading is stored exactly once —
 * before the switch in the old store, after it in the new one, and in the end all of them in the
 * new one only — the Parquet files cover every offset once (`parquet verify` finds nothing), the
 * worker never restarts, and another tenant's ingestion goes on. Then the same move back. And the
 * upgrade the issue names — multi-tenant to single-tenant, database and bucket — under load.
 */
import { randomUUID } from "node:crypto";
import type { Admin, Kafka } from "kafkajs";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { IngestWorker } from "../../pipelines/runtime/worker.ts";
import { parquetStorageConfig, S3ClientCache } from "../../sinks/s3-parquet/location.ts";
import { verifyTenant } from "../../sinks/s3-parquet/verify.ts";
import { databaseUrl, tenantDatabaseRef } from "../../tenants/database.ts";
import { createTenantLifecycle, ensureBucket, type LifecycleContext } from "../../tenants/lifecycle.ts";
import { moveTenantDatabase, moveTenantStorage } from "../../tenants/move.ts";
import { ListObjectsV2Command } from "@aws-sdk/client-s3";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";
import { deleteTopics, encodeReading, endOffsets, produce, registerSensorSchema, testKafka } from "../helpers/kafka.ts";
import { waitUntil } from "../helpers/wait.ts";
import { testPlan, testWorker } from "../helpers/worker.ts";

const BATCH = 200;

describe("moving a tenant's store while the worker runs", () => {
  let db: TestDatabase;
  let kafka: Kafka;
  let admin: Admin;
  let cache: S3ClientCache;
  let worker: IngestWorker | undefined;
  let ctx: LifecycleContext;
  const mover = randomUUID();
  const bystander = randomUUID();
  const topic = (t: string) => `sensor-data-${t}`;
  const produced = new Map<string, number>([
    [mover, 0],
    [bystander, 0],
  ]);
  let schemaId = 0;
  const base = Date.now() - 6 * 3_600_000;
  const pools: pg.Pool[] = [];

  const publish = async (tenant: string, n: number) => {
    const start = produced.get(tenant)!;
    await produce(
      kafka,
      topic(tenant),
      Array.from({ length: n }, (_, i) => {
        const k = start + i;
        return { key: `eq-${k % 5}`, value: encodeReading(schemaId, { time: base + k * 1000, tenant_id: tenant, equipment_id: `eq-${k % 5}`, facility_id: "fac-01", temperature: 20, vibration: 0.1, pressure: null, flow_rate: null }) };
      }),
    );
    produced.set(tenant, start + n);
  };
  const storeOf = async (tenant: string): Promise<{ pool: pg.Pool; shared: boolean }> => {
    const ref = await tenantDatabaseRef(db.admin, tenant);
    if (!ref) return { pool: db.admin, shared: true };
    const p = new pg.Pool({ connectionString: databaseUrl(ref, db.adminUrl), max: 2 });
    pools.push(p);
    return { pool: p, shared: false };
  };
  const count = async (pool: pg.Pool, tenant: string) => {
    const r = await pool.query<{ n: number; d: number }>("SELECT count(*)::int AS n, count(DISTINCT (equipment_id, time))::int AS d FROM sensor_data_raw WHERE tenant_id = $1", [tenant]);
    return r.rows[0]!;
  };
  /** Every partition's database and Parquet offsets at the topic's end, in the tenant's store. */
  const caughtUp = async (pool: pg.Pool, tenant: string) => {
    const end = await endOffsets(admin, topic(tenant));
    const group = worker!.plan.source.consumerGroup;
    const co = await pool.query<{ partition: number; n: string }>("SELECT partition, next_offset AS n FROM millrace.consumer_offsets WHERE consumer_group = $1 AND topic = $2", [group, topic(tenant)]);
    const so = await pool.query<{ partition: number; n: string }>("SELECT partition, next_offset AS n FROM millrace.sink_offsets WHERE sink = 's3_parquet' AND consumer_group = $1 AND topic = $2", [group, topic(tenant)]);
    const c = new Map(co.rows.map((r) => [r.partition, Number(r.n)]));
    const s = new Map(so.rows.map((r) => [r.partition, Number(r.n)]));
    return [...end].every(([p, high]) => high === 0 || (c.get(p) === high && s.get(p) === high));
  };

  beforeAll(async () => {
    db = await createTestDatabase();
    kafka = testKafka();
    admin = kafka.admin();
    await admin.connect();
    cache = new S3ClientCache(process.env);
    ctx = { db: db.admin, kafka: admin, s3: cache, storageConfig: parquetStorageConfig(process.env), env: process.env, adminUrl: db.adminUrl };
    await createTenantLifecycle(ctx, { tenantId: mover, name: "mover", tier: "basic" });
    await createTenantLifecycle(ctx, { tenantId: bystander, name: "bystander", tier: "basic" });
    schemaId = await registerSensorSchema(topic(mover));
  });

  afterAll(async () => {
    await worker?.stop();
    await deleteTopics(admin, (t) => t.endsWith(mover) || t.endsWith(bystander));
    await admin.disconnect();
    for (const p of pools) await p.end();
    cache?.destroy();
    await db?.drop();
  });

  it("shared → dedicated → shared under load: every reading once, in the tenant's current store only; Parquet exact; the bystander unaffected", { timeout: 300_000 }, async () => {
    await publish(mover, 600);
    await publish(bystander, 300);
    worker = testWorker(testPlan(), db.adminUrl, [topic(mover), topic(bystander)]);
    await worker.start();
    await waitUntil("the first readings stored in the shared database", async () => (await count(db.admin, mover)).n === 600, 90_000);

    for (const to of ["dedicated", "shared"] as const) {
      // The producer keeps publishing while the move runs.
      let producing = true;
      const load = (async () => {
        for (let i = 0; i < 10 && producing; i++) {
          await publish(mover, BATCH);
          await publish(bystander, BATCH / 4);
        }
      })();
      const moved = await moveTenantDatabase(ctx, mover, { to });
      producing = false;
      await load;
      expect(moved.moved).toBe(true);
      expect(moved.deploymentType).toBe(to === "dedicated" ? "hybrid" : "multi-tenant");
      const { pool, shared } = await storeOf(mover);
      expect(shared).toBe(to === "shared");
      await publish(mover, BATCH); // after the switch
      await waitUntil(`every reading of the mover in its ${to} store, Parquet too`, () => caughtUp(pool, mover), 120_000);
      const total = produced.get(mover)!;
      expect(await count(pool, mover), `mover in its ${to} store`).toEqual({ n: total, d: total });
      // The old store holds none of it (its offsets rows stay as tombstones).
      const old = to === "dedicated" ? db.admin : pools[0]!;
      expect((await count(old, mover)).n, `mover rows left in the old store (moving to ${to})`).toBe(0);
      const tomb = await old.query<{ n: string }>("SELECT DISTINCT next_offset::text AS n FROM millrace.consumer_offsets WHERE topic = $1", [topic(mover)]);
      expect(tomb.rows.map((r) => r.n)).toEqual(["-1"]);
      const report = await verifyTenant({ pool: db.writer, store: pool, cache, config: ctx.storageConfig, env: process.env, tenantId: mover, download: false });
      expect(report.problems, JSON.stringify(report.problems.slice(0, 3))).toEqual([]);
      expect(report.rows).toBe(total);
      // The bystander went on in the shared database throughout.
      await waitUntil("the bystander caught up", () => caughtUp(db.admin, bystander), 60_000);
      expect(await count(db.admin, bystander)).toEqual({ n: produced.get(bystander)!, d: produced.get(bystander)! });
    }
    expect(worker.ready().ready, worker.ready().why.join("; ")).toBe(true);
  });

  it("multi-tenant → single-tenant under load: its own database and its own bucket; every reading once, every file in the new place only", { timeout: 300_000 }, async () => {
    await worker?.stop();
    const tenant = randomUUID();
    produced.set(tenant, 0);
    await createTenantLifecycle(ctx, { tenantId: tenant, name: "upgrader", tier: "basic" });
    await publish(tenant, 500);
    worker = testWorker(testPlan(), db.adminUrl, [topic(tenant)]);
    await worker.start();
    await waitUntil("the first readings in the shared database and bucket", () => caughtUp(db.admin, tenant), 90_000);
    const bucket = `millrace-move-${tenant.slice(0, 8)}`;
    const kmsKeyId = `arn:aws:kms:us-east-1:111122223333:key/${randomUUID()}`;

    let producing = true;
    const load = (async () => {
      for (let i = 0; i < 10 && producing; i++) await publish(tenant, BATCH);
    })();
    await moveTenantDatabase(ctx, tenant, { to: "dedicated" });
    const moved = await moveTenantStorage({ ...ctx, ensureBucket: (loc) => ensureBucket(ctx, loc) }, tenant, { to: { mode: "dedicated", bucket, kmsKeyId } });
    producing = false;
    await load;
    expect(moved.moved).toBe(true);
    expect(moved.deploymentType).toBe("single-tenant");
    expect(moved.objectsCopied, "files uploaded before the move were copied").toBeGreaterThan(0);
    await publish(tenant, BATCH);
    const { pool, shared } = await storeOf(tenant);
    expect(shared).toBe(false);
    await waitUntil("every reading in the tenant's own database, Parquet too", () => caughtUp(pool, tenant), 120_000);
    const total = produced.get(tenant)!;
    expect(await count(pool, tenant)).toEqual({ n: total, d: total });
    expect((await count(db.admin, tenant)).n).toBe(0);
    // Every file in the dedicated bucket, under the tenant's KMS key; nothing left in the shared one.
    const report = await verifyTenant({ pool: db.writer, store: pool, cache, config: ctx.storageConfig, env: process.env, tenantId: tenant, download: true });
    expect(report.problems, JSON.stringify(report.problems.slice(0, 3))).toEqual([]);
    expect(report.rows).toBe(total);
    expect(report.location).toContain(`s3://${bucket}/`);
    const files = await pool.query<{ bucket: string }>("SELECT DISTINCT bucket FROM millrace.parquet_files WHERE tenant_id = $1", [tenant]);
    expect(files.rows).toEqual([{ bucket }]);
    const s3 = cache.clientFor(ctx.storageConfig.platform);
    const left = await s3.send(new ListObjectsV2Command({ Bucket: ctx.storageConfig.sharedBucket, Prefix: `${tenant}/` }));
    expect(left.KeyCount ?? 0, "objects left in the shared bucket").toBe(0);
    const row = await db.admin.query("SELECT deployment_type, database_mode, storage_mode, storage_bucket, kms_key_id FROM tenants WHERE tenant_id = $1", [tenant]);
    expect(row.rows[0]).toEqual({ deployment_type: "single-tenant", database_mode: "dedicated", storage_mode: "dedicated", storage_bucket: bucket, kms_key_id: kmsKeyId });
    await deleteTopics(admin, (t) => t.endsWith(tenant));
  });
});

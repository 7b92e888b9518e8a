/**
 * Tenant isolation, proven end to end with a real worker, for two tenants of each deployment type
 * (issue #6 §6):
 *  - multi-tenant ×2: the shared database (row-level security), the shared bucket, each under its
 *    own prefix;
 *  - single-tenant ×2: each its own database (created and migrated by `tenants create`) and its
 *    own bucket, uploads under its own KMS key;
 *  - hybrid ×2: one chose the shared database and its own bucket, one its own database and the
 *    shared bucket.
 * Each tenant publishes its readings plus readings whose payload names another tenant. Checked:
 * every row of a tenant is stored under it, in its own database, and nowhere else — nor its dead
 * letters, offsets and Parquet manifest; the foreign-payload readings are never stored
 * (tenant_mismatch dead letters); every object of a tenant is in its own place only and holds only
 * its rows (read back with pyarrow); an analyst role per tenant sees only its own rows, and cannot
 * even connect to another tenant's dedicated database.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { ListObjectsV2Command, S3Client } from "@aws-sdk/client-s3";
import type { Admin, Kafka } from "kafkajs";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { requireEnv } from "../../lib/env.ts";
import type { IngestWorker } from "../../pipelines/runtime/worker.ts";
import type { SensorReading } from "../../schemas/index.ts";
import { parquetStorageConfig, S3ClientCache } from "../../sinks/s3-parquet/location.ts";
import { createTenantLifecycle, grantAnalyst, type DeploymentType, type LifecycleContext } from "../../tenants/lifecycle.ts";
import { databaseUrl, tenantDatabaseRef } from "../../tenants/database.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";
import { deleteTopics, encodeReading, endOffsets, produce, registerSensorSchema, testKafka } from "../helpers/kafka.ts";
import { pyarrowVersion, readS3DatasetWithPyarrow } from "../helpers/parquet-readers.ts";
import { waitUntil } from "../helpers/wait.ts";
import { testPlan, testWorker } from "../helpers/worker.ts";

const OWN = 120;
const FOREIGN = 6;
/** A foreign-payload reading carries this vibration, so a stored one would be found. */
const MARK = 9.75;

interface Spec {
  id: string;
  deployment: DeploymentType;
  bucket?: string;
  kmsKeyId?: string;
  database?: "shared" | "dedicated";
}

describe("tenant isolation across deployment types", () => {
  let db: TestDatabase;
  let kafka: Kafka;
  let admin: Admin;
  let cache: S3ClientCache;
  let s3: S3Client;
  let worker: IngestWorker | undefined;
  let ctx: LifecycleContext;
  const suffix = randomBytes(3).toString("hex");
  const shared = parquetStorageConfig(process.env).sharedBucket;
  const s3Settings = () => ({
    endpoint: requireEnv("MILLRACE_S3_ENDPOINT"),
    region: process.env.MILLRACE_S3_REGION ?? "us-east-1",
    accessKeyId: requireEnv("MILLRACE_S3_ACCESS_KEY_ID"),
    secretAccessKey: requireEnv("MILLRACE_S3_SECRET_ACCESS_KEY"),
  });
  const own = (i: number) => ({ bucket: `millrace-iso-${suffix}-${i}`, kmsKeyId: `arn:aws:kms:us-east-1:111122223333:key/${randomUUID()}` });
  const specs: Spec[] = [
    { id: randomUUID(), deployment: "multi-tenant" },
    { id: randomUUID(), deployment: "multi-tenant" },
    { id: randomUUID(), deployment: "single-tenant", ...own(1) },
    { id: randomUUID(), deployment: "single-tenant", ...own(2) },
    { id: randomUUID(), deployment: "hybrid", ...own(3) },
    { id: randomUUID(), deployment: "hybrid", database: "dedicated" },
  ];
  /** Admin URL of each tenant's store (its dedicated database, or the shared one). */
  const storeUrl = new Map<string, string>();
  const stores = new Map<string, pg.Pool>();
  const storeOf = (s: Spec) => stores.get(storeUrl.get(s.id)!)!;
  const topic = (t: string) => `sensor-data-${t}`;
  const placeOf = (s: Spec) => s.bucket ?? shared;

  beforeAll(async () => {
    pyarrowVersion();
    db = await createTestDatabase();
    kafka = testKafka();
    admin = kafka.admin();
    await admin.connect();
    cache = new S3ClientCache(process.env);
    ctx = { db: db.admin, kafka: admin, s3: cache, storageConfig: parquetStorageConfig(process.env), env: process.env, adminUrl: db.adminUrl };
    for (const s of specs) {
      await createTenantLifecycle(ctx, { tenantId: s.id, name: `iso ${s.deployment}`, tier: "professional", deploymentType: s.deployment, bucket: s.bucket, kmsKeyId: s.kmsKeyId, database: s.database });
      const ref = await tenantDatabaseRef(db.admin, s.id);
      const url = ref ? databaseUrl(ref, db.adminUrl) : db.adminUrl;
      storeUrl.set(s.id, url);
      if (!stores.has(url)) stores.set(url, url === db.adminUrl ? db.admin : new pg.Pool({ connectionString: url, max: 2 }));
    }
    // Single-tenant and the hybrid that chose it: a database of its own each.
    const dedicated = specs.filter((s) => s.deployment === "single-tenant" || s.database === "dedicated");
    expect(new Set(dedicated.map((s) => storeUrl.get(s.id))).size).toBe(3);
    for (const s of specs) expect(storeUrl.get(s.id) === db.adminUrl, `${s.deployment} ${s.database ?? ""} in the shared database`).toBe(!dedicated.includes(s));
    const { accessKeyId, secretAccessKey, ...rest } = s3Settings();
    s3 = new S3Client({ ...rest, credentials: { accessKeyId, secretAccessKey }, forcePathStyle: true });
  });

  afterAll(async () => {
    await worker?.stop();
    await deleteTopics(admin, (t) => specs.some((s) => t.endsWith(s.id)));
    await admin.disconnect();
    for (const p of stores.values()) if (p !== db?.admin) await p.end();
    cache?.destroy();
    s3?.destroy();
    await db?.drop();
  });

  it("every row and object of each tenant is in its own place only; foreign payloads are never stored; each analyst sees only its tenant", async () => {
    const schemaId = await registerSensorSchema(topic(specs[0]!.id));
    const base = Date.now() - 3_600_000;
    for (const [i, s] of specs.entries()) {
      const other = specs[(i + 1) % specs.length]!.id;
      const reading = (tenant: string, k: number, vibration: number): SensorReading => ({ time: base + k * 1000, tenant_id: tenant, equipment_id: `eq-${k % 4}`, facility_id: "fac-01", temperature: 20 + i, vibration, pressure: null, flow_rate: null });
      const records = [
        ...Array.from({ length: OWN }, (_, k) => ({ key: `eq-${k % 4}`, value: encodeReading(schemaId, reading(s.id, k, 0.1)) })),
        // Published on this tenant's topic, but naming the next tenant in the payload.
        ...Array.from({ length: FOREIGN }, (_, k) => ({ key: `eq-${k % 4}`, value: encodeReading(schemaId, reading(other, OWN + k, MARK)) })),
      ];
      await produce(kafka, topic(s.id), records);
    }

    worker = testWorker(testPlan(), db.adminUrl, specs.map((s) => topic(s.id)));
    await worker.start();
    const group = worker.plan.source.consumerGroup;
    const done = async (s: Spec) => {
      const end = await endOffsets(admin, topic(s.id));
      const r = await storeOf(s).query<{ partition: number; next_offset: string }>(
        "SELECT partition, next_offset FROM millrace.sink_offsets WHERE sink = 's3_parquet' AND consumer_group = $1 AND topic = $2",
        [group, topic(s.id)],
      );
      const got = new Map(r.rows.map((x) => [x.partition, Number(x.next_offset)]));
      return [...end].every(([p, high]) => high === 0 || got.get(p) === high);
    };
    for (const s of specs) await waitUntil(`tenant ${s.deployment} ${s.id.slice(0, 8)} in PostgreSQL and S3`, () => done(s), 120_000);

    // PostgreSQL: each database holds exactly its tenants' own readings, dead letters (the foreign
    // payloads), offsets and Parquet manifest — nothing of any other tenant.
    for (const [url, pool] of stores) {
      const here = specs.filter((s) => storeUrl.get(s.id) === url);
      const where = url === db.adminUrl ? "the shared database" : `dedicated ${new URL(url).pathname}`;
      const rows = await pool.query<{ tenant_id: string; n: number; marked: number }>(
        "SELECT tenant_id, count(*)::int AS n, count(*) FILTER (WHERE vibration = $1)::int AS marked FROM sensor_data_raw GROUP BY 1",
        [MARK],
      );
      expect(new Map(rows.rows.map((r) => [r.tenant_id, [r.n, r.marked]])), `rows in ${where}`).toEqual(new Map(here.map((s) => [s.id, [OWN, 0]])));
      const dead = await pool.query<{ source_topic: string; reason: string; n: number }>("SELECT source_topic, reason, count(*)::int AS n FROM millrace.dead_letters GROUP BY 1, 2");
      expect(dead.rows.map((r) => [r.source_topic, r.reason, r.n]).sort(), `dead letters in ${where}`).toEqual(here.map((s) => [topic(s.id), "tenant_mismatch", FOREIGN]).sort());
      for (const table of ["millrace.consumer_offsets", "millrace.sink_offsets", "millrace.parquet_files"]) {
        const t = await pool.query<{ topic: string }>(`SELECT DISTINCT topic FROM ${table}`);
        expect(t.rows.map((r) => r.topic).sort(), `${table} in ${where}`).toEqual(here.map((s) => topic(s.id)).sort());
      }
    }

    // S3: each tenant's rows in its own place, only there, and only its rows.
    const s3c = s3Settings();
    for (const s of specs) {
      const got = readS3DatasetWithPyarrow(`${placeOf(s)}/${s.id}/sensor-data/`, s3c).rows;
      expect(got, `rows of ${s.deployment} ${s.id}`).toHaveLength(OWN);
      expect(got.every((r) => r.tenant_id === s.id && r.vibration !== MARK)).toBe(true);
      // Not in any other place.
      for (const place of new Set([shared, ...specs.map(placeOf)])) {
        if (place === placeOf(s)) continue;
        const leak = await s3.send(new ListObjectsV2Command({ Bucket: place, Prefix: `${s.id}/` }));
        expect(leak.KeyCount ?? 0, `${s.id} objects in ${place}`).toBe(0);
      }
    }
    // A dedicated bucket holds nothing but its tenant's prefix.
    for (const s of specs.filter((x) => x.bucket)) {
      const all = await s3.send(new ListObjectsV2Command({ Bucket: s.bucket! }));
      expect((all.Contents ?? []).every((o) => o.Key!.startsWith(`${s.id}/`))).toBe(true);
    }

    // Analysts: one role per tenant sees only its tenant's rows, whatever tenant context it sets;
    // another tenant's dedicated database does not even let it in.
    const password = randomBytes(12).toString("hex");
    const roles: string[] = [];
    for (const [i, s] of specs.entries()) {
      const role = `iso_analyst_${suffix}_${i}`;
      roles.push(role);
      await db.admin.query(`CREATE ROLE ${role} LOGIN PASSWORD '${password}'`);
      await grantAnalyst(ctx, s.id, role);
    }
    const as = (url: string, role: string) => {
      const u = new URL(url);
      u.username = role;
      u.password = password;
      return new pg.Client({ connectionString: u.toString() });
    };
    for (const [i, s] of specs.entries()) {
      const c = as(storeUrl.get(s.id)!, roles[i]!);
      await c.connect();
      try {
        const seen = await c.query<{ tenant_id: string; n: number }>("SELECT tenant_id, count(*)::int AS n FROM sensor_data_raw GROUP BY 1");
        expect(seen.rows).toEqual([{ tenant_id: s.id, n: OWN }]);
        // Claiming another tenant's context changes nothing.
        await c.query("SELECT set_config('app.current_tenant_id', $1, false)", [specs[(i + 1) % specs.length]!.id]);
        const again = await c.query<{ tenant_id: string }>("SELECT DISTINCT tenant_id FROM sensor_data_raw");
        expect(again.rows.map((r) => r.tenant_id)).toEqual([s.id]);
      } finally {
        await c.end();
      }
      for (const [url] of stores) {
        if (url === storeUrl.get(s.id) || url === db.adminUrl) continue;
        const other = as(url, roles[i]!);
        await expect(other.connect(), `${s.id} analyst into ${new URL(url).pathname}`).rejects.toThrow(/permission denied for database/);
        await other.end().catch(() => {});
      }
    }
  });

  it("a restarted worker resumes a dedicated tenant from its own database's offsets: the new readings once, nothing again", async () => {
    await worker?.stop();
    worker = undefined;
    const s = specs[2]!; // single-tenant
    const schemaId = await registerSensorSchema(topic(s.id));
    const base = Date.now() - 1_800_000;
    const more = 50;
    await produce(
      kafka,
      topic(s.id),
      Array.from({ length: more }, (_, k) => ({
        key: `eq-${k % 4}`,
        value: encodeReading(schemaId, { time: base + k * 1000, tenant_id: s.id, equipment_id: `eq-${k % 4}`, facility_id: "fac-02", temperature: 30, vibration: 0.2, pressure: null, flow_rate: null }),
      })),
    );
    worker = testWorker(testPlan(), db.adminUrl, specs.map((x) => topic(x.id)));
    await worker.start();
    const count = async () => (await storeOf(s).query<{ n: number }>("SELECT count(*)::int AS n FROM sensor_data_raw WHERE tenant_id = $1", [s.id])).rows[0]!.n;
    await waitUntil("the new readings in the tenant's database", async () => (await count()) >= OWN + more, 90_000);
    const end = await endOffsets(admin, topic(s.id));
    await waitUntil("its offsets at the topic's end", async () => {
      const r = await storeOf(s).query<{ partition: number; next_offset: string }>("SELECT partition, next_offset FROM millrace.consumer_offsets WHERE topic = $1", [topic(s.id)]);
      const got = new Map(r.rows.map((x) => [x.partition, Number(x.next_offset)]));
      return [...end].every(([p, high]) => high === 0 || got.get(p) === high);
    }, 60_000);
    expect(await count()).toBe(OWN + more);
    const distinct = await storeOf(s).query<{ n: number }>("SELECT count(DISTINCT (equipment_id, time))::int AS n FROM sensor_data_raw WHERE tenant_id = $1", [s.id]);
    expect(distinct.rows[0]!.n).toBe(OWN + more);
    const inShared = await db.admin.query<{ n: number }>("SELECT count(*)::int AS n FROM sensor_data_raw WHERE tenant_id = $1", [s.id]);
    expect(inShared.rows[0]!.n).toBe(0);
    const sharedOffsets = await db.admin.query("SELECT 1 FROM millrace.consumer_offsets WHERE topic = $1", [topic(s.id)]);
    expect(sharedOffsets.rowCount).toBe(0);
  });
});

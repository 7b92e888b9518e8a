/**
 * Tenant isolation, proven end to end with a real worker, for two tenants of each deployment type
 * that exists today (issue #6 §6; dedicated *databases* are not built yet — every type shares the
 * database here, under row-level security):
 *  - multi-tenant ×2: shared bucket, each under its own prefix;
 *  - single-tenant ×2: each its own bucket, uploads under its own KMS key;
 *  - hybrid ×2: one chose the shared bucket, one its own bucket.
 * Each tenant publishes its readings plus readings whose payload names another tenant. Checked:
 * every row of a tenant is stored under it and nothing else is; the foreign-payload readings are
 * never stored (tenant_mismatch dead letters); every object of a tenant is in its own place only
 * and holds only its rows (read back with pyarrow); an analyst role per tenant sees only its own
 * rows through the table.
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
import { createTenantLifecycle, type DeploymentType, type LifecycleContext } from "../../tenants/lifecycle.ts";
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
}

describe("tenant isolation across deployment types", () => {
  let db: TestDatabase;
  let kafka: Kafka;
  let admin: Admin;
  let cache: S3ClientCache;
  let s3: S3Client;
  let worker: IngestWorker | undefined;
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
    { id: randomUUID(), deployment: "hybrid" },
    { id: randomUUID(), deployment: "hybrid", ...own(3) },
  ];
  const topic = (t: string) => `sensor-data-${t}`;
  const placeOf = (s: Spec) => s.bucket ?? shared;

  beforeAll(async () => {
    pyarrowVersion();
    db = await createTestDatabase();
    kafka = testKafka();
    admin = kafka.admin();
    await admin.connect();
    cache = new S3ClientCache(process.env);
    const ctx: LifecycleContext = { db: db.admin, kafka: admin, s3: cache, storageConfig: parquetStorageConfig(process.env), env: process.env };
    for (const s of specs) await createTenantLifecycle(ctx, { tenantId: s.id, name: `iso ${s.deployment}`, tier: "professional", deploymentType: s.deployment, bucket: s.bucket, kmsKeyId: s.kmsKeyId });
    const { accessKeyId, secretAccessKey, ...rest } = s3Settings();
    s3 = new S3Client({ ...rest, credentials: { accessKeyId, secretAccessKey }, forcePathStyle: true });
  });

  afterAll(async () => {
    await worker?.stop();
    await deleteTopics(admin, (t) => specs.some((s) => t.endsWith(s.id)));
    await admin.disconnect();
    cache?.destroy();
    s3?.destroy();
    await db?.drop();
  });

  it("every row and object of each tenant is in its own place only; foreign payloads are never stored; each analyst sees only its tenant", async () => {
    const schemaId = await registerSensorSchema(topic(specs[0]!.id));
    const base = Date.now() - 3_600_000;
    for (const [i, s] of specs.entries()) {
      const other = specs[(i + 1) % specs.length]!.id;
      const reading = (tenant: string, k: number, vibration: number): SensorReading => ({ time: base + k * 1000, tenant_id: tenant, equipment_id: `eq-${k % 4}`, facility_id: "fac-01", temperature: 20 + i, vibration, pressure: null });
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
      const r = await db.admin.query<{ partition: number; next_offset: string }>(
        "SELECT partition, next_offset FROM millrace.sink_offsets WHERE sink = 's3_parquet' AND consumer_group = $1 AND topic = $2",
        [group, topic(s.id)],
      );
      const got = new Map(r.rows.map((x) => [x.partition, Number(x.next_offset)]));
      return [...end].every(([p, high]) => high === 0 || got.get(p) === high);
    };
    for (const s of specs) await waitUntil(`tenant ${s.deployment} ${s.id.slice(0, 8)} in PostgreSQL and S3`, () => done(s), 120_000);

    // PostgreSQL: each tenant's own readings, nothing else; the foreign payloads are dead letters.
    const rows = await db.admin.query<{ tenant_id: string; n: number; marked: number }>(
      "SELECT tenant_id, count(*)::int AS n, count(*) FILTER (WHERE vibration = $2)::int AS marked FROM sensor_data_raw WHERE tenant_id = ANY($1) GROUP BY 1",
      [specs.map((s) => s.id), MARK],
    );
    expect(new Map(rows.rows.map((r) => [r.tenant_id, [r.n, r.marked]]))).toEqual(new Map(specs.map((s) => [s.id, [OWN, 0]])));
    const dead = await db.admin.query<{ source_topic: string; n: number }>(
      "SELECT source_topic, count(*)::int AS n FROM millrace.dead_letters WHERE reason = 'tenant_mismatch' GROUP BY 1",
    );
    expect(new Map(dead.rows.map((r) => [r.source_topic, r.n]))).toEqual(new Map(specs.map((s) => [topic(s.id), FOREIGN])));

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

    // Analysts: one role per tenant sees only its tenant's rows, whatever tenant context it sets.
    const password = randomBytes(12).toString("hex");
    for (const [i, s] of specs.entries()) {
      const role = `iso_analyst_${suffix}_${i}`;
      await db.admin.query(`CREATE ROLE ${role} LOGIN PASSWORD '${password}'`);
      await db.admin.query(`GRANT CONNECT ON DATABASE ${db.name} TO ${role}`);
      await db.admin.query("SELECT millrace.grant_analyst($1, $2)", [role, s.id]);
      const u = new URL(db.adminUrl);
      u.username = role;
      u.password = password;
      const c = new pg.Client({ connectionString: u.toString() });
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
    }
  });
});

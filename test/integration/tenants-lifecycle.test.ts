/**
 * The tenant lifecycle against the real stack and an in-process worker: create is idempotent;
 * suspend → the tenant's readings are dead-lettered as tenant_suspended; resume → stored again;
 * a tenant created while the worker runs is stored within a bound without a restart (live
 * onboarding); delete → unknown_tenant dead letters; delete --purge removes topics, rows, objects.
 */
import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { promisify } from "node:util";
import type { Admin, Kafka } from "kafkajs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadStackEnv } from "../../lib/env.ts";
import type { IngestWorker } from "../../pipelines/runtime/worker.ts";
import type { SensorReading } from "../../schemas/index.ts";
import { parquetStorageConfig, S3ClientCache } from "../../sinks/s3-parquet/location.ts";
import { createTenantLifecycle, deleteTenant, setTenantStatus, type LifecycleContext } from "../../tenants/lifecycle.ts";
import { tenantTopics } from "../../tenants/provision.ts";
import { repoRoot } from "../../stack/context.ts";
import pg from "pg";
import { databaseUrl, tenantDatabaseRef } from "../../tenants/database.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";
import { consumeAll, deleteTopics, encodeReading, header, produce, registerSensorSchema, testKafka } from "../helpers/kafka.ts";
import { waitUntil } from "../helpers/wait.ts";
import { testPlan, testWorker } from "../helpers/worker.ts";

const run = promisify(execFile);

describe("tenant lifecycle", () => {
  let db: TestDatabase;
  let kafka: Kafka;
  let admin: Admin;
  let cache: S3ClientCache;
  let ctx: LifecycleContext;
  let worker: IngestWorker | undefined;
  let schemaId = 0;
  const T1 = randomUUID();
  const T2 = randomUUID();
  const T3 = randomUUID();
  const mine = (t: string) => [T1, T2, T3].some((x) => t.endsWith(x));
  /** The worker's topic filter: tenants created later are added here. */
  const allowed = new Set<string>();
  let seq = 0;

  // Every reading is its own new equipment (= record key), so it also goes through the quota's
  // admission: a status change the worker's tenant directory has not seen yet must still end as
  // tenant_suspended / unknown_tenant, never as quota_exceeded (the database's function refuses
  // inactive tenants; the gate tells that apart from a full quota).
  const base = Date.now() - 600_000;
  const timeOf = (key: string) => base + Number(key.replace(/\D/g, "") || "0") * 10 + (key === "eq-onboard" ? 5 : 0);
  const reading = (tenant: string, key: string): SensorReading => ({
    time: timeOf(key),
    tenant_id: tenant,
    equipment_id: key,
    facility_id: "fac-01",
    temperature: 21.5,
    vibration: 0.2,
    pressure: null,
    flow_rate: null,
  });

  /** Where one reading (by its unique equipment id = record key) ended: stored, or a dead letter's reason. */
  async function outcome(tenant: string, equipment: string): Promise<string | undefined> {
    const s = await db.admin.query("SELECT 1 FROM sensor_data_raw WHERE tenant_id = $1 AND time = $2", [tenant, new Date(timeOf(equipment))]);
    if (s.rows.length > 0) return "stored";
    const d = await db.admin.query<{ reason: string; message: string }>("SELECT reason, message FROM millrace.dead_letters WHERE source_topic = $1 AND record_key = $2", [
      tenantTopics(tenant).sensorData,
      Buffer.from(equipment),
    ]);
    if (d.rows[0] && !d.rows[0].reason.startsWith("tenant_") && d.rows[0].reason !== "unknown_tenant") throw new Error(`reading ${equipment}: ${d.rows[0].reason}: ${d.rows[0].message}`);
    return d.rows[0]?.reason;
  }

  /**
   * Produce readings one at a time until one ends as `expected` (a status change reaches the worker
   * within tenant_refresh, so a reading sent just before may still see the old status). Every
   * reading must end somewhere (nothing lost), and only as `expected` or `previous`.
   */
  async function sendUntil(tenant: string, expected: string, previous: string | undefined, timeoutMs = 30_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const eq = `eq-${String(++seq).padStart(4, "0")}`;
      await produce(kafka, tenantTopics(tenant).sensorData, [{ key: eq, value: encodeReading(schemaId, reading(tenant, eq)) }]);
      const got = await waitUntil(`reading ${eq} of ${tenant} to be stored or dead-lettered`, () => outcome(tenant, eq), 30_000);
      if (got === expected) return eq;
      expect(got, `reading ${eq}`).toBe(previous);
    }
    throw new Error(`no reading of ${tenant} ended as ${expected} within ${timeoutMs} ms`);
  }

  beforeAll(async () => {
    loadStackEnv();
    db = await createTestDatabase();
    kafka = testKafka();
    admin = kafka.admin();
    await admin.connect();
    cache = new S3ClientCache(process.env);
    ctx = { db: db.admin, kafka: admin, s3: cache, storageConfig: parquetStorageConfig(process.env), env: process.env, adminUrl: db.adminUrl };
  });

  afterAll(async () => {
    await worker?.stop();
    await deleteTopics(admin, mine);
    await admin.disconnect();
    cache?.destroy();
    await db?.drop();
  });

  it("create twice is idempotent: one row, three topics", async () => {
    const first = await createTenantLifecycle(ctx, { tenantId: T1, name: "one", tier: "basic" });
    expect(first.rowCreated).toBe(true);
    const again = await createTenantLifecycle(ctx, { tenantId: T1, name: "one", tier: "basic" });
    expect(again.rowCreated).toBe(false);
    expect(again.topics).toEqual(first.topics);
    const rows = await db.admin.query("SELECT tenant_name, status, retention_policy_days, storage_mode FROM tenants");
    expect(rows.rows).toEqual([{ tenant_name: "one", status: "active", retention_policy_days: 30, storage_mode: "shared" }]);
    const topics = new Set(await admin.listTopics());
    for (const t of Object.values(first.topics)) expect(topics.has(t), t).toBe(true);
    // A partial create (row written, topics missing) is completed by a rerun.
    await admin.deleteTopics({ topics: [first.topics.alerts] });
    await waitUntil("the alerts topic to be gone", async () => !(await admin.listTopics()).includes(first.topics.alerts), 30_000);
    await createTenantLifecycle(ctx, { tenantId: T1, name: "one" });
    expect(await admin.listTopics()).toContain(first.topics.alerts);
    // Contradictory storage requests are refused before anything is written.
    await expect(createTenantLifecycle(ctx, { name: "x", deploymentType: "single-tenant" })).rejects.toThrow(/own bucket/);
    expect((await db.admin.query("SELECT count(*)::int AS n FROM tenants")).rows[0].n).toBe(1);
  });

  it("the CLI lists and shows the tenant", async () => {
    const env = { ...process.env, MILLRACE_PG_ADMIN_URL: db.adminUrl, MILLRACE_PG_URL: "" };
    const list = await run(join(repoRoot, "millrace"), ["tenants", "list"], { env, cwd: repoRoot, timeout: 60_000 });
    expect(list.stdout).toMatch(new RegExp(`${T1}\\s+one\\s+basic\\s+multi-tenant\\s+active\\s+30 d`));
    const show = await run(join(repoRoot, "millrace"), ["tenants", "show", T1], { env, cwd: repoRoot, timeout: 60_000 });
    expect(show.stdout).toContain(`topic       sensor-data-${T1}: 3 partitions`);
    expect(show.stdout).toMatch(new RegExp(`parquet     shared s3://\\S+/${T1}/sensor-data/`));
  });

  it("suspend → tenant_suspended dead letters; resume → stored again (nothing lost)", async () => {
    schemaId = await registerSensorSchema(tenantTopics(T1).sensorData);
    allowed.add(tenantTopics(T1).sensorData);
    worker = testWorker(testPlan(), db.adminUrl, [], { topicFilter: (t) => allowed.has(t) });
    await worker.start();
    await sendUntil(T1, "stored", undefined, 60_000);

    expect((await setTenantStatus(db.admin, T1, "suspended")).changed).toBe(true);
    expect((await setTenantStatus(db.admin, T1, "suspended")).changed).toBe(false);
    const suspendedEq = await sendUntil(T1, "tenant_suspended", "stored");
    const dlq = await consumeAll(kafka, tenantTopics(T1).deadLetters, 1, 60_000);
    const m = dlq.find((x) => x.key?.toString() === suspendedEq);
    expect(m && header(m, "millrace.reason")).toBe("tenant_suspended");

    await setTenantStatus(db.admin, T1, "active");
    await sendUntil(T1, "stored", "tenant_suspended");
  });

  it("live onboarding: a tenant created while the worker runs is stored within 30 s, no restart", async () => {
    const started = Date.now();
    const created = await createTenantLifecycle(ctx, { tenantId: T2, name: "two", tier: "professional" });
    allowed.add(created.topics.sensorData);
    const eq = "eq-onboard";
    await produce(kafka, created.topics.sensorData, [{ key: eq, value: encodeReading(schemaId, reading(T2, eq)) }]);
    await waitUntil("the new tenant's reading to be stored", async () => (await outcome(T2, eq)) === "stored", 30_000);
    expect(Date.now() - started).toBeLessThan(30_000);
    expect(worker!.status().crashed).toBeUndefined();
  });

  it("live onboarding of a single-tenant tenant: its readings flow into its own database, no restart", async () => {
    const started = Date.now();
    const created = await createTenantLifecycle(ctx, { tenantId: T3, name: "three", deploymentType: "single-tenant", bucket: `millrace-lc-${T3.slice(0, 8)}`, kmsKeyId: "arn:aws:kms:us-east-1:111122223333:key/three" });
    allowed.add(created.topics.sensorData);
    const eq = "eq-onboard-3";
    await produce(kafka, created.topics.sensorData, [{ key: eq, value: encodeReading(schemaId, reading(T3, eq)) }]);
    const own = new pg.Pool({ connectionString: databaseUrl((await tenantDatabaseRef(db.admin, T3))!, db.adminUrl), max: 1 });
    try {
      await waitUntil("the new tenant's reading in its own database", async () => (await own.query("SELECT 1 FROM sensor_data_raw WHERE tenant_id = $1 AND time = $2", [T3, new Date(timeOf(eq))])).rowCount === 1, 30_000);
      expect(Date.now() - started).toBeLessThan(30_000);
      expect((await db.admin.query("SELECT 1 FROM sensor_data_raw WHERE tenant_id = $1", [T3])).rowCount).toBe(0);
    } finally {
      await own.end();
    }
  });

  it("delete → unknown_tenant dead letters; --purge removes topics and rows", async () => {
    const r = await deleteTenant(ctx, T1);
    expect(r.statusChanged).toBe(true);
    await sendUntil(T1, "unknown_tenant", "stored");
    await expect(setTenantStatus(db.admin, T1, "active")).rejects.toThrow(/deleted/);
    await expect(createTenantLifecycle(ctx, { tenantId: T1, name: "one" })).rejects.toThrow(/deleted/);

    const stored = (await db.admin.query("SELECT count(*)::int AS n FROM sensor_data_raw WHERE tenant_id = $1", [T2])).rows[0].n;
    expect(stored).toBeGreaterThan(0);
    // Its Parquet file is on S3 (the worker's sink, idle flush 1 s in testPlan) before the purge.
    await waitUntil("the new tenant's Parquet file to be uploaded", async () => {
      const f = await db.admin.query("SELECT status FROM millrace.parquet_files WHERE tenant_id = $1", [T2]);
      return f.rows.length > 0 && f.rows.every((x) => x.status === "uploaded");
    }, 60_000);
    // The purge runs while the worker consumes: its topics vanish under the running consumer.
    const p = await deleteTenant(ctx, T2, { purge: true });
    expect(p.objectsDeleted).toBeGreaterThan(0);
    expect(p.purged).toBe(true);
    expect(p.rowsDeleted).toBe(stored);
    expect(p.topicsDeleted.sort()).toEqual(Object.values(tenantTopics(T2)).sort());
    expect((await db.admin.query("SELECT count(*)::int AS n FROM sensor_data_raw WHERE tenant_id = $1", [T2])).rows[0].n).toBe(0);
    expect((await db.admin.query("SELECT count(*)::int AS n FROM millrace.parquet_files WHERE tenant_id = $1", [T2])).rows[0].n).toBe(0);
    // The other tenant's rows are untouched, and the tenants row is kept (status deleted).
    expect((await db.admin.query("SELECT count(*)::int AS n FROM sensor_data_raw WHERE tenant_id = $1", [T1])).rows[0].n).toBeGreaterThan(0);
    expect((await db.admin.query("SELECT status FROM tenants WHERE tenant_id = $1", [T2])).rows[0].status).toBe("deleted");

    // The worker goes on without a restart: T1's topic (deleted, not purged) is still consumed and
    // its readings still reach their dead-letter topic — the producer is not stuck on T2's vanished
    // topics either.
    await waitUntil("the worker to drop the purged tenant's topics", async () => !worker!.status().assigned.some((a) => a.topic.endsWith(T2)), 60_000);
    const afterPurge = await sendUntil(T1, "unknown_tenant", "unknown_tenant", 60_000);
    const published = async () =>
      (await db.admin.query<{ n: number; mine: boolean }>(
        "SELECT count(*)::int AS n, bool_or(record_key = $2) AS mine FROM millrace.dead_letters WHERE source_topic = $1 AND published_at IS NOT NULL",
        [tenantTopics(T1).sensorData, Buffer.from(afterPurge)],
      )).rows[0]!;
    await waitUntil("the dead letter sent after the purge to be published", async () => (await published()).mine === true, 60_000);
    const onTopic = await consumeAll(kafka, tenantTopics(T1).deadLetters, (await published()).n, 60_000);
    expect(onTopic.some((m) => m.key?.toString() === afterPurge)).toBe(true);
    expect(worker!.status().crashed).toBeUndefined();
    // And it stops cleanly within a Kubernetes-style grace period.
    const stopped = await Promise.race([worker!.stop().then(() => "stopped"), new Promise((r) => setTimeout(() => r("hung"), 30_000).unref())]);
    expect(stopped).toBe("stopped");
    worker = undefined;
  });

  it("single-tenant: create makes, migrates and closes its own database (idempotently); purge empties it", async () => {
    const t = randomUUID();
    const bucket = `millrace-lc-${t.slice(0, 8)}`;
    const req = { tenantId: t, name: "solo", deploymentType: "single-tenant" as const, bucket, kmsKeyId: "arn:aws:kms:us-east-1:111122223333:key/solo" };
    const first = await createTenantLifecycle(ctx, req);
    const again = await createTenantLifecycle(ctx, req);
    expect(first.database).toMatch(/^database millrace_t_[0-9a-f]{16} /);
    expect(again.database).toBe(first.database);
    const ref = await tenantDatabaseRef(db.admin, t);
    const name = (ref as { database: string }).database;
    expect((await db.admin.query("SELECT 1 FROM pg_database WHERE datname = $1", [name])).rowCount).toBe(1);
    expect((await db.admin.query("SELECT has_database_privilege('public', $1, 'CONNECT') AS c", [name])).rows[0].c).toBe(false);
    expect((await db.admin.query("SELECT has_database_privilege('millrace_writer', $1, 'CONNECT') AS c", [name])).rows[0].c).toBe(true);
    const own = new pg.Pool({ connectionString: databaseUrl(ref!, db.adminUrl), max: 1 });
    try {
      expect((await own.query("SELECT count(*)::int AS n FROM public.millrace_schema_migrations")).rows[0].n).toBeGreaterThanOrEqual(9);
      expect((await own.query("SELECT tenant_id FROM tenants")).rows).toEqual([{ tenant_id: t }]);
      const when = new Date(Date.now() - 3_600_000);
      await own.query("SELECT millrace.ensure_sensor_partitions($1, $1)", [when]);
      await own.query("INSERT INTO sensor_data_raw (time, tenant_id, equipment_id, facility_id) VALUES ($1, $2, 'e', 'f'), ($1 + interval '1 s', $2, 'e', 'f')", [when, t]);
      await own.query(
        "INSERT INTO millrace.dead_letters (source_topic, source_partition, source_offset, tenant_id, reason, stage, message) VALUES ($1, 0, 7, $2, 'validation_failed', 'validate', 'x')",
        [tenantTopics(t).sensorData, t],
      );
      // A new release's migrations reach it: `millrace migrate` migrates every dedicated database.
      await own.query("DELETE FROM public.millrace_schema_migrations WHERE version = 9");
      const m = await run(join(repoRoot, "millrace"), ["migrate", "--url", db.adminUrl], { cwd: repoRoot, timeout: 60_000 });
      expect(m.stderr).toContain(`migrate: database ${name} (on the shared server): 1 applied`);
      expect(m.stderr).toMatch(/migrate: [1-9]\d* dedicated databases up to date/);
      expect((await own.query("SELECT 1 FROM public.millrace_schema_migrations WHERE version = 9")).rowCount).toBe(1);
      const p = await deleteTenant(ctx, t, { purge: true });
      expect([p.rowsDeleted, p.deadLettersDeleted]).toEqual([2, 1]);
      expect((await own.query("SELECT count(*)::int AS n FROM sensor_data_raw")).rows[0].n).toBe(0);
      expect((await own.query("SELECT count(*)::int AS n FROM millrace.dead_letters")).rows[0].n).toBe(0);
    } finally {
      await own.end();
    }
  });
});

/**
 * Failure classes 3, 5 and 17 against real services:
 *  3  the database stalls 45 s (a table lock) with a 30 s session timeout: the worker keeps its group
 *     membership, /readyz reports the stalled partition meanwhile, then every reading is stored once
 *     and lag drains — no rejoin loop;
 *  5  the broker is killed and restarted mid-stream (an isolated broker of this test's own, so the shared stack
 *     is not disturbed): /readyz answers 503 while the broker is down, consumption resumes without
 *     restarting the worker, /readyz is 200 again;
 * 17  two pipeline instances in one process: no "already registered" throw, each one's metrics right.
 */
import { randomUUID } from "node:crypto";
import { chmodSync, mkdtempSync, rmSync } from "node:fs";
import pg from "pg";
import { migrate } from "../../migrations/migrate.ts";
import { postgresService } from "../../stack/postgres.ts";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Kafka, logLevel, type Admin } from "kafkajs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { IngestWorker } from "../../pipelines/runtime/worker.ts";
import type { SensorReading } from "../../schemas/index.ts";
import { stackContext } from "../../stack/context.ts";
import { kafkaService, kafkaStackCredentials } from "../../stack/kafka.ts";
import { createKafka } from "../../lib/kafka-client.ts";
import type { StackContext } from "../../stack/types.ts";
import { createTenant } from "../../tenants/provision.ts";
import { startHealthServer } from "../../pipelines/runtime/health.ts";
import { get } from "../helpers/http.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";
import { deleteTopics, encodeReading, produce, registerSensorSchema, testKafka } from "../helpers/kafka.ts";
import { waitUntil } from "../helpers/wait.ts";
import { testPlan, testWorker } from "../helpers/worker.ts";

const reading = (tenant: string, i: number, base: number): SensorReading => ({
  time: base + i * 1000,
  tenant_id: tenant,
  equipment_id: `eq-${i % 10}`,
  facility_id: "fac-01",
  temperature: i,
  vibration: null,
  pressure: null,
  flow_rate: null,
});

async function stored(db: TestDatabase, tenant: string): Promise<number> {
  return (await db.admin.query("SELECT count(*)::int AS n FROM sensor_data_raw WHERE tenant_id = $1", [tenant])).rows[0].n;
}

describe("worker under faults (classes 3, 5, 17)", () => {
  let db: TestDatabase;
  let kafka: Kafka;
  let admin: Admin;
  let schemaId: number;
  const workers: IngestWorker[] = [];
  const tenants: string[] = [];
  const base = Date.now() - 86_400_000;

  beforeAll(async () => {
    db = await createTestDatabase();
    kafka = testKafka();
    admin = kafka.admin();
    await admin.connect();
    schemaId = await registerSensorSchema(`sensor-data-${randomUUID()}`);
  });
  afterAll(async () => {
    await Promise.allSettled(workers.map((w) => w.stop()));
    await deleteTopics(admin, (t) => tenants.some((x) => t.endsWith(x)));
    await admin.disconnect();
    await db?.drop();
  });

  it("class 3: a 45 s database stall with a 30 s session timeout keeps membership; readiness shows the stall; all stored once", async () => {
    const tenant = randomUUID();
    tenants.push(tenant);
    await createTenant(db.admin, admin, { tenantId: tenant, name: "stall", partitions: 1 });
    const topic = `sensor-data-${tenant}`;
    const plan = testPlan({ maxRows: 100 });
    plan.source.sessionTimeoutMs = 30_000;
    plan.source.heartbeatIntervalMs = 3000;
    const worker = testWorker(plan, db.adminUrl, [topic], { stallAfterMs: 5000 });
    workers.push(worker);
    let joins = 0;
    await worker.start();
    // Count generations from here on: a rejoin loop would show as more joins.
    const consumer = (worker as unknown as { consumer: { on: (e: string, f: () => void) => void; events: { GROUP_JOIN: string } } }).consumer;
    consumer.on(consumer.events.GROUP_JOIN, () => joins++);
    await produce(kafka, topic, Array.from({ length: 200 }, (_, i) => ({ key: `eq-${i % 10}`, value: encodeReading(schemaId, reading(tenant, i, base)) })));
    await waitUntil("the first 200 rows", async () => (await stored(db, tenant)) === 200);

    // Lock the table for 45 s, then produce more: the worker's COPY waits on the lock.
    const locker = await db.admin.connect();
    await locker.query("BEGIN");
    await locker.query("LOCK TABLE sensor_data_raw IN ACCESS EXCLUSIVE MODE");
    const lockedAt = Date.now();
    try {
      await produce(kafka, topic, Array.from({ length: 300 }, (_, i) => ({ key: `eq-${i % 10}`, value: encodeReading(schemaId, reading(tenant, 200 + i, base)) })));
      const notReady = await waitUntil("readiness to report the stalled partition", async () => {
        const r = worker.ready();
        return !r.ready && r.why.some((w) => w.includes("stalled")) ? r : undefined;
      }, 40_000);
      expect(notReady.why.join(" ")).toMatch(new RegExp(`${topic}\\[0\\] stalled`));
      await waitUntil("45 s of stall", async () => Date.now() - lockedAt >= 45_000, 60_000, 500);
      expect(worker.ready().why.join(" ")).not.toMatch(/not a member/); // still in the group during the stall
    } finally {
      await locker.query("COMMIT");
      locker.release();
    }

    await waitUntil("all 500 rows after the stall", async () => (await stored(db, tenant)) === 500, 60_000);
    await waitUntil("readiness to recover", async () => worker.ready().ready, 30_000);
    expect(joins).toBe(0); // no rebalance, no rejoin loop
    const distinct = await db.admin.query("SELECT count(DISTINCT temperature)::int AS n FROM sensor_data_raw WHERE tenant_id = $1", [tenant]);
    expect(distinct.rows[0].n).toBe(500);
    await worker.stop();
  });

  it("class 17: two pipeline instances in one process have separate, correct metrics", async () => {
    const tenant = randomUUID();
    tenants.push(tenant);
    await createTenant(db.admin, admin, { tenantId: tenant, name: "twins", partitions: 1 });
    const topic = `sensor-data-${tenant}`;
    await produce(kafka, topic, Array.from({ length: 50 }, (_, i) => ({ key: "k", value: encodeReading(schemaId, reading(tenant, i, base)) })));
    // Two groups over the same topic into the same database: the first stores, the second finds duplicates.
    const a = testWorker(testPlan(), db.adminUrl, [topic]);
    workers.push(a);
    await a.start();
    await waitUntil("instance A to store 50", async () => (await stored(db, tenant)) === 50);
    const b = testWorker(testPlan(), db.adminUrl, [topic]);
    workers.push(b);
    await b.start();
    const value = async (w: IngestWorker, outcome: string) => {
      const m = await w.metrics.registry.getSingleMetric("millrace_records_total")!.get();
      return m.values.find((v) => v.labels.outcome === outcome && v.labels.tenant === tenant)?.value ?? 0;
    };
    await waitUntil("instance B to see 50 duplicates", async () => (await value(b, "duplicate")) === 50);
    expect(await value(a, "stored")).toBe(50);
    expect(await value(b, "stored")).toBe(0);
    expect(await value(a, "duplicate")).toBe(0);
    await Promise.all([a.stop(), b.stop()]);
  });

  it("a sink that keeps failing pauses its partition with backoff, drops nothing, and resumes when it heals", async () => {
    const tenant = randomUUID();
    tenants.push(tenant);
    await createTenant(db.admin, admin, { tenantId: tenant, name: "heal", partitions: 1 });
    const topic = `sensor-data-${tenant}`;
    const plan = testPlan();
    for (const s of plan.sinks) if (s.type === "timescale_copy") Object.assign(s.retry, { initialDelayMs: 50, maxDelayMs: 500 });
    const worker = testWorker(plan, db.adminUrl, [topic], { stallAfterMs: 2000 });
    workers.push(worker);
    await worker.start();
    // A misconfiguration (the writer and its COPY role lost their grant): not a data error, so
    // nothing is dead-lettered.
    await db.admin.query("REVOKE INSERT ON sensor_data_raw FROM millrace_writer, millrace_loader");
    try {
      await produce(kafka, topic, Array.from({ length: 100 }, (_, i) => ({ key: "k", value: encodeReading(schemaId, reading(tenant, i, base)) })));
      await waitUntil("readiness to report the failing sink", async () => !worker.ready().ready, 30_000);
      const retries = await worker.metrics.registry.getSingleMetric("millrace_sink_retries_total")!.get();
      expect(retries.values.reduce((n, v) => n + v.value, 0)).toBeGreaterThan(0);
      expect(await stored(db, tenant)).toBe(0);
    } finally {
      await db.admin.query("GRANT INSERT ON sensor_data_raw TO millrace_writer, millrace_loader");
    }
    await waitUntil("all 100 rows once the grant is back", async () => (await stored(db, tenant)) === 100, 60_000);
    const dls = await db.admin.query("SELECT count(*)::int AS n FROM millrace.dead_letters WHERE tenant_id = $1", [tenant]);
    expect(dls.rows[0].n).toBe(0);
    await worker.stop();
  });

  describe("PostgreSQL killed and restarted mid-stream (isolated database server)", () => {
    let ctx: StackContext;
    let dir: string;
    let isoDb: TestDatabase;
    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), "millrace-pg-"));
      chmodSync(dir, 0o755); // the server runs as the postgres OS user
      const b = stackContext();
      ctx = { ...b, stateDir: dir, ports: { ...b.ports, postgres: 25532 } };
      await postgresService.install(ctx);
      await postgresService.start(ctx);
      await postgresService.waitReady(ctx, 120_000);
      const url = postgresService.env(ctx).MILLRACE_PG_ADMIN_URL!;
      await migrate(url);
      isoDb = { name: "millrace", adminUrl: url, admin: new pg.Pool({ connectionString: url, max: 2 }), writer: undefined as never, drop: async () => {} };
      isoDb.admin.on("error", () => {});
      isoDb.admin.on("connect", (c) => c.on("error", () => {}));
    });
    afterAll(async () => {
      await isoDb?.admin.end().catch(() => {});
      if (ctx) await postgresService.stop(ctx, { force: true });
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    it("retries through the outage: nothing lost, nothing duplicated, no worker restart", async () => {
      const tenant = randomUUID();
      tenants.push(tenant);
      await createTenant(isoDb.admin, admin, { tenantId: tenant, name: "db-bounce", partitions: 2 });
      const topic = `sensor-data-${tenant}`;
      const plan = testPlan({ maxRows: 100 });
      for (const x of plan.sinks) if (x.type === "timescale_copy") Object.assign(x.retry, { initialDelayMs: 100, maxDelayMs: 1000 });
      const worker = testWorker(plan, isoDb.adminUrl, [topic]);
      workers.push(worker);
      await worker.start();
      const count = async () => (await isoDb.admin.query("SELECT count(DISTINCT temperature)::int AS d, count(*)::int AS n FROM sensor_data_raw WHERE tenant_id = $1", [tenant])).rows[0] as { d: number; n: number };
      await produce(kafka, topic, Array.from({ length: 300 }, (_, i) => ({ key: `eq-${i % 10}`, value: encodeReading(schemaId, reading(tenant, i, base)) })));
      await waitUntil("300 rows before the outage", async () => (await count()).n === 300, 60_000);
      await postgresService.stop(ctx, { force: true }); // kill -9 of the database server
      await produce(kafka, topic, Array.from({ length: 300 }, (_, i) => ({ key: `eq-${i % 10}`, value: encodeReading(schemaId, reading(tenant, 300 + i, base)) })));
      await waitUntil("readiness to report the failing database", async () => !worker.ready().ready, 30_000);
      await postgresService.start(ctx);
      await postgresService.waitReady(ctx, 120_000);
      await waitUntil("all 600 rows after the restart", async () => (await count().catch(() => ({ n: 0, d: 0 }))).n === 600, 120_000);
      expect(await count()).toEqual({ d: 600, n: 600 });
      await waitUntil("the worker to be ready again", async () => worker.ready().ready, 60_000);
      await worker.stop();
    });
  });

  describe("class 5: broker restart mid-stream (isolated broker)", () => {
    let ctx: StackContext;
    let dir: string;
    let isoKafka: Kafka;
    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), "millrace-broker-"));
      const b = stackContext();
      ctx = { ...b, stateDir: dir, ports: { ...b.ports, kafka: 29192, kafkaController: 29193 } };
      await kafkaService.install(ctx);
      await kafkaService.start(ctx);
      await kafkaService.waitReady(ctx, 120_000);
      isoKafka = createKafka({ clientId: "fault-test", brokers: [`127.0.0.1:${ctx.ports.kafka}`], auth: kafkaStackCredentials(ctx).admin, logLevel: logLevel.NOTHING, retry: { retries: 10 } });
    });
    afterAll(async () => {
      if (ctx) await kafkaService.stop(ctx, { force: true });
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    it("consumption resumes without restarting the worker, nothing lost or repeated", async () => {
      const tenant = randomUUID();
      const isoAdmin = isoKafka.admin();
      await isoAdmin.connect();
      await createTenant(db.admin, isoAdmin, { tenantId: tenant, name: "bounce", partitions: 2 });
      await isoAdmin.disconnect();
      const topic = `sensor-data-${tenant}`;
      const worker = testWorker(testPlan(), db.adminUrl, [topic], { brokers: [`127.0.0.1:${ctx.ports.kafka}`], kafkaAuth: kafkaStackCredentials(ctx).worker, stallAfterMs: 3000 });
      workers.push(worker);
      await worker.start();
      const health = await startHealthServer(worker, 0, "127.0.0.1");
      const readyz = async () => {
        const r = await get(health.port, "/readyz");
        return { code: r.status, why: (JSON.parse(r.body) as { why: string[] }).why };
      };
      await produce(isoKafka, topic, Array.from({ length: 300 }, (_, i) => ({ key: `eq-${i % 10}`, value: encodeReading(schemaId, reading(tenant, i, base)) })));
      await waitUntil("300 rows before the bounce", async () => (await stored(db, tenant)) === 300, 60_000);
      await waitUntil("/readyz 200 before the bounce", async () => (await readyz()).code === 200, 30_000);
      await kafkaService.stop(ctx, { force: true }); // hard kill mid-stream
      // Not ready while the broker is down (the high watermarks cannot be read, or the consumer left the group).
      const down = await waitUntil("/readyz 503 while the broker is down", async () => {
        const r = await readyz();
        return r.code === 503 ? r : undefined;
      }, 60_000);
      expect(down.why.join("; ")).toMatch(/high watermarks not read from Kafka|consumer crashed|not a member of the consumer group/);
      await kafkaService.start(ctx);
      await kafkaService.waitReady(ctx, 120_000);
      await produce(isoKafka, topic, Array.from({ length: 300 }, (_, i) => ({ key: `eq-${i % 10}`, value: encodeReading(schemaId, reading(tenant, 300 + i, base)) })));
      await waitUntil("600 rows after the bounce, same worker process", async () => (await stored(db, tenant)) === 600, 120_000);
      await waitUntil("/readyz 200 again, same worker process", async () => (await readyz()).code === 200, 60_000);
      const distinct = await db.admin.query("SELECT count(DISTINCT temperature)::int AS n FROM sensor_data_raw WHERE tenant_id = $1", [tenant]);
      expect(distinct.rows[0].n).toBe(600);
      await health.close();
      await worker.stop();
    });
  });
});

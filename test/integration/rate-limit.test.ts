/**
 * Per-tier message rate limits (topology: equipment_quota.*_rate / *_burst) with a real worker:
 * a basic-tier tenant sending far above its rate is slowed — its partition paused — and still has
 * every reading stored (never dropped); an enterprise tenant (unlimited) beside it is never paused.
 *
 * Only lower bounds on time are asserted: the token bucket makes draining N readings at rate r
 * with burst b take at least (N − b) / r seconds however fast the machine is; a slow machine only
 * makes it longer.
 */
import { randomUUID } from "node:crypto";
import type { Admin, Kafka } from "kafkajs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { IngestWorker } from "../../pipelines/runtime/worker.ts";
import type { SensorReading } from "../../schemas/index.ts";
import { createTenant } from "../../tenants/provision.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";
import { deleteTopics, encodeReading, produce, registerSensorSchema, testKafka } from "../helpers/kafka.ts";
import { waitUntil } from "../helpers/wait.ts";
import { testPlan, testWorker } from "../helpers/worker.ts";

describe("per-tier rate limits", () => {
  let db: TestDatabase;
  let kafka: Kafka;
  let admin: Admin;
  let worker: IngestWorker | undefined;
  const BASIC = randomUUID();
  const ENTERPRISE = randomUUID();
  const topic = (t: string) => `sensor-data-${t}`;
  const N = 1_000;
  const RATE = 100;
  const BURST = 100;

  beforeAll(async () => {
    db = await createTestDatabase();
    kafka = testKafka();
    admin = kafka.admin();
    await admin.connect();
    await createTenant(db.admin, admin, { tenantId: BASIC, name: "basic", tier: "basic", partitions: 1 });
    await createTenant(db.admin, admin, { tenantId: ENTERPRISE, name: "enterprise", tier: "enterprise", partitions: 1 });
  });

  afterAll(async () => {
    await worker?.stop();
    await deleteTopics(admin, (t) => t.endsWith(BASIC) || t.endsWith(ENTERPRISE));
    await admin.disconnect();
    await db?.drop();
  });

  it("slows a basic tenant above its rate (paused, nothing dropped); the enterprise tenant is never paused", async () => {
    const schemaId = await registerSensorSchema(topic(BASIC));
    const base = Date.now() - 3_600_000;
    const readings = (tenant: string) =>
      Array.from({ length: N }, (_, i) => {
        const r: SensorReading = { time: base + i * 1000, tenant_id: tenant, equipment_id: `pump-${i % 10}`, facility_id: "fac-01", temperature: 20, vibration: 0.1, pressure: null, flow_rate: null };
        return { key: r.equipment_id, value: encodeReading(schemaId, r) };
      });
    await produce(kafka, topic(BASIC), readings(BASIC));
    await produce(kafka, topic(ENTERPRISE), readings(ENTERPRISE));

    const plan = testPlan({ maxRows: 50 });
    const quota = plan.processors.find((p) => p.type === "equipment_quota");
    if (!quota) throw new Error("topology.yaml has no equipment_quota processor");
    quota.rateLimits = { ...quota.rateLimits, basic: { perSecond: RATE, burst: BURST } };
    worker = testWorker(plan, db.adminUrl, [topic(BASIC), topic(ENTERPRISE)]);
    const started = Date.now();
    await worker.start();

    const stored = async (t: string) => (await db.admin.query<{ n: number }>("SELECT count(*)::int AS n FROM sensor_data_raw WHERE tenant_id = $1", [t])).rows[0]!.n;
    await waitUntil("the enterprise tenant's readings to be stored", async () => (await stored(ENTERPRISE)) === N, 120_000);
    await waitUntil("the basic tenant's readings to be stored (slowed, not dropped)", async () => (await stored(BASIC)) === N, 120_000);
    const elapsed = Date.now() - started;

    // At 100/s with a burst of 100, 1,000 readings cannot be through in less than 9 s.
    expect(elapsed).toBeGreaterThanOrEqual(((N - BURST) / RATE) * 1000);
    const delay = await worker.metrics.registry.getSingleMetric("millrace_rate_limit_delay_seconds_total")!.get();
    const of = (t: string) => delay.values.filter((v) => v.labels.tenant === t).reduce((a, v) => a + v.value, 0);
    // (The pauses plus the time spent processing make up the 9 s: the metric counts only pauses.)
    expect(of(BASIC)).toBeGreaterThan(0);
    expect(of(ENTERPRISE)).toBe(0);
    const dead = await db.admin.query<{ n: number }>("SELECT count(*)::int AS n FROM millrace.dead_letters WHERE tenant_id = ANY($1)", [[BASIC, ENTERPRISE]]);
    expect(dead.rows[0]!.n).toBe(0);
  });
});

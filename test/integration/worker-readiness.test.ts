/**
 * Failure class 5, readiness of a wedged consumer (real stack): a partition whose consumer stops
 * fetching while records keep arriving — so no batch ever reports them — still shows its lag (the
 * worker's high-watermark poll) and makes /readyz answer 503 naming that partition and no other;
 * once fetching resumes it drains and /readyz is 200 again. The wedge is the consumer's own
 * pause (kafkajs drops fetched data of a paused partition), so it is exact: no timing guesses.
 */
import { randomUUID } from "node:crypto";
import type { Admin, Consumer, Kafka } from "kafkajs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startHealthServer } from "../../pipelines/runtime/health.ts";
import type { IngestWorker } from "../../pipelines/runtime/worker.ts";
import type { SensorReading } from "../../schemas/index.ts";
import { createTenant } from "../../tenants/provision.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";
import { get, parseMetrics, sample } from "../helpers/http.ts";
import { deleteTopics, encodeReading, produce, registerSensorSchema, testKafka } from "../helpers/kafka.ts";
import { waitUntil } from "../helpers/wait.ts";
import { testPlan, testWorker } from "../helpers/worker.ts";

describe("readiness and lag of a wedged consumer (class 5)", () => {
  let db: TestDatabase;
  let kafka: Kafka;
  let admin: Admin;
  let worker: IngestWorker | undefined;
  let health: Awaited<ReturnType<typeof startHealthServer>> | undefined;
  const tenant = randomUUID();
  const topic = `sensor-data-${tenant}`;
  const base = Date.now() - 3_600_000;
  const reading = (i: number): SensorReading => ({
    time: base + i * 1000,
    tenant_id: tenant,
    equipment_id: `eq-${i % 5}`,
    facility_id: "fac-01",
    temperature: i,
    vibration: null,
    pressure: null,
    flow_rate: null,
  });
  let schemaId: number;
  let n = 0;
  const send = (partition: number, count: number) =>
    produce(kafka, topic, Array.from({ length: count }, () => ({ key: `eq-${n % 5}`, partition, value: encodeReading(schemaId, reading(n++)) })));
  const stored = async () => (await db.admin.query("SELECT count(*)::int AS n FROM sensor_data_raw WHERE tenant_id = $1", [tenant])).rows[0].n as number;
  const readyz = async () => {
    const r = await get(health!.port, "/readyz");
    const body = JSON.parse(r.body) as { ready: boolean; why: string[] };
    return { code: r.status, ready: body.ready, why: body.why };
  };
  const lagOf = async (partition: number) => sample(parseMetrics((await get(health!.port, "/metrics")).body), "millrace_consumer_lag_records", { topic, partition: String(partition) });

  beforeAll(async () => {
    db = await createTestDatabase();
    kafka = testKafka();
    admin = kafka.admin();
    await admin.connect();
    await createTenant(db.admin, admin, { tenantId: tenant, name: "wedge", tier: "enterprise", partitions: 2 });
    schemaId = await registerSensorSchema(topic);
  });
  afterAll(async () => {
    await health?.close();
    await worker?.stop();
    await deleteTopics(admin, (t) => t.endsWith(tenant));
    await admin.disconnect();
    await db?.drop();
  });

  it("a partition that stops fetching while records arrive: lag > 0 and /readyz 503 naming it; ready again after it resumes", async () => {
    const stallAfterMs = 3000;
    worker = testWorker(testPlan(), db.adminUrl, [topic], { stallAfterMs });
    expect(worker.plan.source.lagPollMs).toBe(1000);
    await worker.start();
    health = await startHealthServer(worker, 0, "127.0.0.1");

    await send(0, 10);
    await send(1, 10);
    await waitUntil("the first 20 readings", async () => (await stored()) === 20);
    await waitUntil("/readyz 200 with both partitions drained", async () => {
      const r = await readyz();
      const lags = [await lagOf(0), await lagOf(1)];
      if (r.code === 200 && lags[0] === 0 && lags[1] === 0) return true;
      throw new Error(`readyz ${r.code} ${JSON.stringify(r.why)}, lags ${JSON.stringify(lags)}`);
    }, 30_000);

    // Wedge partition 0: its consumer fetches nothing more. Partition 1 goes on.
    const consumer = (worker as unknown as { consumer: Consumer }).consumer;
    consumer.pause([{ topic, partitions: [0] }]);
    const wedgedAt = Date.now();
    await send(0, 30);
    await send(1, 5);
    await waitUntil("partition 1's 5 new readings (it is not wedged)", async () => (await stored()) === 25);

    const notReady = await waitUntil("/readyz to report partition 0 as stalled", async () => {
      const r = await readyz();
      return r.code === 503 ? r : undefined;
    }, 30_000);
    expect(Date.now() - wedgedAt).toBeGreaterThanOrEqual(stallAfterMs); // not before the stall period
    expect(notReady.ready).toBe(false);
    expect(notReady.why).toEqual([expect.stringMatching(new RegExp(`^${topic}\\[0\\] stalled at offset 10 with lag 30 for \\d+ s$`))]);
    // The lag came from the watermark poll: no batch of partition 0 arrived since the wedge.
    expect(await lagOf(0)).toBe(30);
    expect(await lagOf(1)).toBe(0);
    expect(worker.totalLag()).toBe(30);
    expect(await stored()).toBe(25);

    consumer.resume([{ topic, partitions: [0] }]);
    await waitUntil("all 55 readings after the resume", async () => (await stored()) === 55, 60_000);
    await waitUntil("/readyz 200 again", async () => (await readyz()).code === 200, 30_000);
    expect(await lagOf(0)).toBe(0);
    expect(worker.totalLag()).toBe(0);
    expect((await get(health.port, "/healthz")).status).toBe(200);
  });
});

/**
 * The database's offsets are authoritative, Kafka's committed offsets are only hints: a worker
 * whose database has no offsets for the group (a new or replaced database) while the group's Kafka
 * offsets are already at the end of the log must still store every record — also on partitions
 * where nothing new arrives (no batch would ever be fetched from the hinted position).
 */
import { randomBytes, randomUUID } from "node:crypto";
import type { Admin, Kafka } from "kafkajs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { IngestWorker } from "../../pipelines/runtime/worker.ts";
import type { SensorReading } from "../../schemas/index.ts";
import { createTenant } from "../../tenants/provision.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";
import { deleteTopics, encodeReading, produce, registerSensorSchema, testKafka } from "../helpers/kafka.ts";
import { waitUntil } from "../helpers/wait.ts";
import { testPlan, testWorker } from "../helpers/worker.ts";

describe("worker offsets: the database decides where to start", () => {
  const dbs: TestDatabase[] = [];
  let kafka: Kafka;
  let admin: Admin;
  let worker: IngestWorker | undefined;
  const T = randomUUID();
  const topic = `sensor-data-${T}`;
  const N = 300;

  beforeAll(async () => {
    kafka = testKafka();
    admin = kafka.admin();
    await admin.connect();
  });
  afterAll(async () => {
    await worker?.stop();
    await deleteTopics(admin, (t) => t.endsWith(T));
    await admin.disconnect();
    for (const d of dbs) await d.drop();
  });

  it("a fresh database with the group's Kafka offsets at the end: every record is stored, idle partitions included", async () => {
    const first = await createTestDatabase();
    dbs.push(first);
    await createTenant(first.admin, admin, { tenantId: T, name: "offsets", partitions: 3 });
    const schemaId = await registerSensorSchema(topic);
    const base = Date.now() - 3_600_000;
    await produce(
      kafka,
      topic,
      Array.from({ length: N }, (_, i) => {
        const r: SensorReading = { time: base + i * 1000, tenant_id: T, equipment_id: `eq-${i % 6}`, facility_id: "fac-01", temperature: 20, vibration: 0.1, pressure: null, flow_rate: null };
        return { key: r.equipment_id, value: encodeReading(schemaId, r) };
      }),
    );
    const group = `offsets-${randomBytes(3).toString("hex")}`;
    const count = async (d: TestDatabase) => (await d.admin.query<{ n: number }>("SELECT count(*)::int AS n FROM sensor_data_raw WHERE tenant_id = $1", [T])).rows[0]!.n;

    worker = testWorker(testPlan({ group }), first.adminUrl, [topic]);
    await worker.start();
    await waitUntil("the first database to hold every record", async () => (await count(first)) === N, 90_000);
    await worker.stop(); // commits the Kafka hints: the group is now at the end of every partition
    worker = undefined;
    const hinted = await admin.fetchOffsets({ groupId: group, topics: [topic] });
    const ends = await admin.fetchTopicOffsets(topic);
    expect(hinted[0]!.partitions.map((p) => [p.partition, p.offset]).sort()).toEqual(ends.map((e) => [e.partition, e.high]).sort());

    // A new database (e.g. replaced, or restored without the offsets), the same group, no new records.
    const second = await createTestDatabase();
    dbs.push(second);
    await createTenant(second.admin, admin, { tenantId: T, name: "offsets", partitions: 3 });
    worker = testWorker(testPlan({ group }), second.adminUrl, [topic]);
    await worker.start();
    await waitUntil("the new database to hold every record", async () => (await count(second)) === N, 90_000);
    const stored = await second.admin.query<{ n: number }>("SELECT count(*)::int AS n FROM millrace.consumer_offsets WHERE consumer_group = $1 AND topic = $2", [group, topic]);
    expect(stored.rows[0]!.n).toBe(3);
  });
});

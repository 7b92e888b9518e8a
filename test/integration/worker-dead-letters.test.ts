/**
 * The worker against the real stack: one record per dead-letter reason lands on the tenant's
 * dead-letter topic with the right headers and untouched bytes, the partition moves on, valid
 * readings are stored (failure classes 5, 7), and a restart after a clean stop processes nothing
 * again (class 4).
 */
import { randomUUID } from "node:crypto";
import type { Admin, Kafka } from "kafkajs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { SensorReading } from "../../schemas/index.ts";
import { createTenant } from "../../tenants/provision.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";
import { consumeAll, deleteTopics, encodeReading, endOffsets, header, produce, registerSensorSchema, testKafka, wire } from "../helpers/kafka.ts";
import { waitUntil } from "../helpers/wait.ts";
import { testPlan, testWorker } from "../helpers/worker.ts";
import type { IngestWorker } from "../../pipelines/runtime/worker.ts";
import { createTopicsAndWait } from "../../lib/kafka-topics.ts";

describe("ingest worker: dead letters and restarts", () => {
  let db: TestDatabase;
  let kafka: Kafka;
  let admin: Admin;
  const A = randomUUID();
  const B = randomUUID();
  const SUSPENDED = randomUUID();
  const UNKNOWN = randomUUID(); // has a topic but no tenants row
  const topic = (t: string) => `sensor-data-${t}`;
  const mine = (t: string) => [A, B, SUSPENDED, UNKNOWN].some((x) => t.endsWith(x));
  let schemaId: number;
  let worker: IngestWorker | undefined;
  const now = Date.now();
  const good = (i: number, tenant = A): SensorReading => ({
    time: now - 60_000 + i * 100,
    tenant_id: tenant,
    equipment_id: `pump-${String(i).padStart(3, "0")}`,
    facility_id: "fac-01",
    temperature: 20 + i,
    vibration: 0.1,
    pressure: null,
  });

  beforeAll(async () => {
    db = await createTestDatabase();
    kafka = testKafka();
    admin = kafka.admin();
    await admin.connect();
    await createTenant(db.admin, admin, { tenantId: A, name: "A", tier: "basic", partitions: 1 });
    await createTenant(db.admin, admin, { tenantId: B, name: "B", tier: "basic", partitions: 1 });
    await createTenant(db.admin, admin, { tenantId: SUSPENDED, name: "S", tier: "basic", partitions: 1 });
    await db.admin.query("UPDATE tenants SET status = 'suspended' WHERE tenant_id = $1", [SUSPENDED]);
    await createTopicsAndWait(admin, [{ topic: topic(UNKNOWN), numPartitions: 1 }]);
    schemaId = await registerSensorSchema(topic(A));
    // A row the database itself refuses (stands for any record that always fails in the sink).
    await db.admin.query("ALTER TABLE sensor_data_raw ADD CONSTRAINT test_poison CHECK (equipment_id <> 'poison-pill')");
  });

  afterAll(async () => {
    await worker?.stop();
    await deleteTopics(admin, mine);
    await admin.disconnect();
    await db?.drop();
  });

  it("dead-letters one record per reason with headers and original bytes; stores the valid ones; the partition moves on", async () => {
    const json = Buffer.from(JSON.stringify(good(0)));
    const cases: Array<{ reason: string; value: Buffer; key: string }> = [
      { reason: "bad_magic_byte", value: json, key: "k-json" },
      { reason: "short_frame", value: Buffer.from([0, 0, 1]), key: "k-short" },
      { reason: "unknown_schema_id", value: wire(999_999, Buffer.from([2, 4, 6])), key: "k-unknown" },
      { reason: "undecodable_body", value: wire(schemaId, Buffer.from([0xff, 0xff, 0xff])), key: "k-body" },
      { reason: "tenant_mismatch", value: encodeReading(schemaId, good(1, B)), key: "k-mismatch" },
      { reason: "time_in_future", value: encodeReading(schemaId, { ...good(2), time: now + 3_600_000 }), key: "k-future" },
      { reason: "time_too_old", value: encodeReading(schemaId, { ...good(3), time: now - 40 * 86_400_000 }), key: "k-old" },
      { reason: "non_finite_value", value: encodeReading(schemaId, { ...good(4), temperature: NaN }), key: "k-nan" },
      { reason: "invalid_equipment_id", value: encodeReading(schemaId, { ...good(5), equipment_id: "bad id with spaces" }), key: "k-eq" },
      { reason: "invalid_facility_id", value: encodeReading(schemaId, { ...good(6), facility_id: "" }), key: "k-fac" },
      { reason: "sink_data_error", value: encodeReading(schemaId, { ...good(7), equipment_id: "poison-pill" }), key: "k-poison" },
    ];
    const valid = Array.from({ length: 10 }, (_, i) => good(100 + i));
    await produce(kafka, topic(A), [
      ...cases.map((c) => ({ key: c.key, value: c.value, headers: { "x-producer": "test" } })),
      ...valid.map((r) => ({ key: r.equipment_id, value: encodeReading(schemaId, r) })),
    ]);
    await produce(kafka, topic(SUSPENDED), [{ key: "k-susp", value: encodeReading(schemaId, good(1, SUSPENDED)) }]);
    await produce(kafka, topic(UNKNOWN), [{ key: "k-unk", value: encodeReading(schemaId, good(1, UNKNOWN)) }]);

    worker = testWorker(testPlan(), db.adminUrl, [A, B, SUSPENDED, UNKNOWN].map(topic));
    await worker.start();

    const dlq = await consumeAll(kafka, `dead-letters-${A}`, cases.length, 90_000);
    const byKey = new Map(dlq.map((m) => [m.key?.toString(), m]));
    for (const c of cases) {
      const m = byKey.get(c.key);
      expect(m, `dead letter for ${c.reason}`).toBeDefined();
      expect(header(m!, "millrace.reason")).toBe(c.reason);
      expect(m!.value!.equals(c.value)).toBe(true); // original bytes untouched
      expect(header(m!, "millrace.source.topic")).toBe(topic(A));
      expect(header(m!, "millrace.source.partition")).toBe("0");
      expect(Number(header(m!, "millrace.source.offset"))).toBe(cases.indexOf(c));
      expect(header(m!, "millrace.tenant")).toBe(A);
      expect(header(m!, "millrace.stage")).toMatch(/^(decode|validate|sink)$/);
      expect(header(m!, "millrace.message")!.length).toBeGreaterThan(5);
      expect(header(m!, "x-producer")).toBe("test"); // original headers kept
    }
    expect(header(byKey.get("k-unknown")!, "millrace.schema.id")).toBe("999999");
    // The payload naming tenant B is stored under neither tenant.
    const stored = await db.admin.query<{ tenant_id: string; n: number }>("SELECT tenant_id, count(*)::int AS n FROM sensor_data_raw GROUP BY 1");
    expect(stored.rows).toEqual([{ tenant_id: A, n: 10 }]);

    const susp = await consumeAll(kafka, `dead-letters-${SUSPENDED}`, 1, 60_000);
    expect(header(susp[0]!, "millrace.reason")).toBe("tenant_suspended");
    const unk = await consumeAll(kafka, `dead-letters-${UNKNOWN}`, 1, 60_000);
    expect(header(unk[0]!, "millrace.reason")).toBe("unknown_tenant");

    // Every partition's stored offset reached the end: nothing stalled behind the poison records.
    const end = await endOffsets(admin, topic(A));
    await waitUntil("offsets of A to reach the end", async () => {
      const r = await db.admin.query("SELECT next_offset FROM millrace.consumer_offsets WHERE topic = $1", [topic(A)]);
      return Number(r.rows[0]?.next_offset) === end.get(0);
    });
    expect(worker.totalLag()).toBe(0);
    const metrics = await worker.metrics.registry.getSingleMetricAsString("millrace_dead_letters_total");
    expect(metrics).toMatch(new RegExp(`tenant="${A}",reason="sink_data_error"[^\\n]* 1(\\n|$)`));
  });

  it("a restart after a clean stop processes nothing again (committed offset = last + 1, class 4)", async () => {
    const before = await db.admin.query("SELECT count(*)::int AS n FROM sensor_data_raw");
    const offsetsBefore = await db.admin.query("SELECT topic, next_offset FROM millrace.consumer_offsets ORDER BY topic");
    const group = worker!.plan.source.consumerGroup;
    await worker!.stop();
    // Kafka's own committed offset is last + 1 too.
    const committed = await admin.fetchOffsets({ groupId: group, topics: [topic(A)] });
    expect(Number(committed[0]!.partitions[0]!.offset)).toBe((await endOffsets(admin, topic(A))).get(0));

    worker = testWorker(testPlan({ group }), db.adminUrl, [A, B, SUSPENDED, UNKNOWN].map(topic));
    await worker.start();
    await produce(kafka, topic(B), [{ key: "after", value: encodeReading(schemaId, good(1, B)) }]);
    await waitUntil("the new record of B to be stored", async () => {
      const r = await db.admin.query("SELECT count(*)::int AS n FROM sensor_data_raw WHERE tenant_id = $1", [B]);
      return r.rows[0].n === 1;
    });
    const after = await db.admin.query("SELECT count(*)::int AS n FROM sensor_data_raw");
    expect(after.rows[0].n).toBe(before.rows[0].n + 1);
    const offsetsAfter = await db.admin.query("SELECT topic, next_offset FROM millrace.consumer_offsets WHERE topic <> $1 ORDER BY topic", [topic(B)]);
    expect(offsetsAfter.rows).toEqual(offsetsBefore.rows.filter((r) => r.topic !== topic(B)));
    const dls = await db.admin.query("SELECT count(*)::int AS n FROM millrace.dead_letters");
    expect(dls.rows[0].n).toBe(13); // 11 of A, 1 suspended, 1 unknown — none repeated
  });
});

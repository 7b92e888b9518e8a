/**
 * The worker against the real stack: one record per dead-letter reason lands on the tenant's
 * dead-letter topic with the right headers and untouched bytes, the partition moves on, valid
 * readings are stored (failure classes 5, 7); the worker's HTTP port reports all of it (/metrics,
 * /healthz) with bounded labels; and a restart after a clean stop processes nothing again (class 4).
 */
import { randomUUID } from "node:crypto";
import type { Admin, Kafka } from "kafkajs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { SensorReading } from "../../schemas/index.ts";
import { createTenant } from "../../tenants/provision.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";
import { consumeAll, deleteTopics, encodeReading, endOffsets, header, produce, registerSensorSchema, testKafka, wire } from "../helpers/kafka.ts";
import { get, parseMetrics, sample, samples } from "../helpers/http.ts";
import { waitUntil } from "../helpers/wait.ts";
import { startHealthServer } from "../../pipelines/runtime/health.ts";
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
  const QUOTA = randomUUID(); // max_equipment 1
  const ALL = [A, B, SUSPENDED, UNKNOWN, QUOTA];
  const topic = (t: string) => `sensor-data-${t}`;
  const mine = (t: string) => ALL.some((x) => t.endsWith(x));
  let schemaId: number;
  /** A registered writer schema that cannot be resolved to SensorReading. */
  let incompatibleId: number;
  const incompatible = '{"type":"record","name":"Other","namespace":"test","fields":[{"name":"x","type":"string"}]}';
  let health: Awaited<ReturnType<typeof startHealthServer>> | undefined;
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
    flow_rate: null,
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
    await createTenant(db.admin, admin, { tenantId: QUOTA, name: "Q", tier: "basic", partitions: 1, maxEquipment: 1 });
    await createTopicsAndWait(admin, [{ topic: topic(UNKNOWN), numPartitions: 1 }]);
    schemaId = await registerSensorSchema(topic(A));
    incompatibleId = await registerSensorSchema(`incompatible-${A}`, incompatible);
    // A row the database itself refuses (stands for any record that always fails in the sink).
    await db.admin.query("ALTER TABLE sensor_data_raw ADD CONSTRAINT test_poison CHECK (equipment_id <> 'poison-pill')");
  });

  afterAll(async () => {
    await health?.close();
    await worker?.stop();
    await deleteTopics(admin, mine);
    await admin.disconnect();
    await db?.drop();
  });

  it("dead-letters one record per reason with headers and original bytes; stores the valid ones; the partition moves on", async () => {
    const json = Buffer.from(JSON.stringify(good(0)));
    // Every reason of docs/dead-letters.md with its stage; `schemaId`: the frame's id (null: no frame).
    const cases: Array<{ reason: string; stage: string; value: Buffer | null; key: string; schemaId: number | null }> = [
      { reason: "empty_payload", stage: "decode", value: null, key: "k-empty", schemaId: null },
      { reason: "bad_magic_byte", stage: "decode", value: json, key: "k-json", schemaId: null },
      { reason: "short_frame", stage: "decode", value: Buffer.from([0, 0, 1]), key: "k-short", schemaId: null },
      { reason: "unknown_schema_id", stage: "decode", value: wire(999_999, Buffer.from([2, 4, 6])), key: "k-unknown", schemaId: 999_999 },
      { reason: "incompatible_schema", stage: "decode", value: wire(incompatibleId, Buffer.from([2, 0x78])), key: "k-incompatible", schemaId: incompatibleId },
      { reason: "undecodable_body", stage: "decode", value: wire(schemaId, Buffer.from([0xff, 0xff, 0xff])), key: "k-body", schemaId },
      { reason: "tenant_mismatch", stage: "validate", value: encodeReading(schemaId, good(1, B)), key: "k-mismatch", schemaId },
      { reason: "invalid_time", stage: "validate", value: encodeReading(schemaId, { ...good(8), time: Date.UTC(1899, 11, 31, 23, 59, 59) }), key: "k-1899", schemaId },
      { reason: "time_in_future", stage: "validate", value: encodeReading(schemaId, { ...good(2), time: now + 3_600_000 }), key: "k-future", schemaId },
      { reason: "time_too_old", stage: "validate", value: encodeReading(schemaId, { ...good(3), time: now - 40 * 86_400_000 }), key: "k-old", schemaId },
      { reason: "non_finite_value", stage: "validate", value: encodeReading(schemaId, { ...good(4), temperature: NaN }), key: "k-nan", schemaId },
      { reason: "invalid_equipment_id", stage: "validate", value: encodeReading(schemaId, { ...good(5), equipment_id: "bad id with spaces" }), key: "k-eq", schemaId },
      { reason: "invalid_facility_id", stage: "validate", value: encodeReading(schemaId, { ...good(6), facility_id: "" }), key: "k-fac", schemaId },
      { reason: "sink_data_error", stage: "sink", value: encodeReading(schemaId, { ...good(7), equipment_id: "poison-pill" }), key: "k-poison", schemaId },
    ];
    expect(new Set(cases.map((c) => c.reason)).size).toBe(cases.length);
    const valid = Array.from({ length: 10 }, (_, i) => good(100 + i));
    await produce(kafka, topic(A), [
      // A forged millrace header and a repeated one (docs/dead-letters.md says what is kept).
      ...cases.map((c) => ({ key: c.key, value: c.value, headers: { "x-producer": "test", "millrace.reason": "forged", "x-multi": ["first", "last"] } })),
      ...valid.map((r) => ({ key: r.equipment_id, value: encodeReading(schemaId, r) })),
    ]);
    await produce(kafka, topic(SUSPENDED), [{ key: "k-susp", value: encodeReading(schemaId, good(1, SUSPENDED)) }]);
    await produce(kafka, topic(UNKNOWN), [{ key: "k-unk", value: encodeReading(schemaId, good(1, UNKNOWN)) }]);
    // Two equipment for a tenant allowed one: the second is refused by the quota.
    await produce(kafka, topic(QUOTA), [
      { key: "q-1", value: encodeReading(schemaId, { ...good(1, QUOTA), equipment_id: "quota-eq-1" }) },
      { key: "q-2", value: encodeReading(schemaId, { ...good(2, QUOTA), equipment_id: "quota-eq-2" }) },
    ]);

    worker = testWorker(testPlan(), db.adminUrl, ALL.map(topic));
    await worker.start();
    health = await startHealthServer(worker, 0, "127.0.0.1");
    expect(health.port).toBeGreaterThan(0);

    const dlq = await consumeAll(kafka, `dead-letters-${A}`, cases.length, 90_000);
    const byKey = new Map(dlq.map((m) => [m.key?.toString(), m]));
    for (const c of cases) {
      const m = byKey.get(c.key);
      expect(m, `dead letter for ${c.reason}`).toBeDefined();
      expect(header(m!, "millrace.reason")).toBe(c.reason);
      expect({ reason: c.reason, stage: header(m!, "millrace.stage") }).toEqual({ reason: c.reason, stage: c.stage });
      expect({ reason: c.reason, schemaId: header(m!, "millrace.schema.id") }).toEqual({ reason: c.reason, schemaId: c.schemaId === null ? undefined : String(c.schemaId) });
      if (c.value === null) expect(m!.value).toBeNull();
      else expect(m!.value!.equals(c.value)).toBe(true); // original bytes untouched
      expect(header(m!, "millrace.source.topic")).toBe(topic(A));
      expect(header(m!, "millrace.source.partition")).toBe("0");
      expect(Number(header(m!, "millrace.source.offset"))).toBe(cases.indexOf(c));
      expect(header(m!, "millrace.tenant")).toBe(A);
      expect(header(m!, "millrace.message")!.length).toBeGreaterThan(5);
      expect(header(m!, "millrace.dlq.id")).toBe(`${topic(A)}/0/${cases.indexOf(c)}`);
      expect(header(m!, "x-producer")).toBe("test"); // original headers kept
      expect(m!.headers!["x-multi"]?.toString()).toBe("last"); // one value per name: the last
      expect(Object.keys(m!.headers!).filter((k) => k.startsWith("millrace.")).sort()).toEqual(
        ["millrace.dlq.id", "millrace.message", "millrace.reason", ...(c.schemaId === null ? [] : ["millrace.schema.id"]), "millrace.source.offset", "millrace.source.partition", "millrace.source.timestamp", "millrace.source.topic", "millrace.stage", "millrace.tenant"],
      );
    }
    expect(dlq.length).toBe(cases.length);
    // The payload naming tenant B is stored under neither tenant.
    const stored = await db.admin.query<{ tenant_id: string; equipment_id: string }>("SELECT tenant_id, equipment_id FROM sensor_data_raw WHERE tenant_id <> $1", [A]);
    expect(stored.rows).toEqual([{ tenant_id: QUOTA, equipment_id: expect.stringMatching(/^quota-eq-[12]$/) }]);
    expect((await db.admin.query("SELECT count(*)::int AS n FROM sensor_data_raw WHERE tenant_id = $1", [A])).rows[0].n).toBe(10);

    const susp = await consumeAll(kafka, `dead-letters-${SUSPENDED}`, 1, 60_000);
    expect(header(susp[0]!, "millrace.reason")).toBe("tenant_suspended");
    expect(header(susp[0]!, "millrace.stage")).toBe("validate");
    expect(header(susp[0]!, "millrace.schema.id")).toBe(String(schemaId));
    const unk = await consumeAll(kafka, `dead-letters-${UNKNOWN}`, 1, 60_000);
    expect(header(unk[0]!, "millrace.reason")).toBe("unknown_tenant");
    expect(header(unk[0]!, "millrace.stage")).toBe("validate");
    expect(header(unk[0]!, "millrace.schema.id")).toBe(String(schemaId));
    const quota = await consumeAll(kafka, `dead-letters-${QUOTA}`, 1, 60_000);
    expect(quota.map((m) => [header(m, "millrace.reason"), header(m, "millrace.stage"), header(m, "millrace.schema.id")])).toEqual([["quota_exceeded", "quota", String(schemaId)]]);
    // The refused one is the equipment that was not stored.
    expect(quota[0]!.key!.toString()).toBe(stored.rows[0]!.equipment_id === "quota-eq-1" ? "q-2" : "q-1");

    // Every partition's stored offset reached the end: nothing stalled behind the poison records.
    const end = await endOffsets(admin, topic(A));
    await waitUntil("offsets of A to reach the end", async () => {
      const r = await db.admin.query("SELECT next_offset FROM millrace.consumer_offsets WHERE topic = $1", [topic(A)]);
      return Number(r.rows[0]?.next_offset) === end.get(0);
    });
    expect(worker.totalLag()).toBe(0);
  });

  it("the HTTP port: /healthz 200; /metrics reports records, dead letters, sink batches, lag and produce-to-commit, with no equipment in any label", async () => {
    expect(await get(health!.port, "/healthz")).toEqual({ status: 200, body: "ok\n" });
    const res = await get(health!.port, "/metrics");
    expect(res.status).toBe(200);
    const text = res.body;
    const all = parseMetrics(text);
    // Records by tenant and outcome: every record produced is accounted for once.
    const records = (tenant: string) =>
      Object.fromEntries(samples(all, "millrace_records_total", { tenant }).map((s) => [s.labels.outcome, s.value]));
    expect(records(A)).toEqual({ stored: 10, duplicate: 0, dead_lettered: 14 });
    expect(records(QUOTA)).toEqual({ stored: 1, duplicate: 0, dead_lettered: 1 });
    expect(records(SUSPENDED)).toMatchObject({ dead_lettered: 1 });
    expect(records(UNKNOWN)).toMatchObject({ dead_lettered: 1 });
    // Dead letters by reason: exactly one per reason for A.
    const reasonsOfA = Object.fromEntries(samples(all, "millrace_dead_letters_total", { tenant: A }).map((s) => [s.labels.reason, s.value]));
    expect(reasonsOfA).toEqual({
      empty_payload: 1, bad_magic_byte: 1, short_frame: 1, unknown_schema_id: 1, incompatible_schema: 1, undecodable_body: 1,
      tenant_mismatch: 1, invalid_time: 1, time_in_future: 1, time_too_old: 1, non_finite_value: 1, invalid_equipment_id: 1,
      invalid_facility_id: 1, sink_data_error: 1,
    });
    expect(sample(all, "millrace_dead_letters_total", { tenant: QUOTA, reason: "quota_exceeded" })).toBe(1);
    expect(sample(all, "millrace_dead_letters_total", { tenant: SUSPENDED, reason: "tenant_suspended" })).toBe(1);
    expect(sample(all, "millrace_dead_letters_total", { tenant: UNKNOWN, reason: "unknown_tenant" })).toBe(1);
    // Batch size and duration per sink: the rows written add up to the rows stored.
    const sink = worker!.plan.sinks.find((x) => x.type === "timescale_copy")!.id;
    const batches = sample(all, "millrace_sink_batch_rows_count", { sink })!;
    expect(batches).toBeGreaterThan(0);
    // Rows offered to the sink: 10 valid of A + its poison row (refused by PostgreSQL, then dead-lettered) + 1 of QUOTA.
    expect(sample(all, "millrace_sink_batch_rows_sum", { sink })).toBe(12);
    expect(sample(all, "millrace_sink_batch_duration_seconds_count", { sink })).toBe(batches);
    expect(sample(all, "millrace_sink_batch_duration_seconds_sum", { sink })).toBeGreaterThan(0);
    // Lag per partition, 0 after draining, for every topic of the test.
    for (const t of ALL) expect(sample(all, "millrace_consumer_lag_records", { topic: topic(t), partition: "0" }), t).toBe(0);
    // Produce-to-commit time.
    expect(sample(all, "millrace_produce_to_commit_seconds_count", { tenant: A })).toBeGreaterThan(0);
    expect(sample(all, "millrace_produce_to_commit_seconds_count", { tenant: QUOTA })).toBeGreaterThan(0);
    // Bounded labels: no equipment id of this test anywhere in the exposition.
    for (const eq of ["pump-", "poison-pill", "bad id with spaces", "quota-eq-"]) expect(text, eq).not.toContain(eq);
    const labelNames = new Set(all.filter((s) => s.name.startsWith("millrace_") && !s.name.startsWith("millrace_process_")).flatMap((s) => Object.keys(s.labels)));
    for (const l of labelNames) expect(["instance", "tenant", "outcome", "reason", "sink", "topic", "partition", "le", "step", "severity", "result"], l).toContain(l);
  });

  it("a restart after a clean stop processes nothing again (committed offset = last + 1, class 4)", async () => {
    const before = await db.admin.query("SELECT count(*)::int AS n FROM sensor_data_raw");
    const offsetsBefore = await db.admin.query("SELECT topic, next_offset FROM millrace.consumer_offsets ORDER BY topic");
    const group = worker!.plan.source.consumerGroup;
    await worker!.stop();
    // Kafka's own committed offset is last + 1 too.
    const committed = await admin.fetchOffsets({ groupId: group, topics: [topic(A)] });
    expect(Number(committed[0]!.partitions[0]!.offset)).toBe((await endOffsets(admin, topic(A))).get(0));

    await health?.close();
    health = undefined;
    worker = testWorker(testPlan({ group }), db.adminUrl, ALL.map(topic));
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
    expect(dls.rows[0].n).toBe(17); // 14 of A, 1 suspended, 1 unknown, 1 over quota — none repeated
  });
});

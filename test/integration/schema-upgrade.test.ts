/**
 * Upgrading a running installation to SensorReading version 2 (flow_rate), in the documented order
 * (docs/operations.md "Upgrading"): a worker of the new code refuses a database that is not
 * migrated yet, with the fix; `millrace migrate` adds the column without touching stored rows; then
 * a producer still on version 1 and one on version 2 publish to the same topic and both readings
 * are stored, the version-1 one with flow_rate null.
 */
import { randomUUID } from "node:crypto";
import type { Admin, Kafka } from "kafkajs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadMigrations, migrate } from "../../migrations/migrate.ts";
import type { IngestWorker } from "../../pipelines/runtime/worker.ts";
import { createWireEncoder } from "../../produce/encode.ts";
import { createSchemaRegistry, registerSensorSchema, sensorSubject } from "../../produce/registry.ts";
import { parseAvroSchema, SENSOR_READING_SCHEMA_TEXT } from "../../schemas/index.ts";
import pg from "pg";
import { databaseUrl, tenantDatabaseRef } from "../../tenants/database.ts";
import { createTenant } from "../../tenants/provision.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";
import { deleteTopics, testKafka } from "../helpers/kafka.ts";
import { waitUntil } from "../helpers/wait.ts";
import { testPlan, testWorker } from "../helpers/worker.ts";

/** The schema as version 1 published it: the same fields without flow_rate. */
const V1_TEXT = (() => {
  const s = JSON.parse(SENSOR_READING_SCHEMA_TEXT) as { fields: Array<{ name: string }> };
  return JSON.stringify({ ...s, fields: s.fields.filter((f) => f.name !== "flow_rate") });
})();

describe("upgrading to SensorReading v2 (flow_rate)", () => {
  let db: TestDatabase;
  let kafka: Kafka;
  let admin: Admin;
  let worker: IngestWorker | undefined;
  const tenant = randomUUID();
  const topic = `sensor-data-${tenant}`;
  // Now (partitions exist from two days back; older days are created on demand by the worker only).
  const T0 = Math.floor(Date.now() / 1000) * 1000 - 120_000;

  beforeAll(async () => {
    db = await createTestDatabase({ migrate: false });
    // The installation before the upgrade: migrated up to 011.
    await migrate(db.adminUrl, { migrations: loadMigrations().filter((m) => m.version <= 11) });
    kafka = testKafka();
    admin = kafka.admin();
    await admin.connect();
    await createTenant(db.admin, admin, { tenantId: tenant, name: "upgrade", tier: "enterprise", partitions: 1 });
    // A row stored by the old code (its column list).
    await db.admin.query(
      "INSERT INTO sensor_data_raw (time, tenant_id, equipment_id, facility_id, temperature, vibration, pressure) VALUES ($1, $2, 'pump-old', 'f', 20, 0.1, 1.5)",
      [new Date(T0 - 60_000), tenant],
    );
  });
  afterAll(async () => {
    await worker?.stop();
    await deleteTopics(admin, (t) => t.endsWith(tenant));
    await admin.disconnect();
    await db?.drop();
  });

  it("a new worker refuses the unmigrated database with the fix; after `migrate` it stores v1 and v2 readings side by side", async () => {
    const early = testWorker(testPlan(), db.adminUrl, [topic]);
    try {
      await expect(early.start()).rejects.toThrow(/^the shared database is not migrated to this version of millrace: its schema predates 012_flow_rate, .*Run `millrace migrate`/);
    } finally {
      await early.stop().catch(() => {});
    }

    const res = await migrate(db.adminUrl);
    expect(res.applied.map((m) => m.name)).toEqual(["012_flow_rate"]);
    const old = await db.admin.query("SELECT equipment_id, pressure, flow_rate FROM sensor_data_raw");
    expect(old.rows).toEqual([{ equipment_id: "pump-old", pressure: 1.5, flow_rate: null }]);
    const view = await db.admin.query("SELECT column_name FROM information_schema.columns WHERE table_name = 'sensor_data_hourly' ORDER BY ordinal_position");
    expect(view.rows.map((r) => r.column_name).slice(-2)).toEqual(["avg_flow_rate", "min_flow_rate"]);

    // Two producers on one topic: one still on version 1 (registered first), one on version 2.
    const registry = createSchemaRegistry();
    const v1Id = await registerSensorSchema(registry, sensorSubject(topic), V1_TEXT);
    const v2Id = await registerSensorSchema(registry, sensorSubject(topic));
    expect(v2Id).not.toBe(v1Id);
    const v1 = createWireEncoder(v1Id, parseAvroSchema(V1_TEXT));
    const v2 = createWireEncoder(v2Id, parseAvroSchema(SENSOR_READING_SCHEMA_TEXT));
    const base = { tenant_id: tenant, facility_id: "f", temperature: 21, vibration: 0.2, pressure: 1.25 };
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    await producer.send({
      topic,
      acks: -1,
      messages: [
        { key: "pump-v1", value: v1.encode({ ...base, time: T0, equipment_id: "pump-v1" } as never) },
        { key: "pump-v2", value: v2.encode({ ...base, time: T0, equipment_id: "pump-v2", flow_rate: 31.25 }) },
      ],
    });
    await producer.disconnect();

    worker = testWorker(testPlan(), db.adminUrl, [topic]);
    await worker.start();
    await waitUntil("both readings stored", async () => (await db.admin.query("SELECT count(*)::int AS n FROM sensor_data_raw")).rows[0].n === 3, 60_000);
    const rows = await db.admin.query("SELECT equipment_id, pressure, flow_rate FROM sensor_data_raw ORDER BY equipment_id");
    expect(rows.rows).toEqual([
      { equipment_id: "pump-old", pressure: 1.5, flow_rate: null },
      { equipment_id: "pump-v1", pressure: 1.25, flow_rate: null },
      { equipment_id: "pump-v2", pressure: 1.25, flow_rate: 31.25 },
    ]);
    const dead = await db.admin.query("SELECT count(*)::int AS n FROM millrace.dead_letters");
    expect(dead.rows[0].n).toBe(0);
  });
  it("a dedicated database behind the code: only its tenant waits (readiness names it), the others go on; after `migrate` it catches up", async () => {
    await worker?.stop();
    worker = undefined;
    const solo = randomUUID();
    const soloTopic = `sensor-data-${solo}`;
    await createTenant(db.admin, admin, { tenantId: solo, name: "solo", tier: "enterprise", partitions: 1, dedicatedDatabase: { adminUrl: db.adminUrl } });
    const soloUrl = databaseUrl((await tenantDatabaseRef(db.admin, solo))!, db.adminUrl);
    const own = new pg.Pool({ connectionString: soloUrl, max: 1 });
    try {
      // As if the dedicated database had missed the last `millrace migrate`.
      await own.query("DELETE FROM public.millrace_schema_migrations WHERE version = 12");
      const registry = createSchemaRegistry();
      const enc = (t: string) => registerSensorSchema(registry, sensorSubject(t)).then((id) => createWireEncoder(id, parseAvroSchema(SENSOR_READING_SCHEMA_TEXT)));
      const [encShared, encSolo] = await Promise.all([enc(topic), enc(soloTopic)]);
      const reading = (t: string, e: string) => ({ time: T0 + 1000, tenant_id: t, equipment_id: e, facility_id: "f", temperature: 1, vibration: null, pressure: null, flow_rate: 30 });
      const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
      await producer.connect();
      await producer.send({ topic, acks: -1, messages: [{ key: "pump-after", value: encShared.encode(reading(tenant, "pump-after")) }] });
      await producer.send({ topic: soloTopic, acks: -1, messages: [{ key: "pump-solo", value: encSolo.encode(reading(solo, "pump-solo")) }] });
      await producer.disconnect();

      worker = testWorker(testPlan(), db.adminUrl, [topic, soloTopic]);
      await worker.start();
      await waitUntil("the shared tenant's reading stored", async () => (await db.admin.query("SELECT 1 FROM sensor_data_raw WHERE equipment_id = 'pump-after'")).rowCount === 1, 60_000);
      await waitUntil(
        "readiness to name the dedicated tenant's partition, and only it, with the reason",
        async () => {
          const r = worker!.ready();
          return !r.ready && r.why.some((w) => w.startsWith(`${soloTopic}[0] waits for its tenant's database (retrying): tenant ${solo}'s dedicated database`) && w.includes("missing 012_flow_rate. Run `millrace migrate`")) && !r.why.some((w) => w.startsWith(`${topic}[`));
        },
        60_000,
      );
      expect((await own.query("SELECT count(*)::int AS n FROM sensor_data_raw")).rows[0].n).toBe(0);

      const res = await migrate(soloUrl);
      expect(res.applied.map((m) => m.name)).toEqual(["012_flow_rate"]);
      await waitUntil("the dedicated tenant's reading stored after migrate", async () => (await own.query("SELECT flow_rate FROM sensor_data_raw WHERE equipment_id = 'pump-solo'")).rows[0]?.flow_rate === 30, 90_000);
      expect((await db.admin.query("SELECT count(*)::int AS n FROM millrace.dead_letters")).rows[0].n).toBe(0);
      expect((await own.query("SELECT count(*)::int AS n FROM millrace.dead_letters")).rows[0].n).toBe(0);
    } finally {
      await own.end();
    }
  });
});

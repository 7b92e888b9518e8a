/**
 * `produce` against the stack's Kafka and schema registry: a tenant topic created here with the
 * admin (produce itself never creates topics), 500 synthetic readings published through the
 * idempotent batch publisher, consumed back with a kafkajs consumer and decoded with
 * @kafkajs/confluent-schema-registry — same count, same values, keys = equipment ids. Also: a tenant
 * without a topic is refused with the provisioning hint.
 */
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { logLevel, type Admin, type Consumer } from "kafkajs";
import { createKafka } from "../../lib/kafka-client.ts";
import { SchemaRegistry } from "@kafkajs/confluent-schema-registry";
import { requireEnv } from "../../lib/env.ts";
import type { SensorReading } from "../../schemas/index.ts";
import { parseWire } from "../../produce/encode.ts";
import { produceReadings, sensorTopic, TopicMissingError, type BatchAck } from "../../produce/publisher.ts";
import { sensorSubject } from "../../produce/registry.ts";
import { syntheticReadings, syntheticSpanMs } from "../../produce/synthetic.ts";
import { createTopicsAndWait } from "../../lib/kafka-topics.ts";

const COUNT = 500;
const CONSUME_MS = 60_000;

/** Poll until `done()` or fail after timeoutMs naming what was awaited. */
async function until(what: () => string, done: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Avro `float` is 32-bit: a decoded measure is the float32 nearest to the one produced. */
function asFloat32(r: SensorReading): SensorReading {
  const f = (v: number | null) => (v === null ? null : Math.fround(v));
  return { ...r, temperature: f(r.temperature), vibration: f(r.vibration), pressure: f(r.pressure) };
}

describe("produce → Kafka → consume and decode", () => {
  const brokers = requireEnv("MILLRACE_KAFKA_BROKERS").split(",");
  const registryUrl = requireEnv("MILLRACE_SCHEMA_REGISTRY_URL");
  const kafka = createKafka({ clientId: "produce-test", brokers, logLevel: logLevel.NOTHING, retry: { retries: 8 } });
  const registry = new SchemaRegistry({ host: registryUrl, clientId: "produce-test", retry: { retries: 2 } });
  const tenantId = randomUUID();
  const topic = sensorTopic(tenantId);
  let admin: Admin;
  let consumer: Consumer | undefined;

  beforeAll(async () => {
    admin = kafka.admin();
    await admin.connect();
    await createTopicsAndWait(admin, [{ topic, numPartitions: 3, replicationFactor: 1 }]);
  });

  afterAll(async () => {
    await consumer?.disconnect().catch(() => undefined);
    await admin?.deleteTopics({ topics: [topic] }).catch(() => undefined);
    await admin?.disconnect();
    // Leave no subject behind either (soft, then permanent delete; best effort).
    const subject = encodeURIComponent(sensorSubject(topic));
    await fetch(`${registryUrl}/subjects/${subject}`, { method: "DELETE" }).catch(() => undefined);
    await fetch(`${registryUrl}/subjects/${subject}?permanent=true`, { method: "DELETE" }).catch(() => undefined);
  });

  it(`publishes ${COUNT} synthetic readings that read back equal, keyed by equipment id`, async () => {
    const fleet = { tenants: [tenantId], facilities: 2, equipmentPerFacility: 5 };
    const opts = { ...fleet, start: Date.now() - syntheticSpanMs(fleet, COUNT), count: COUNT, seed: "integration", excursionProbability: 0.02, dropoutProbability: 0.01 };
    const produced = [...syntheticReadings(opts)];
    expect(produced).toHaveLength(COUNT);

    const acks: BatchAck[] = [];
    const stats = await produceReadings(syntheticReadings(opts), { brokers, batchSize: 200, onAck: (a) => acks.push(a) });
    expect(stats.records).toBe(COUNT);
    expect(stats.perTenant).toEqual({ [tenantId]: COUNT });
    expect(acks).toHaveLength(3); // 200 + 200 + 100
    expect(Object.values(stats.maxSeqAcked[tenantId]!)).toEqual(Array(10).fill(COUNT / 10 - 1));

    // Exactly COUNT records are on the topic (high watermarks), none more.
    const offsets = await admin.fetchTopicOffsets(topic);
    expect(offsets.reduce((n, p) => n + Number(p.high) - Number(p.low), 0)).toBe(COUNT);

    // The value subject (TopicNameStrategy) holds the schema whose id is in every message.
    const schemaId = await registry.getLatestSchemaId(sensorSubject(topic));

    consumer = kafka.consumer({ groupId: `produce-test-${randomUUID()}`, sessionTimeout: 10_000, heartbeatInterval: 1000 });
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    const got: { key: string; reading: SensorReading; partition: number; offset: string }[] = [];
    const errors: unknown[] = [];
    await consumer.run({
      autoCommit: false,
      eachMessage: async ({ message, partition }) => {
        try {
          const value = message.value!;
          expect(parseWire(value).schemaId).toBe(schemaId);
          got.push({ key: message.key!.toString(), reading: (await registry.decode(value)) as SensorReading, partition, offset: message.offset });
        } catch (err) {
          errors.push(err);
        }
      },
    });
    await until(() => `${COUNT} records of ${topic} (got ${got.length})`, () => got.length >= COUNT || errors.length > 0, CONSUME_MS);
    expect(errors).toEqual([]);
    expect(got).toHaveLength(COUNT);

    // Keys are the equipment ids; a machine's readings share one partition and keep their order.
    for (const g of got) expect(g.key).toBe(g.reading.equipment_id);
    const partitionOf = new Map<string, number>();
    for (const g of got) {
      expect(partitionOf.get(g.key) ?? g.partition).toBe(g.partition);
      partitionOf.set(g.key, g.partition);
    }
    const byMachine = (rs: SensorReading[]) => {
      const m = new Map<string, SensorReading[]>();
      for (const r of rs) (m.get(r.equipment_id) ?? m.set(r.equipment_id, []).get(r.equipment_id)!).push(r);
      return m;
    };
    const sortedGot = got.slice().sort((a, b) => a.partition - b.partition || Number(a.offset) - Number(b.offset));
    // Values equal (float measures as float32), per machine in production order.
    expect(byMachine(sortedGot.map((g) => g.reading))).toEqual(byMachine(produced.map((p) => asFloat32(p.reading))));
    // The data has the realism the engine's tests rely on: nulls and excursions made it through.
    expect(got.some((g) => g.reading.temperature === null || g.reading.vibration === null || g.reading.pressure === null)).toBe(true);
  });

  it("refuses a tenant without a topic, saying how to provision it", async () => {
    const missing = randomUUID();
    const err = await produceReadings(syntheticReadings({ tenants: [missing], start: Date.now(), count: 10 }), { brokers }).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(err).toBeInstanceOf(TopicMissingError);
    expect(err!.message).toContain(`topic sensor-data-${missing} does not exist`);
    expect(err!.message).toContain("millrace tenants create");
    expect((await admin.listTopics()).includes(sensorTopic(missing))).toBe(false);
  });
});

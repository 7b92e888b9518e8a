import { Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import type { Kafka, ProducerBatch, ProducerConfig } from "kafkajs";
import { readCsvReadings } from "./csv.ts";
import { parseWire } from "./encode.ts";
import { parseTenantId, SensorPublisher, sensorTopic, TokenBucket, TopicMissingError, type BatchAck, type ProduceRecord } from "./publisher.ts";
import { sensorReadingType, type SchemaRegistrar } from "./registry.ts";
import { syntheticReadings } from "./synthetic.ts";

const A = "3f2b8c1e-6d4a-4b7e-9c0d-1a2b3c4d5e6f";
const B = "0b7e4a52-9c1d-4f3e-8a6b-2c5d7e9f1a3b";

/** A stand-in for kafkajs: records the producer config and every sendBatch, acknowledges on the next turn. */
function fakeKafka(topics: string[], opts: { fail?: (n: number) => Error | undefined } = {}) {
  const sends: ProducerBatch[] = [];
  const state = { inflight: 0, maxInflight: 0, config: undefined as ProducerConfig | undefined, connected: 0 };
  const producer = {
    connect: async () => void state.connected++,
    disconnect: async () => void state.connected--,
    sendBatch: async (batch: ProducerBatch) => {
      state.inflight++;
      state.maxInflight = Math.max(state.maxInflight, state.inflight);
      sends.push(batch);
      await new Promise((r) => setImmediate(r));
      state.inflight--;
      const err = opts.fail?.(sends.length);
      if (err) throw err;
      return [];
    },
  };
  const admin = { connect: async () => undefined, disconnect: async () => undefined, listTopics: async () => topics };
  const kafka = {
    producer: (config: ProducerConfig) => {
      state.config = config;
      return producer;
    },
    admin: () => admin,
  } as unknown as Kafka;
  return { kafka, sends, state };
}

const registry: SchemaRegistrar = { register: async () => ({ id: 5 }) };

function synthetic(count?: number, tenants = [A, B]) {
  return syntheticReadings({ tenants, start: Date.UTC(2026, 0, 1), count, seed: 9 });
}

describe("tenant topics", () => {
  it("are sensor-data-{uuid}, lower-cased, and only for UUIDs", () => {
    expect(sensorTopic(A.toUpperCase())).toBe(`sensor-data-${A}`);
    expect(parseTenantId(` ${A} `)).toBe(A);
    for (const bad of ["", "acme", `${A}x`, "../../etc", `${A.slice(0, -1)}g`]) expect(() => sensorTopic(bad)).toThrow(/must be a UUID/);
  });
});

describe("SensorPublisher", () => {
  it("uses an idempotent producer that never creates topics, and sends batches with acks=-1", async () => {
    const { kafka, sends, state } = fakeKafka([sensorTopic(A), sensorTopic(B)]);
    const p = new SensorPublisher({ kafka, registry, batchSize: 1000 });
    const acks: BatchAck[] = [];
    const stats = await p.publish(synthetic(5000), { onAck: (a) => acks.push({ ...a, stats: structuredClone(a.stats) }) });
    await p.disconnect();

    expect(state.config).toMatchObject({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false });
    expect(sends).toHaveLength(5); // 5000 records in 5 sendBatch calls, not 5000 awaits
    expect(sends.every((s) => s.acks === -1)).toBe(true);
    expect(state.maxInflight).toBe(1);
    expect(acks.map((a) => a.stats.records)).toEqual([1000, 2000, 3000, 4000, 5000]);
    expect(state.connected).toBe(0);

    // Keys are equipment ids, values decode to the readings, each on its tenant's topic, in order.
    const expected = [...synthetic(5000)];
    const got: ProduceRecord[] = [];
    const type = sensorReadingType();
    for (const s of sends) {
      for (const tm of s.topicMessages!) {
        for (const m of tm.messages) {
          const { schemaId, body } = parseWire(m.value as Buffer);
          expect(schemaId).toBe(5);
          const reading = type.fromBuffer(body) as ProduceRecord["reading"];
          expect(m.key).toBe(reading.equipment_id);
          expect(tm.topic).toBe(sensorTopic(reading.tenant_id));
          got.push({ tenantId: reading.tenant_id, reading });
        }
      }
    }
    expect(got).toHaveLength(5000);
    const key = (r: ProduceRecord) => `${r.tenantId}/${r.reading.equipment_id}/${r.reading.time}`;
    expect(new Set(got.map(key))).toEqual(new Set(expected.map(key)));

    expect(stats.records).toBe(5000);
    expect(stats.batches).toBe(5);
    expect(stats.perTenant).toEqual({ [A]: 2500, [B]: 2500 });
    expect(Object.keys(stats.maxSeqAcked[A]!)).toHaveLength(10);
    expect(Object.values(stats.maxSeqAcked[A]!).every((s) => s === 249)).toBe(true);
    expect(stats.aborted).toBe(false);
    expect(stats.bytes).toBeGreaterThan(5000 * 50);
  });

  it("stops after `count` records of an endless source", async () => {
    const { kafka, sends } = fakeKafka([sensorTopic(A), sensorTopic(B)]);
    const p = new SensorPublisher({ kafka, registry, batchSize: 1000 });
    const stats = await p.publish(synthetic(undefined), { count: 1234 });
    expect(stats.records).toBe(1234);
    expect(sends.map((s) => s.topicMessages!.reduce((n, t) => n + t.messages.length, 0))).toEqual([1000, 234]);
  });

  it("publishes an async source (a CSV replay)", async () => {
    const { kafka, sends } = fakeKafka([sensorTopic(A)]);
    const csv = "datetime;Temperature;Accelerometer1RMS;Pressure;Volume Flow RateRMS\n2020-03-09 10:14:33;79.3366;0.02;0.05;32.0\n2020-03-09 10:14:34;79.5;0.03;0.06;31.2\n";
    const stats = await new SensorPublisher({ kafka, registry }).publish(readCsvReadings(Readable.from([csv]), { tenantId: A, equipmentId: "valve1-00", facilityId: "skab" }));
    expect(stats.records).toBe(2);
    expect(stats.maxSeqAcked).toEqual({ [A]: { "valve1-00": 1 } });
    expect(sends).toHaveLength(1);
  });

  it("refuses a tenant whose topic does not exist, saying how to provision it, and sends nothing", async () => {
    const { kafka, sends } = fakeKafka([sensorTopic(A)]);
    const err = await new SensorPublisher({ kafka, registry }).publish(synthetic(100, [B])).catch((e: unknown) => e as Error);
    expect(err).toBeInstanceOf(TopicMissingError);
    expect((err as Error).message).toContain(`topic sensor-data-${B} does not exist`);
    expect((err as Error).message).toContain("millrace tenants create");
    expect((err as Error).message).toContain("demo");
    expect(sends).toHaveLength(0);
  });

  it("refuses a record whose tenant is not a UUID", async () => {
    const { kafka } = fakeKafka([]);
    const [first] = [...synthetic(1, [A])];
    const rec = { ...first!, tenantId: "acme" };
    await expect(new SensorPublisher({ kafka, registry }).publish([rec])).rejects.toThrow(/must be a UUID/);
  });

  it("stops on abort after the batch in flight; stats count acknowledged records only", async () => {
    const { kafka } = fakeKafka([sensorTopic(A), sensorTopic(B)]);
    const ac = new AbortController();
    const stats = await new SensorPublisher({ kafka, registry, batchSize: 500 }).publish(synthetic(undefined), {
      signal: ac.signal,
      onAck: (a) => {
        if (a.stats.records >= 1000) ac.abort();
      },
    });
    expect(stats.aborted).toBe(true);
    expect(stats.records).toBe(1000);
  });

  it("fails with the batch's topics when Kafka refuses a batch", async () => {
    const { kafka } = fakeKafka([sensorTopic(A)], { fail: (n) => (n === 2 ? new Error("broker on fire") : undefined) });
    await expect(new SensorPublisher({ kafka, registry, batchSize: 100 }).publish(synthetic(1000, [A]))).rejects.toThrow(
      new RegExp(`publishing a batch of 100 records to sensor-data-${A} failed: broker on fire`),
    );
  });

  it("limits the rate: 600 records at 2000/s take about a quarter of a second", async () => {
    const { kafka, sends } = fakeKafka([sensorTopic(A), sensorTopic(B)]);
    const t0 = performance.now();
    const stats = await new SensorPublisher({ kafka, registry }).publish(synthetic(600), { rate: 2000 });
    const ms = performance.now() - t0;
    expect(stats.records).toBe(600);
    // Batches of rate/20 = 100; the first is the bucket's burst, the other 500 wait for tokens (250 ms).
    expect(sends).toHaveLength(6);
    expect(ms).toBeGreaterThan(200);
    expect(ms).toBeLessThan(5000);
  });
});

describe("TokenBucket", () => {
  it("refills at `rate` per second up to its capacity", async () => {
    let now = 0;
    const b = new TokenBucket(100, 10, () => now);
    expect(b.waitMs(10)).toBe(0);
    await b.take(10);
    expect(b.waitMs(5)).toBe(50);
    now = 30;
    expect(b.waitMs(5)).toBeCloseTo(20);
    now = 10_000;
    expect(b.waitMs(10)).toBe(0); // capped at capacity, not 1000 tokens
    await b.take(10);
    expect(b.waitMs(1)).toBe(10);
    await expect(b.take(11)).rejects.toThrow(/bucket of 10/);
    expect(() => new TokenBucket(0, 1)).toThrow(/rate/);
  });
});

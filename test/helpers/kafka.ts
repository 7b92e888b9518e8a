/** Kafka and schema-registry helpers for integration tests (real broker, real registry). */
import { SchemaRegistry, SchemaType } from "@kafkajs/confluent-schema-registry";
import avro from "avsc";
import { Kafka, logLevel, type Admin, type IHeaders, type KafkaMessage } from "kafkajs";
import { requireEnv } from "../../lib/env.ts";
import { createKafka } from "../../lib/kafka-client.ts";
import { parseAvroSchema, SENSOR_READING_SCHEMA_TEXT, type SensorReading } from "../../schemas/index.ts";

export function testKafka(clientId = "millrace-test"): Kafka {
  return createKafka({ clientId, logLevel: logLevel.NOTHING });
}

export const sensorType = parseAvroSchema(SENSOR_READING_SCHEMA_TEXT);

export async function registerSensorSchema(topic: string, schema: string = SENSOR_READING_SCHEMA_TEXT): Promise<number> {
  const registry = new SchemaRegistry({ host: requireEnv("MILLRACE_SCHEMA_REGISTRY_URL") });
  const { id } = await registry.register({ type: SchemaType.AVRO, schema }, { subject: `${topic}-value` });
  return id;
}

export function wire(schemaId: number, body: Buffer): Buffer {
  const h = Buffer.alloc(5);
  h.writeUInt32BE(schemaId, 1);
  return Buffer.concat([h, body]);
}

export function encodeReading(schemaId: number, r: SensorReading, type: avro.Type = sensorType): Buffer {
  return wire(schemaId, type.toBuffer(r));
}

export async function produce(
  kafka: Kafka,
  topic: string,
  messages: Array<{ key?: string | Buffer | null; value: Buffer | null; headers?: IHeaders; partition?: number }>,
): Promise<void> {
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false });
  await producer.connect();
  try {
    for (let i = 0; i < messages.length; i += 1000) await producer.send({ topic, acks: -1, messages: messages.slice(i, i + 1000) });
  } finally {
    await producer.disconnect();
  }
}

/** Read a topic from the beginning until `expected` records arrived (bounded wait). */
export async function consumeAll(kafka: Kafka, topic: string, expected: number, timeoutMs = 60_000): Promise<KafkaMessage[]> {
  const consumer = kafka.consumer({ groupId: `reader-${topic}-${Date.now()}-${Math.random()}` });
  const got: KafkaMessage[] = [];
  await consumer.connect();
  try {
    await consumer.subscribe({ topics: [topic], fromBeginning: true });
    let done: () => void = () => {};
    const finished = new Promise<void>((r) => (done = r));
    await consumer.run({
      eachMessage: async ({ message }) => {
        got.push(message);
        if (got.length >= expected) done();
      },
    });
    const timer = new Promise<void>((_, rej) =>
      setTimeout(() => rej(new Error(`consumed ${got.length} of ${expected} records from ${topic} within ${timeoutMs} ms`)), timeoutMs).unref(),
    );
    if (expected > 0) await Promise.race([finished, timer]);
    return got;
  } finally {
    await consumer.disconnect();
  }
}

export async function endOffsets(admin: Admin, topic: string): Promise<Map<number, number>> {
  const offs = await admin.fetchTopicOffsets(topic);
  return new Map(offs.map((o) => [o.partition, Number(o.high)]));
}

export async function deleteTopics(admin: Admin, prefixFilter: (t: string) => boolean): Promise<void> {
  const topics = (await admin.listTopics()).filter(prefixFilter);
  if (topics.length > 0) await admin.deleteTopics({ topics }).catch(() => {});
}

export function header(m: KafkaMessage, name: string): string | undefined {
  const v = m.headers?.[name];
  if (v === undefined) return undefined;
  return Buffer.isBuffer(v) ? v.toString("utf8") : Array.isArray(v) ? String(v[0]) : String(v);
}

/**
 * Every committed record of `topic`, exactly: a sentinel is produced to each partition after the
 * writers under test are done, and the topic is read (read_committed, kafkajs' default) until each
 * partition's sentinel arrives — so a duplicate published before the sentinels cannot be missed,
 * and nothing waits on a quiet period. Sentinels are not returned.
 */
export async function consumeToSentinels(kafka: Kafka, admin: Admin, topic: string, timeoutMs = 60_000): Promise<Array<KafkaMessage & { partition: number }>> {
  const partitions = (await admin.fetchTopicMetadata({ topics: [topic] })).topics[0]!.partitions.map((p) => p.partitionId);
  const producer = kafka.producer({ allowAutoTopicCreation: false });
  await producer.connect();
  const mark = `sentinel-${Date.now()}-${Math.random()}`;
  try {
    await producer.send({ topic, acks: -1, messages: partitions.map((partition) => ({ partition, value: null, headers: { "test.sentinel": mark } })) });
  } finally {
    await producer.disconnect();
  }
  const consumer = kafka.consumer({ groupId: `reader-${topic}-${Date.now()}-${Math.random()}` });
  const got: Array<KafkaMessage & { partition: number }> = [];
  const seen = new Set<number>();
  await consumer.connect();
  try {
    await consumer.subscribe({ topics: [topic], fromBeginning: true });
    let done: () => void = () => {};
    const finished = new Promise<void>((r) => (done = r));
    await consumer.run({
      eachMessage: async ({ partition, message }) => {
        if (header(message, "test.sentinel") === mark) {
          seen.add(partition);
          if (seen.size === partitions.length) done();
        } else if (!seen.has(partition) && header(message, "test.sentinel") === undefined) {
          got.push({ ...message, partition });
        }
      },
    });
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((_, rej) => {
      timer = setTimeout(() => rej(new Error(`read ${got.length} records of ${topic} but the sentinels of partitions ${partitions.filter((p) => !seen.has(p)).join(", ")} did not arrive within ${timeoutMs} ms`)), timeoutMs);
      timer.unref();
    });
    await Promise.race([finished, timeout]).finally(() => clearTimeout(timer));
    return got;
  } finally {
    await consumer.disconnect();
  }
}

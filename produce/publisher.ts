/**
 * Publishing sensor readings to the tenants' topics `sensor-data-{tenant_id}`.
 *
 * One kafkajs producer, idempotent (`maxInFlightRequests: 1` as kafkajs requires, acks = -1), never
 * creating topics (tenant provisioning does; a missing topic is an error saying so). Readings go out
 * in batches — one `sendBatch` of up to `batchSize` records across topics, at most one batch in
 * flight, the next one pulled and encoded while the previous is on the wire. Key = equipment_id (so a
 * machine's readings stay in order on one partition), value = Confluent wire bytes encoded locally
 * with the schema id registered once per topic. An optional token bucket limits records/s (the
 * publisher sleeps on a timer for tokens, no busy loop).
 *
 * Stats count only acknowledged records: per tenant, and per (tenant, equipment) the highest `seq`
 * acknowledged (fault tests compare these with what reached the sinks).
 */
import { setTimeout as sleep } from "node:timers/promises";
import { CompressionTypes, Kafka, logLevel, Partitioners, type Admin, type Message, type Producer, type logCreator } from "kafkajs";
import { createKafka, kafkaAuthFromEnv, type KafkaAuth } from "../lib/kafka-client.ts";
import { silentLogger, type Logger } from "../lib/log.ts";
import type { SensorReading } from "../schemas/index.ts";
import { createWireEncoder, type WireEncoder } from "./encode.ts";
import { createSchemaRegistry, registerSensorSchema, sensorReadingType, sensorSubject, type SchemaRegistrar } from "./registry.ts";

export const TENANT_ID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
export const SENSOR_TOPIC_PREFIX = "sensor-data-";
/** equipment_id / facility_id: 1-128 characters of [A-Za-z0-9._:/-] (what the pipeline's validation accepts). */
export const ID_PATTERN = /^[A-Za-z0-9._:/-]{1,128}$/;

/** A tenant id as used in topic names and payloads: a UUID, lower-cased. Throws on anything else. */
export function parseTenantId(raw: string): string {
  const s = raw.trim();
  if (!TENANT_ID_PATTERN.test(s)) throw new Error(`tenant id must be a UUID (e.g. 3f2b8c1e-6d4a-4b7e-9c0d-1a2b3c4d5e6f), got ${JSON.stringify(raw.slice(0, 80))}`);
  return s.toLowerCase();
}

/** `sensor-data-{tenant_id}`, after validating the tenant id. */
export function sensorTopic(tenantId: string): string {
  return `${SENSOR_TOPIC_PREFIX}${parseTenantId(tenantId)}`;
}

/** One reading to publish; `seq` (optional) is the per (tenant, equipment) sequence number. */
export interface ProduceRecord {
  tenantId: string;
  reading: SensorReading;
  seq?: number;
}

export interface PublishStats {
  /** Acknowledged records. */
  records: number;
  /** Acknowledged value bytes. */
  bytes: number;
  batches: number;
  /** From the start of publish() to the last acknowledgement. */
  elapsedMs: number;
  recordsPerSecond: number;
  /** Acknowledged records per tenant. */
  perTenant: Record<string, number>;
  /** tenant → equipment → highest seq acknowledged (records published with a seq only). */
  maxSeqAcked: Record<string, Record<string, number>>;
  /** true if publish() stopped because its signal was aborted. */
  aborted: boolean;
}

/** Reported after each acknowledged batch. */
export interface BatchAck {
  /** The records of this batch, in the order they were sent. */
  records: readonly ProduceRecord[];
  bytes: number;
  /** Totals so far (the live object; copy it to keep it). */
  stats: PublishStats;
}

export interface PublisherOptions {
  /** Broker list; default MILLRACE_KAFKA_BROKERS (comma-separated). Ignored if `kafka` is given. */
  brokers?: string[];
  kafka?: Kafka;
  /** SASL credentials (a tenant's producer identity); default from MILLRACE_PRODUCER_KAFKA_* / MILLRACE_KAFKA_*. Ignored if `kafka` is given. */
  auth?: KafkaAuth | null;
  /** Registry client; default one for MILLRACE_SCHEMA_REGISTRY_URL. */
  registry?: SchemaRegistrar;
  clientId?: string;
  /** Records per sendBatch (default 2000). */
  batchSize?: number;
  compression?: CompressionTypes;
  log?: Logger;
}

export interface PublishOptions {
  /** Stop after this many records (default: when the source ends). */
  count?: number;
  /** Records per second (token bucket); default unlimited. */
  rate?: number;
  onAck?: (ack: BatchAck) => void;
  /** Abort: the batch in flight is awaited, nothing more is sent, publish() resolves with aborted = true. */
  signal?: AbortSignal;
}

/** The tenant's topic does not exist (produce never creates topics). */
export class TopicMissingError extends Error {
  override readonly name = "TopicMissingError";
  readonly topic: string;
  constructor(topic: string, kafkaUser?: string) {
    super(
      (kafkaUser !== undefined
        ? `topic ${topic} does not exist or Kafka user ${kafkaUser} may not see it (a tenant's producer identity may write only its own sensor-data topic: ` +
          "use that tenant's credentials, `millrace tenants credentials <id>`). "
        : `topic ${topic} does not exist. `) +
        `millrace produce does not create topics: tenant provisioning does — ` +
        `create the tenant with \`millrace tenants create\` (or run the demo, which provisions its tenants), ` +
        `or for a throwaway test create the topic yourself, e.g. kafka-topics.sh --bootstrap-server <brokers> --create --topic ${topic} --partitions 3`,
    );
    this.topic = topic;
  }
}

export const DEFAULT_BATCH_SIZE = 2000;

/** kafkajs log lines → our pino logger (kafkajs would otherwise print JSON on stdout). */
function kafkaLogCreator(log: Logger): logCreator {
  return () =>
    ({ namespace, level, log: entry }) => {
      const { message, ...extra } = entry;
      const obj = { kafkajs: namespace, ...extra };
      if (level === logLevel.ERROR) log.error(obj, message);
      else if (level === logLevel.WARN) log.warn(obj, message);
      else if (level === logLevel.INFO) log.info(obj, message);
      else log.debug(obj, message);
    };
}

/** Token bucket: `rate` tokens per second, at most `capacity` saved up. */
export class TokenBucket {
  private tokens: number;
  private last: number;
  constructor(
    readonly rate: number,
    readonly capacity: number,
    private readonly now: () => number = () => performance.now(),
  ) {
    if (!(rate > 0 && Number.isFinite(rate))) throw new Error(`rate must be a positive number of records/s, got ${rate}`);
    this.tokens = capacity;
    this.last = this.now();
  }
  private refill(): void {
    const t = this.now();
    this.tokens = Math.min(this.capacity, this.tokens + ((t - this.last) / 1000) * this.rate);
    this.last = t;
  }
  /** ms to wait before `n` tokens are there (0 = now). */
  waitMs(n: number): number {
    this.refill();
    return this.tokens >= n ? 0 : ((n - this.tokens) / this.rate) * 1000;
  }
  /** Wait (on a timer) until `n` ≤ capacity tokens are there, then take them. */
  async take(n: number, signal?: AbortSignal): Promise<void> {
    if (n > this.capacity) throw new Error(`cannot take ${n} tokens from a bucket of ${this.capacity}`);
    for (let wait = this.waitMs(n); wait > 0; wait = this.waitMs(n)) await sleep(Math.max(1, Math.ceil(wait)), undefined, { signal });
    this.tokens -= n;
  }
}

interface Batch {
  records: ProduceRecord[];
  byTopic: Map<string, Message[]>;
  bytes: number;
  /** The source has nothing more. */
  ended: boolean;
}

interface TenantTarget {
  topic: string;
  encoder: WireEncoder;
}

export type ProduceSource = Iterable<ProduceRecord> | AsyncIterable<ProduceRecord>;
type Source = ProduceSource;

type Pulled = { sync: Iterator<ProduceRecord>; async?: undefined } | { sync?: undefined; async: AsyncIterator<ProduceRecord> };

function isAsync(s: Source): s is AsyncIterable<ProduceRecord> {
  return typeof (s as AsyncIterable<ProduceRecord>)[Symbol.asyncIterator] === "function";
}

function emptyStats(): PublishStats {
  return { records: 0, bytes: 0, batches: 0, elapsedMs: 0, recordsPerSecond: 0, perTenant: {}, maxSeqAcked: {}, aborted: false };
}

export class SensorPublisher {
  private readonly kafka: Kafka;
  /** The SASL user this publisher logs in as (for error messages). */
  private readonly kafkaUser: string | undefined;
  private readonly registry: SchemaRegistrar;
  private readonly log: Logger;
  private readonly batchSize: number;
  private readonly compression: CompressionTypes;
  private readonly producer: Producer;
  private readonly admin: Admin;
  private readonly targets = new Map<string, Promise<TenantTarget>>();
  /** The settled ones of `targets` (a synchronous fast path per record). */
  private readonly resolved = new Map<string, TenantTarget>();
  private knownTopics: Set<string> | undefined;
  private connected = false;

  constructor(opts: PublisherOptions = {}) {
    this.log = opts.log ?? silentLogger;
    this.batchSize = opts.batchSize ?? DEFAULT_BATCH_SIZE;
    if (!(Number.isInteger(this.batchSize) && this.batchSize > 0)) throw new Error(`batch size must be a positive integer, got ${opts.batchSize}`);
    this.compression = opts.compression ?? CompressionTypes.None;
    this.kafkaUser = opts.kafka ? undefined : (opts.auth === undefined ? kafkaAuthFromEnv("producer") : (opts.auth ?? undefined))?.username;
    this.kafka =
      opts.kafka ??
      createKafka({
        clientId: opts.clientId ?? "millrace-produce",
        brokers: opts.brokers,
        auth: opts.auth,
        identity: "producer",
        logLevel: logLevel.WARN,
        logCreator: kafkaLogCreator(this.log),
      });
    this.registry = opts.registry ?? createSchemaRegistry();
    this.producer = this.kafka.producer({
      idempotent: true,
      maxInFlightRequests: 1,
      allowAutoTopicCreation: false,
      createPartitioner: Partitioners.DefaultPartitioner,
    });
    this.admin = this.kafka.admin();
  }

  async connect(): Promise<void> {
    if (this.connected) return;
    await this.admin.connect();
    try {
      await this.producer.connect();
    } catch (err) {
      await this.admin.disconnect().catch(() => undefined);
      throw err;
    }
    this.connected = true;
  }

  async disconnect(): Promise<void> {
    if (!this.connected) return;
    this.connected = false;
    await Promise.allSettled([this.producer.disconnect(), this.admin.disconnect()]);
  }

  /** Topic checked to exist, schema registered under `${topic}-value`, encoder built — once per tenant. */
  private target(tenantId: string): Promise<TenantTarget> {
    let t = this.targets.get(tenantId);
    if (t === undefined) {
      t = this.resolveTarget(tenantId);
      t.then(
        (target) => this.resolved.set(tenantId, target),
        () => this.targets.delete(tenantId),
      );
      this.targets.set(tenantId, t);
    }
    return t;
  }

  private async resolveTarget(tenantId: string): Promise<TenantTarget> {
    const topic = sensorTopic(tenantId);
    await this.requireTopic(topic);
    const schemaId = await registerSensorSchema(this.registry, sensorSubject(topic));
    this.log.info({ topic, schemaId }, "produce: publishing to topic");
    return { topic, encoder: createWireEncoder(schemaId, sensorReadingType()) };
  }

  private async requireTopic(topic: string): Promise<void> {
    if (this.knownTopics?.has(topic)) return;
    this.knownTopics = new Set(await this.admin.listTopics());
    if (!this.knownTopics.has(topic)) throw new TopicMissingError(topic, this.kafkaUser);
  }

  /** Publish every record of `source` (or `count` of them); resolves when all sent ones are acknowledged. */
  async publish(source: Source, opts: PublishOptions = {}): Promise<PublishStats> {
    const { count, rate, onAck, signal } = opts;
    if (count !== undefined && !(Number.isInteger(count) && count >= 0)) throw new Error(`count must be a non-negative integer, got ${count}`);
    await this.connect();
    // Under a rate limit, batches of ~50 ms worth of records keep the flow smooth.
    const batchSize = rate === undefined ? this.batchSize : Math.max(1, Math.min(this.batchSize, Math.floor(rate / 20)));
    const bucket = rate === undefined ? undefined : new TokenBucket(rate, batchSize);
    const stats = emptyStats();
    const started = performance.now();

    const syncIt = isAsync(source) ? undefined : source[Symbol.iterator]();
    const asyncIt = isAsync(source) ? source[Symbol.asyncIterator]() : undefined;
    const it: Pulled = syncIt ? { sync: syncIt } : { async: asyncIt! };

    let inflight: Promise<void> | undefined;
    let sent = 0;
    try {
      while (!signal?.aborted) {
        const want = count === undefined ? batchSize : Math.min(batchSize, count - sent);
        if (want <= 0) break;
        if (bucket) {
          try {
            await bucket.take(want, signal);
          } catch (err) {
            if (signal?.aborted) break;
            throw err;
          }
        }
        const batch = await this.build(it, want);
        if (inflight) await inflight;
        if (batch.records.length === 0 || signal?.aborted) break;
        sent += batch.records.length;
        const p = this.send(batch, stats, started, onAck);
        p.catch(() => undefined); // awaited below or at the next turn; this only marks it handled
        inflight = p;
        if (batch.ended) break;
      }
      if (inflight) await inflight;
    } catch (err) {
      // Never leave a batch on the wire behind an error: let it settle (its own error is secondary).
      if (inflight) await inflight.catch(() => undefined);
      throw err;
    } finally {
      if (asyncIt?.return) await asyncIt.return().catch(() => undefined);
      else syncIt?.return?.();
    }
    stats.aborted = signal?.aborted ?? false;
    stats.elapsedMs = performance.now() - started;
    stats.recordsPerSecond = stats.elapsedMs > 0 ? (stats.records * 1000) / stats.elapsedMs : 0;
    return stats;
  }

  private async build(it: Pulled, want: number): Promise<Batch> {
    const batch: Batch = { records: [], byTopic: new Map(), bytes: 0, ended: false };
    while (batch.records.length < want) {
      // A synchronous source (the synthetic generator) is pulled without a promise per record.
      const r = it.sync ? it.sync.next() : await it.async.next();
      if (r.done) {
        batch.ended = true;
        break;
      }
      const rec = r.value;
      const target = this.resolved.get(rec.tenantId) ?? (await this.target(rec.tenantId));
      const value = target.encoder.encode(rec.reading);
      let messages = batch.byTopic.get(target.topic);
      if (messages === undefined) {
        messages = [];
        batch.byTopic.set(target.topic, messages);
      }
      messages.push({ key: rec.reading.equipment_id, value });
      batch.records.push(rec);
      batch.bytes += value.length;
    }
    return batch;
  }

  private async send(batch: Batch, stats: PublishStats, started: number, onAck: PublishOptions["onAck"]): Promise<void> {
    const topicMessages = [...batch.byTopic].map(([topic, messages]) => ({ topic, messages }));
    try {
      await this.producer.sendBatch({ topicMessages, acks: -1, compression: this.compression });
    } catch (err) {
      const e = err as Error & { type?: string };
      if (e.type === "UNKNOWN_TOPIC_OR_PARTITION") {
        const missing = topicMessages.map((t) => t.topic);
        this.knownTopics = undefined;
        throw new Error(`${new TopicMissingError(missing.join(", ")).message} (the topic disappeared while producing)`, { cause: err });
      }
      throw new Error(`publishing a batch of ${batch.records.length} records to ${topicMessages.map((t) => t.topic).join(", ")} failed: ${e.message}`, {
        cause: err,
      });
    }
    for (const rec of batch.records) {
      const tenant = rec.tenantId.toLowerCase();
      stats.perTenant[tenant] = (stats.perTenant[tenant] ?? 0) + 1;
      if (rec.seq !== undefined) {
        const perEquipment = (stats.maxSeqAcked[tenant] ??= {});
        const eq = rec.reading.equipment_id;
        const prev = perEquipment[eq];
        if (prev === undefined || rec.seq > prev) perEquipment[eq] = rec.seq;
      }
    }
    stats.records += batch.records.length;
    stats.bytes += batch.bytes;
    stats.batches++;
    stats.elapsedMs = performance.now() - started;
    stats.recordsPerSecond = stats.elapsedMs > 0 ? (stats.records * 1000) / stats.elapsedMs : 0;
    onAck?.({ records: batch.records, bytes: batch.bytes, stats });
  }
}

/** Connect, publish `source`, disconnect. */
export async function produceReadings(source: Source, opts: PublisherOptions & PublishOptions = {}): Promise<PublishStats> {
  const publisher = new SensorPublisher(opts);
  try {
    return await publisher.publish(source, opts);
  } finally {
    await publisher.disconnect();
  }
}

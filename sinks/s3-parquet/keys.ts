/**
 * Object keys of Parquet files, built only from validated segments (pure).
 *
 *   {prefix}{tenant_id}/sensor-data/date=YYYY-MM-DD/hour=HH/{topic}+{partition}+{first:020}-{last:020}.parquet
 *
 * - prefix: from configuration only, `[a-z0-9/_-]*`, empty or ending in `/`, no empty path segment;
 * - tenant_id: a lower-case UUID (the topic's tenant, never a payload's);
 * - date/hour: the UTC hour of the file's first reading (Hive-style `name=value` segments);
 * - topic: a legal Kafka topic name (`[A-Za-z0-9._-]`, so never `/` or `+`); partition and offsets
 *   are non-negative integers, offsets zero-padded to 20 digits so keys sort in offset order.
 * `+` is the only character in a key outside `[A-Za-z0-9._=/-]`, and only as the file name's
 * separator; nothing from a reading (equipment or facility id, measures) is ever part of a key.
 */
import { MillraceError } from "../../lib/errors.ts";

/** A key segment or prefix that is not allowed (a configuration or programming error, never retried). */
export class InvalidKeySegmentError extends MillraceError {
  constructor(message: string) {
    super(message, { retriable: false, stage: "sink", reason: "invalid_key_segment" });
  }
}

export const TENANT_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const KAFKA_TOPIC = /^[A-Za-z0-9._-]{1,249}$/;
const PREFIX = /^(?:[a-z0-9_-]+\/)*$/;
const DATASET = "sensor-data";
const OFFSET_DIGITS = 20;
const MAX_PARTITION = 2 ** 31 - 1;

export interface ParquetKeyParts {
  /** Configured key prefix ("" or e.g. "raw/"). */
  prefix?: string;
  tenantId: string;
  topic: string;
  partition: number;
  firstOffset: number;
  lastOffset: number;
  /** Event time (epoch ms) of the file's first reading: chooses date= and hour=. */
  firstTime: number;
}

export interface ParsedParquetKey {
  prefix: string;
  tenantId: string;
  date: string;
  hour: string;
  topic: string;
  partition: number;
  firstOffset: number;
  lastOffset: number;
}

/** A configured key prefix, checked: "" or segments of `[a-z0-9_-]` each followed by `/`. */
export function validateKeyPrefix(prefix: string): string {
  if (!PREFIX.test(prefix)) {
    throw new InvalidKeySegmentError(`key prefix ${JSON.stringify(prefix)} must be empty or segments of [a-z0-9_-] each ending in "/" (e.g. "raw/")`);
  }
  return prefix;
}

export function validateTenantId(tenantId: string): string {
  if (!TENANT_ID.test(tenantId)) throw new InvalidKeySegmentError(`tenant id ${JSON.stringify(tenantId)} is not a lower-case UUID`);
  return tenantId;
}

export function validateTopic(topic: string): string {
  if (!KAFKA_TOPIC.test(topic) || topic === "." || topic === "..") {
    throw new InvalidKeySegmentError(`topic ${JSON.stringify(topic)} is not a Kafka topic name ([A-Za-z0-9._-], 1-249 characters)`);
  }
  return topic;
}

function validateInteger(what: string, v: number, max: number): number {
  if (!Number.isSafeInteger(v) || v < 0 || v > max) throw new InvalidKeySegmentError(`${what} ${String(v)} is not an integer in [0, ${max}]`);
  return v;
}

/** `{prefix}{tenant_id}/sensor-data/`: everything of one tenant, and nothing of another's. */
export function tenantKeyPrefix(prefix: string, tenantId: string): string {
  return `${validateKeyPrefix(prefix)}${validateTenantId(tenantId)}/${DATASET}/`;
}

/** `date=YYYY-MM-DD/hour=HH` of an instant, in UTC. */
export function hivePartition(time: number): { date: string; hour: string } {
  if (!Number.isFinite(time)) throw new InvalidKeySegmentError(`time ${String(time)} is not an instant`);
  const d = new Date(time);
  const year = d.getUTCFullYear();
  if (year < 1000 || year > 9999) throw new InvalidKeySegmentError(`time ${d.toISOString()} is outside years 1000-9999`);
  const iso = d.toISOString();
  return { date: iso.slice(0, 10), hour: iso.slice(11, 13) };
}

/** The file name part: `{topic}+{partition}+{first:020}-{last:020}.parquet`. */
export function parquetFileName(topic: string, partition: number, firstOffset: number, lastOffset: number): string {
  validateTopic(topic);
  validateInteger("partition", partition, MAX_PARTITION);
  validateInteger("first offset", firstOffset, Number.MAX_SAFE_INTEGER);
  validateInteger("last offset", lastOffset, Number.MAX_SAFE_INTEGER);
  if (lastOffset < firstOffset) throw new InvalidKeySegmentError(`last offset ${lastOffset} is before first offset ${firstOffset}`);
  const pad = (n: number) => String(n).padStart(OFFSET_DIGITS, "0");
  return `${topic}+${partition}+${pad(firstOffset)}-${pad(lastOffset)}.parquet`;
}

export function parquetObjectKey(p: ParquetKeyParts): string {
  const { date, hour } = hivePartition(p.firstTime);
  return `${tenantKeyPrefix(p.prefix ?? "", p.tenantId)}date=${date}/hour=${hour}/${parquetFileName(p.topic, p.partition, p.firstOffset, p.lastOffset)}`;
}

const KEY = new RegExp(
  String.raw`^((?:[a-z0-9_-]+/)*)([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})/${DATASET}/` +
    String.raw`date=(\d{4}-\d{2}-\d{2})/hour=(\d{2})/([A-Za-z0-9._-]{1,249})\+(\d{1,10})\+(\d{${OFFSET_DIGITS}})-(\d{${OFFSET_DIGITS}})\.parquet$`,
);

/** The parts of a key this module built, or undefined for any other key. */
export function parseParquetObjectKey(key: string): ParsedParquetKey | undefined {
  const m = KEY.exec(key);
  if (!m) return undefined;
  const [, prefix, tenantId, date, hour, topic, partition, first, last] = m as unknown as [string, string, string, string, string, string, string, string, string];
  const out = { prefix, tenantId, date, hour, topic, partition: Number(partition), firstOffset: Number(first), lastOffset: Number(last) };
  if (!Number.isSafeInteger(out.firstOffset) || !Number.isSafeInteger(out.lastOffset) || out.partition > MAX_PARTITION) return undefined;
  return out;
}

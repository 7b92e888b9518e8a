import { describe, expect, it } from "vitest";
import { hivePartition, InvalidKeySegmentError, parquetObjectKey, parseParquetObjectKey, tenantKeyPrefix, validateKeyPrefix } from "./keys.ts";

const T = "3f1c2a9e-8b7d-4c6e-9a5f-1e2d3c4b5a69";
const TOPIC = `sensor-data-${T}`;
const base = { tenantId: T, topic: TOPIC, partition: 3, firstOffset: 1200, lastOffset: 4299, firstTime: Date.parse("2024-03-31T01:30:00Z") };

describe("Parquet object keys", () => {
  it("lays files out per tenant, UTC date and hour, with zero-padded offsets", () => {
    expect(parquetObjectKey(base)).toBe(
      `${T}/sensor-data/date=2024-03-31/hour=01/${TOPIC}+3+00000000000000001200-00000000000000004299.parquet`,
    );
    expect(parquetObjectKey({ ...base, prefix: "raw/v1/" })).toBe(
      `raw/v1/${T}/sensor-data/date=2024-03-31/hour=01/${TOPIC}+3+00000000000000001200-00000000000000004299.parquet`,
    );
  });

  it("uses the UTC hour whatever the process time zone, including before 1970", () => {
    expect(hivePartition(Date.parse("1969-12-31T23:59:59Z"))).toEqual({ date: "1969-12-31", hour: "23" });
    expect(hivePartition(Date.parse("2024-10-27T00:59:59.999Z"))).toEqual({ date: "2024-10-27", hour: "00" });
  });

  it("sorts keys in offset order (zero padding)", () => {
    const keys = [9, 10, 99, 100, 1_000_000_000_000].map((o) => parquetObjectKey({ ...base, firstOffset: o, lastOffset: o + 5 }));
    expect([...keys].sort()).toEqual(keys);
    expect(parquetObjectKey({ ...base, firstOffset: 0, lastOffset: Number.MAX_SAFE_INTEGER })).toContain("+00000000000000000000-00009007199254740991.parquet");
  });

  it("refuses tenant ids that are not lower-case UUIDs", () => {
    for (const tenantId of ["../other", T.toUpperCase(), `${T}/x`, "", `${T} `, "3f1c2a9e-8b7d-4c6e-9a5f-1e2d3c4b5a6"]) {
      expect(() => parquetObjectKey({ ...base, tenantId }), tenantId).toThrow(InvalidKeySegmentError);
    }
  });

  it("refuses topics, partitions and offsets that are not what Kafka allows", () => {
    for (const topic of ["a/b", "a+b", "a b", "..", ".", "star*", "caret^", "", "x".repeat(250), "tópico"]) {
      expect(() => parquetObjectKey({ ...base, topic }), topic).toThrow(InvalidKeySegmentError);
    }
    for (const partition of [-1, 1.5, NaN, 2 ** 31]) expect(() => parquetObjectKey({ ...base, partition })).toThrow(InvalidKeySegmentError);
    for (const firstOffset of [-1, 0.5, NaN, Number.MAX_SAFE_INTEGER + 2]) expect(() => parquetObjectKey({ ...base, firstOffset })).toThrow(InvalidKeySegmentError);
    expect(() => parquetObjectKey({ ...base, firstOffset: 10, lastOffset: 9 })).toThrow(/before first offset/);
    expect(() => parquetObjectKey({ ...base, firstTime: NaN })).toThrow(InvalidKeySegmentError);
    expect(() => parquetObjectKey({ ...base, firstTime: Date.UTC(10_000, 0, 1) })).toThrow(InvalidKeySegmentError);
  });

  it("accepts a prefix only of [a-z0-9_-] segments ending in /", () => {
    for (const p of ["", "raw/", "a_b-c/d0/"]) expect(validateKeyPrefix(p)).toBe(p);
    for (const p of ["raw", "/raw/", "raw//", "../", "Raw/", "a b/", "a*/", "a^/", "a+/", "a/./", "a.b/"]) {
      expect(() => validateKeyPrefix(p), p).toThrow(InvalidKeySegmentError);
    }
  });

  it("keeps every key under its tenant's prefix; only + (the separator) is outside [A-Za-z0-9._=/-]", () => {
    const key = parquetObjectKey({ ...base, prefix: "raw/" });
    expect(key.startsWith(tenantKeyPrefix("raw/", T))).toBe(true);
    expect(key.split("/")).toEqual(["raw", T, "sensor-data", "date=2024-03-31", "hour=01", `${TOPIC}+3+00000000000000001200-00000000000000004299.parquet`]);
    expect(key.replaceAll("+", "")).toMatch(/^[A-Za-z0-9._=/-]+$/);
    expect(key.split("+")).toHaveLength(3);
  });

  it("never takes a segment from a reading: hostile equipment ids cannot reach a key", () => {
    // The key builder's inputs are the tenant (from the topic), topic, partition, offsets and first
    // time; equipment/facility ids are not among them. A payload-controlled string in any of its
    // string inputs is refused.
    const hostile = ["../../other-tenant/x", "a b", "a*b", "a^b", "a+b", "%2e%2e/", "x\u0000y", "ü"];
    for (const h of hostile) {
      expect(() => parquetObjectKey({ ...base, tenantId: h })).toThrow(InvalidKeySegmentError);
      expect(() => parquetObjectKey({ ...base, topic: h })).toThrow(InvalidKeySegmentError);
      expect(() => parquetObjectKey({ ...base, prefix: h })).toThrow(InvalidKeySegmentError);
    }
  });

  it("parses the keys it builds, and nothing else", () => {
    const key = parquetObjectKey({ ...base, prefix: "raw/" });
    expect(parseParquetObjectKey(key)).toEqual({ prefix: "raw/", tenantId: T, date: "2024-03-31", hour: "01", topic: TOPIC, partition: 3, firstOffset: 1200, lastOffset: 4299 });
    expect(parseParquetObjectKey(key.replace(".parquet", ".csv"))).toBeUndefined();
    expect(parseParquetObjectKey(`../${key}`)).toBeUndefined();
    expect(parseParquetObjectKey(key.replace("+3+", "+3 +"))).toBeUndefined();
  });
});

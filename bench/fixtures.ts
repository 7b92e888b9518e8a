/**
 * The rows every measured path works on: seeded synthetic readings (produce/synthetic.ts) over K
 * tenants, the same in every path of one run. For the database anchors they are taken through the
 * pipeline's own decode and validation once (Avro floats are 32-bit), so an anchor stores exactly
 * what the worker stores — the run checks that with table checksums.
 */
import { randomUUID } from "node:crypto";
import avro from "avsc";
import { AvroDecoder } from "../pipelines/processors/decode.ts";
import { validateReading, type TenantInfo } from "../pipelines/processors/validate.ts";
import type { StoredReading } from "../pipelines/reading.ts";
import { createWireEncoder } from "../produce/encode.ts";
import { sensorReadingType } from "../produce/registry.ts";
import { syntheticReadings, syntheticSpanMs, type SyntheticRecord } from "../produce/synthetic.ts";
import { parseAvroSchema, SENSOR_READING_SCHEMA_TEXT } from "../schemas/index.ts";

export interface Fixture {
  tenants: string[];
  /** Readings in all (over all tenants). */
  count: number;
  start: number;
  facilities: number;
  equipmentPerFacility: number;
  intervalMs: number;
  seed: string;
}

/** 4 facilities × 25 machines per tenant: keys spread evenly over a topic's partitions. */
export function makeFixture(opts: { count: number; tenants: number; seed?: string; tenantIds?: string[]; now?: number }): Fixture {
  const tenants = opts.tenantIds ?? Array.from({ length: opts.tenants }, () => randomUUID());
  const base = { tenants, facilities: 4, equipmentPerFacility: 25, intervalMs: 1000 };
  const span = syntheticSpanMs(base, opts.count);
  // Readings end at least 6 h before now, so the latency phases (which continue the timeline) stay in the past.
  const now = opts.now ?? Date.now();
  const start = Math.floor((now - span - 6 * 3_600_000) / 3_600_000) * 3_600_000;
  return { ...base, count: opts.count, start, seed: opts.seed ?? "millrace-bench" };
}

export function fixtureReadings(fx: Fixture, over: Partial<Pick<Fixture, "count" | "start" | "seed">> = {}): Generator<SyntheticRecord, void, undefined> {
  return syntheticReadings({
    tenants: fx.tenants,
    facilities: fx.facilities,
    equipmentPerFacility: fx.equipmentPerFacility,
    intervalMs: fx.intervalMs,
    start: over.start ?? fx.start,
    count: over.count ?? fx.count,
    seed: over.seed ?? fx.seed,
  });
}

export function fixtureSpanMs(fx: Fixture, count = fx.count): number {
  return syntheticSpanMs(fx, count);
}

/** A validation context that accepts the fixture (30-day retention, the clock just after the last reading). */
export function fixtureTenantInfo(tenantId: string): TenantInfo {
  return { tenantId, status: "active", retentionDays: 30, maxEquipment: 10_000 };
}

export const BENCH_SCHEMA_ID = 1;

/** Wire-encoded records (what the topics hold) with the tenant and the per-tenant sequence as offset. */
export interface WireFixture {
  tenantOf: string[];
  values: Buffer[];
  /** Per-tenant position (what the record's offset would be if the tenant had one partition). */
  offsets: number[];
}

export function wireFixture(fx: Fixture, count = fx.count): WireFixture {
  const enc = createWireEncoder(BENCH_SCHEMA_ID, sensorReadingType());
  const tenantOf: string[] = [];
  const values: Buffer[] = [];
  const offsets: number[] = [];
  const perTenant = new Map<string, number>();
  for (const r of fixtureReadings(fx, { count })) {
    const n = perTenant.get(r.tenantId) ?? 0;
    perTenant.set(r.tenantId, n + 1);
    tenantOf.push(r.tenantId);
    values.push(enc.encode(r.reading));
    offsets.push(n);
  }
  return { tenantOf, values, offsets };
}

/** A decoder whose only schema is the one the fixture was written with (a schema-id cache hit for every record). */
export async function fixtureDecoder(): Promise<{ decoder: AvroDecoder; writer: avro.Type }> {
  const writer = parseAvroSchema(SENSOR_READING_SCHEMA_TEXT);
  const reader = parseAvroSchema(SENSOR_READING_SCHEMA_TEXT);
  const decoder = new AvroDecoder(reader, async (id) => (id === BENCH_SCHEMA_ID ? writer : undefined), { unknownTtlMs: 60_000 });
  await decoder.prepare([BENCH_SCHEMA_ID]);
  return { decoder, writer };
}

/** The stored rows of the fixture, per tenant, as the pipeline makes them (decode → validate). */
export async function fixtureRows(fx: Fixture, count = fx.count): Promise<Map<string, StoredReading[]>> {
  const wire = wireFixture(fx, count);
  const { decoder } = await fixtureDecoder();
  const now = fx.start + fixtureSpanMs(fx, count);
  const out = new Map<string, StoredReading[]>(fx.tenants.map((t) => [t, []]));
  for (let i = 0; i < wire.values.length; i++) {
    const tenantId = wire.tenantOf[i]!;
    const d = decoder.decode(wire.values[i]!);
    if (!d.ok) throw new Error(`fixture record ${i} does not decode: ${d.message}`);
    const v = validateReading(d.value, { topicTenantId: tenantId, tenant: fixtureTenantInfo(tenantId), offset: wire.offsets[i]!, now }, { maxFutureSkewMs: 300_000 });
    if (!v.ok) throw new Error(`fixture record ${i} does not validate: ${v.message}`);
    out.get(tenantId)!.push(v.row);
  }
  return out;
}

import { describe, expect, it } from "vitest";
import avro from "avsc";
import type { SensorReading } from "../schemas/index.ts";
import { createWireEncoder, encodeSensorReading, parseWire, wireHeader } from "./encode.ts";
import { sensorReadingType } from "./registry.ts";
import { syntheticReadings } from "./synthetic.ts";

const TENANT = "3f2b8c1e-6d4a-4b7e-9c0d-1a2b3c4d5e6f";
const reading: SensorReading = {
  time: Date.UTC(2026, 0, 1, 8, 30),
  tenant_id: TENANT,
  equipment_id: "pump-0007",
  facility_id: "fac-01",
  temperature: 61.25,
  vibration: null,
  pressure: 4.5,
  flow_rate: null,
};

/** Avro `float` is 32-bit: decoded values are the float32 nearest to what was written. */
function asFloat32(r: SensorReading): SensorReading {
  const f = (v: number | null) => (v === null ? null : Math.fround(v));
  return { ...r, temperature: f(r.temperature), vibration: f(r.vibration), pressure: f(r.pressure) };
}

describe("wire encoding", () => {
  const type = sensorReadingType();

  it("writes magic byte 0 and the schema id big-endian", () => {
    expect([...wireHeader(258)]).toEqual([0, 0, 0, 1, 2]);
    expect([...wireHeader(0x7fffffff)]).toEqual([0, 0x7f, 0xff, 0xff, 0xff]);
    expect(() => wireHeader(-1)).toThrow(/int32/);
    expect(() => wireHeader(1.5)).toThrow(/int32/);
  });

  it("round-trips through avsc: header + Avro body decode to the reading", () => {
    const buf = encodeSensorReading(reading, 42, type);
    expect(buf[0]).toBe(0);
    expect(buf.readInt32BE(1)).toBe(42);
    const { schemaId, body } = parseWire(buf);
    expect(schemaId).toBe(42);
    expect(type.fromBuffer(body)).toEqual(reading); // 61.25 and 4.5 are exact in float32
    expect(body.equals(type.toBuffer(reading))).toBe(true);
  });

  it("decodes with an independently parsed schema (what a consumer does), many synthetic readings", () => {
    const reader = avro.Type.forSchema(JSON.parse(JSON.stringify(type.schema())) as avro.Schema);
    const enc = createWireEncoder(7, type);
    for (const r of syntheticReadings({ tenants: [TENANT], start: Date.UTC(2026, 0, 1), count: 500, seed: 3, dropoutProbability: 0.05 })) {
      const { schemaId, body } = parseWire(enc.encode(r.reading));
      expect(schemaId).toBe(7);
      expect(reader.fromBuffer(body)).toEqual(asFloat32(r.reading));
    }
  });

  it("refuses a reading that does not fit the schema, naming the equipment", () => {
    const enc = createWireEncoder(1, type);
    expect(() => enc.encode({ ...reading, temperature: "hot" as unknown as number })).toThrow(/pump-0007/);
    expect(() => enc.encode({ ...reading, time: undefined as unknown as number })).toThrow(/cannot Avro-encode/);
  });

  it("rejects wire bytes without the magic byte or too short", () => {
    expect(() => parseWire(Buffer.from([1, 0, 0, 0, 1]))).toThrow(/magic byte/);
    expect(() => parseWire(Buffer.from([0, 0]))).toThrow(/shorter/);
  });
});

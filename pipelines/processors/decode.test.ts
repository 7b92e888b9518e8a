import avro from "avsc";
import { describe, expect, it } from "vitest";
import { parseAvroSchema, SENSOR_READING_SCHEMA_TEXT } from "../../schemas/index.ts";
import { AvroDecoder, parseFrame } from "./decode.ts";

const reader = parseAvroSchema(SENSOR_READING_SCHEMA_TEXT);
const frame = (id: number, body: Buffer) => {
  const h = Buffer.alloc(5);
  h.writeUInt32BE(id, 1);
  return Buffer.concat([h, body]);
};
const reading = { time: Date.UTC(2024, 0, 1), tenant_id: "t", equipment_id: "e", facility_id: "f", temperature: 1.5, vibration: null, pressure: 2 };

// v1: a producer that predates `pressure` and `vibration`.
const v1 = avro.Type.forSchema({
  type: "record",
  name: "SensorReading",
  namespace: "io.millrace.sensor",
  fields: [
    { name: "time", type: { type: "long", logicalType: "timestamp-millis" } },
    { name: "tenant_id", type: "string" },
    { name: "equipment_id", type: "string" },
    { name: "facility_id", type: "string" },
    { name: "temperature", type: ["null", "float"], default: null },
  ],
});
// v3: a newer producer with an extra field the reader doesn't know.
const v3 = avro.Type.forSchema({
  ...(JSON.parse(SENSOR_READING_SCHEMA_TEXT) as object),
  fields: [...(JSON.parse(SENSOR_READING_SCHEMA_TEXT) as { fields: object[] }).fields, { name: "humidity", type: ["null", "float"], default: null }],
} as avro.Schema);

function decoderWith(schemas: Record<number, avro.Type>, now = () => 0) {
  const calls: number[] = [];
  const d = new AvroDecoder(
    reader,
    async (id) => {
      calls.push(id);
      return schemas[id];
    },
    { unknownTtlMs: 60_000, now },
  );
  return { d, calls };
}

describe("wire-format framing", () => {
  it("classifies bad frames with their own reasons (class 7)", () => {
    expect(parseFrame(Buffer.from('{"tenant_id":"x"}'))).toMatchObject({ ok: false, reason: "bad_magic_byte" });
    expect(parseFrame(Buffer.from([0, 0, 1]))).toMatchObject({ ok: false, reason: "short_frame" });
    expect(parseFrame(null)).toMatchObject({ ok: false, reason: "empty_payload" });
    expect(parseFrame(Buffer.from([0, 0, 0, 0, 7, 1]))).toMatchObject({ ok: true, schemaId: 7 });
  });
});

describe("AvroDecoder", () => {
  it("decodes the current schema", async () => {
    const { d } = decoderWith({ 1: reader });
    const msg = frame(1, reader.toBuffer(reading));
    await d.prepare(AvroDecoder.schemaIds([msg]));
    const r = d.decode(msg);
    expect(r).toMatchObject({ ok: true, schemaId: 1 });
    if (r.ok) expect(r.value).toMatchObject({ ...reading, temperature: Math.fround(1.5) });
  });

  it("resolves an older producer's schema, filling defaults (class 6)", async () => {
    const { d } = decoderWith({ 2: v1 });
    const msg = frame(2, v1.toBuffer({ time: 5, tenant_id: "t", equipment_id: "e", facility_id: "f", temperature: 3 }));
    await d.prepare([2]);
    const r = d.decode(msg);
    expect(r.ok && r.value).toMatchObject({ time: 5, temperature: 3, vibration: null, pressure: null });
  });

  it("resolves a producer on SensorReading version 1 (before flow_rate): flow_rate is null", async () => {
    const published = JSON.parse(SENSOR_READING_SCHEMA_TEXT) as { fields: Array<{ name: string }> };
    const sensorV1 = avro.Type.forSchema({ ...published, fields: published.fields.filter((f) => f.name !== "flow_rate") } as avro.Schema);
    const { d } = decoderWith({ 5: sensorV1, 6: reader });
    const old = frame(5, sensorV1.toBuffer(reading));
    const cur = frame(6, reader.toBuffer({ ...reading, flow_rate: 31.25 }));
    await d.prepare([5, 6]);
    expect(d.decode(old)).toMatchObject({ ok: true, value: { ...reading, flow_rate: null } });
    expect(d.decode(cur)).toMatchObject({ ok: true, value: { ...reading, flow_rate: 31.25 } });
  });

  it("resolves a newer producer's schema, ignoring fields it doesn't know", async () => {
    const { d } = decoderWith({ 3: v3 });
    const msg = frame(3, v3.toBuffer({ ...reading, humidity: 40 }));
    await d.prepare([3]);
    const r = d.decode(msg);
    expect(r.ok && r.value).toMatchObject({ equipment_id: "e", pressure: 2 });
    expect(r.ok && "humidity" in r.value).toBe(false);
  });

  it("caches unknown ids: 10,000 messages naming id 999999 cost one lookup per TTL (class 7)", async () => {
    let now = 0;
    const { d, calls } = decoderWith({}, () => now);
    const msg = frame(999_999, Buffer.from([1, 2, 3]));
    for (let i = 0; i < 100; i++) {
      const batch = Array.from({ length: 100 }, () => msg);
      await d.prepare(AvroDecoder.schemaIds(batch));
      for (const m of batch) expect(d.decode(m)).toMatchObject({ ok: false, reason: "unknown_schema_id", schemaId: 999_999 });
    }
    expect(calls).toEqual([999_999]);
    now = 60_001;
    await d.prepare([999_999]);
    expect(calls).toEqual([999_999, 999_999]);
  });

  it("reports undecodable bodies and incompatible writer schemas", async () => {
    const incompatible = avro.Type.forSchema({ type: "record", name: "Other", fields: [{ name: "x", type: "int" }] });
    const { d } = decoderWith({ 1: reader, 4: incompatible });
    await d.prepare([1, 4]);
    expect(d.decode(frame(1, Buffer.from([0xff, 0xff])))).toMatchObject({ ok: false, reason: "undecodable_body" });
    expect(d.decode(frame(1, Buffer.concat([reader.toBuffer(reading), Buffer.from([9])])))).toMatchObject({ ok: false, reason: "undecodable_body" });
    expect(d.decode(frame(4, incompatible.toBuffer({ x: 1 })))).toMatchObject({ ok: false, reason: "incompatible_schema" });
  });

  it("rejects, when parsing, a union default that does not match the first branch (class 6)", () => {
    expect(() => parseAvroSchema(JSON.stringify({ type: "record", name: "R", fields: [{ name: "a", type: ["string", "null"], default: null }] }))).toThrow(
      /first branch/,
    );
  });
});

import { describe, expect, it } from "vitest";
import type { StoredReading } from "../../pipelines/reading.ts";
import { encodeReadingArrays, OID, unnestSql } from "./array-params.ts";
import { PG_EPOCH_MS } from "./copy-binary-encoder.ts";

/** A reader of PostgreSQL's binary 1-D array format, independent of the encoder's code. */
function readArray(b: Buffer): { oid: number; hasNull: boolean; elements: Array<Buffer | null> } {
  expect(b.readInt32BE(0)).toBe(1); // dimensions
  const hasNull = b.readInt32BE(4) === 1;
  const oid = b.readInt32BE(8);
  const n = b.readInt32BE(12);
  expect(b.readInt32BE(16)).toBe(1); // lower bound
  const elements: Array<Buffer | null> = [];
  let o = 20;
  for (let i = 0; i < n; i++) {
    const len = b.readInt32BE(o);
    o += 4;
    if (len === -1) elements.push(null);
    else {
      elements.push(b.subarray(o, o + len));
      o += len;
    }
  }
  expect(o).toBe(b.length); // nothing after the last element
  return { oid, hasNull, elements };
}

const rows: StoredReading[] = [
  {
    offset: 7,
    time: Date.UTC(2026, 0, 2, 3, 4, 5, 678),
    tenantId: "3f2b8c1e-6d4a-4b7e-9c0d-1a2b3c4d5e6f",
    equipmentId: "pump-0007",
    facilityId: "fac-ü1",
    temperature: Math.fround(21.5),
    vibration: null,
    pressure: Math.fround(-3.25),
    flow_rate: null,
  },
  {
    offset: 8,
    time: Date.UTC(1999, 11, 31, 23, 59, 59, 1), // before PostgreSQL's epoch: a negative int64
    tenantId: "3f2b8c1e-6d4a-4b7e-9c0d-1a2b3c4d5e6f",
    equipmentId: "e",
    facilityId: "",
    temperature: Math.fround(-0.125),
    vibration: Math.fround(3.5),
    pressure: null,
    flow_rate: Math.fround(30.75),
  },
];

describe("column arrays for the sink's unnest insert", () => {
  it("encodes each column in row order, in PostgreSQL's binary array format", () => {
    const a = encodeReadingArrays(rows);
    const time = readArray(a.time);
    expect(time.oid).toBe(OID.timestamptz);
    expect(time.hasNull).toBe(false);
    expect(time.elements.map((e) => e!.readBigInt64BE(0))).toEqual(rows.map((r) => BigInt((r.time - PG_EPOCH_MS) * 1000)));
    expect(time.elements[1]!.readBigInt64BE(0) < 0n).toBe(true);

    const eq = readArray(a.equipmentId);
    expect(eq.oid).toBe(OID.text);
    expect(eq.elements.map((e) => e!.toString("utf8"))).toEqual(["pump-0007", "e"]);
    const fac = readArray(a.facilityId);
    expect(fac.elements.map((e) => e!.toString("utf8"))).toEqual(["fac-ü1", ""]);
    expect(fac.elements[0]!.length).toBe(Buffer.byteLength("fac-ü1"));

    const real = (b: Buffer) => {
      const r = readArray(b);
      expect(r.oid).toBe(OID.float4);
      return { hasNull: r.hasNull, values: r.elements.map((e) => (e === null ? null : e.readFloatBE(0))) };
    };
    expect(real(a.temperature)).toEqual({ hasNull: false, values: [21.5, -0.125] });
    expect(real(a.vibration)).toEqual({ hasNull: true, values: [null, 3.5] });
    expect(real(a.pressure)).toEqual({ hasNull: true, values: [-3.25, null] });
    expect(real(a.flowRate)).toEqual({ hasNull: true, values: [null, 30.75] });
  });

  it("encodes an empty batch as seven empty one-dimensional arrays", () => {
    const a = encodeReadingArrays([]);
    for (const b of Object.values(a)) expect(readArray(b).elements).toEqual([]);
  });

  it("names the seven parameters in column order", () => {
    expect(unnestSql(7)).toBe("unnest($7::timestamptz[], $8::text[], $9::text[], $10::real[], $11::real[], $12::real[], $13::real[])");
  });
});

import { describe, expect, it } from "vitest";
import { BINARY_SIGNATURE, encodeCopyBinary, PG_EPOCH_MS } from "./copy-binary-encoder.ts";

const row = {
  offset: 2 ** 40 + 7,
  time: Date.UTC(2026, 0, 2, 3, 4, 5, 678),
  tenantId: "3f2b8c1e-6d4a-4b7e-9c0d-1a2b3c4d5e6f",
  equipmentId: "pump-0007",
  facilityId: "fac-ü1",
  temperature: Math.fround(21.5),
  vibration: null,
  pressure: Math.fround(-3.25),
  flow_rate: Math.fround(31.5),
};

describe("binary COPY prototype", () => {
  it("frames one tuple exactly as PostgreSQL's binary format says", () => {
    const b = encodeCopyBinary([row]);
    expect(b.subarray(0, 11).equals(BINARY_SIGNATURE)).toBe(true);
    expect(b.readInt32BE(11)).toBe(0);
    expect(b.readInt32BE(15)).toBe(0);
    let o = 19;
    expect(b.readInt16BE(o)).toBe(9);
    o += 2;
    expect(b.readInt32BE(o)).toBe(8);
    expect(b.readBigInt64BE(o + 4)).toBe(BigInt(row.offset));
    o += 12;
    expect(b.readBigInt64BE(o + 4)).toBe(BigInt((row.time - PG_EPOCH_MS) * 1000));
    o += 12;
    expect(b.readInt32BE(o)).toBe(16);
    expect(b.subarray(o + 4, o + 20).toString("hex")).toBe(row.tenantId.replace(/-/g, ""));
    o += 20;
    const eq = b.readInt32BE(o);
    expect(b.subarray(o + 4, o + 4 + eq).toString("utf8")).toBe("pump-0007");
    o += 4 + eq;
    const fac = b.readInt32BE(o);
    expect(fac).toBe(Buffer.byteLength("fac-ü1"));
    expect(b.subarray(o + 4, o + 4 + fac).toString("utf8")).toBe("fac-ü1");
    o += 4 + fac;
    expect(b.readInt32BE(o)).toBe(4);
    expect(b.readFloatBE(o + 4)).toBe(21.5);
    o += 8;
    expect(b.readInt32BE(o)).toBe(-1);
    o += 4;
    expect(b.readFloatBE(o + 4)).toBe(-3.25);
    o += 8;
    expect(b.readInt32BE(o)).toBe(4);
    expect(b.readFloatBE(o + 4)).toBe(31.5);
    o += 8;
    expect(b.readInt16BE(o)).toBe(-1);
    expect(b.length).toBe(o + 2);
  });

  it("leaves src_offset out for the raw table's column list", () => {
    const b = encodeCopyBinary([row], { withOffset: false });
    expect(b.readInt16BE(19)).toBe(8);
    expect(b.readBigInt64BE(25)).toBe(BigInt((row.time - PG_EPOCH_MS) * 1000));
  });

  it("encodes an empty batch as header and trailer", () => {
    const b = encodeCopyBinary([]);
    expect(b.length).toBe(21);
    expect(b.readInt16BE(19)).toBe(-1);
  });
});
